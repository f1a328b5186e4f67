//! Unit and property tests of the partition state machine.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use proptest::prelude::*;
use statefun_proto::egress::KinesisEgressRecord;
use statefun_proto::internal::{
    AddressEntry, DeadLetter, DelayedMessage, EpochRecord, ExchangeBatch, ExchangeMessage, ParkedMessages, StoredState,
    outbox_entry,
};
use statefun_proto::reqreply::from_function::{
    DelayedInvocation, EgressMessage, ExpirationSpec, IncompleteInvocationContext, Invocation, InvocationResponse,
    PersistedValueMutation, PersistedValueSpec, Response, expiration_spec::ExpireMode,
    persisted_value_mutation::MutationType,
};
use statefun_proto::reqreply::to_function::{InvocationBatchRequest, Request};
use statefun_proto::reqreply::{FromFunction, TypedValue};
use statefun_proto::typenames;

use super::*;

struct TestCatalog {
    max_messages: usize,
    max_bytes: usize,
}

impl Catalog for TestCatalog {
    fn batch_limits(&self, function_type: &FunctionType) -> Option<BatchLimits> {
        (function_type.namespace == "test")
            .then_some(BatchLimits { max_messages: self.max_messages, max_bytes: self.max_bytes })
    }
    fn has_egress(&self, namespace: &str, name: &str) -> bool {
        (namespace, name) == ("test", "out")
    }
    fn is_internal_stream(&self, stream: &str) -> bool {
        stream == "internal"
    }
}

fn catalog() -> Arc<dyn Catalog> {
    Arc::new(TestCatalog { max_messages: 3, max_bytes: 1 << 20 })
}

fn partition() -> Partition {
    Partition::new(0, 1, catalog(), 1)
}

fn addr(id: &str) -> Address {
    FunctionType::new("test", "fn").address(id)
}

fn value(n: u32) -> TypedValue {
    TypedValue { typename: "test/n".into(), has_value: true, value: n.to_le_bytes().to_vec() }
}

fn message(id: &str, n: u32) -> Envelope {
    Envelope {
        target: Some(addr(id)),
        caller: None,
        argument: Some(value(n)),
        id: format!("m{n}"),
        hops: 0,
        ingress: None,
    }
}

/// The invocations started since the last call: (address, token, batch).
fn invocations(p: &mut Partition) -> Vec<(Address, u64, InvocationBatchRequest)> {
    p.take_effects()
        .into_iter()
        .filter_map(|effect| match effect {
            Effect::Invoke { address, token, request } => match request.request {
                Some(Request::Invocation(batch)) => Some((address, token, batch)),
                None => panic!("invoke effect without a batch"),
            },
            Effect::Unpark { .. } => None,
        })
        .collect()
}

fn arguments(batch: &InvocationBatchRequest) -> Vec<u32> {
    batch
        .invocations
        .iter()
        .map(|i| {
            let bytes = &i.argument.as_ref().expect("argument").value;
            u32::from_le_bytes(bytes.as_slice().try_into().expect("4 bytes"))
        })
        .collect()
}

fn respond(response: InvocationResponse) -> Result<FromFunction, String> {
    Ok(FromFunction { response: Some(Response::InvocationResult(response)) })
}

fn spec(name: &str, expiration: Option<ExpirationSpec>) -> PersistedValueSpec {
    PersistedValueSpec { state_name: name.into(), expiration_spec: expiration, type_typename: "test/n".into() }
}

fn modify(name: &str, v: TypedValue) -> PersistedValueMutation {
    PersistedValueMutation { mutation_type: MutationType::Modify as i32, state_name: name.into(), state_value: Some(v) }
}

fn outbox(p: &mut Partition) -> Vec<outbox_entry::Entry> {
    p.seal(false).1.to_record().entries.into_iter().filter_map(|e| e.entry).collect()
}

/// Registers `specs` through a negotiation round and returns the re-sent batch.
fn negotiate(
    p: &mut Partition,
    address: &Address,
    token: u64,
    specs: Vec<PersistedValueSpec>,
) -> (u64, InvocationBatchRequest) {
    let incomplete = FromFunction {
        response: Some(Response::IncompleteInvocationContext(IncompleteInvocationContext { missing_values: specs })),
    };
    p.on_invocation_result(address, token, Ok(incomplete), 0);
    let mut again = invocations(p);
    assert_eq!(again.len(), 1, "negotiation re-sends the batch");
    let (_, token, batch) = again.remove(0);
    (token, batch)
}

#[test]
fn second_message_is_batched_while_first_in_flight() {
    let mut p = partition();
    p.deliver(message("a", 1), 0);
    let first = invocations(&mut p);
    assert_eq!(first.len(), 1);
    assert_eq!(arguments(&first[0].2), [1]);
    p.deliver(message("a", 2), 0);
    p.deliver(message("a", 3), 0);
    assert!(invocations(&mut p).is_empty(), "one batch in flight per address");
    p.on_invocation_result(&first[0].0, first[0].1, respond(InvocationResponse::default()), 0);
    let second = invocations(&mut p);
    assert_eq!(arguments(&second[0].2), [2, 3]);
}

#[test]
fn messages_delivered_together_leave_in_one_batch_per_address() {
    let mut p = partition();
    p.delivering_together(0, |p| {
        for (id, n) in [("a", 1), ("b", 2), ("a", 3), ("a", 4)] {
            p.deliver(message(id, n), 0);
        }
    });
    let mut batches: Vec<(String, Vec<u32>)> =
        invocations(&mut p).iter().map(|(address, _, batch)| (address.id.clone(), arguments(batch))).collect();
    batches.sort();
    let expected = [("a".to_owned(), vec![1, 3, 4]), ("b".to_owned(), vec![2])];
    assert_eq!(batches, expected, "a's first batch holds all three, not its first message alone");
    // Alone, a message still leaves at once.
    p.deliver(message("c", 5), 0);
    assert_eq!(invocations(&mut p).len(), 1);
}

#[test]
fn batches_are_cut_at_the_endpoints_max_batch() {
    let mut p = partition();
    p.deliver(message("a", 0), 0);
    let first = invocations(&mut p);
    for n in 1..=5 {
        p.deliver(message("a", n), 0);
    }
    p.on_invocation_result(&first[0].0, first[0].1, respond(InvocationResponse::default()), 0);
    let second = invocations(&mut p);
    assert_eq!(arguments(&second[0].2), [1, 2, 3]);
    p.on_invocation_result(&second[0].0, second[0].1, respond(InvocationResponse::default()), 0);
    assert_eq!(arguments(&invocations(&mut p)[0].2), [4, 5]);
}

#[test]
fn different_addresses_are_invoked_concurrently() {
    let mut p = partition();
    p.deliver(message("a", 1), 0);
    p.deliver(message("b", 2), 0);
    assert_eq!(invocations(&mut p).len(), 2);
}

#[test]
fn negotiation_registers_missing_states_and_resends_the_same_batch() {
    let mut p = partition();
    p.deliver(message("a", 1), 0);
    p.deliver(message("b", 9), 0);
    let first = invocations(&mut p);
    let (address, token, batch) = first[0].clone();
    assert!(batch.state.is_empty());
    p.deliver(message(&address.id, 5), 0);
    let (token2, again) = negotiate(&mut p, &address, token, vec![spec("count", None)]);
    assert_ne!(token, token2);
    assert_eq!(arguments(&again), arguments(&batch));
    assert_eq!(again.state.len(), 1);
    assert_eq!(again.state[0].state_name, "count");
    assert!(again.state[0].state_value.is_none(), "a state without value is sent unset");
}

#[test]
fn state_mutations_reach_the_next_batch_and_deletes_remove() {
    let mut p = partition();
    p.deliver(message("a", 1), 0);
    let (address, token, _) = invocations(&mut p).remove(0);
    let (token, _) = negotiate(&mut p, &address, token, vec![spec("count", None)]);
    p.deliver(message("a", 2), 0);
    p.on_invocation_result(
        &address,
        token,
        respond(InvocationResponse { state_mutations: vec![modify("count", value(7))], ..Default::default() }),
        0,
    );
    let (_, token, batch) = invocations(&mut p).remove(0);
    assert_eq!(batch.state[0].state_value, Some(value(7)));
    p.deliver(message("a", 3), 0);
    let delete = PersistedValueMutation {
        mutation_type: MutationType::Delete as i32,
        state_name: "count".into(),
        state_value: None,
    };
    p.on_invocation_result(
        &address,
        token,
        respond(InvocationResponse { state_mutations: vec![delete], ..Default::default() }),
        0,
    );
    let (_, _, batch) = invocations(&mut p).remove(0);
    assert!(batch.state[0].state_value.is_none());
}

#[test]
fn a_mutation_of_an_undeclared_state_fails_the_batch_without_applying_anything() {
    let mut p = partition();
    p.deliver(message("a", 1), 0);
    let (address, token, _) = invocations(&mut p).remove(0);
    let reply = InvocationResponse { state_mutations: vec![modify("ghost", value(1))], ..Default::default() };
    p.on_invocation_result(&address, token, respond(reply), 0);
    assert!(p.states_of(&address).is_none());
    let entries = outbox(&mut p);
    assert!(matches!(&entries[0], outbox_entry::Entry::DeadLetter(d) if d.reason.contains("`ghost`")));
}

#[test]
fn a_reply_to_a_batch_no_longer_in_flight_is_ignored() {
    let mut p = partition();
    p.deliver(message("a", 1), 0);
    let (address, token, _) = invocations(&mut p).remove(0);
    p.on_invocation_result(&address, token, respond(InvocationResponse::default()), 0);
    p.deliver(message("a", 2), 0);
    let (_, token2, _) = invocations(&mut p).remove(0);
    p.on_invocation_result(&address, token, respond(InvocationResponse::default()), 0);
    assert!(invocations(&mut p).is_empty(), "the stale reply did not complete the second batch");
    p.on_invocation_result(&address, token2, respond(InvocationResponse::default()), 0);
    assert_eq!(p.queued_messages(), 0);
}

