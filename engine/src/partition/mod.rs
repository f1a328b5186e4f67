//! The partition engine: per-address mailboxes, batching, state, timers, expiry
//! and the epoch record, as a pure state machine.
//!
//! A [`Partition`] owns everything of the addresses that hash to it. Callers
//! feed it events (input records, exchange batches, invocation results, clock
//! ticks) and take back [`Effect`]s (invocations to start); what must leave the
//! partition (messages for other partitions, egress records, dead letters) goes
//! into the epoch's outbox, published only after the epoch commits. It knows
//! nothing of AWS, files or HTTP: the runtime's worker drives it and does the I/O.
//! Delivery and recovery are here; invoking addresses and applying their
//! replies in `invocation`, their egress records in `egress`, closing an epoch
//! in `epoch`, delayed messages in `timers`, addresses beyond their cap in
//! [`parking`].
//!
//! Contract kept here: at most one batch in flight per address, messages
//! batched in arrival order, a reply applied exactly once (stale replies are
//! ignored by token), everything that changes state recorded in the epoch.

pub mod budget;
mod causes;
mod egress;
mod epoch;
pub mod exchange_batches;
pub mod forward;
mod invocation;
pub mod outbox;
pub mod parking;
mod ready;
mod record;
pub mod restore;
pub mod sealed_entries;
pub mod spill;
mod table;
mod timers;
mod wire;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::Arc;

use prost::Message as _;
use statefun_proto::internal::{DeadLetter, DelayedMessage, Envelope, EpochRecord, ExchangeBatch, StoredState};
use statefun_proto::reqreply::from_function::{DelayedInvocation, PersistedValueSpec};
use statefun_proto::reqreply::{Address, ToFunction};

use crate::address::{self, FunctionType};
pub use causes::{DeadLetterCause, DeadLetterCounts};
pub use epoch::SealedEpoch;
use forward::{Chains, Forward, IngressMarks, Origin};
use outbox::{IngressMessage, Outbox};
use ready::Ready;
use record::State;
use spill::{Room, TypeInfo};
use table::{AddressTable, ByType};
use timers::Timers;

/// How large a batch for one function type may grow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchLimits {
    pub max_messages: usize,
    /// The transport's payload limit: batches are cut to fit it.
    pub max_bytes: usize,
}

/// What the partition needs to know of the deployment.
pub trait Catalog: Send + Sync {
    /// `None` when no endpoint serves the type.
    fn batch_limits(&self, function_type: &FunctionType) -> Option<BatchLimits>;
    /// Whether module.yaml declares the egress `namespace/name`.
    fn has_egress(&self, namespace: &str, name: &str) -> bool;
    /// Streams of the runtime itself (exchange, dead letters), which functions may not write to.
    fn is_internal_stream(&self, stream: &str) -> bool;
}

/// A catalog with no endpoints and no egresses: for restoring a partition to
/// look at its state, where nothing is invoked or published.
pub struct NoEndpoints;

impl Catalog for NoEndpoints {
    fn batch_limits(&self, _: &FunctionType) -> Option<BatchLimits> {
        None
    }
    fn has_egress(&self, _: &str, _: &str) -> bool {
        false
    }
    fn is_internal_stream(&self, _: &str) -> bool {
        false
    }
}

/// Work the partition asks its driver to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Send this batch; report the outcome with [`Partition::on_invocation_result`].
    Invoke { address: Address, token: u64, request: ToFunction },
    /// Read the parked segment `segment` back; report it with [`Partition::on_unparked`].
    Unpark { address: Address, segment: String },
}

/// A committed history that cannot be replayed: an object that the commit
/// record names is damaged or contradicts the ones before it.
#[derive(Debug, thiserror::Error)]
#[error("partition {partition}: the checkpoint of epoch {epoch} cannot be replayed: {detail}")]
pub struct CorruptHistory {
    pub partition: u32,
    pub epoch: u64,
    pub detail: String,
}

