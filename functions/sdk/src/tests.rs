//! Tests of the request-reply handler as a whole: negotiation, batches and
//! failures, through [`Functions::handle_request`].

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use statefun_proto::reqreply::TypedValue;
use statefun_proto::reqreply::from_function::{
    ExpirationSpec, PersistedValueMutation, PersistedValueSpec, expiration_spec::ExpireMode,
    persisted_value_mutation::MutationType,
};

use crate::testing::{TestRequest, invocation_result, missing_values};
use crate::{Context, Error, Expiration, FunctionType, Functions, IntType, JsonType, Message, StringType, ValueSpec};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn counter_type() -> FunctionType {
    FunctionType::new("test", "counter")
}

fn total() -> ValueSpec<i32> {
    ValueSpec::new("total", IntType)
}

fn log() -> ValueSpec<Vec<String>> {
    ValueSpec::new("log", JsonType::<Vec<String>>::new("test/Log"))
        .with_expiration(Expiration::after_invoke(Duration::from_secs(60)))
}

/// A counter that adds each int message to `total`, appends it to `log`,
/// removes `total` on 0, and counts its calls.
fn counter(calls: Arc<AtomicUsize>) -> Functions {
    Functions::new().with(counter_type(), &[&total(), &log()], move |ctx, msg| {
        calls.fetch_add(1, Ordering::SeqCst);
        let n = msg.as_value(&IntType)?;
        if n == 0 {
            ctx.remove(&total())?;
        } else {
            let sum = ctx.get(&total())?.unwrap_or(0) + n;
            ctx.set(&total(), &sum)?;
        }
        let mut entries = ctx.get(&log())?.unwrap_or_default();
        entries.push(n.to_string());
        ctx.set(&log(), &entries)?;
        if n < 0 {
            return Err(format!("negative amount {n}").into());
        }
        Ok(())
    })
}

fn int(n: i32) -> Option<TypedValue> {
    Some(TypedValue {
        typename: "io.statefun.types/int".into(),
        has_value: true,
        value: n.to_le_bytes().iter().fold(vec![0x0d], |mut v, b| {
            v.push(*b);
            v
        }),
    })
}

#[test]
fn missing_state_answers_incomplete_context_with_exact_specs_and_runs_no_code() -> TestResult {
    let calls = Arc::new(AtomicUsize::new(0));
    let functions = counter(Arc::clone(&calls));
    let request = TestRequest::new(counter_type().address("a"))
        .with_state(&total(), Some(&1))?
        .with_invocation(None, &IntType, &5)?;
    let missing = missing_values(functions.handle_request(request.to_function())?);
    assert_eq!(
        missing,
        Some(vec![PersistedValueSpec {
            state_name: "log".into(),
            expiration_spec: Some(ExpirationSpec { mode: ExpireMode::AfterInvoke as i32, expire_after_millis: 60_000 }),
            type_typename: "test/Log".into(),
        }])
    );
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    Ok(())
}

#[test]
fn no_state_at_all_lists_every_declared_spec() -> TestResult {
    let calls = Arc::new(AtomicUsize::new(0));
    let request = TestRequest::new(counter_type().address("a")).with_invocation(None, &IntType, &5)?;
    let missing =
        missing_values(counter(Arc::clone(&calls)).handle_request(request.to_function())?).unwrap_or_default();
    let names: Vec<_> = missing.iter().map(|s| s.state_name.as_str()).collect();
    assert_eq!(names, ["total", "log"]);
    assert_eq!(missing[0].expiration_spec, None);
    assert_eq!(missing[0].type_typename, "io.statefun.types/int");
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    Ok(())
}

#[test]
fn three_messages_in_one_batch_apply_in_order_with_one_net_mutation_each() -> TestResult {
    let calls = Arc::new(AtomicUsize::new(0));
    let request = TestRequest::new(counter_type().address("a"))
        .with_state(&total(), Some(&10))?
        .with_state(&log(), None)?
        .with_invocation(None, &IntType, &1)?
        .with_invocation(None, &IntType, &2)?
        .with_invocation(None, &IntType, &3)?;
    let result =
        invocation_result(counter(Arc::clone(&calls)).handle_request(request.to_function())?).unwrap_or_default();
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(
        result.state_mutations,
        vec![
            PersistedValueMutation {
                mutation_type: MutationType::Modify as i32,
                state_name: "total".into(),
                state_value: int(16),
            },
            PersistedValueMutation {
                mutation_type: MutationType::Modify as i32,
                state_name: "log".into(),
                state_value: Some(TypedValue {
                    typename: "test/Log".into(),
                    has_value: true,
                    value: br#"["1","2","3"]"#.to_vec(),
                }),
            },
        ]
    );
    Ok(())
}

#[test]
fn a_value_set_then_removed_in_a_batch_is_one_delete() -> TestResult {
    let request = TestRequest::new(counter_type().address("a"))
        .with_state(&total(), Some(&10))?
        .with_state(&log(), Some(&vec![]))?
        .with_invocation(None, &IntType, &5)?
        .with_invocation(None, &IntType, &0)?;
    let result = invocation_result(counter(Arc::default()).handle_request(request.to_function())?).unwrap_or_default();
    assert_eq!(
        result.state_mutations.first(),
        Some(&PersistedValueMutation {
            mutation_type: MutationType::Delete as i32,
            state_name: "total".into(),
            state_value: None,
        })
    );
    Ok(())
}

