//! The benchmark's function: a counter that reads an integer state, adds the
//! message's value, writes it back and emits the new value to an egress.
//!
//! `bench-functions` serves it next to the shopping cart's two functions on
//! one StateFun HTTP endpoint (the Rust SDK's server). The egress record's
//! partition key is the counter's id and its bytes the new count in decimal,
//! so the n-th result of a key names the n-th event appended for that key
//! (every event adds 1).

use std::sync::atomic::{AtomicU64, Ordering};

use statefun_sdk::{Context, EgressIdentifier, EgressMessage, FunctionType, Functions, LongType, Message, ValueSpec};

/// The namespace of the counter and of its egress.
pub const NAMESPACE: &str = "bench";

/// The egress stream of the local scenarios.
pub const EGRESS_STREAM: &str = "bench-out";

/// The ingress stream of the local scenarios.
pub const INGRESS_STREAM: &str = "bench-in";

/// `bench/counter`.
pub fn counter_type() -> FunctionType {
    FunctionType::new(NAMESPACE, "counter")
}

/// `bench/out`, a Kinesis egress.
pub fn egress() -> EgressIdentifier {
    EgressIdentifier::new(NAMESPACE, "out")
}

/// The counter's state `count`: `io.statefun.types/long`.
pub fn count() -> ValueSpec<i64> {
    ValueSpec::new("count", LongType)
}

/// Messages the counter has processed in this process (`bench-functions`
/// reports it, so the driver can see the processing rate independently of
/// when the runtime's commits let results out).
pub static PROCESSED: AtomicU64 = AtomicU64::new(0);

/// The counter (writing to `egress_stream`) and the shopping cart's functions.
pub fn functions(egress_stream: &str) -> Functions {
    let count = count();
    let stream = egress_stream.to_owned();
    shopping_cart::functions().with(counter_type(), &[&count], {
        let count = count.clone();
        move |ctx: &mut Context, message: Message| {
            let value = ctx.get(&count)?.unwrap_or(0) + message.as_value(&LongType)?;
            ctx.set(&count, &value)?;
            let key = ctx.self_address().id().to_owned();
            ctx.send_egress(EgressMessage::kinesis(egress(), stream.clone(), key, value.to_string()));
            PROCESSED.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
    })
}

/// The module.yaml of the counter scenarios: the endpoint at `url`, the
/// ingress `ingress_stream` (long values, to `bench/counter`) and the egress.
pub fn module_yaml(url: &str, ingress_stream: &str) -> String {
    module_yaml_with_streams(url, &[(ingress_stream, "io.statefun.types/long", "counter")])
}

/// The module.yaml with one endpoint at `url` for every `bench/*` function, the
/// egress, and an ingress reading each `(stream, valueType, function)` to
/// `bench/<function>`.
pub fn module_yaml_with_streams(url: &str, streams: &[(&str, &str, &str)]) -> String {
    let streams: String = streams
        .iter()
        .map(|(stream, value_type, function)| {
            format!(
                "    - stream: {stream}\n      valueType: {value_type}\n      targets:\n        - {NAMESPACE}/{function}\n"
            )
        })
        .collect();
    format!(
        "kind: io.statefun.endpoints.v2/http
spec:
  functions: {NAMESPACE}/*
  urlPathTemplate: {url}
  maxNumBatchRequests: 1000
  transport:
    call: 30s
    connect: 5s
---
kind: io.statefun.kinesis.v1/ingress
spec:
  id: {NAMESPACE}/in
  awsRegion:
    type: default
  startupPosition:
    type: earliest
  streams:
{streams}---
kind: io.statefun.kinesis.v1/egress
spec:
  id: {NAMESPACE}/out
  awsRegion:
    type: default
"
    )
}

/// A request for one counter: state `count` = `current`, one message adding `add`
/// (what the runtime would send for an address with one queued message).
pub fn request(id: &str, current: Option<i64>, add: i64) -> Vec<u8> {
    use statefun_sdk::testing::TestRequest;
    let request = TestRequest::new(statefun_sdk::Address::new(counter_type(), id))
        .with_state(&count(), current.as_ref())
        .and_then(|r| r.with_invocation(None, &LongType, &add));
    // Encoding a long never fails.
    request.map(|r| r.to_bytes()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use statefun_sdk::proto::egress::KinesisEgressRecord;
    use statefun_sdk::testing::invocation_result;

    #[tokio::test]
    async fn the_counter_adds_the_message_to_its_state_and_emits_the_new_count() {
        let request = prost::Message::decode(request("k1", Some(41), 1).as_slice()).expect("request");
        let reply = functions("out").handle_request(request).await;
        let result = invocation_result(reply.expect("reply")).expect("an invocation result");
        assert_eq!(result.state_mutations.len(), 1);
        let egress = &result.outgoing_egresses[0];
        let record: KinesisEgressRecord =
            prost::Message::decode(egress.argument.as_ref().expect("argument").value.as_slice()).expect("record");
        assert_eq!((record.stream.as_str(), record.partition_key.as_str()), ("out", "k1"));
        assert_eq!(record.value_bytes, b"42");
    }

    #[test]
    fn the_module_routes_the_ingress_to_the_counter() {
        let yaml = module_yaml("http://127.0.0.1:1/statefun", INGRESS_STREAM);
        let module = statefun_runtime::config::ModuleConfig::parse(&yaml, "bench").expect("valid module.yaml");
        assert_eq!(module.endpoints.len(), 1);
    }
}