#[test]
fn a_failed_batch_is_dead_lettered_and_the_address_moves_on() {
    let mut p = partition();
    p.deliver(message("a", 1), 0);
    let (address, token, _) = invocations(&mut p).remove(0);
    p.deliver(message("a", 2), 0);
    p.on_invocation_result(&address, token, Err("HTTP 500: boom".into()), 0);
    let next = invocations(&mut p);
    assert_eq!(arguments(&next[0].2), [2]);
    let entries = outbox(&mut p);
    match &entries[0] {
        outbox_entry::Entry::DeadLetter(letter) => {
            assert_eq!(letter.reason, "HTTP 500: boom");
            assert_eq!(letter.messages.len(), 1);
            assert_eq!(letter.messages[0].id, "m1");
            assert_eq!(letter.messages[0].target, Some(addr("a")), "a re-injected letter must find its address");
        }
        other => panic!("expected a dead letter, got {other:?}"),
    }
}

#[test]
fn dead_letters_are_counted_by_cause_and_the_load_by_type_shows_backlog_and_blocked_addresses() {
    let mut p = partition();
    p.deliver(message("a", 1), 0);
    p.deliver(message("b", 1), 0);
    let started = invocations(&mut p);
    p.deliver(message("a", 2), 0);
    p.deliver(message("a", 3), 0);
    let load = p.load_by_type();
    assert_eq!(load, [(FunctionType::new("test", "fn"), TypeLoad { backlog: 2, blocked: 2 })]);

    let (address, token, _) = started.into_iter().find(|(address, ..)| address.id == "a").expect("a in flight");
    p.on_invocation_result(&address, token, Err("HTTP 500: boom".into()), 0);
    let mut unknown = message("x", 9);
    unknown.target = Some(FunctionType::new("nobody", "here").address("x"));
    p.deliver(unknown, 0);
    p.dead_letter_input("not a record".into(), "in/s/1".into(), vec![1], 0);
    let counts = p.dead_letter_counts();
    assert_eq!(counts.get(DeadLetterCause::InvocationFailed), 1);
    assert_eq!(counts.get(DeadLetterCause::NoEndpoint), 1);
    assert_eq!(counts.get(DeadLetterCause::BadInput), 1, "an input record that never became a message counts once");
    assert_eq!(counts.get(DeadLetterCause::HopLimit), 0);
    let load = p.load_by_type();
    assert_eq!(load, [(FunctionType::new("test", "fn"), TypeLoad { backlog: 0, blocked: 2 })], "a's next batch flies");
}

/// Messages 1 to `queued` of address `a`, queued while message 0 was in flight:
/// the batch sent once message 0 is answered.
fn batch_behind_a_first_message(p: &mut Partition, queued: u32) -> (Address, u64, InvocationBatchRequest) {
    p.deliver(message("a", 0), 0);
    let (address, token, _) = invocations(p).remove(0);
    for n in 1..=queued {
        p.deliver(message("a", n), 0);
    }
    p.on_invocation_result(&address, token, respond(InvocationResponse::default()), 0);
    invocations(p).remove(0)
}

#[test]
fn a_failed_batch_is_retried_message_by_message_so_only_the_poison_one_is_dead_lettered() {
    let mut p = partition();
    let (address, token, batch) = batch_behind_a_first_message(&mut p, 3);
    assert_eq!(arguments(&batch), [1, 2, 3]);
    p.on_invocation_result(&address, token, Err("message 2 is poison".into()), 0);
    let mut applied = Vec::new();
    while let Some((_, token, batch)) = invocations(&mut p).pop() {
        assert_eq!(batch.invocations.len(), 1, "one at a time after a failure");
        let n = arguments(&batch)[0];
        let outcome = if n == 2 { Err("message 2 is poison".into()) } else { respond(InvocationResponse::default()) };
        if n != 2 {
            applied.push(n);
        }
        p.on_invocation_result(&address, token, outcome, 0);
    }
    assert_eq!(applied, [1, 3]);
    let letters = dead_letters(&mut p);
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].messages.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(), ["m2"]);
    for n in 4..=6 {
        p.deliver(message("a", n), 0);
    }
    let (_, token, batch) = invocations(&mut p).remove(0);
    assert_eq!(arguments(&batch), [4], "an idle address sends what arrives at once");
    p.on_invocation_result(&address, token, respond(InvocationResponse::default()), 0);
    assert_eq!(arguments(&invocations(&mut p)[0].2), [5, 6], "in batches again");
}

#[test]
fn once_the_poison_message_is_found_the_rest_go_in_batches_again() {
    let mut p = partition();
    let (address, token, batch) = batch_behind_a_first_message(&mut p, 7);
    assert_eq!(arguments(&batch), [1, 2, 3]);
    p.on_invocation_result(&address, token, Err("message 1 is poison".into()), 0);
    let (_, token, batch) = invocations(&mut p).remove(0);
    assert_eq!(arguments(&batch), [1], "the head alone");
    p.on_invocation_result(&address, token, Err("message 1 is poison".into()), 0);
    let (_, _, batch) = invocations(&mut p).remove(0);
    assert_eq!(arguments(&batch), [2, 3, 4], "not one at a time through the rest of the failed batch");
}

fn dead_letters(p: &mut Partition) -> Vec<DeadLetter> {
    outbox(p)
        .into_iter()
        .filter_map(|e| match e {
            outbox_entry::Entry::DeadLetter(d) => Some(d),
            _ => None,
        })
        .collect()
}

#[test]
fn an_address_whose_every_batch_fails_dead_letters_batches_whole_after_the_first_poison() {
    let mut p = partition();
    let (address, token, batch) = batch_behind_a_first_message(&mut p, 7);
    p.on_invocation_result(&address, token, Err("the function is down".into()), 0);
    let mut sent = vec![arguments(&batch)];
    while let Some((_, token, batch)) = invocations(&mut p).pop() {
        sent.push(arguments(&batch));
        p.on_invocation_result(&address, token, Err("the function is down".into()), 0);
    }
    assert_eq!(sent, [vec![1, 2, 3], vec![1], vec![2, 3, 4], vec![5, 6, 7]], "four failed calls, not one per message");
    let letters: Vec<usize> = dead_letters(&mut p).iter().map(|d| d.messages.len()).collect();
    assert_eq!(letters, [1, 3, 3]);
    assert_eq!(p.queued_messages(), 0);
}

#[test]
fn a_message_chain_past_the_hop_limit_is_dead_lettered_and_a_timer_starts_a_new_one() {
    let mut p = partition();
    p.set_bounds(Bounds { max_hops: 5, ..Bounds::default() });
    p.deliver(message("a", 0), 0);
    let mut answered = 0;
    // The function answers every message by sending another to itself: a loop.
    while let Some((address, token, _)) = invocations(&mut p).pop() {
        answered += 1;
        let again = Invocation { target: Some(address.clone()), argument: Some(value(answered)) };
        let later = if answered == 5 { vec![delayed("c", 1, 10, "")] } else { Vec::new() };
        let reply =
            InvocationResponse { outgoing_messages: vec![again], delayed_invocations: later, ..Default::default() };
        p.on_invocation_result(&address, token, respond(reply), 0);
        assert!(answered < 100, "the loop never ended");
    }
    assert_eq!(answered, 6, "the ingress message and five more hops");
    let letters = dead_letters(&mut p);
    assert_eq!(letters.len(), 1);
    assert!(letters[0].reason.contains("hop limit of 5"), "{}", letters[0].reason);
    assert_eq!(letters[0].messages[0].hops, 6);

    assert_eq!(fire(&mut p, 10), [("c".to_owned(), vec![1])], "a timer sent from deep in a chain is delivered");
    let snapshot = p.seal(true).0.into_record();
    let c = snapshot.addresses.iter().find(|e| e.address == Some(addr("c"))).expect("c holds its message");
    assert_eq!(c.mailbox[0].hops, 0, "a timer starts a chain of its own");
}

#[test]
fn what_a_partition_holds_is_counted_until_it_is_done_and_published() {
    let mut p = Partition::new(0, 2, catalog(), 1);
    assert_eq!(p.held_bytes(), 0);
    let here = (0..).map(|i| format!("k{i}")).find(|k| address::partition_of(&addr(k), 2) == 0).expect("a key here");
    p.deliver(message(&here, 1), 0);
    p.deliver(message(&here, 2), 0);
    let queued = p.held_bytes();
    assert!(queued > 0, "queued and in-flight messages");
    let (address, token, _) = invocations(&mut p).remove(0);
    let elsewhere = (0..).map(|i| format!("k{i}")).find(|k| address::partition_of(&addr(k), 2) == 1).expect("a key");
    let reply = InvocationResponse {
        outgoing_messages: vec![Invocation { target: Some(addr(&elsewhere)), argument: Some(value(7)) }],
        delayed_invocations: vec![delayed(&here, 3, 100, "")],
        ..Default::default()
    };
    p.on_invocation_result(&address, token, respond(reply), 0);
    let (_, token, _) = invocations(&mut p).remove(0);
    p.on_invocation_result(&address, token, respond(InvocationResponse::default()), 0);
    let with_outputs = p.held_bytes();
    assert!(with_outputs > 0, "a timer and a message in the outbox");
    let (sealed, _) = p.seal(false);
    assert_eq!(p.held_bytes(), with_outputs, "a sealed outbox is held until it is published");
    p.mark_published(sealed.record.epoch);
    p.fire_due_timers(100);
    let (_, token, _) = invocations(&mut p).remove(0);
    p.on_invocation_result(&address, token, respond(InvocationResponse::default()), 100);
    assert_eq!(p.held_bytes(), 0);
}

#[test]
fn at_most_max_running_batches_fly_and_the_waiting_function_types_take_turns() {
    let mut p = partition();
    p.set_bounds(Bounds { max_running: 2, ..Bounds::default() });
    for (i, id) in ["a0", "a1", "a2", "a3", "a4", "a5"].into_iter().enumerate() {
        p.deliver(message(id, i as u32), 0);
    }
    let other = FunctionType::new("test", "other").address("b0");
    p.deliver(Envelope { target: Some(other), ..message("", 9) }, 0);
    let ids = |started: &[(Address, u64, InvocationBatchRequest)]| -> Vec<String> {
        started.iter().map(|(a, _, _)| a.id.clone()).collect()
    };
    let mut flying = invocations(&mut p);
    assert_eq!(ids(&flying), ["a0", "a1"], "two slots, taken in arrival order");
    let mut order = Vec::new();
    while !flying.is_empty() {
        let (address, token, _) = flying.remove(0);
        p.on_invocation_result(&address, token, respond(InvocationResponse::default()), 0);
        let started = invocations(&mut p);
        order.extend(ids(&started));
        flying.extend(started);
        assert!(flying.len() <= 2, "never more than two in flight");
    }
    assert_eq!(
        order,
        ["a2", "b0", "a3", "a4", "a5"],
        "the other type's address does not wait behind all of the first's"
    );
    assert_eq!(p.held_bytes(), 0);
}