#[test]
fn unset_state_value_and_has_value_false_both_read_as_no_value() -> TestResult {
    for absent in [None, Some(TypedValue { typename: "io.statefun.types/int".into(), has_value: false, value: vec![] })]
    {
        let request = TestRequest::new(counter_type().address("a"))
            .with_state_value("total", absent)
            .with_state(&log(), None)?
            .with_invocation(None, &IntType, &7)?;
        let result =
            invocation_result(counter(Arc::default()).handle_request(request.to_function())?).unwrap_or_default();
        assert_eq!(result.state_mutations[0].state_value, int(7));
    }
    Ok(())
}

#[test]
fn a_function_that_only_reads_answers_no_mutations() -> TestResult {
    let ft = FunctionType::new("test", "reader");
    let functions = Functions::new().with(ft.clone(), &[&total()], |ctx, _msg| {
        ctx.get(&total())?;
        Ok(())
    });
    let request =
        TestRequest::new(ft.address("a")).with_state(&total(), Some(&3))?.with_invocation(None, &IntType, &1)?;
    let result = invocation_result(functions.handle_request(request.to_function())?);
    assert_eq!(result.map(|r| r.state_mutations), Some(vec![]));
    Ok(())
}

#[test]
fn a_failing_message_fails_the_whole_batch_with_its_reason() -> TestResult {
    let calls = Arc::new(AtomicUsize::new(0));
    let request = TestRequest::new(counter_type().address("a"))
        .with_state(&total(), None)?
        .with_state(&log(), None)?
        .with_invocation(None, &IntType, &1)?
        .with_invocation(None, &IntType, &-1)?
        .with_invocation(None, &IntType, &1)?;
    let err = counter(Arc::clone(&calls)).handle_request(request.to_function()).err().map(|e| e.to_string());
    assert_eq!(
        err.as_deref(),
        Some("function test/counter/a failed on message #1 (io.statefun.types/int): negative amount -1")
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    Ok(())
}

#[test]
fn a_panicking_function_is_an_error_not_a_crash() -> TestResult {
    let ft = FunctionType::new("test", "panics");
    let functions = Functions::new().with(ft.clone(), &[], |_ctx, _msg| panic!("boom"));
    let request = TestRequest::new(ft.address("a")).with_invocation(None, &IntType, &1)?;
    let err = functions.handle_request(request.to_function()).err().map(|e| e.to_string());
    assert_eq!(
        err.as_deref(),
        Some("function test/panics/a failed on message #0 (io.statefun.types/int): panicked: boom")
    );
    Ok(())
}

#[test]
fn an_unregistered_function_type_is_an_error_naming_it() {
    let request = TestRequest::new(FunctionType::new("test", "ghost").address("a"));
    let err = counter(Arc::default()).handle(&request.to_bytes()).err().map(|e| e.to_string());
    assert_eq!(err.as_deref(), Some("function type test/ghost is not registered with this endpoint"));
}

#[test]
fn undecodable_request_bytes_are_a_decode_error() {
    let err = counter(Arc::default()).handle(&[0x0a, 0xff]);
    assert!(matches!(err, Err(Error::DecodeRequest(_))));
}

#[test]
fn a_state_of_the_wrong_type_names_state_function_and_typenames() -> TestResult {
    let request = TestRequest::new(counter_type().address("a"))
        .with_state_value(
            "total",
            Some(TypedValue { typename: "io.statefun.types/long".into(), has_value: true, value: vec![] }),
        )
        .with_state(&log(), None)?
        .with_invocation(None, &IntType, &1)?;
    let err = counter(Arc::default()).handle_request(request.to_function()).err().map(|e| e.to_string());
    assert_eq!(
        err.as_deref(),
        Some(
            "function test/counter/a failed on message #0 (io.statefun.types/int): \
             state `total` of test/counter: expected typename io.statefun.types/int, got io.statefun.types/long"
        )
    );
    Ok(())
}

#[test]
fn caller_is_set_per_message_and_replies_reach_it() -> TestResult {
    let ft = FunctionType::new("test", "echo");
    let functions = Functions::new().with(ft.clone(), &[], |ctx: &mut Context, msg: Message| {
        if let Some(caller) = ctx.caller().cloned() {
            ctx.send(Message::new(caller, &StringType, &msg.as_value(&StringType)?)?);
        }
        Ok(())
    });
    let caller = FunctionType::new("test", "client").address("c");
    let request = TestRequest::new(ft.address("e"))
        .with_invocation(Some(caller.clone()), &StringType, &"one".to_owned())?
        .with_invocation(None, &StringType, &"ingress".to_owned())?;
    let result = invocation_result(functions.handle_request(request.to_function())?).unwrap_or_default();
    assert_eq!(result.outgoing_messages.len(), 1);
    assert_eq!(result.outgoing_messages[0].target, Some(caller.to_proto()));
    Ok(())
}