pub struct Partition {
    id: u32,
    partitions: u32,
    catalog: Arc<dyn Catalog>,
    /// The epoch being built: one past the last sealed epoch.
    epoch: u64,
    next_seq: u64,
    next_token: u64,
    addresses: AddressTable,
    /// Behind an `Arc`: every dispatch reads them, and a copy would cost a string per state.
    specs: ByType<Arc<Vec<PersistedValueSpec>>>,
    /// Each function type met: what the catalog said of it (the module does not
    /// change while running), what it holds queued, whether it spills.
    types: ByType<TypeInfo>,
    /// What the driver last said of the partition's room ([`spill`]).
    room: Room,
    /// Whether the driver last said the inputs are caught up ([`spill`]).
    inputs_caught_up: bool,
    /// Messages are being delivered together: batches start once all are in ([`Self::delivering_together`]).
    delivering_together: bool,
    /// Function types met that an endpoint serves.
    served_types: usize,
    /// Every delayed message, whoever sent it.
    timers: Timers,
    next_timer_id: u64,
    positions: BTreeMap<(String, String), String>,
    /// The history this partition continues (see `EpochRecord.incarnation`).
    incarnation: u64,
    /// What every deterministic id of this history starts with ([`history_prefix`]).
    id_prefix: String,
    /// The last (epoch, seq) applied from each source partition's incarnation.
    dedup: BTreeMap<(u32, u64), (u64, u64)>,
    /// The last message taken from each ingress shard other partitions read ([`forward`]).
    ingress_marks: IngressMarks,
    /// Whether ingress messages for other partitions are also forwarded before the commit ([`forward`]).
    forwarding: bool,
    chains: Chains,
    forwards: Vec<Forward>,
    dirty: HashSet<Address>,
    changed: bool,
    outbox: Outbox,
    /// Shared with the committer, which publishes them, and with the snapshots that record them.
    unpublished: VecDeque<Arc<Outbox>>,
    published_through: u64,
    effects: Vec<Effect>,
    /// Addresses with a batch in flight.
    running: usize,
    /// Addresses with messages waiting for a slot.
    ready: Ready,
    queued: usize,
    /// Encoded bytes of the queued messages (in flight ones included).
    queued_bytes: usize,
    /// Bytes of the outboxes in `unpublished`.
    unpublished_bytes: usize,
    /// Addresses with messages parked since the last seal, and their bytes.
    parking: HashSet<Address>,
    parked_bytes: usize,
    parked_messages: usize,
    /// Parked segments read back since the last seal.
    released: Vec<String>,
    /// The lease under which this partition writes (names its parked segments).
    lease: u64,
    /// The last epoch known to be committed (parked segments it wrote may be read back).
    committed_through: u64,
    /// Drained addresses whose next segment waits for its epoch's commit.
    awaiting_commit: Vec<Address>,
    bounds: Bounds,
    dead_letter_log: LogLimit,
    dead_letters: DeadLetterCounts,
}

/// Log lines per second for one kind of event: a flood (a loop cut by the hop
/// limit dead-letters millions of messages) is counted, not written line by line.
#[derive(Debug, Default)]
struct LogLimit {
    second: i64,
    logged: u32,
    left_out: u64,
}

impl LogLimit {
    const PER_SECOND: u32 = 10;

    /// Whether the event at `at_ms` gets its own line; says how many did not, once their second is over.
    fn admits(&mut self, at_ms: i64, partition: u32) -> bool {
        let second = at_ms.div_euclid(1000);
        if second != self.second {
            if self.left_out > 0 {
                tracing::warn!(partition, "{} more dead letters in one second, not logged one by one", self.left_out);
            }
            *self = Self { second, logged: 0, left_out: 0 };
        }
        self.logged += 1;
        if self.logged > Self::PER_SECOND {
            self.left_out += 1;
        }
        self.logged <= Self::PER_SECOND
    }
}

/// What waits at one function type of a partition ([`Partition::load_by_type`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TypeLoad {
    /// Messages waiting: queued and not in flight, or parked.
    pub backlog: usize,
    /// Addresses with a batch in flight.
    pub blocked: usize,
}

/// Bounds a partition holds what it is given to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    /// The longest message chain (see `Envelope.hops`) delivered; a longer one is a loop, and dead-lettered.
    pub max_hops: u32,
    /// What one address may hold queued in memory; what comes beyond it is parked ([`parking`]).
    pub address_max_bytes: usize,
    pub address_max_messages: usize,
    /// Batches in flight at once; the addresses beyond wait their turn ([`ready`]).
    pub max_running: usize,
    /// What the driver holds for a batch in flight besides its messages (the
    /// invocation's future, its connection's buffers), whatever their size: it
    /// counts for the partition and for the batch's function type.
    pub batch_overhead: usize,
}

impl Default for Bounds {
    fn default() -> Self {
        Self {
            max_hops: DEFAULT_MAX_HOPS,
            address_max_bytes: 16 << 20,
            address_max_messages: 10_000,
            max_running: DEFAULT_MAX_RUNNING,
            batch_overhead: DEFAULT_BATCH_OVERHEAD,
        }
    }
}

