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

#[tokio::test]
async fn missing_state_answers_incomplete_context_with_exact_specs_and_runs_no_code() -> TestResult {
    let calls = Arc::new(AtomicUsize::new(0));
    let functions = counter(Arc::clone(&calls));
    let request = TestRequest::new(counter_type().address("a"))
        .with_state(&total(), Some(&1))?
        .with_invocation(None, &IntType, &5)?;
    let missing = missing_values(functions.handle_request(request.to_function()).await?);
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

#[tokio::test]
async fn no_state_at_all_lists_every_declared_spec() -> TestResult {
    let calls = Arc::new(AtomicUsize::new(0));
    let request = TestRequest::new(counter_type().address("a")).with_invocation(None, &IntType, &5)?;
    let missing =
        missing_values(counter(Arc::clone(&calls)).handle_request(request.to_function()).await?).unwrap_or_default();
    let names: Vec<_> = missing.iter().map(|s| s.state_name.as_str()).collect();
    assert_eq!(names, ["total", "log"]);
    assert_eq!(missing[0].expiration_spec, None);
    assert_eq!(missing[0].type_typename, "io.statefun.types/int");
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    Ok(())
}

#[tokio::test]
async fn three_messages_in_one_batch_apply_in_order_with_one_net_mutation_each() -> TestResult {
    let calls = Arc::new(AtomicUsize::new(0));
    let request = TestRequest::new(counter_type().address("a"))
        .with_state(&total(), Some(&10))?
        .with_state(&log(), None)?
        .with_invocation(None, &IntType, &1)?
        .with_invocation(None, &IntType, &2)?
        .with_invocation(None, &IntType, &3)?;
    let result =
        invocation_result(counter(Arc::clone(&calls)).handle_request(request.to_function()).await?).unwrap_or_default();
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

#[tokio::test]
async fn a_value_set_then_removed_in_a_batch_is_one_delete() -> TestResult {
    let request = TestRequest::new(counter_type().address("a"))
        .with_state(&total(), Some(&10))?
        .with_state(&log(), Some(&vec![]))?
        .with_invocation(None, &IntType, &5)?
        .with_invocation(None, &IntType, &0)?;
    let result =
        invocation_result(counter(Arc::default()).handle_request(request.to_function()).await?).unwrap_or_default();
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

#[tokio::test]
async fn unset_state_value_and_has_value_false_both_read_as_no_value() -> TestResult {
    for absent in [None, Some(TypedValue { typename: "io.statefun.types/int".into(), has_value: false, value: vec![] })]
    {
        let request = TestRequest::new(counter_type().address("a"))
            .with_state_value("total", absent)
            .with_state(&log(), None)?
            .with_invocation(None, &IntType, &7)?;
        let result =
            invocation_result(counter(Arc::default()).handle_request(request.to_function()).await?).unwrap_or_default();
        assert_eq!(result.state_mutations[0].state_value, int(7));
    }
    Ok(())
}

#[tokio::test]
async fn a_function_that_only_reads_answers_no_mutations() -> TestResult {
    let ft = FunctionType::new("test", "reader");
    let functions = Functions::new().with(ft.clone(), &[&total()], |ctx, _msg| {
        ctx.get(&total())?;
        Ok(())
    });
    let request =
        TestRequest::new(ft.address("a")).with_state(&total(), Some(&3))?.with_invocation(None, &IntType, &1)?;
    let result = invocation_result(functions.handle_request(request.to_function()).await?);
    assert_eq!(result.map(|r| r.state_mutations), Some(vec![]));
    Ok(())
}

#[tokio::test]
async fn a_failing_message_fails_the_whole_batch_with_its_reason() -> TestResult {
    let calls = Arc::new(AtomicUsize::new(0));
    let request = TestRequest::new(counter_type().address("a"))
        .with_state(&total(), None)?
        .with_state(&log(), None)?
        .with_invocation(None, &IntType, &1)?
        .with_invocation(None, &IntType, &-1)?
        .with_invocation(None, &IntType, &1)?;
    let err = counter(Arc::clone(&calls)).handle_request(request.to_function()).await.err().map(|e| e.to_string());
    assert_eq!(
        err.as_deref(),
        Some("function test/counter/a failed on message #1 (io.statefun.types/int): negative amount -1")
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    Ok(())
}

#[tokio::test]
async fn a_panicking_function_is_an_error_not_a_crash() -> TestResult {
    let ft = FunctionType::new("test", "panics");
    let functions = Functions::new().with(ft.clone(), &[], |_ctx, _msg| panic!("boom"));
    let request = TestRequest::new(ft.address("a")).with_invocation(None, &IntType, &1)?;
    let err = functions.handle_request(request.to_function()).await.err().map(|e| e.to_string());
    assert_eq!(
        err.as_deref(),
        Some("function test/panics/a failed on message #0 (io.statefun.types/int): panicked: boom")
    );
    Ok(())
}

#[tokio::test]
async fn an_unregistered_function_type_is_an_error_naming_it() {
    let request = TestRequest::new(FunctionType::new("test", "ghost").address("a"));
    let err = counter(Arc::default()).handle(&request.to_bytes()).await.err().map(|e| e.to_string());
    assert_eq!(err.as_deref(), Some("function type test/ghost is not registered with this endpoint"));
}

#[tokio::test]
async fn undecodable_request_bytes_are_a_decode_error() {
    let err = counter(Arc::default()).handle(&[0x0a, 0xff]).await;
    assert!(matches!(err, Err(Error::DecodeRequest(_))));
}

#[tokio::test]
async fn a_state_of_the_wrong_type_names_state_function_and_typenames() -> TestResult {
    let request = TestRequest::new(counter_type().address("a"))
        .with_state_value(
            "total",
            Some(TypedValue { typename: "io.statefun.types/long".into(), has_value: true, value: vec![] }),
        )
        .with_state(&log(), None)?
        .with_invocation(None, &IntType, &1)?;
    let err = counter(Arc::default()).handle_request(request.to_function()).await.err().map(|e| e.to_string());
    assert_eq!(
        err.as_deref(),
        Some(
            "function test/counter/a failed on message #0 (io.statefun.types/int): \
             state `total` of test/counter: expected typename io.statefun.types/int, got io.statefun.types/long"
        )
    );
    Ok(())
}

#[tokio::test]
async fn caller_is_set_per_message_and_replies_reach_it() -> TestResult {
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
    let result = invocation_result(functions.handle_request(request.to_function()).await?).unwrap_or_default();
    assert_eq!(result.outgoing_messages.len(), 1);
    assert_eq!(result.outgoing_messages[0].target, Some(caller.to_proto()));
    Ok(())
}

/// An async adder: awaits (a stand-in for a call to another service) between
/// reading and writing `total`, and records how many of its calls overlap.
fn async_adder(running: Arc<AtomicUsize>, most: Arc<AtomicUsize>) -> Functions {
    Functions::new().with_async(counter_type(), &[&total(), &log()], move |mut ctx: Context, msg: Message| {
        let (running, most) = (Arc::clone(&running), Arc::clone(&most));
        async move {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(now, Ordering::SeqCst);
            let n = msg.as_value(&IntType)?;
            let before = ctx.get(&total())?.unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(5)).await;
            ctx.set(&total(), &(before + n))?;
            let mut entries = ctx.get(&log())?.unwrap_or_default();
            entries.push(n.to_string());
            ctx.set(&log(), &entries)?;
            running.fetch_sub(1, Ordering::SeqCst);
            if n == 13 {
                panic!("unlucky after an await");
            }
            Ok(ctx)
        }
    })
}

#[tokio::test]
async fn an_async_function_awaits_and_the_messages_of_a_batch_still_apply_one_at_a_time_in_order() -> TestResult {
    let (running, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let request = TestRequest::new(counter_type().address("a"))
        .with_state(&total(), Some(&100))?
        .with_state(&log(), None)?
        .with_invocation(None, &IntType, &1)?
        .with_invocation(None, &IntType, &2)?
        .with_invocation(None, &IntType, &3)?;
    let functions = async_adder(Arc::clone(&running), Arc::clone(&most));
    let result = invocation_result(functions.handle_request(request.to_function()).await?).unwrap_or_default();
    let value =
        |name: &str| result.state_mutations.iter().find(|m| m.state_name == name).and_then(|m| m.state_value.clone());
    assert_eq!(value("total").map(|v| v.value), Some(int(106).unwrap_or_default().value), "each read the last write");
    let log = value("log").map(|v| String::from_utf8_lossy(&v.value).into_owned());
    assert_eq!(log.as_deref(), Some(r#"["1","2","3"]"#), "in arrival order");
    assert_eq!(most.load(Ordering::SeqCst), 1, "one message at a time");
    Ok(())
}

#[tokio::test]
async fn a_panic_after_an_await_fails_the_batch_not_the_endpoint() -> TestResult {
    let request = TestRequest::new(counter_type().address("a"))
        .with_state(&total(), None)?
        .with_state(&log(), None)?
        .with_invocation(None, &IntType, &1)?
        .with_invocation(None, &IntType, &13)?;
    let functions = async_adder(Arc::default(), Arc::default());
    let err = functions.handle_request(request.to_function()).await.err();
    let text = err.as_ref().map(ToString::to_string);
    assert_eq!(
        text.as_deref(),
        Some("function test/counter/a failed on message #1 (io.statefun.types/int): panicked: unlucky after an await")
    );
    assert!(err.is_some_and(|e| !e.is_permanent()), "a panic stays retryable");
    Ok(())
}

#[tokio::test]
async fn a_permanent_error_is_told_apart_from_a_retryable_one_and_keeps_its_message() -> TestResult {
    let ft = FunctionType::new("test", "strict");
    let functions =
        Functions::new().with(ft.clone(), &[], |_ctx: &mut Context, msg: Message| match msg.as_value(&IntType)? {
            n if n < 0 => Err(crate::Permanent::new(format!("{n} is below zero")).into()),
            0 => Err("zero, try again later".into()),
            _ => Ok(()),
        });
    let outcome = |n: i32| {
        let request = TestRequest::new(ft.address("a")).with_invocation(None, &IntType, &n).map(|r| r.to_function());
        let functions = functions.clone();
        async move { functions.handle_request(request?).await.map(drop).map_err(Box::<dyn std::error::Error>::from) }
    };
    let permanent = outcome(-5).await.err().and_then(|e| e.downcast::<Error>().ok()).expect("fails");
    assert!(permanent.is_permanent());
    assert!(permanent.to_string().ends_with("): -5 is below zero"), "{permanent}");
    let retryable = outcome(0).await.err().and_then(|e| e.downcast::<Error>().ok()).expect("fails");
    assert!(!retryable.is_permanent());
    assert!(outcome(1).await.is_ok());
    Ok(())
}