/// An invocation started: its address, token and arguments.
type Invoked = (Address, u64, Vec<u32>);

/// The invocations and the parked segments to read back, started since the last call.
fn split_effects(p: &mut Partition) -> (Vec<Invoked>, Vec<String>) {
    let (mut invoked, mut unparks) = (Vec::new(), Vec::new());
    for effect in p.take_effects() {
        match effect {
            Effect::Invoke { address, token, request: ToFunction { request: Some(Request::Invocation(batch)) } } => {
                invoked.push((address, token, arguments(&batch)));
            }
            Effect::Invoke { .. } => panic!("invoke effect without a batch"),
            Effect::Unpark { segment, .. } => unparks.push(segment),
        }
    }
    (invoked, unparks)
}

#[test]
fn an_address_beyond_its_cap_parks_what_follows_and_takes_it_back_in_order() {
    let mut p = partition();
    p.set_bounds(Bounds { address_max_messages: 4, ..Bounds::default() });
    p.set_lease(7);
    for n in 1..=10 {
        p.deliver(message("a", n), 0);
    }
    assert_eq!(p.queued_messages(), 4, "the cap in memory, the rest parked");
    p.deliver(message("b", 100), 0);
    let (invoked, _) = split_effects(&mut p);
    assert_eq!(
        invoked.iter().map(|(a, _, args)| (a.id.as_str(), args.clone())).collect::<Vec<_>>(),
        [("a", vec![1]), ("b", vec![100])]
    );
    let held = p.held_bytes();
    let (sealed, _) = p.seal(true);
    p.mark_published(sealed.record.epoch); // committed: its segments may be read back
    assert!(p.held_bytes() < held, "parked messages leave memory with the seal");
    assert_eq!(sealed.parked.len(), 1);
    let (segment, bytes) = sealed.parked[0].clone();
    assert!(segment.starts_with("p0.l7.e1."), "{segment}");
    let record = sealed.into_record();
    let entry = record.addresses.iter().find(|e| e.address == Some(addr("a"))).expect("a's entry");
    assert_eq!(entry.parked, std::slice::from_ref(&segment));

    // A restored partition knows what it parked.
    let restored = Partition::restore(0, 1, catalog(), vec![record]).expect("the history replays");
    let again = restored.states_of(&addr("a"));
    assert!(again.is_some());
    let mut restored = restored;
    let snapshot = restored.seal(true).0.into_record();
    let entry = snapshot.addresses.iter().find(|e| e.address == Some(addr("a"))).expect("a's entry");
    assert_eq!(entry.parked, std::slice::from_ref(&segment));

    p.on_invocation_result(&addr("b"), invoked[1].1, respond(InvocationResponse::default()), 0);
    p.deliver(message("a", 11), 0); // behind what is parked
    let (address, mut token) = (addr("a"), invoked[0].1);
    let mut delivered = vec![1];
    let parked = ParkedMessages::decode(bytes.as_slice()).expect("a segment").messages;
    let mut read_back = Some(parked);
    loop {
        p.on_invocation_result(&address, token, respond(InvocationResponse::default()), 0);
        let (invoked, unparks) = split_effects(&mut p);
        if let Some(name) = unparks.first() {
            assert_eq!(*name, segment);
            let messages = read_back.take().expect("read back once");
            p.on_unparked(&address, name, Ok(messages), 0);
            assert!(invoked.is_empty(), "the mailbox had drained");
            let (invoked, unparks) = split_effects(&mut p);
            assert!(unparks.is_empty());
            delivered.extend(&invoked[0].2);
            token = invoked[0].1;
            continue;
        }
        let Some((_, next, args)) = invoked.into_iter().next() else { break };
        delivered.extend(args);
        token = next;
    }
    assert_eq!(delivered, (1..=11).collect::<Vec<_>>(), "every message once, in arrival order");
    let (sealed, _) = p.seal(false);
    assert_eq!(sealed.released, [segment], "deleted once this epoch commits");
    assert_eq!(p.held_bytes(), 0);
}

/// A message of the flooding type, to an address of its own.
fn flood(n: u32) -> Envelope {
    Envelope { target: Some(FunctionType::new("test", "flood").address(format!("f{n}"))), ..message("", n) }
}

fn other(n: u32) -> Envelope {
    Envelope { target: Some(FunctionType::new("test", "other").address("o")), ..message("", n) }
}

/// A partition short of room, where a type may hold two messages and one
/// batch runs at a time, given `other(100)` and then five of the flood.
fn short_of_room_with_a_flood(caught_up: bool) -> (Partition, spill::Room) {
    let mut p = partition();
    // Judged by the messages alone: the room below is two messages, far less than what a batch in flight holds.
    p.set_bounds(Bounds { max_running: 1, batch_overhead: 0, ..Bounds::default() });
    p.set_lease(3);
    let room =
        spill::Room { short: true, type_bytes: 2 * in_memory(1, Envelope { target: None, ..flood(0) }.encoded_len()) };
    p.set_room(room, 0);
    p.set_inputs_caught_up(caught_up, 0);
    p.deliver(other(100), 0);
    for n in 0..5 {
        p.deliver(flood(n), 0);
    }
    (p, room)
}

/// What the driver holds for a batch in flight, whatever its messages' size,
/// counts for the batch's type: a type whose many small batches hold the room
/// floods the partition, and spills what comes next.
#[test]
fn a_type_whose_batches_in_flight_hold_the_room_floods_though_its_messages_are_small() {
    let mut p = partition();
    let batch_overhead = 10_000;
    p.set_bounds(Bounds { batch_overhead, ..Bounds::default() });
    p.set_lease(3);
    p.set_room(spill::Room { short: true, type_bytes: 3 * batch_overhead }, 0);
    p.deliver(other(100), 0);
    for n in 0..3 {
        assert!(!p.holds_flood(), "{n} of the type's batches in flight");
        p.deliver(flood(n), 0);
    }
    assert!(p.holds_flood(), "three batches in flight, of a small message each");
    p.deliver(flood(3), 0);
    assert_eq!(p.queued_messages(), 4, "the fourth of the type spills");
    let (invoked, _) = split_effects(&mut p);
    assert_eq!(invoked.len(), 4, "the other type's batch and three of the flood's");
    for (address, token, _) in invoked.into_iter().filter(|(address, ..)| address.r#type == "flood") {
        p.on_invocation_result(&address, token, respond(InvocationResponse::default()), 0);
    }
    assert!(!p.holds_flood(), "its batches answered, what they held is given back");
}

#[test]
fn a_flooding_type_spills_while_the_partition_is_short_and_the_other_types_go_on() {
    let (mut p, room) = short_of_room_with_a_flood(true);
    p.deliver(other(101), 0);
    assert_eq!(p.queued_messages(), 4, "two of each type; the rest of the flood waits in its spill");
    let (invoked, _) = split_effects(&mut p);
    assert_eq!(invoked.iter().map(|i| i.2.clone()).collect::<Vec<_>>(), [vec![100]], "one slot");
    let loads = p.load_by_type();
    assert!(loads.iter().all(|(t, _)| t.namespace != spill::SPILL_NAMESPACE), "{loads:?}");
    let flood_load = loads.iter().find(|(t, _)| t.name == "flood").map(|(_, load)| *load);
    assert_eq!(flood_load, Some(TypeLoad { backlog: 5, blocked: 0 }), "the spill is its type's backlog too");
    let held = p.held_bytes();
    let (sealed, _) = p.seal(true);
    assert!(p.held_bytes() < held, "the spill leaves memory with the seal");
    assert_eq!(sealed.parked.len(), 1, "one segment for the type's spill");
    let (segment, bytes) = sealed.parked[0].clone();
    let record = sealed.into_record();
    let spill = spill::spill_address(&FunctionType::new("test", "flood"));
    let entry = record.addresses.iter().find(|e| e.address.as_ref() == Some(&spill)).expect("the spill's entry");
    assert_eq!(entry.parked, std::slice::from_ref(&segment));

    // Arrivals of the type while it spills go behind it.
    p.deliver(flood(5), 0);
    let mut delivered = Vec::new();
    let mut flying = invoked;
    let mut unparked = false;
    loop {
        let Some((address, token, args)) = flying.pop() else {
            if !unparked {
                p.mark_published(record.epoch);
                let (_, unparks) = split_effects(&mut p);
                assert_eq!(unparks, std::slice::from_ref(&segment), "drained and committed: read back");
                let messages = ParkedMessages::decode(bytes.as_slice()).expect("a segment").messages;
                assert!(messages.iter().all(|m| m.target.is_some()), "spilled messages keep their targets");
                p.on_unparked(&spill, &segment, Ok(messages), 0);
                unparked = true;
            } else {
                // Room again: what arrived since the seal follows.
                p.set_room(spill::Room { short: false, ..room }, 0);
            }
            let (invoked, unparks) = split_effects(&mut p);
            assert!(unparks.is_empty());
            if invoked.is_empty() {
                break;
            }
            flying = invoked;
            continue;
        };
        delivered.extend(args);
        p.on_invocation_result(&address, token, respond(InvocationResponse::default()), 0);
        let (invoked, unparks) = split_effects(&mut p);
        assert!(unparks.is_empty(), "not read back before its epoch is committed");
        flying.extend(invoked);
    }
    assert_eq!(delivered, [100, 0, 101, 1, 2, 3, 4, 5], "every message once; the spill in arrival order");
    p.deliver(flood(6), 0);
    assert_eq!(p.queued_messages(), 1, "the spill is over: the type takes messages in again");
    let (sealed, _) = p.seal(false);
    assert_eq!(sealed.released, [segment], "deleted once this epoch commits");
}