/// What a queued message holds besides its encoded bytes: the decoded
/// structure and its allocations' headers.
const MESSAGE_OVERHEAD: usize = std::mem::size_of::<Envelope>() + 96;

/// About what `messages` messages of `bytes` encoded bytes hold in memory.
fn in_memory(messages: usize, bytes: usize) -> usize {
    bytes + messages * MESSAGE_OVERHEAD
}

/// What an address with messages holds besides them: its record's busy part,
/// its slot in the table, its copy in the epoch's dirty set (an address and
/// its three strings), their allocations' headers.
const ADDRESS_OVERHEAD: usize = std::mem::size_of::<record::Busy>() + 2 * std::mem::size_of::<Address>() + 160;

/// About what a client holds for a request in flight besides its body: its
/// future, the buffers and state of the connection it goes over.
pub const DEFAULT_BATCH_OVERHEAD: usize = 16 * 1024;

/// Far beyond any request-and-reply chain, reached within seconds by a loop.
pub const DEFAULT_MAX_HOPS: u32 = 1000;

/// Far more than an endpoint serves at once (an HTTP endpoint takes 128), so
/// waiting for a slot costs no throughput, while a fan-out of millions of
/// messages does not become millions of requests built at once.
pub const DEFAULT_MAX_RUNNING: usize = 1024;

impl Partition {
    /// An empty partition whose first epoch will be `first_epoch`.
    pub fn new(id: u32, partitions: u32, catalog: Arc<dyn Catalog>, first_epoch: u64) -> Self {
        Self {
            id,
            partitions,
            catalog,
            epoch: first_epoch,
            next_seq: 0,
            next_token: 0,
            addresses: AddressTable::default(),
            specs: ByType::default(),
            types: ByType::default(),
            room: Room::default(),
            inputs_caught_up: true,
            delivering_together: false,
            served_types: 0,
            timers: Timers::default(),
            next_timer_id: 0,
            positions: BTreeMap::new(),
            incarnation: 0,
            id_prefix: history_prefix(id, 0),
            dedup: BTreeMap::new(),
            ingress_marks: IngressMarks::default(),
            forwarding: false,
            chains: Chains::default(),
            forwards: Vec::new(),
            dirty: HashSet::new(),
            changed: false,
            outbox: Outbox::default(),
            unpublished: VecDeque::new(),
            published_through: 0,
            effects: Vec::new(),
            running: 0,
            ready: Ready::default(),
            queued: 0,
            queued_bytes: 0,
            unpublished_bytes: 0,
            parking: HashSet::new(),
            parked_bytes: 0,
            parked_messages: 0,
            released: Vec::new(),
            lease: 0,
            committed_through: 0,
            awaiting_commit: Vec::new(),
            bounds: Bounds::default(),
            dead_letter_log: LogLimit::default(),
            dead_letters: DeadLetterCounts::default(),
        }
    }

    /// Applies the deployment's bounds (not recorded: they come from the settings on every start).
    pub fn set_bounds(&mut self, bounds: Bounds) {
        self.bounds = bounds;
    }

    /// The lease under which the epochs from now on are written.
    pub fn set_lease(&mut self, lease: u64) {
        self.lease = lease;
    }

    /// Rebuilds a partition from its committed history, whole records in memory
    /// (recovery streams them instead: [`restore::Restorer`]).
    pub fn restore(
        id: u32,
        partitions: u32,
        catalog: Arc<dyn Catalog>,
        history: impl IntoIterator<Item = EpochRecord>,
    ) -> Result<Self, CorruptHistory> {
        use restore::HistorySink as _;
        let mut restorer = restore::Restorer::new(id, partitions, catalog);
        for mut record in history {
            let epoch = record.epoch;
            let corrupt = |detail| CorruptHistory { partition: id, epoch, detail };
            restorer.begin_epoch(epoch, record.snapshot);
            restorer.expect_entries(record.addresses.len());
            for entry in std::mem::take(&mut record.addresses) {
                restorer.entry(entry).map_err(corrupt)?;
            }
            restorer.end_epoch(record).map_err(corrupt)?;
        }
        Ok(restorer.finish())
    }

    /// A partition that begins a history of its own, named `incarnation`.
    pub fn with_incarnation(mut self, incarnation: u64) -> Self {
        self.set_incarnation(incarnation);
        self
    }

