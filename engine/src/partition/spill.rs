//! A function type's flood, kept out of memory so that the others go on.
//!
//! A partition reads each input shard in order, and a flood of one function
//! type (a fan-out loop, a burst of a million messages) fills the partition's
//! room: its input would pause, and every other function's messages would wait
//! in the shard behind the flood. So while the partition holds more than its
//! own share of the memory budget (its driver says so: [`Room`]), a function
//! type that holds more than its room in queued messages stops taking its new
//! messages into memory (unless it is the only type the partition serves:
//! then nothing waits behind it but its own messages, and the input pauses). They wait in the type's spill, in arrival order, and
//! the partition keeps reading its input for every other type. Once the type
//! has drained to half its room, or the partition is back within its share,
//! and the partition's inputs are caught up (its driver says so), the spill is
//! read back, oldest first, and its messages are delivered as if they arrived
//! then. Order holds: while a type's spill holds anything, every new message
//! of the type joins it, behind.
//!
//! Not while the inputs are behind: what waits unread in them (other types'
//! messages among it) comes first. A spill read back then would put the flood
//! ahead of them, and a flood that feeds itself (a loop whose every message
//! sends more) would grow the inputs faster than they are read, with the
//! other types' messages ever further back in them.
//!
//! A spill is kept as the parked messages ([`super::parking`]) of one reserved
//! address per type ([`spill_address`]), so it is written by the seal, listed
//! in the checkpoint, restored, read back once committed and collected exactly
//! as an address's parked messages are. Its messages keep their targets. No
//! I/O here: the worker writes and reads the segments, as for parking.

use statefun_proto::internal::Envelope;
use statefun_proto::reqreply::Address;

use super::Partition;
use crate::address::FunctionType;

/// The namespace of the reserved addresses that hold spills. No endpoint
/// serves it, so a message sent to it is dead-lettered before it could mix
/// with a spill.
pub const SPILL_NAMESPACE: &str = "statefun.spill";

/// What the partition's driver says of its room, as it changes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Room {
    /// The partition holds more than its own share of the memory budget.
    pub short: bool,
    /// What one function type may hold queued in memory while the partition is short.
    pub type_bytes: usize,
}

/// What a partition knows of one function type it met.
#[derive(Clone, Debug, Default)]
pub struct TypeInfo {
    /// `None` when no endpoint serves the type.
    pub limits: Option<super::BatchLimits>,
    /// About what the type's queued messages (in flight ones included) and its
    /// batches in flight hold in memory.
    pub held_bytes: usize,
    /// The type's spill address while it spills.
    pub spill: Option<Address>,
}