#[test]
fn a_spill_is_read_back_only_once_the_inputs_are_caught_up() {
    let (mut p, room) = short_of_room_with_a_flood(false);
    let (sealed, _) = p.seal(true);
    let segment = sealed.parked[0].0.clone();
    p.mark_published(sealed.into_record().epoch);
    // Every message in memory answered: the flood has drained, its spill is committed.
    let mut delivered = Vec::new();
    let (mut flying, _) = split_effects(&mut p);
    while let Some((address, token, args)) = flying.pop() {
        delivered.extend(args);
        p.on_invocation_result(&address, token, respond(InvocationResponse::default()), 0);
        let (invoked, unparks) = split_effects(&mut p);
        assert!(unparks.is_empty(), "the inputs are behind: the spill waits");
        flying.extend(invoked);
    }
    assert_eq!(delivered, [100, 0, 1], "what was taken into memory");
    p.set_room(spill::Room { short: false, ..room }, 0);
    let (_, unparks) = split_effects(&mut p);
    assert!(unparks.is_empty(), "room again, but the inputs are still behind");
    p.set_inputs_caught_up(true, 0);
    let (_, unparks) = split_effects(&mut p);
    assert_eq!(unparks, [segment], "caught up: read back");
}

#[test]
fn a_parked_segment_that_cannot_be_read_back_is_a_dead_letter_and_the_address_goes_on() {
    let mut p = partition();
    p.set_bounds(Bounds { address_max_messages: 1, ..Bounds::default() });
    for n in 1..=3 {
        p.deliver(message("a", n), 0);
    }
    let (invoked, _) = split_effects(&mut p);
    let (sealed, _) = p.seal(false);
    p.deliver(message("a", 4), 0);
    p.on_invocation_result(&addr("a"), invoked[0].1, respond(InvocationResponse::default()), 0);
    assert_eq!(split_effects(&mut p).1, Vec::<String>::new(), "not read back before its epoch is committed");
    p.mark_published(sealed.record.epoch);
    let (_, unparks) = split_effects(&mut p);
    p.on_unparked(&addr("a"), &unparks[0], Err("object parked-00000/x.pb is missing".into()), 0);
    let (invoked, _) = split_effects(&mut p);
    assert_eq!(invoked[0].2, [4], "what was parked after the lost segment still comes");
    let letters = dead_letters(&mut p);
    assert!(letters[0].reason.contains("could not be read back") && letters[0].reason.contains("missing"));
}

#[test]
fn a_message_for_an_unknown_function_type_is_dead_lettered() {
    let mut p = partition();
    let mut m = message("a", 1);
    m.target = Some(FunctionType::new("nobody", "here").address("x"));
    p.deliver(m, 0);
    assert!(invocations(&mut p).is_empty());
    let entries = outbox(&mut p);
    assert!(
        matches!(&entries[0], outbox_entry::Entry::DeadLetter(d) if d.reason.contains("no endpoint serves function type nobody/here"))
    );
}

#[test]
fn queued_messages_of_a_type_that_lost_its_endpoint_are_dead_lettered_on_resume() {
    let mut p = partition();
    p.deliver(message("a", 1), 0);
    p.deliver(message("a", 2), 0);
    let history = vec![p.seal(true).0.into_record()];
    let mut restored = Partition::restore(0, 1, Arc::new(NoEndpoints), history).expect("the history replays");
    restored.resume(0);
    assert!(invocations(&mut restored).is_empty());
    assert_eq!(restored.queued_messages(), 0, "nothing stays stuck in the mailbox");
    let entries = outbox(&mut restored);
    assert!(
        matches!(&entries[0], outbox_entry::Entry::DeadLetter(d) if d.messages.len() == 2 && d.reason.contains("no endpoint serves"))
    );
}

#[test]
fn a_message_larger_than_the_payload_limit_is_dead_lettered_and_the_rest_delivered() {
    let mut p = Partition::new(0, 1, Arc::new(TestCatalog { max_messages: 10, max_bytes: 200 }), 1);
    let mut big = message("a", 1);
    big.argument = Some(TypedValue { typename: "test/n".into(), has_value: true, value: vec![0; 500] });
    p.deliver(big, 0);
    p.deliver(message("a", 2), 0);
    let invoked = invocations(&mut p);
    assert_eq!(arguments(&invoked[0].2), [2]);
    let entries = outbox(&mut p);
    assert!(
        matches!(&entries[0], outbox_entry::Entry::DeadLetter(d) if d.reason.contains("exceeds the payload limit of 200 bytes"))
    );
}

#[test]
fn after_write_state_expires_before_the_next_invocation() {
    let mut p = partition();
    p.deliver(message("a", 1), 0);
    let (address, token, _) = invocations(&mut p).remove(0);
    let ttl = ExpirationSpec { mode: ExpireMode::AfterWrite as i32, expire_after_millis: 1_000 };
    let (token, _) = negotiate(&mut p, &address, token, vec![spec("s", Some(ttl))]);
    p.on_invocation_result(
        &address,
        token,
        respond(InvocationResponse { state_mutations: vec![modify("s", value(1))], ..Default::default() }),
        0,
    );
    p.deliver(message("a", 2), 999);
    let (_, token, batch) = invocations(&mut p).remove(0);
    assert_eq!(batch.state[0].state_value, Some(value(1)), "still alive at 999 ms");
    p.on_invocation_result(&address, token, respond(InvocationResponse::default()), 999);
    p.deliver(message("a", 3), 1_000);
    let (_, _, batch) = invocations(&mut p).remove(0);
    assert!(batch.state[0].state_value.is_none(), "expired 1000 ms after the write, reads do not extend it");
}

#[test]
fn after_invoke_state_lives_while_invoked_and_is_swept_when_idle() {
    let mut p = partition();
    p.deliver(message("a", 1), 0);
    let (address, token, _) = invocations(&mut p).remove(0);
    let ttl = ExpirationSpec { mode: ExpireMode::AfterInvoke as i32, expire_after_millis: 1_000 };
    let (token, _) = negotiate(&mut p, &address, token, vec![spec("s", Some(ttl))]);
    p.on_invocation_result(
        &address,
        token,
        respond(InvocationResponse { state_mutations: vec![modify("s", value(1))], ..Default::default() }),
        0,
    );
    p.deliver(message("a", 2), 900);
    let (_, token, _) = invocations(&mut p).remove(0);
    p.on_invocation_result(&address, token, respond(InvocationResponse::default()), 900);
    p.expire_states(1_800);
    assert!(p.states_of(&address).is_some_and(|s| !s.is_empty()), "the invocation at 900 extended it");
    p.expire_states(1_900);
    assert!(p.states_of(&address).is_none(), "swept 1000 ms after the last invocation");
}

fn delayed(target: &str, n: u32, delay: i64, token: &str) -> DelayedInvocation {
    DelayedInvocation {
        delay_in_ms: delay,
        target: Some(addr(target)),
        argument: Some(value(n)),
        cancellation_token: token.into(),
        ..Default::default()
    }
}

#[test]
fn delayed_messages_fire_at_their_time_and_cancelled_ones_never() {
    let mut p = partition();
    p.deliver(message("a", 1), 0);
    let (address, token, _) = invocations(&mut p).remove(0);
    let reply = InvocationResponse {
        delayed_invocations: vec![delayed("b", 10, 100, "t1"), delayed("c", 20, 100, "t2")],
        ..Default::default()
    };
    p.on_invocation_result(&address, token, respond(reply), 0);
    assert_eq!(p.next_timer_at(), Some(100));
    p.deliver(message("a", 2), 50);
    let (_, token, _) = invocations(&mut p).remove(0);
    let cancel =
        DelayedInvocation { is_cancellation_request: true, cancellation_token: "t2".into(), ..Default::default() };
    p.on_invocation_result(
        &address,
        token,
        respond(InvocationResponse { delayed_invocations: vec![cancel], ..Default::default() }),
        50,
    );
    p.fire_due_timers(99);
    assert!(invocations(&mut p).is_empty(), "not due yet");
    p.fire_due_timers(100);
    let fired = invocations(&mut p);
    assert_eq!(fired.len(), 1, "only the uncancelled message fires");
    assert_eq!(fired[0].0, addr("b"));
    assert_eq!(arguments(&fired[0].2), [10]);
    assert_eq!(fired[0].2.invocations[0].caller, Some(addr("a")));
    assert_eq!(p.next_timer_at(), None);
}

/// Asks `sender` to schedule `delayed` (it is answered with them).
fn schedule(p: &mut Partition, sender: &str, delayed: Vec<DelayedInvocation>, now_ms: i64) {
    p.deliver(message(sender, 0), now_ms);
    let (address, token, _) = invocations(p).remove(0);
    let reply = InvocationResponse { delayed_invocations: delayed, ..Default::default() };
    p.on_invocation_result(&address, token, respond(reply), now_ms);
}

/// Fires what is due at `now_ms`: the arguments each target was sent.
fn fire(p: &mut Partition, now_ms: i64) -> Vec<(String, Vec<u32>)> {
    p.fire_due_timers(now_ms);
    invocations(p).iter().map(|(a, _, batch)| (a.id.clone(), arguments(batch))).collect()
}

#[test]
fn timers_are_recorded_as_changes_and_come_back_from_the_history() {
    let mut p = partition();
    schedule(&mut p, "a", vec![delayed("b", 1, 100, ""), delayed("c", 2, 200, "t"), delayed("d", 3, 300, "")], 0);
    let snapshot = p.seal(true).0.into_record();
    assert!(snapshot.timers_as_changes);
    assert_eq!(snapshot.timers.len(), 3, "a snapshot lists every pending timer");
    assert!(snapshot.addresses.iter().all(|e| e.timers.is_empty()), "no sender lists its timers");

    assert_eq!(fire(&mut p, 100), [("b".to_owned(), vec![1])]);
    let cancel =
        DelayedInvocation { is_cancellation_request: true, cancellation_token: "t".into(), ..Default::default() };
    schedule(&mut p, "a", vec![cancel, delayed("e", 4, 400, "")], 150);
    let delta = p.seal(false).0.into_record();
    let added: Vec<u64> = delta.timers.iter().map(|t| t.timer_id).collect();
    assert_eq!(added, [3], "only the timer scheduled in the epoch");
    assert_eq!(delta.timers_removed, [0, 1], "the fired one and the cancelled one, by id");

    let mut restored = Partition::restore(0, 1, catalog(), vec![snapshot, delta]).expect("the history replays");
    assert_eq!(restored.pending_timers(), 2);
    assert_eq!(fire(&mut restored, 1_000), [("d".to_owned(), vec![3]), ("e".to_owned(), vec![4])]);
}