    fn set_incarnation(&mut self, incarnation: u64) {
        self.incarnation = incarnation;
        self.id_prefix = history_prefix(self.id, incarnation);
    }

    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// After a restore: re-sends every queued and in-flight batch, and reads back parked messages.
    pub fn resume(&mut self, now_ms: i64) {
        let pending: Vec<Address> = self
            .addresses
            .iter()
            .filter(|(_, r)| !r.mailbox().is_empty() || r.busy().parked.is_some())
            .map(|(a, _)| a)
            .collect();
        self.running = 0;
        for address in pending {
            if let Some(record) = self.addresses.get_mut(&address) {
                record.busy_mut().in_flight = 0;
            }
            self.dispatch(&address, now_ms);
            self.unpark_if_drained(&address, now_ms);
        }
    }

    pub fn id(&self) -> u32 {
        self.id
    }

    /// The epoch being built.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    pub fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }

    /// Messages waiting or in flight, across all addresses.
    pub fn queued_messages(&self) -> usize {
        self.queued
    }

    /// About what the partition holds in memory besides its state: queued and
    /// in-flight messages, delayed messages and outboxes not yet published.
    /// A message in memory is its encoded bytes and the structure that holds
    /// them, which for small messages is most of it.
    pub fn held_bytes(&self) -> usize {
        let addresses = (self.running + self.ready.len()) * ADDRESS_OVERHEAD;
        in_memory(self.queued, self.queued_bytes)
            + in_memory(self.parked_messages, self.parked_bytes)
            + addresses
            + self.running * self.bounds.batch_overhead
            + self.ready.bytes()
            + self.timers.bytes()
            + self.outbox.bytes()
            + self.unpublished_bytes
    }

    pub fn address_count(&self) -> usize {
        self.addresses.len()
    }

    /// Bytes of the outboxes not yet published, the epoch's own included.
    pub fn outbox_bytes(&self) -> usize {
        self.outbox.bytes() + self.unpublished_bytes
    }

    /// Bytes of the outboxes sealed and not yet published.
    pub fn unpublished_bytes(&self) -> usize {
        self.unpublished_bytes
    }

    /// Bytes of the messages parked (spills included) since the last seal, which writes them out.
    pub fn parked_bytes(&self) -> usize {
        self.parked_bytes
    }

    /// Bytes of the outbox of the epoch being built.
    pub fn epoch_outbox_bytes(&self) -> usize {
        self.outbox.bytes()
    }

    /// Entries in the outbox of the epoch being built.
    pub fn outbox_len(&self) -> usize {
        self.outbox.len()
    }

    /// Messages dead-lettered by this partition since it was created or restored, by cause.
    pub fn dead_letter_counts(&self) -> &DeadLetterCounts {
        &self.dead_letters
    }

    /// What waits at each function type: messages queued behind a batch in
    /// flight or for a slot, or parked (StateFun's backlog), and addresses
    /// with a batch in flight (StateFun's blocked addresses). Walks every
    /// address: for occasional reports, not the hot path.
    pub fn load_by_type(&self) -> Vec<(FunctionType, TypeLoad)> {
        let mut loads: Vec<(FunctionType, TypeLoad)> = Vec::new();
        for (function_type, record) in self.addresses.busy() {
            // A type's spill is its backlog too.
            let spilled = (function_type.namespace == spill::SPILL_NAMESPACE)
                .then(|| FunctionType::parse(&function_type.name))
                .flatten();
            let function_type = spilled.as_ref().unwrap_or(function_type);
            let (waiting, in_flight) = record.load();
            let index = match loads.iter().position(|(t, _)| t == function_type) {
                Some(index) => index,
                None => {
                    loads.push((function_type.clone(), TypeLoad::default()));
                    loads.len() - 1
                }
            };
            loads[index].1.backlog += waiting;
            loads[index].1.blocked += usize::from(in_flight);
        }
        loads
    }

    pub fn has_changes(&self) -> bool {
        self.changed
    }

    /// Committed position of an input, to resume reading after it.
    pub fn position(&self, stream: &str, shard: &str) -> Option<&str> {
        self.positions.get(&(stream.to_owned(), shard.to_owned())).map(String::as_str)
    }