/// The reserved address whose parked messages are `function_type`'s spill.
pub fn spill_address(function_type: &FunctionType) -> Address {
    Address { namespace: SPILL_NAMESPACE.into(), r#type: function_type.to_string(), id: String::new() }
}

/// The function type whose spill `address` holds, if it is a spill address.
pub fn spilled_type(address: &Address) -> Option<FunctionType> {
    (address.namespace == SPILL_NAMESPACE).then(|| FunctionType::parse(&address.r#type)).flatten()
}

/// Whether a type floods the partition: short of room, it holds its room, and
/// other types are served (with a single type, nothing waits behind it but
/// its own messages).
fn floods(room: Room, served_types: usize, info: &TypeInfo) -> bool {
    room.short && info.held_bytes >= room.type_bytes && served_types > 1
}

/// Whether the spill of a type that holds `held_bytes` may be read back (see
/// [`Partition::spill_drained`]).
pub(super) fn may_read_back(room: Room, inputs_caught_up: bool, held_bytes: usize) -> bool {
    inputs_caught_up && (!room.short || held_bytes <= room.type_bytes / 2)
}

impl Partition {
    pub fn room(&self) -> Room {
        self.room
    }

    /// Takes what the driver says of the partition's room. Once it eases, the
    /// spills are read back (if the inputs are caught up).
    pub fn set_room(&mut self, room: Room, now_ms: i64) {
        let eased = self.room.short && !room.short;
        self.room = room;
        if eased {
            self.read_back_spills(now_ms);
        }
    }

    /// Takes what the driver says of the partition's inputs: caught up (no
    /// reader has more to read right now) or behind. Once they catch up, the
    /// spills that may be are read back.
    pub fn set_inputs_caught_up(&mut self, caught_up: bool, now_ms: i64) {
        let caught_up_now = caught_up && !self.inputs_caught_up;
        self.inputs_caught_up = caught_up;
        if caught_up_now {
            self.read_back_spills(now_ms);
        }
    }

    fn read_back_spills(&mut self, now_ms: i64) {
        for spill in self.spill_addresses() {
            self.unpark_if_drained(&spill, now_ms);
        }
    }

    /// Whether, short of room, the partition holds a flood: a type that holds its
    /// room, so that its further messages would spill (with more than one type
    /// served). Input that pauses then may leave that flood in memory for good
    /// (its invocations hang), with nothing new coming in to spill and every
    /// other type's messages unread: the driver lets input flow again.
    pub fn holds_flood(&self) -> bool {
        self.types.values().any(|info| floods(self.room, self.served_types, info))
    }

    /// The spill addresses of the types that spill.
    pub(super) fn spill_addresses(&self) -> Vec<Address> {
        self.types.values().filter_map(|info| info.spill.clone()).collect()
    }

    /// Whether a message for the type numbered `number` waits in its spill
    /// (which starts, if the type holds its room while the partition is short).
    pub(super) fn spills(&mut self, number: usize) -> bool {
        let room = self.room;
        let Some((function_type, info)) = self.types.by_number_mut(number) else { return false };
        if info.spill.is_none() && floods(room, self.served_types, info) {
            info.spill = Some(spill_address(function_type));
            tracing::debug!(
                partition = self.id,
                function_type = %function_type,
                held_bytes = info.held_bytes,
                "the partition is short of room: new messages of this type wait in its spill"
            );
        }
        info.spill.is_some()
    }

    /// Puts a message (with its target) behind its type's spill.
    pub(super) fn spill(&mut self, number: usize, envelope: Envelope, bytes: usize) {
        // Taken out and put back, not cloned: a flood spills every message.
        let Some(spill) = self.types.by_number_mut(number).and_then(|(_, info)| info.spill.take()) else { return };
        self.park(&spill, envelope, bytes);
        if let Some((_, info)) = self.types.by_number_mut(number) {
            info.spill = Some(spill);
        }
    }

    /// Whether a type's spill may be read back: the inputs are caught up, and
    /// the type has drained to half its room or the partition is no longer short.
    pub(super) fn spill_drained(&mut self, function_type: &FunctionType) -> bool {
        let held_bytes = self.types.get(function_type).map_or(0, |info| info.held_bytes);
        may_read_back(self.room, self.inputs_caught_up, held_bytes)
    }

    /// Delivers messages read back from a spill, in their order, ahead of
    /// whatever of their type arrived since (which waits in the spill).
    pub(super) fn deliver_spilled(&mut self, messages: Vec<Envelope>, now_ms: i64) {
        self.delivering_together(now_ms, |p| {
            for envelope in messages {
                p.deliver_unspilled(envelope, now_ms);
            }
        });
    }

    /// Notes that a spill address holds nothing more: its type takes messages into memory again.
    pub(super) fn spill_ended(&mut self, function_type: &FunctionType) {
        if let Some(info) = self.types.get_mut(function_type) {
            info.spill = None;
        }
    }

    /// After a restore: the types whose spills hold something spill on.
    pub(super) fn spills_restored(&mut self, spilling: Vec<FunctionType>) {
        for function_type in spilling {
            let number = self.type_number(&function_type.address(""));
            if let Some((_, info)) = self.types.by_number_mut(number) {
                info.spill = Some(spill_address(&function_type));
            }
        }
    }
}