#[test]
fn a_history_whose_senders_list_their_timers_still_restores() {
    // As releases before `timers_as_changes` wrote it: each entry of a sender lists all of its pending timers.
    let timer = |id: u64, target: &str, n: u32, at: i64, token: &str| DelayedMessage {
        timer_id: id,
        fire_at_ms: at,
        cancellation_token: token.into(),
        envelope: Some(Envelope { caller: Some(addr("a")), ..message(target, n) }),
    };
    let entry = |sender: &str, timers: Vec<DelayedMessage>| AddressEntry {
        address: Some(addr(sender)),
        states: vec![StoredState { name: "s".into(), ..Default::default() }],
        timers,
        ..Default::default()
    };
    let snapshot = EpochRecord {
        epoch: 1,
        snapshot: true,
        addresses: vec![entry("a", vec![timer(0, "b", 1, 100, ""), timer(1, "c", 2, 200, "t")])],
        next_timer_id: 2,
        ..Default::default()
    };
    let delta = EpochRecord {
        epoch: 2,
        addresses: vec![entry("a", vec![timer(1, "c", 2, 200, "t")]), entry("x", vec![timer(2, "d", 3, 300, "")])],
        next_timer_id: 3,
        ..Default::default()
    };
    let mut restored = Partition::restore(0, 1, catalog(), vec![snapshot, delta]).expect("the history replays");
    assert_eq!(restored.pending_timers(), 2, "timer 0 had fired: a's second entry no longer lists it");
    let cancel =
        DelayedInvocation { is_cancellation_request: true, cancellation_token: "t".into(), ..Default::default() };
    schedule(&mut restored, "a", vec![cancel], 10);
    assert_eq!(fire(&mut restored, 1_000), [("d".to_owned(), vec![3])], "a restored token still cancels");
    let next = restored.seal(true).0.into_record();
    assert!(next.timers_as_changes && next.addresses.iter().all(|e| e.timers.is_empty()));
}

#[test]
fn egress_records_go_to_the_outbox_and_bad_ones_are_dead_lettered() {
    let mut p = partition();
    p.deliver(message("a", 1), 0);
    let (address, token, _) = invocations(&mut p).remove(0);
    let record = KinesisEgressRecord {
        partition_key: "k".into(),
        value_bytes: b"v".to_vec(),
        stream: "out".into(),
        explicit_hash_key: String::new(),
    };
    let good = EgressMessage {
        egress_namespace: "test".into(),
        egress_type: "out".into(),
        argument: Some(TypedValue {
            typename: typenames::KINESIS_EGRESS_RECORD.into(),
            has_value: true,
            value: record.encode_to_vec(),
        }),
    };
    let unknown = EgressMessage { egress_namespace: "test".into(), egress_type: "nope".into(), ..good.clone() };
    let with_record = |record: KinesisEgressRecord| EgressMessage {
        argument: Some(TypedValue {
            typename: typenames::KINESIS_EGRESS_RECORD.into(),
            has_value: true,
            value: record.encode_to_vec(),
        }),
        ..good.clone()
    };
    let bad_stream = with_record(KinesisEgressRecord { stream: "no spaces allowed".into(), ..record.clone() });
    let no_key = with_record(KinesisEgressRecord { partition_key: String::new(), ..record.clone() });
    let internal = with_record(KinesisEgressRecord { stream: "internal".into(), ..record.clone() });
    let bad_hash = with_record(KinesisEgressRecord { explicit_hash_key: "-1".into(), ..record.clone() });
    let reply = InvocationResponse {
        outgoing_egresses: vec![good, unknown, bad_stream, no_key, internal, bad_hash],
        ..Default::default()
    };
    p.on_invocation_result(&address, token, respond(reply), 0);
    let entries = outbox(&mut p);
    assert!(
        matches!(&entries[0], outbox_entry::Entry::Egress(e) if e.stream == "out" && e.data == b"v" && e.partition_key == "k")
    );
    assert!(
        matches!(&entries[1], outbox_entry::Entry::DeadLetter(d) if d.reason.contains("egress test/nope is not declared"))
    );
    assert!(
        matches!(&entries[2], outbox_entry::Entry::DeadLetter(d) if d.reason.contains("invalid stream name `no spaces allowed`"))
    );
    assert!(
        matches!(&entries[3], outbox_entry::Entry::DeadLetter(d) if d.reason.contains("partition key must have 1 to 256 characters"))
    );
    assert!(
        matches!(&entries[4], outbox_entry::Entry::DeadLetter(d) if d.reason.contains("belongs to the runtime itself"))
    );
    assert!(
        matches!(&entries[5], outbox_entry::Entry::DeadLetter(d) if d.reason.contains("explicit hash key `-1` is not a decimal number"))
    );
}

#[test]
fn messages_for_other_partitions_go_through_the_exchange_and_duplicates_are_dropped() {
    let mut sender = Partition::new(0, 2, catalog(), 1);
    let mut receiver = Partition::new(1, 2, catalog(), 1);
    let remote = (0..100)
        .map(|i| addr(&format!("x{i}")))
        .find(|a| address::partition_of(a, 2) == 1)
        .expect("some address in partition 1");
    let local = (0..100)
        .map(|i| addr(&format!("y{i}")))
        .find(|a| address::partition_of(a, 2) == 0)
        .expect("some address in partition 0");
    let mut m = message("?", 1);
    m.target = Some(local.clone());
    sender.deliver(m, 0);
    let (address, token, _) = invocations(&mut sender).remove(0);
    let reply = InvocationResponse {
        outgoing_messages: vec![Invocation { target: Some(remote.clone()), argument: Some(value(5)) }],
        ..Default::default()
    };
    sender.on_invocation_result(&address, token, respond(reply), 0);
    let (record, outbox) = sender.seal(false);
    let outbox = outbox.to_record();
    let envelope = match &outbox.entries[0].entry {
        Some(outbox_entry::Entry::Exchange(e)) => e.clone(),
        other => panic!("expected an exchange entry, got {other:?}"),
    };
    assert_eq!(envelope.caller, Some(local));
    let batch = ExchangeBatch {
        source_partition: 0,
        epoch: record.record.epoch,
        messages: vec![ExchangeMessage { seq: outbox.entries[0].seq, envelope: Some(envelope) }],
        incarnation: 0,
    };
    receiver.accept_exchange(batch.clone(), 0);
    receiver.accept_exchange(batch, 0);
    let received = invocations(&mut receiver);
    assert_eq!(received.len(), 1);
    assert_eq!(arguments(&received[0].2), [5]);
    assert_eq!(receiver.queued_messages(), 1, "the duplicate was dropped");
}

/// A source partition whose history was lost and began again numbers its
/// epochs from 1 again: under a new incarnation its messages are new, not
/// taken for duplicates of the old history's, whose marks survive a restore.
#[test]
fn a_source_whose_history_began_again_is_not_taken_for_its_old_self() {
    let mut receiver = Partition::new(1, 2, catalog(), 1);
    let target = (0..100)
        .map(|i| addr(&format!("x{i}")))
        .find(|a| address::partition_of(a, 2) == 1)
        .expect("an address in partition 1");
    let batch = |incarnation: u64, epoch: u64, n: u32| {
        let mut m = message("?", n);
        m.target = Some(target.clone());
        ExchangeBatch {
            source_partition: 0,
            epoch,
            incarnation,
            messages: vec![ExchangeMessage { seq: 0, envelope: Some(m) }],
        }
    };
    receiver.accept_exchange(batch(7, 50, 1), 0);
    let mut restored =
        Partition::restore(1, 2, catalog(), vec![receiver.seal(true).0.into_record()]).expect("restores");
    restored.accept_exchange(batch(7, 3, 2), 0); // the old history's, already applied
    restored.accept_exchange(batch(8, 1, 3), 0); // the new history's first
    restored.accept_exchange(batch(8, 1, 3), 0); // and its duplicate
    restored.resume(0);
    let sent: Vec<u32> = invocations(&mut restored).iter().flat_map(|(_, _, request)| arguments(request)).collect();
    assert_eq!(sent, [1, 3], "the old history's duplicate dropped, the new history's message taken once");
}

#[test]
fn restore_brings_back_state_mailboxes_and_timers_and_resends_in_flight_batches() {
    let mut p = partition();
    p.deliver(message("a", 1), 0);
    let (address, token, _) = invocations(&mut p).remove(0);
    let (token, _) = negotiate(&mut p, &address, token, vec![spec("count", None)]);
    let reply = InvocationResponse {
        state_mutations: vec![modify("count", value(3))],
        delayed_invocations: vec![delayed("b", 9, 500, "t")],
        ..Default::default()
    };
    p.deliver(message("a", 2), 0);
    p.on_invocation_result(&address, token, respond(reply), 0);
    p.advance_position("in", "shard-0000", "42");
    let in_flight = invocations(&mut p).remove(0).2;
    let mut history: Vec<EpochRecord> = vec![p.seal(true).0.into_record()];
    p.deliver(message("a", 3), 0);
    history.push(p.seal(false).0.into_record());

    let mut restored = Partition::restore(0, 1, catalog(), history).expect("the history replays");
    assert_eq!(restored.epoch(), 3);
    assert_eq!(restored.position("in", "shard-0000"), Some("42"));
    assert_eq!(restored.next_timer_at(), Some(500));
    restored.resume(0);
    let resent = invocations(&mut restored);
    assert_eq!(resent.len(), 1);
    assert_eq!(
        arguments(&resent[0].2),
        [2, 3],
        "the in-flight message is re-sent first, with the one queued behind it"
    );
    assert_eq!(resent[0].2.state, in_flight.state);
}