    /// The shards of `stream` with a committed position.
    pub fn positions_of<'a>(&'a self, stream: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.positions.keys().filter(move |(s, _)| s == stream).map(|(_, shard)| shard.as_str())
    }

    /// Outboxes of sealed epochs not yet known to be published, oldest first.
    pub fn unpublished(&self) -> impl Iterator<Item = &Outbox> {
        self.unpublished.iter().map(Arc::as_ref)
    }

    /// Registered states and their values of one address (for inspection).
    pub fn states_of(&self, address: &Address) -> Option<Vec<StoredState>> {
        self.addresses.get(address).map(|r| r.states().iter().map(State::to_stored).collect())
    }

    pub fn addresses(&self) -> impl Iterator<Item = Address> + '_ {
        self.addresses.iter().map(|(address, _)| address)
    }

    /// Records that an input was consumed up to `sequence` (committed with the epoch).
    pub fn advance_position(&mut self, stream: &str, shard: &str, sequence: &str) {
        self.positions.insert((stream.to_owned(), shard.to_owned()), sequence.to_owned());
        self.changed = true;
    }

    /// Delivers a message: in memory when its target is here (or behind its
    /// type's spill, [`spill`]), else through the exchange.
    pub fn deliver(&mut self, envelope: Envelope, now_ms: i64) {
        self.deliver_with(envelope, true, now_ms);
    }

    /// Delivers a message read back from a spill: never spilled again.
    fn deliver_unspilled(&mut self, envelope: Envelope, now_ms: i64) {
        self.deliver_with(envelope, false, now_ms);
    }

    fn deliver_with(&mut self, envelope: Envelope, may_spill: bool, now_ms: i64) {
        self.changed = true;
        let Some(target) = envelope.target.as_ref() else {
            self.dead_letter(
                DeadLetterCause::BadInput,
                None,
                "message has no target address".into(),
                vec![envelope],
                "",
                Vec::new(),
                now_ms,
            );
            return;
        };
        if envelope.hops > self.bounds.max_hops {
            let reason = format!(
                "message chain passed the hop limit of {}: {} messages in a row, each sent by the function that \
                 received the one before (a loop? --max-hops raises the limit)",
                self.bounds.max_hops, envelope.hops
            );
            self.dead_letter_messages(DeadLetterCause::HopLimit, &target.clone(), reason, vec![envelope], now_ms);
            return;
        }
        let partition = address::partition_of(target, self.partitions);
        if partition != self.id {
            let seq = self.outbox_seq();
            if let Err(size) = self.outbox.push_exchange(seq, partition, &envelope) {
                self.dead_letter_whole(
                    DeadLetterCause::TooLarge,
                    outbox::too_large_for_exchange(envelope, size, partition, now_ms),
                );
            }
            return;
        }
        let number = self.type_number(target);
        if self.types.by_number_mut(number).is_none_or(|(_, info)| info.limits.is_none()) {
            let reason = format!("no endpoint serves function type {} (check module.yaml)", FunctionType::of(target));
            self.dead_letter_messages(DeadLetterCause::NoEndpoint, &target.clone(), reason, vec![envelope], now_ms);
            return;
        }
        if may_spill && self.spills(number) {
            let bytes = envelope.encoded_len();
            self.spill(number, envelope, bytes);
            return;
        }
        // A queued message does not keep its target: the address it waits at is it.
        let mut envelope = envelope;
        let Some(target) = envelope.target.take() else { return };
        let bytes = envelope.encoded_len();
        let bounds = self.bounds;
        let record = self.addresses.get_or_insert(&target);
        let busy = record.busy();
        // Beyond the cap (but never the first message: a large one alone still goes through), or behind what is parked.
        if busy.parked.is_some()
            || (!record.mailbox().is_empty()
                && (busy.queued_bytes + bytes > bounds.address_max_bytes
                    || record.mailbox().len() >= bounds.address_max_messages))
        {
            self.park(&target, envelope, bytes);
            return;
        }
        record.push_message(envelope, bytes);
        self.queued += 1;
        self.queued_bytes += bytes;
        if let Some((_, info)) = self.types.by_number_mut(number) {
            info.held_bytes += in_memory(1, bytes);
        }
        let idle = record.busy().in_flight == 0;
        self.mark_dirty(&target);
        if idle {
            self.dispatch(&target, now_ms);
        }
    }

    /// Delivers a message from an ingress record. One for another partition is
    /// written to the outbox from its parts, without building its envelope.
    pub fn deliver_ingress(&mut self, message: IngressMessage<'_>, now_ms: i64) {
        let key_group = address::key_group_of(message.namespace, message.name, message.key);
        let partition = address::partition_of_key_group(key_group, self.partitions);
        if partition != self.id {
            let seq = self.outbox_seq();
            if let Err(size) = self.outbox.push_ingress_exchange(seq, partition, &message) {
                let envelope = message.into_envelope();
                self.dead_letter_whole(
                    DeadLetterCause::TooLarge,
                    outbox::too_large_for_exchange(envelope, size, partition, now_ms),
                );
                return;
            }
            if let Some(origin) = message.origin.filter(|_| self.forwarding)
                && let Some(previous) = self.chains.sent(partition, &origin)
            {
                let mut envelope = message.into_envelope();
                envelope.ingress = Some(origin.to_position());
                self.forwards.push(Forward { partition, previous, envelope });
            }
            return;
        }
        self.deliver(message.into_envelope(), now_ms);
    }

    /// Whether ingress messages for other partitions are also forwarded at
    /// once ([`forward`]): only the driver knows whether their partitions run
    /// beside this one and take them. Off, the chains are forgotten.
    pub fn set_forwarding(&mut self, on: bool) {
        if self.forwarding && !on {
            self.chains.clear();
        }
        self.forwarding = on;
    }

    /// The ingress messages to forward to other partitions, in the order read.
    pub fn take_forwards(&mut self) -> Vec<Forward> {
        std::mem::take(&mut self.forwards)
    }

    /// Takes ingress messages another partition forwarded before its commit,
    /// in order, as long as each continues this partition's mark for its
    /// shard ([`forward`]); whether all were taken. What is not taken the
    /// exchange brings.
    pub fn accept_forwarded(&mut self, forwards: Vec<Forward>, now_ms: i64) -> bool {
        self.delivering_together(now_ms, |p| {
            for Forward { previous, mut envelope, .. } in forwards {
                let Some(position) = envelope.ingress.take() else { return false };
                let Some(origin) = Origin::of(&position, &envelope.id) else { return false };
                if !p.ingress_marks.continue_with(&previous, &origin) {
                    return false;
                }
                p.deliver(envelope, now_ms);
            }
            true
        })
    }

    /// Accepts a batch from another partition, dropping what was already accepted.
    pub fn accept_exchange(&mut self, batch: ExchangeBatch, now_ms: i64) {
        for message in batch.messages {
            let id = (batch.epoch, message.seq);
            let source = (batch.source_partition, batch.incarnation);
            let mark = self.dedup.get(&source).copied();
            if mark.is_some_and(|mark| id <= mark) {
                continue;
            }
            self.dedup.insert(source, id);
            self.changed = true;
            match message.envelope {
                Some(mut envelope) => {
                    // Taken before, forwarded ahead of its sender's commit. (A position that names no
                    // place was not written by this runtime: nothing can have been taken ahead of it.)
                    if let Some(position) = envelope.ingress.take()
                        && let Some(origin) = Origin::of(&position, &envelope.id)
                        && !self.ingress_marks.advance(&origin)
                    {
                        continue;
                    }
                    self.deliver(envelope, now_ms);
                }
                None => {
                    let source =
                        format!("exchange from partition {} epoch {} seq {}", batch.source_partition, id.0, id.1);
                    self.dead_letter_input("exchange message without an envelope".into(), source, Vec::new(), now_ms);
                }
            }
        }
    }

    /// Accepts batches of one source partition handed over in memory (the
    /// runtime's hand-over between partitions of one process) if they continue
    /// exactly where this partition's mark for the source stands: `previous` is
    /// the last message the source sent here before them. Whether they were
    /// taken; if not, the exchange brings them in order (taken out of turn, they
    /// would move the mark past messages still to come, dropped as duplicates then).
    pub fn accept_handed_over(&mut self, batches: Vec<ExchangeBatch>, previous: (u64, u64), now_ms: i64) -> bool {
        let Some(first) = batches.first() else { return false };
        let source = (first.source_partition, first.incarnation);
        let one_source = batches.iter().all(|b| (b.source_partition, b.incarnation) == source);
        if !one_source || self.dedup.get(&source) != Some(&previous) {
            return false;
        }
        self.delivering_together(now_ms, |p| {
            for batch in batches {
                p.accept_exchange(batch, now_ms);
            }
        });
        true
    }

    /// Records a dead letter for something that could not even become a message
    /// (an input record that cannot be routed, a malformed exchange record).
    pub fn dead_letter_input(&mut self, reason: String, source: String, raw: Vec<u8>, now_ms: i64) {
        self.dead_letter(DeadLetterCause::BadInput, None, reason, Vec::new(), &source, raw, now_ms);
    }

    /// The earliest due time of a delayed message.
    pub fn next_timer_at(&self) -> Option<i64> {
        self.timers.next_due()
    }

    /// Delayed messages waiting for their time.
    pub fn pending_timers(&self) -> usize {
        self.timers.len()
    }

    /// Delivers every delayed message that is due.
    pub fn fire_due_timers(&mut self, now_ms: i64) {
        self.delivering_together(now_ms, |p| {
            while let Some(timer) = p.timers.pop_due(now_ms) {
                p.changed = true;
                match timer {
                    Ok(timer) => match timer.envelope {
                        Some(envelope) => p.deliver(envelope, now_ms),
                        None => p.dead_letter_input(
                            "delayed message without an envelope".into(),
                            format!("timer {}", timer.timer_id),
                            Vec::new(),
                            now_ms,
                        ),
                    },
                    Err(reason) => p.dead_letter_input(reason, "timers".into(), Vec::new(), now_ms),
                }
            }
        })
    }

    /// Drops expired state values of every address (the sweep behind lazy expiry).
    pub fn expire_states(&mut self, now_ms: i64) {
        let expiring = |specs: &[PersistedValueSpec]| specs.iter().any(|s| s.expiration_spec.is_some());
        if !self.specs.values().any(|specs| expiring(specs)) {
            return;
        }
        let specs = &self.specs;
        let touched = self.addresses.touched_by(|function_type, record| {
            specs.get(function_type).is_some_and(|specs| expiring(specs) && record.expire(specs, now_ms))
        });
        for address in touched {
            self.mark_dirty(&address);
            self.remove_if_empty(&address);
            self.changed = true;
        }
    }

    /// The next position in the epoch's outbox and among its messages' ids.
    fn next_seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq - 1
    }

    /// The position of an entry about to join the outbox, which changes the epoch.
    fn outbox_seq(&mut self) -> u64 {
        self.changed = true;
        self.next_seq()
    }

    /// A new message's deterministic id.
    fn next_id(&mut self) -> String {
        let seq = self.next_seq();
        format!("{}.e{}.{}", self.id_prefix, self.epoch, seq)
    }

    #[allow(clippy::too_many_arguments)]
    fn dead_letter(
        &mut self,
        cause: DeadLetterCause,
        address: Option<Address>,
        reason: String,
        messages: Vec<Envelope>,
        source: &str,
        raw: Vec<u8>,
        now_ms: i64,
    ) {
        let letter = DeadLetter {
            address,
            reason,
            messages,
            at_ms: now_ms,
            source: source.to_owned(),
            raw,
            ..Default::default()
        };
        self.dead_letter_whole(cause, letter);
    }

    /// Dead-letters messages that were on their way to (or queued at) `address`.
    fn dead_letter_messages(
        &mut self,
        cause: DeadLetterCause,
        address: &Address,
        reason: String,
        messages: Vec<Envelope>,
        now_ms: i64,
    ) {
        self.dead_letter(cause, Some(address.clone()), reason, messages, "", Vec::new(), now_ms);
    }

    fn dead_letter_whole(&mut self, cause: DeadLetterCause, letter: DeadLetter) {
        self.dead_letters.add(cause, letter.messages.len());
        if self.dead_letter_log.admits(letter.at_ms, self.id) {
            tracing::warn!(
                address = letter.address.as_ref().map(address::display).unwrap_or_default(),
                messages = letter.messages.len(),
                source = letter.source,
                "dead letter: {}",
                letter.reason
            );
        }
        let seq = self.outbox_seq();
        self.outbox.push_dead_letter(seq, letter);
    }

    /// A batch of `address` took an invocation slot: what it holds in the driver
    /// counts for its function type, so that a type whose invocations hold the
    /// partition's room is seen to flood it even when its messages are small.
    fn slot_taken(&mut self, address: &Address) {
        self.running += 1;
        let overhead = self.bounds.batch_overhead;
        if let Some(held) = self.type_held_bytes(address) {
            *held += overhead;
        }
    }

    /// A batch of `address` gave its slot up (answered, failed, or to be sent again).
    fn slot_freed(&mut self, address: &Address) {
        self.running -= 1;
        let overhead = self.bounds.batch_overhead;
        if let Some(held) = self.type_held_bytes(address) {
            *held = held.saturating_sub(overhead);
        }
    }

    /// Counts `messages` more queued, of `bytes` encoded bytes, for `address`'s function type.
    fn count_queued(&mut self, address: &Address, messages: usize, bytes: usize) {
        if let Some(held) = self.type_held_bytes(address) {
            *held += in_memory(messages, bytes);
        }
    }

    /// What `address`'s function type holds (see [`TypeInfo::held_bytes`]).
    fn type_held_bytes(&mut self, address: &Address) -> Option<&mut usize> {
        let number = self.type_number(address);
        self.types.by_number_mut(number).map(|(_, info)| &mut info.held_bytes)
    }

    /// Accounts for messages that left `address`'s mailbox; once its type has
    /// drained enough, its spill is read back.
    fn unqueued(&mut self, address: &Address, (messages, bytes): (Vec<Envelope>, usize), now_ms: i64) -> Vec<Envelope> {
        self.queued -= messages.len();
        self.queued_bytes -= bytes;
        let (room, inputs_caught_up) = (self.room, self.inputs_caught_up);
        let number = self.type_number(address);
        let Some((_, info)) = self.types.by_number_mut(number) else { return messages };
        info.held_bytes = info.held_bytes.saturating_sub(in_memory(messages.len(), bytes));
        if let Some(spill) =
            info.spill.clone().filter(|_| spill::may_read_back(room, inputs_caught_up, info.held_bytes))
        {
            self.unpark_if_drained_with(&spill, false, now_ms);
        }
        messages
    }

    /// Records that an address changed in this epoch (cloning it only the first time).
    fn mark_dirty(&mut self, address: &Address) {
        if !self.dirty.contains(address) {
            self.dirty.insert(address.clone());
        }
    }

    /// The batch limits of an address's function type; `None` when no endpoint serves it.
    fn limits_of(&mut self, address: &Address) -> Option<BatchLimits> {
        let number = self.type_number(address);
        self.types.by_number_mut(number).and_then(|(_, info)| info.limits)
    }

    /// The number of an address's function type among [`Self::types`], entered
    /// with what the catalog says of it the first time.
    fn type_number(&mut self, address: &Address) -> usize {
        if let Some(number) = self.types.number_of_known(address) {
            return number;
        }
        let function_type = FunctionType::of(address);
        let limits = self.catalog.batch_limits(&function_type);
        self.served_types += usize::from(limits.is_some());
        self.types.insert(function_type, TypeInfo { limits, ..TypeInfo::default() })
    }

    /// Removes an address that holds nothing, and frees what an idle one no longer needs.
    fn remove_if_empty(&mut self, address: &Address) {
        let Some(record) = self.addresses.get_mut(address) else { return };
        record.settle();
        if record.is_empty() {
            self.addresses.remove(address);
        }
    }

    /// A delayed message waits in the partition's timers; a token names it for
    /// cancellation within its sender (sending again with a live token replaces it).
    fn schedule(&mut self, sender: &Address, delayed: DelayedInvocation, now_ms: i64) {
        if delayed.is_cancellation_request {
            self.timers.cancel(sender, &delayed.cancellation_token);
            return;
        }
        let id = self.next_id();
        let timer_id = self.next_timer_id;
        self.next_timer_id += 1;
        let fire_at_ms = now_ms.saturating_add(delayed.delay_in_ms.max(0));
        // A timer starts a chain of its own: a function that wakes itself up
        // periodically is paced by its delays, and no loop.
        let caller = Some(sender.clone());
        let envelope =
            Envelope { target: delayed.target, caller, argument: delayed.argument, id, hops: 0, ingress: None };
        let cancellation_token = delayed.cancellation_token;
        self.timers.schedule(DelayedMessage { timer_id, fire_at_ms, cancellation_token, envelope: Some(envelope) });
    }
}

/// What the deterministic ids of a partition's history start with:
/// `p<partition>`, and `.i<incarnation>` (hexadecimal) for a history begun
/// afresh, whose epochs number from 1 again and must not repeat the ids of the
/// history before it (the local log drops an append it has seen by its ids;
/// consumers de-duplicate by them; dead-letter objects are named by them).
pub fn history_prefix(partition: u32, incarnation: u64) -> String {
    if incarnation == 0 { format!("p{partition}") } else { format!("p{partition}.i{incarnation:x}") }
}

/// Messages taken from a mailbox, with their target again (for dead letters, which may be re-injected).
fn addressed(mut messages: Vec<Envelope>, target: &Address) -> Vec<Envelope> {
    for message in &mut messages {
        message.target = Some(target.clone());
    }
    messages
}