#[test]
fn a_delta_carries_only_the_messages_that_arrived_and_how_many_left() {
    let mut p = partition();
    for n in 1..=5 {
        p.deliver(message("a", n), 0);
    }
    let (address, token, _) = invocations(&mut p).remove(0);
    let mut history = vec![p.seal(true).0.into_record()];
    assert_eq!(history[0].addresses[0].mailbox.len(), 5, "a snapshot holds the whole mailbox");

    p.on_invocation_result(&address, token, respond(InvocationResponse::default()), 0);
    p.deliver(message("a", 6), 0);
    let delta = p.seal(false).0.into_record();
    let entry = &delta.addresses[0];
    assert!(entry.mailbox_appends);
    assert_eq!(entry.mailbox_consumed, 1, "the first message, sent alone, left the head");
    assert_eq!(entry.mailbox.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(), ["m6"], "only the new message");
    history.push(delta);

    let mut restored = Partition::restore(0, 1, catalog(), history.clone()).expect("the history replays");
    assert_eq!(restored.queued_messages(), 5);
    restored.resume(0);
    assert_eq!(arguments(&invocations(&mut restored)[0].2), [2, 3, 4], "the batch in flight at the seal comes first");

    // A delta that takes more messages than the chain holds is refused, not half-applied.
    history[1].addresses[0].mailbox_consumed = 9;
    let refused = Partition::restore(0, 1, catalog(), history).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        refused.contains("epoch 2") && refused.contains("test/fn/a") && refused.contains("9 messages"),
        "{refused}"
    );
}

#[test]
fn an_address_emptied_and_filled_again_within_an_epoch_is_recorded_whole() {
    let mut p = partition();
    p.deliver(message("a", 1), 0);
    let (address, token, _) = invocations(&mut p).remove(0);
    let mut history = vec![p.seal(true).0.into_record()];
    // The only message is answered (the record empties and goes), then a new one comes.
    p.on_invocation_result(&address, token, respond(InvocationResponse::default()), 0);
    p.deliver(message("a", 2), 0);
    history.push(p.seal(false).0.into_record());
    assert!(!history[1].addresses[0].mailbox_appends, "the new record replaces the old one");
    let mut restored = Partition::restore(0, 1, catalog(), history).expect("the history replays");
    restored.resume(0);
    assert_eq!(arguments(&invocations(&mut restored)[0].2), [2]);
}

#[test]
fn publishing_a_non_empty_outbox_is_recorded_by_the_next_commit_and_an_empty_one_is_not() {
    let mut p = partition();
    p.advance_position("in", "s", "1");
    let (_, empty) = p.seal(false);
    p.mark_published(empty.epoch);
    assert!(!p.has_changes(), "an empty outbox needs no commit of its publication");
    let mut m = message("a", 1);
    m.target = Some(FunctionType::new("nobody", "here").address("x"));
    p.deliver(m, 0);
    let (_, full) = p.seal(false);
    p.mark_published(full.epoch);
    assert!(p.has_changes());
    assert_eq!(p.seal(false).0.into_record().published_through, full.epoch);
}

#[test]
fn a_sealed_epoch_encodes_as_the_whole_record_with_its_outboxes() {
    let mut p = partition();
    let mut m = message("a", 1);
    m.target = Some(FunctionType::new("nobody", "here").address("x"));
    p.deliver(m, 0);
    p.deliver(message("b", 2), 0);
    p.seal(false);
    let (sealed, _) = p.seal(true);
    let decoded = EpochRecord::decode(sealed.clone().encode().as_slice()).expect("decodes");
    let whole = sealed.into_record();
    assert_eq!(whole.outboxes.len(), 2, "the unpublished dead letter's epoch and this one");
    assert_eq!(decoded, whole);
}

#[test]
fn snapshot_keeps_unpublished_outboxes_and_restore_returns_them() {
    let mut p = partition();
    let mut m = message("a", 1);
    m.target = Some(FunctionType::new("nobody", "here").address("x"));
    p.deliver(m, 0);
    let first = p.seal(false).0.into_record();
    let snapshot = p.seal(true).0.into_record();
    assert_eq!(snapshot.outboxes.len(), 2, "the dead letter of epoch 1 is not published yet");
    let restored =
        Partition::restore(0, 1, catalog(), vec![first.clone(), snapshot.clone()]).expect("the history replays");
    assert_eq!(restored.unpublished().map(|o| o.epoch).collect::<Vec<_>>(), [1, 2]);
    p.mark_published(1);
    let later = p.seal(false).0.into_record();
    let restored = Partition::restore(0, 1, catalog(), vec![snapshot, later]).expect("the history replays");
    assert_eq!(restored.unpublished().map(|o| o.epoch).collect::<Vec<_>>(), [2, 3]);
}

// ---- property: exactly once, in order, under random interleavings and crashes ----

#[derive(Clone, Debug)]
enum Op {
    /// The next input record arrives.
    Deliver,
    /// The function answers one of the batches in flight (chosen by index).
    Reply(usize),
    /// An epoch is sealed and committed.
    Commit,
    /// The process dies: everything since the last commit is lost, inputs are re-read.
    Crash,
    /// Time passes: delayed messages come due.
    Tick(i64),
    /// The partition is short of room (its type spills what arrives), or no longer.
    Short(bool),
    /// The partition's inputs are caught up (spills may be read back), or behind.
    CaughtUp(bool),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::Deliver),
        4 => (0usize..8).prop_map(Op::Reply),
        1 => Just(Op::Commit),
        1 => Just(Op::Crash),
        1 => (1i64..50).prop_map(Op::Tick),
        1 => any::<bool>().prop_map(Op::Short),
        1 => any::<bool>().prop_map(Op::CaughtUp),
    ]
}

/// The function under test: appends every argument it sees to its `seen` state,
/// and for odd values also sends itself `value + 1_000_000` after a delay.
fn model_function(batch: &InvocationBatchRequest) -> FromFunction {
    let Some(seen) = batch.state.iter().find(|s| s.state_name == "seen") else {
        return FromFunction {
            response: Some(Response::IncompleteInvocationContext(IncompleteInvocationContext {
                missing_values: vec![spec("seen", None)],
            })),
        };
    };
    let mut bytes = seen.state_value.as_ref().map(|v| v.value.clone()).unwrap_or_default();
    let mut delayed_invocations = Vec::new();
    for n in arguments(batch) {
        bytes.extend_from_slice(&n.to_le_bytes());
        if n % 2 == 1 && n < 1_000_000 {
            delayed_invocations.push(DelayedInvocation {
                delay_in_ms: 10,
                target: batch.target.clone(),
                argument: Some(value(n + 1_000_000)),
                ..Default::default()
            });
        }
    }
    let state = TypedValue { typename: "test/n".into(), has_value: true, value: bytes };
    FromFunction {
        response: Some(Response::InvocationResult(InvocationResponse {
            state_mutations: vec![modify("seen", state)],
            delayed_invocations,
            ..Default::default()
        })),
    }
}

fn seen(p: &Partition, address: &Address) -> Vec<u32> {
    p.states_of(address)
        .and_then(|states| states.into_iter().find(|s| s.name == "seen"))
        .and_then(|s| s.value)
        .map(|v| v.value.chunks(4).map(|c| u32::from_le_bytes(c.try_into().unwrap_or_default())).collect())
        .unwrap_or_default()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn every_message_is_applied_exactly_once_and_in_arrival_order(
        targets in prop::collection::vec(0usize..4, 1..40),
        ops in prop::collection::vec(op(), 0..200),
    ) {
        // Input records: (address, value) with values increasing per input index.
        // Two function types, so that one may spill while the other goes on.
        let address = |t: usize| FunctionType::new("test", if t.is_multiple_of(2) { "fn" } else { "g" }).address(format!("k{t}"));
        let inputs: Vec<(Address, u32)> = targets.iter().enumerate().map(|(i, t)| (address(*t), i as u32 * 2 + 1)).collect();
        let mut committed: Vec<EpochRecord> = Vec::new();
        // A small cap per address, so that messages are parked and read back too,
        // few slots, so that addresses wait for one too, and spells of a short
        // partition, so that the type spills too.
        let bounds = Bounds { address_max_messages: 2, max_running: 2, ..Bounds::default() };
        let mut p = partition();
        p.set_bounds(bounds);
        let mut pending: Vec<(Address, u64, InvocationBatchRequest)> = Vec::new();
        // Parked segments written by committed epochs, and those asked for.
        let mut store: HashMap<String, Vec<u8>> = HashMap::new();
        let mut unparks: Vec<(Address, String)> = Vec::new();
        let mut now = 0i64;

        let next_input = |p: &Partition| p.position("in", "s").map_or(0, |s| s.parse::<usize>().unwrap_or(0) + 1);
        type Unparks = Vec<(Address, String)>;
        let mut run = |op: &Op, p: &mut Partition, pending: &mut Vec<(Address, u64, InvocationBatchRequest)>, unparks: &mut Unparks, committed: &mut Vec<EpochRecord>, now: &mut i64| {
            match op {
                Op::Deliver => {
                    let i = next_input(p);
                    if let Some((address, n)) = inputs.get(i) {
                        let envelope = Envelope { target: Some(address.clone()), caller: None, argument: Some(value(*n)), id: format!("in/{i}"), hops: 0, ingress: None };
                        p.deliver(envelope, *now);
                        p.advance_position("in", "s", &i.to_string());
                    }
                }
                Op::Reply(k) => {
                    if *k % 3 == 0 && !unparks.is_empty() {
                        let (address, segment) = unparks.remove(0);
                        let messages = store.get(&segment).map(|bytes| ParkedMessages::decode(bytes.as_slice()).expect("a segment").messages);
                        p.on_unparked(&address, &segment, messages.ok_or_else(|| "missing".to_owned()), *now);
                    } else if !pending.is_empty() {
                        let (address, token, batch) = pending.remove(k % pending.len());
                        p.on_invocation_result(&address, token, Ok(model_function(&batch)), *now);
                    }
                }
                Op::Commit => {
                    if p.has_changes() {
                        let (sealed, _) = p.seal(committed.len() % 5 == 4);
                        store.extend(sealed.parked.iter().cloned());
                        let epoch = sealed.record.epoch;
                        committed.push(sealed.into_record());
                        p.mark_published(epoch);
                    }
                }
                Op::Crash => {
                    *p = Partition::restore(0, 1, catalog(), committed.clone()).expect("the history replays");
                    p.set_bounds(bounds);
                    pending.clear();
                    unparks.clear();
                    p.resume(*now);
                }
                Op::Tick(ms) => {
                    *now += ms;
                    p.fire_due_timers(*now);
                }
                // A type may hold about one message while short: spills start and end often.
                Op::Short(short) => p.set_room(spill::Room { short: *short, type_bytes: 8 }, *now),
                Op::CaughtUp(caught_up) => p.set_inputs_caught_up(*caught_up, *now),
            }
            for effect in p.take_effects() {
                match effect {
                    Effect::Invoke { address, token, request: ToFunction { request: Some(Request::Invocation(batch)) } } => pending.push((address, token, batch)),
                    Effect::Invoke { .. } => panic!("invoke effect without a batch"),
                    Effect::Unpark { address, segment } => unparks.push((address, segment)),
                }
            }
        };

        for op in &ops {
            run(op, &mut p, &mut pending, &mut unparks, &mut committed, &mut now);
        }
        // Drain: deliver everything, let all timers fire, answer everything.
        run(&Op::Short(false), &mut p, &mut pending, &mut unparks, &mut committed, &mut now);
        run(&Op::CaughtUp(true), &mut p, &mut pending, &mut unparks, &mut committed, &mut now);
        for _ in 0..10_000 {
            if next_input(&p) >= inputs.len() && pending.is_empty() && unparks.is_empty() && p.next_timer_at().is_none() && p.held_bytes() == 0 {
                break;
            }
            run(&Op::Deliver, &mut p, &mut pending, &mut unparks, &mut committed, &mut now);
            run(&Op::Tick(20), &mut p, &mut pending, &mut unparks, &mut committed, &mut now);
            run(&Op::Reply(0), &mut p, &mut pending, &mut unparks, &mut committed, &mut now);
            run(&Op::Reply(1), &mut p, &mut pending, &mut unparks, &mut committed, &mut now);
            run(&Op::Commit, &mut p, &mut pending, &mut unparks, &mut committed, &mut now);
        }
        prop_assert!(pending.is_empty());

        let mut expected: BTreeMap<Address, Vec<u32>> = BTreeMap::new();
        for (address, n) in &inputs {
            expected.entry(address.clone()).or_default().push(*n);
        }
        for (address, values) in expected {
            let got = seen(&p, &address);
            let direct: Vec<u32> = got.iter().copied().filter(|n| *n < 1_000_000).collect();
            prop_assert_eq!(&direct, &values, "inputs of {:?} applied once each, in arrival order", address.id);
            let mut echoes: Vec<u32> = got.iter().copied().filter(|n| *n >= 1_000_000).map(|n| n - 1_000_000).collect();
            echoes.sort_unstable();
            prop_assert_eq!(echoes, values, "every delayed message applied exactly once");
        }
    }
}

// ---- property: batches handed over in memory and read from the exchange apply exactly once, in order ----

#[derive(Clone, Debug)]
enum HandOverOp {
    /// The source commits its next epoch (and hands its batches over, if it may).
    SourceCommit,
    /// The source appends its next committed epoch to the exchange.
    SourcePublish,
    /// The source's committer starts again: it no longer knows what it sent before.
    SourceRestart,
    /// The receiver reads the next record of the exchange.
    Read,
    /// The receiver takes the oldest hand-over waiting for it.
    Take,
    /// The function answers one of the batches in flight.
    Reply(usize),
    /// The receiver seals and commits an epoch.
    Commit,
    /// The receiver dies, or moves to another worker: it restarts from its last
    /// commit, and the hand-overs waiting for it are lost.
    Crash,
}

fn hand_over_op() -> impl Strategy<Value = HandOverOp> {
    prop_oneof![
        2 => Just(HandOverOp::SourceCommit),
        2 => Just(HandOverOp::SourcePublish),
        1 => Just(HandOverOp::SourceRestart),
        3 => Just(HandOverOp::Read),
        3 => Just(HandOverOp::Take),
        3 => (0usize..8).prop_map(HandOverOp::Reply),
        1 => Just(HandOverOp::Commit),
        1 => Just(HandOverOp::Crash),
    ]
}

/// The receiver of [`batches_handed_over_and_read_from_the_exchange_apply_exactly_once_in_order`].
struct Receiver {
    p: Partition,
    committed: Vec<EpochRecord>,
    pending: Vec<(Address, u64, InvocationBatchRequest)>,
    /// Hand-overs waiting, as (previous, batches).
    waiting: VecDeque<((u64, u64), Vec<ExchangeBatch>)>,
}

impl Receiver {
    fn collect(&mut self) {
        for (address, token, batch) in invocations(&mut self.p) {
            self.pending.push((address, token, batch));
        }
    }

    /// The index of the next exchange record to read.
    fn next_record(&self) -> usize {
        self.p.position("exchange", "s").map_or(0, |s| s.parse::<usize>().unwrap_or(0) + 1)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn batches_handed_over_and_read_from_the_exchange_apply_exactly_once_in_order(
        targets in prop::collection::vec(0usize..4, 1..40),
        cuts in prop::collection::vec(1usize..5, 40),
        ops in prop::collection::vec(hand_over_op(), 0..200),
    ) {
        // The source's epochs: its messages cut into epochs of 1 to 4, an epoch's batch
        // cut in two records when it holds more than two (as a batch past the record size is).
        let messages: Vec<(Address, u32)> = targets.iter().enumerate().map(|(i, t)| (addr(&format!("k{t}")), i as u32 * 2)).collect();
        let mut epochs: Vec<Vec<ExchangeBatch>> = Vec::new();
        let mut last_of_epoch: Vec<(u64, u64)> = Vec::new();
        let mut rest = messages.as_slice();
        while !rest.is_empty() {
            let (now, later) = rest.split_at(cuts[epochs.len()].min(rest.len()));
            let epoch = epochs.len() as u64 + 1;
            let entries: Vec<ExchangeMessage> = now.iter().enumerate().map(|(seq, (address, n))| ExchangeMessage {
                seq: seq as u64,
                envelope: Some(Envelope { target: Some(address.clone()), caller: None, argument: Some(value(*n)), id: format!("e{epoch}.{seq}"), hops: 0, ingress: None }),
            }).collect();
            let batch = |messages: &[ExchangeMessage]| ExchangeBatch { source_partition: 1, epoch, incarnation: 7, messages: messages.to_vec() };
            let records = if entries.len() > 2 { vec![batch(&entries[..2]), batch(&entries[2..])] } else { vec![batch(&entries)] };
            last_of_epoch.push((epoch, now.len() as u64 - 1));
            epochs.push(records);
            rest = later;
        }
        let log: Vec<ExchangeBatch> = epochs.iter().flatten().cloned().collect();
        // How many of the source's epochs are committed, and appended to the exchange.
        let (mut committed_epochs, mut published_records) = (0usize, 0usize);
        let published_through = |epochs_done: usize| epochs[..epochs_done].iter().map(Vec::len).sum::<usize>();
        // The source committer's chain: the last message it sent, if it knows.
        let mut last_sent: Option<(u64, u64)> = None;
        let mut r = Receiver { p: Partition::new(0, 1, catalog(), 1), committed: Vec::new(), pending: Vec::new(), waiting: VecDeque::new() };

        let run = |op: &HandOverOp, r: &mut Receiver, committed_epochs: &mut usize, published_records: &mut usize, last_sent: &mut Option<(u64, u64)>| {
            match op {
                HandOverOp::SourceCommit => {
                    if let Some(batches) = epochs.get(*committed_epochs) {
                        if let Some(previous) = *last_sent && r.waiting.len() < 4 {
                            r.waiting.push_back((previous, batches.clone()));
                        }
                        *last_sent = Some(last_of_epoch[*committed_epochs]);
                        *committed_epochs += 1;
                    }
                }
                HandOverOp::SourcePublish => {
                    *published_records = (*published_records + 1).min(published_through(*committed_epochs));
                }
                HandOverOp::SourceRestart => *last_sent = None,
                HandOverOp::Read => {
                    let next = r.next_record();
                    if next < *published_records {
                        r.p.accept_exchange(log[next].clone(), 0);
                        r.p.advance_position("exchange", "s", &next.to_string());
                    }
                }
                HandOverOp::Take => {
                    if let Some((previous, batches)) = r.waiting.pop_front() {
                        r.p.accept_handed_over(batches, previous, 0);
                    }
                }
                HandOverOp::Reply(k) => {
                    if !r.pending.is_empty() {
                        let (address, token, batch) = r.pending.remove(k % r.pending.len());
                        r.p.on_invocation_result(&address, token, Ok(model_function(&batch)), 0);
                    }
                }
                HandOverOp::Commit => {
                    if r.p.has_changes() {
                        let (sealed, _) = r.p.seal(r.committed.len() % 5 == 4);
                        let epoch = sealed.record.epoch;
                        r.committed.push(sealed.into_record());
                        r.p.mark_published(epoch);
                    }
                }
                HandOverOp::Crash => {
                    r.p = Partition::restore(0, 1, catalog(), r.committed.clone()).expect("the history replays");
                    r.pending.clear();
                    r.waiting.clear();
                    r.p.resume(0);
                }
            }
            r.collect();
        };

        for op in &ops {
            run(op, &mut r, &mut committed_epochs, &mut published_records, &mut last_sent);
        }
        for _ in 0..10_000 {
            if r.next_record() >= log.len() && r.waiting.is_empty() && r.pending.is_empty() {
                break;
            }
            for op in [HandOverOp::SourceCommit, HandOverOp::SourcePublish, HandOverOp::Take, HandOverOp::Read, HandOverOp::Reply(0), HandOverOp::Commit] {
                run(&op, &mut r, &mut committed_epochs, &mut published_records, &mut last_sent);
            }
        }
        prop_assert!(r.pending.is_empty());

        let mut expected: BTreeMap<Address, Vec<u32>> = BTreeMap::new();
        for (address, n) in &messages {
            expected.entry(address.clone()).or_default().push(*n);
        }
        for (address, values) in expected {
            prop_assert_eq!(seen(&r.p, &address), values, "messages to {:?} applied once each, in order", address.id);
        }
    }
}

// ---- property: ingress messages forwarded before their reader commits apply exactly once, in order ----

#[derive(Clone, Debug)]
enum ForwardOp {
    /// The reading partition reads the next ingress record (and forwards its message, if it may).
    SenderRead,
    /// The reading partition seals and commits an epoch.
    SenderCommit,
    /// The next committed exchange record is appended to the exchange.
    SenderPublish,
    /// The reading partition dies, or moves: it starts again from its last commit
    /// and reads again what it read since. What it forwarded before may still be taken.
    SenderCrash,
    /// Forwarding is turned off (the reader is behind) and on again.
    SenderPause,
    /// The receiver reads the next record of the exchange.
    Read,
    /// The receiver takes the oldest forward waiting for it.
    Take,
    /// The function answers one of the batches in flight.
    Reply(usize),
    /// The receiver seals and commits an epoch.
    Commit,
    /// The receiver dies or moves: it restarts from its last commit, and the forwards waiting are lost.
    Crash,
}

fn forward_op() -> impl Strategy<Value = ForwardOp> {
    prop_oneof![
        3 => Just(ForwardOp::SenderRead),
        2 => Just(ForwardOp::SenderCommit),
        2 => Just(ForwardOp::SenderPublish),
        1 => Just(ForwardOp::SenderCrash),
        1 => Just(ForwardOp::SenderPause),
        3 => Just(ForwardOp::Read),
        3 => Just(ForwardOp::Take),
        3 => (0usize..8).prop_map(ForwardOp::Reply),
        1 => Just(ForwardOp::Commit),
        1 => Just(ForwardOp::Crash),
    ]
}

/// Keys whose `test/fn` address partition 0 of 2 owns.
fn keys_of_partition_0(n: usize) -> Vec<String> {
    (0..).map(|i| format!("k{i}")).filter(|k| address::partition_of(&addr(k), 2) == 0).take(n).collect()
}

/// The exchange batches a committed epoch's outbox makes, decoded.
fn exchange_batches_of(sealed_outbox: &Outbox, source: u32, incarnation: u64) -> Vec<ExchangeBatch> {
    let mut batches = exchange_batches::ExchangeBatches::new(source, incarnation, sealed_outbox.epoch);
    for (seq, item) in sealed_outbox.items() {
        if let outbox::Item::Exchange { partition, envelope } = item {
            batches.push(partition, seq, envelope);
        }
    }
    batches
        .finish()
        .into_iter()
        .map(|(_, _, bytes)| ExchangeBatch::decode(bytes.as_slice()).expect("a batch"))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn ingress_messages_forwarded_before_their_readers_commit_apply_exactly_once_in_order(
        targets in prop::collection::vec(0usize..3, 1..40),
        ops in prop::collection::vec(forward_op(), 0..250),
    ) {
        // Partition 1 of 2 reads the ingress; every record is for an address of partition 0.
        let keys = keys_of_partition_0(3);
        let records: Vec<(Address, u32)> = targets.iter().enumerate().map(|(i, t)| (addr(&keys[*t]), i as u32)).collect();
        let new_sender = |committed: &[EpochRecord]| {
            let mut s = if committed.is_empty() {
                Partition::new(1, 2, catalog(), 1)
            } else {
                Partition::restore(1, 2, catalog(), committed.to_vec()).expect("the sender's history replays")
            };
            s.set_forwarding(true);
            s.resume(0);
            s
        };
        let mut sender_committed: Vec<EpochRecord> = Vec::new();
        let mut s = new_sender(&sender_committed);
        // The exchange records of the sender's committed epochs, and how many are appended.
        let mut exchange: Vec<ExchangeBatch> = Vec::new();
        let mut published = 0usize;
        let mut r = Partition::new(0, 2, catalog(), 1);
        let mut r_committed: Vec<EpochRecord> = Vec::new();
        let mut pending: Vec<(Address, u64, InvocationBatchRequest)> = Vec::new();
        let mut waiting: VecDeque<Vec<forward::Forward>> = VecDeque::new();
        let next_read = |p: &Partition, stream: &str| p.position(stream, "s").map_or(0, |s| s.parse::<usize>().unwrap_or(0) + 1);

        let run = |op: &ForwardOp, s: &mut Partition, r: &mut Partition, sender_committed: &mut Vec<EpochRecord>, exchange: &mut Vec<ExchangeBatch>, published: &mut usize, r_committed: &mut Vec<EpochRecord>, pending: &mut Vec<(Address, u64, InvocationBatchRequest)>, waiting: &mut VecDeque<Vec<forward::Forward>>| {
            match op {
                ForwardOp::SenderRead => {
                    let i = next_read(s, "in");
                    if i < records.len() {
                        let sequence = i.to_string();
                        // Ids as the runtime writes them (the position then leaves out what the id says),
                        // and ids that say nothing of it (the position is stored whole), in one shard.
                        let id = if i % 2 == 0 { format!("in/s/{sequence}") } else { "in".to_owned() };
                        let (address, n) = &records[i];
                        let message = IngressMessage {
                            namespace: "test",
                            name: "fn",
                            key: &address.id,
                            typename: "test/n",
                            value: std::borrow::Cow::Owned(value(*n).value),
                            id: &id,
                            origin: Some(forward::Origin { stream: "in", shard: "s", sequence: &sequence, user_record: 0, target: 0 }),
                        };
                        s.deliver_ingress(message, 0);
                        s.advance_position("in", "s", &sequence);
                        let forwards = s.take_forwards();
                        if !forwards.is_empty() && waiting.len() < 4 {
                            waiting.push_back(forwards);
                        }
                    }
                }
                ForwardOp::SenderCommit => {
                    if s.has_changes() {
                        let incarnation = s.incarnation;
                        let (sealed, outbox) = s.seal(sender_committed.len() % 4 == 3);
                        sender_committed.push(sealed.into_record());
                        exchange.extend(exchange_batches_of(&outbox, 1, incarnation));
                    }
                }
                ForwardOp::SenderPublish => {
                    if *published < exchange.len() {
                        *published += 1;
                    }
                }
                ForwardOp::SenderCrash => *s = new_sender(sender_committed),
                ForwardOp::SenderPause => {
                    s.set_forwarding(false);
                    s.set_forwarding(true);
                }
                ForwardOp::Read => {
                    let next = next_read(r, "exchange");
                    if next < *published {
                        r.accept_exchange(exchange[next].clone(), 0);
                        r.advance_position("exchange", "s", &next.to_string());
                    }
                }
                ForwardOp::Take => {
                    if let Some(forwards) = waiting.pop_front() {
                        r.accept_forwarded(forwards, 0);
                    }
                }
                ForwardOp::Reply(k) => {
                    if !pending.is_empty() {
                        let (address, token, batch) = pending.remove(k % pending.len());
                        r.on_invocation_result(&address, token, Ok(model_function(&batch)), 0);
                    }
                }
                ForwardOp::Commit => {
                    if r.has_changes() {
                        let (sealed, _) = r.seal(r_committed.len() % 5 == 4);
                        let epoch = sealed.record.epoch;
                        r_committed.push(sealed.into_record());
                        r.mark_published(epoch);
                    }
                }
                ForwardOp::Crash => {
                    *r = Partition::restore(0, 2, catalog(), r_committed.clone()).expect("the receiver's history replays");
                    pending.clear();
                    waiting.clear();
                    r.resume(0);
                }
            }
            pending.extend(invocations(r));
        };

        for op in &ops {
            run(op, &mut s, &mut r, &mut sender_committed, &mut exchange, &mut published, &mut r_committed, &mut pending, &mut waiting);
        }
        for _ in 0..10_000 {
            let done = next_read(&s, "in") >= records.len() && !s.has_changes() && published == exchange.len()
                && next_read(&r, "exchange") >= exchange.len() && waiting.is_empty() && pending.is_empty();
            if done {
                break;
            }
            for op in [ForwardOp::SenderRead, ForwardOp::SenderCommit, ForwardOp::SenderPublish, ForwardOp::Take, ForwardOp::Read, ForwardOp::Reply(0), ForwardOp::Commit] {
                run(&op, &mut s, &mut r, &mut sender_committed, &mut exchange, &mut published, &mut r_committed, &mut pending, &mut waiting);
            }
        }
        prop_assert!(pending.is_empty());
        prop_assert_eq!(next_read(&s, "in"), records.len(), "every record read");

        let mut expected: BTreeMap<Address, Vec<u32>> = BTreeMap::new();
        for (address, n) in &records {
            expected.entry(address.clone()).or_default().push(*n);
        }
        for (address, values) in expected {
            prop_assert_eq!(seen(&r, &address), values, "records for {:?} applied once each, in order", address.id);
        }
    }
}

#[test]
fn a_segment_decodes_into_a_list_sized_once_and_a_cut_one_is_refused() {
    let messages: Vec<Envelope> = (0..1000).map(|n| message("a", n)).collect();
    let bytes = ParkedMessages { messages: messages.clone() }.encode_to_vec();
    let decoded = parking::decode_segment(&bytes).expect("a whole segment");
    assert_eq!(decoded, messages);
    assert_eq!(decoded.capacity(), messages.len(), "sized from the count, not grown");
    assert!(parking::decode_segment(&bytes[..bytes.len() - 3]).is_err(), "a cut segment is an error");
    assert!(parking::decode_segment(&[]).expect("empty").is_empty());
    // A length past the end stops the count; decoding says what is wrong.
    assert!(parking::decode_segment(&[0x0a, 0xff, 0xff, 0xff, 0x0f]).is_err());
}

#[test]
fn a_forward_continues_the_mark_an_exchange_copy_set_from_its_id() {
    let key = &keys_of_partition_0(1)[0];
    let mut sender = Partition::new(1, 2, catalog(), 1);
    sender.set_forwarding(true);
    sender.resume(0);
    let mut receiver = Partition::new(0, 2, catalog(), 1);
    let read = |sender: &mut Partition, i: u32| {
        let (sequence, id) = (i.to_string(), format!("in/s/{i}"));
        let message = IngressMessage {
            namespace: "test",
            name: "fn",
            key,
            typename: "test/n",
            value: std::borrow::Cow::Owned(value(i).value),
            id: &id,
            origin: Some(forward::Origin { stream: "in", shard: "s", sequence: &sequence, user_record: 0, target: 0 }),
        };
        sender.deliver_ingress(message, 0);
        sender.advance_position("in", "s", &sequence);
        sender.take_forwards()
    };
    assert!(read(&mut sender, 0).is_empty(), "nothing was sent before it: not forwarded");
    let incarnation = sender.incarnation;
    let (_, outbox) = sender.seal(false);
    for batch in exchange_batches_of(&outbox, 1, incarnation) {
        receiver.accept_exchange(batch, 0);
    }
    let forwards = read(&mut sender, 1);
    assert_eq!(forwards.len(), 1);
    assert!(receiver.accept_forwarded(forwards, 0), "the forward continues the mark its predecessor's copy set");
}
