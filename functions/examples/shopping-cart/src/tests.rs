//! The example's logic through the SDK's request-reply handler.

use prost::Message as _;
use statefun_proto::egress::KinesisEgressRecord;
use statefun_proto::reqreply::FromFunction;
use statefun_proto::reqreply::from_function::{InvocationResponse, persisted_value_mutation::MutationType};
use statefun_proto::shoppingcart::{AddToCart, ItemAvailability, RequestItem, RestockItem, item_availability};
use statefun_proto::typenames;
use statefun_sdk::testing::{TestRequest, invocation_result};
use statefun_sdk::{Address, IntType, JsonType, Type};

use super::*;

type TestResult = Result<(), Box<dyn std::error::Error>>;

async fn run(request: TestRequest) -> Result<InvocationResponse, Box<dyn std::error::Error>> {
    let bytes = functions().handle(&request.to_bytes()).await?;
    invocation_result(FromFunction::decode(bytes.as_slice())?).ok_or_else(|| "expected an invocation result".into())
}

fn cart(user: &str, cart_items: Option<&Items>) -> Result<TestRequest, statefun_sdk::Error> {
    TestRequest::new(cart_type().address(user)).with_state(&items(), cart_items)
}

fn inventory(item: &str, stock: Option<i32>, held: Option<i32>) -> Result<TestRequest, statefun_sdk::Error> {
    TestRequest::new(inventory_type().address(item))
        .with_state(&in_stock(), stock.as_ref())?
        .with_state(&reserved(), held.as_ref())
}

fn kinesis_record(
    response: &InvocationResponse,
    index: usize,
) -> Result<KinesisEgressRecord, Box<dyn std::error::Error>> {
    let egress = response.outgoing_egresses.get(index).ok_or("no egress record")?;
    assert_eq!(egress.egress_namespace, "shoppingcart");
    assert_eq!(egress.egress_type, "kinesis");
    let argument = egress.argument.as_ref().ok_or("no argument")?;
    assert_eq!(argument.typename, typenames::KINESIS_EGRESS_RECORD);
    Ok(KinesisEgressRecord::decode(argument.value.as_slice())?)
}

fn int_mutation(response: &InvocationResponse, name: &str) -> Option<i32> {
    let m = response.state_mutations.iter().find(|m| m.state_name == name)?;
    assert_eq!(m.mutation_type, MutationType::Modify as i32);
    IntType.decode(&m.state_value.as_ref()?.value).ok()
}

fn user(id: &str) -> Address {
    cart_type().address(id)
}

#[tokio::test]
async fn add_to_cart_sends_request_item_to_the_items_inventory() -> TestResult {
    let add = AddToCart { user_id: "u1".into(), item_id: "apple".into(), quantity: 3, request_id: "r1".into() };
    let response = run(cart("u1", None)?.with_proto_invocation(None, &add)).await?;
    assert!(response.state_mutations.is_empty());
    assert_eq!(response.outgoing_messages.len(), 1);
    let out = &response.outgoing_messages[0];
    assert_eq!(out.target, Some(inventory_type().address("apple").to_proto()));
    let argument = out.argument.clone().unwrap_or_default();
    assert_eq!(argument.typename, "type.googleapis.com/shoppingcart.RequestItem");
    assert_eq!(RequestItem::decode(argument.value.as_slice())?, RequestItem { quantity: 3, request_id: "r1".into() });
    Ok(())
}

#[tokio::test]
async fn inventory_reserves_when_enough_is_in_stock_and_answers_the_caller() -> TestResult {
    let request = RequestItem { quantity: 3, request_id: "r1".into() };
    let response = run(inventory("apple", Some(5), Some(1))?.with_proto_invocation(Some(user("u1")), &request)).await?;
    assert_eq!(int_mutation(&response, "in_stock"), Some(2));
    assert_eq!(int_mutation(&response, "reserved"), Some(4));
    let out = &response.outgoing_messages[0];
    assert_eq!(out.target, Some(user("u1").to_proto()));
    let answer = ItemAvailability::decode(out.argument.clone().unwrap_or_default().value.as_slice())?;
    assert_eq!(
        answer,
        ItemAvailability {
            status: item_availability::Status::Reserved as i32,
            item_id: "apple".into(),
            quantity: 3,
            request_id: "r1".into(),
            remaining: 2,
        }
    );
    Ok(())
}

#[tokio::test]
async fn inventory_answers_unavailable_and_keeps_its_state_when_stock_is_short() -> TestResult {
    let request = RequestItem { quantity: 3, request_id: "r2".into() };
    let response = run(inventory("apple", Some(2), None)?.with_proto_invocation(Some(user("u1")), &request)).await?;
    assert!(response.state_mutations.is_empty());
    let out = &response.outgoing_messages[0];
    let answer = ItemAvailability::decode(out.argument.clone().unwrap_or_default().value.as_slice())?;
    assert_eq!(answer.status, item_availability::Status::Unavailable as i32);
    assert_eq!(answer.remaining, 2);
    assert_eq!(answer.quantity, 3);
    Ok(())
}

#[tokio::test]
async fn restock_adds_to_stock_and_emits_an_inventory_update() -> TestResult {
    let restock = RestockItem { item_id: "apple".into(), quantity: 10 };
    let response = run(inventory("apple", Some(2), None)?.with_proto_invocation(None, &restock)).await?;
    assert_eq!(int_mutation(&response, "in_stock"), Some(12));
    let record = kinesis_record(&response, 0)?;
    assert_eq!(record.stream, "inventory-updates");
    assert_eq!(record.partition_key, "apple");
    assert_eq!(String::from_utf8(record.value_bytes)?, r#"{"item_id":"apple","restocked":10,"in_stock":12}"#);
    Ok(())
}

#[tokio::test]
async fn reserved_availability_adds_to_the_cart_and_emits_the_result() -> TestResult {
    let before = Items::from([("apple".to_owned(), 1)]);
    let answer = ItemAvailability {
        status: item_availability::Status::Reserved as i32,
        item_id: "apple".into(),
        quantity: 3,
        request_id: "r1".into(),
        remaining: 2,
    };
    let response =
        run(cart("u1", Some(&before))?.with_proto_invocation(Some(inventory_type().address("apple")), &answer)).await?;
    let items_after = response.state_mutations[0].state_value.clone().unwrap_or_default();
    assert_eq!(items_after.typename, "shoppingcart/ItemsInCart");
    assert_eq!(
        JsonType::<Items>::new(ITEMS_TYPENAME).decode(&items_after.value).ok(),
        Some(Items::from([("apple".to_owned(), 4)]))
    );
    let record = kinesis_record(&response, 0)?;
    assert_eq!(record.stream, "cart-results");
    assert_eq!(record.partition_key, "u1");
    assert_eq!(
        String::from_utf8(record.value_bytes)?,
        r#"{"request_id":"r1","user_id":"u1","item_id":"apple","quantity":3,"status":"reserved","in_cart":4,"remaining":2}"#
    );
    Ok(())
}

#[tokio::test]
async fn unavailable_result_leaves_the_cart_and_takes_the_item_from_the_caller() -> TestResult {
    let answer = ItemAvailability {
        status: item_availability::Status::Unavailable as i32,
        item_id: String::new(),
        quantity: 5,
        request_id: "r9".into(),
        remaining: 1,
    };
    let response =
        run(cart("u2", None)?.with_proto_invocation(Some(inventory_type().address("pear")), &answer)).await?;
    assert!(response.state_mutations.is_empty());
    let record = kinesis_record(&response, 0)?;
    assert_eq!(
        String::from_utf8(record.value_bytes)?,
        r#"{"request_id":"r9","user_id":"u2","item_id":"pear","quantity":5,"status":"unavailable","in_cart":0,"remaining":1}"#
    );
    Ok(())
}

#[tokio::test]
async fn cart_to_inventory_to_cart_round_trip_reserves_the_item() -> TestResult {
    let add = AddToCart { user_id: "u1".into(), item_id: "apple".into(), quantity: 2, request_id: "r1".into() };
    let asked = run(cart("u1", None)?.with_proto_invocation(None, &add)).await?;
    let ask = asked.outgoing_messages[0].argument.clone().unwrap_or_default();
    let answered = run(inventory("apple", Some(2), None)?.with_invocation_value(Some(user("u1")), ask)).await?;
    let answer = answered.outgoing_messages[0].argument.clone().unwrap_or_default();
    let done = run(cart("u1", None)?.with_invocation_value(Some(inventory_type().address("apple")), answer)).await?;
    let result: CartResult = serde_json::from_slice(&kinesis_record(&done, 0)?.value_bytes)?;
    assert_eq!(result.status, Status::Reserved);
    assert_eq!(result.in_cart, 2);
    assert_eq!(result.remaining, 0);
    Ok(())
}

#[tokio::test]
async fn non_positive_quantities_and_unknown_messages_are_clear_errors() -> TestResult {
    let add = AddToCart { user_id: "u1".into(), item_id: "apple".into(), quantity: 0, request_id: "r".into() };
    let err = functions().handle(&cart("u1", None)?.with_proto_invocation(None, &add).to_bytes()).await.err();
    assert!(err.as_ref().is_some_and(statefun_sdk::Error::is_permanent), "refused for good: {err:?}");
    let err = err.map(|e| e.to_string());
    assert_eq!(
        err.as_deref(),
        Some(
            "function shoppingcart/cart/u1 failed on message #0 (type.googleapis.com/shoppingcart.AddToCart): \
             shoppingcart/cart/u1: quantity must be positive, got 0"
        )
    );

    let restock = RestockItem { item_id: "apple".into(), quantity: -1 };
    let err = functions()
        .handle(&inventory("apple", None, None)?.with_proto_invocation(None, &restock).to_bytes())
        .await
        .err()
        .map(|e| e.to_string());
    assert!(err.is_some_and(|e| e.ends_with("quantity must be positive, got -1")));

    let stray = inventory("apple", None, None)?.with_invocation(None, &IntType, &1)?;
    let err = functions().handle(&stray.to_bytes()).await.err().map(|e| e.to_string());
    assert!(err.is_some_and(|e| e.ends_with("unexpected message of typename io.statefun.types/int")));
    Ok(())
}

#[tokio::test]
async fn request_item_from_an_ingress_is_an_error() -> TestResult {
    let request = RequestItem { quantity: 1, request_id: "r".into() };
    let err = functions()
        .handle(&inventory("apple", Some(5), None)?.with_proto_invocation(None, &request).to_bytes())
        .await
        .err()
        .map(|e| e.to_string());
    assert!(err.is_some_and(|e| e.ends_with("RequestItem has no caller to answer")));
    Ok(())
}

#[tokio::test]
async fn first_contact_asks_the_runtime_for_the_declared_states() -> TestResult {
    let request = TestRequest::new(inventory_type().address("apple"))
        .with_proto_invocation(None, &RestockItem { item_id: "apple".into(), quantity: 1 });
    let missing = statefun_sdk::testing::missing_values(functions().handle_request(request.to_function()).await?)
        .unwrap_or_default();
    let specs: Vec<_> = missing
        .iter()
        .map(|s| (s.state_name.as_str(), s.type_typename.as_str(), s.expiration_spec.is_none()))
        .collect();
    assert_eq!(specs, [("in_stock", "io.statefun.types/int", true), ("reserved", "io.statefun.types/int", true)]);
    Ok(())
}

/// A supplier on a local port that delivers at most `stock_per_order` of each
/// order and keeps the orders it was sent.
async fn local_supplier(
    stock_per_order: i32,
) -> Result<(String, std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>), Box<dyn std::error::Error>> {
    use http_body_util::{BodyExt, Full};
    use hyper::body::{Bytes, Incoming};
    use hyper_util::rt::TokioIo;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/deliveries", listener.local_addr()?);
    let orders = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = orders.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let seen = seen.clone();
            let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
                let seen = seen.clone();
                async move {
                    let body = request.into_body().collect().await?.to_bytes();
                    let order: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                    let delivered = order["quantity"].as_i64().unwrap_or(0).min(i64::from(stock_per_order));
                    seen.lock().unwrap_or_else(|e| e.into_inner()).push(order);
                    let answer = serde_json::json!({ "delivered": delivered }).to_string();
                    Ok::<_, hyper::Error>(hyper::Response::new(Full::new(Bytes::from(answer))))
                }
            });
            tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service));
        }
    });
    Ok((url, orders))
}

#[tokio::test]
async fn the_async_inventory_awaits_the_supplier_and_adds_only_what_it_delivers() -> TestResult {
    let (url, orders) = local_supplier(3).await?;
    let functions = functions_with_supplier(Supplier::new(&url)?);
    let restock = RestockItem { item_id: "apple".into(), quantity: 5 };
    let request = inventory("apple", Some(2), None)?.with_proto_invocation(None, &restock);
    let bytes = functions.handle(&request.to_bytes()).await?;
    let response = invocation_result(FromFunction::decode(bytes.as_slice())?).ok_or("an invocation result")?;
    assert_eq!(int_mutation(&response, "in_stock"), Some(5), "2 in stock and 3 of the 5 ordered delivered");
    let update: InventoryUpdate = serde_json::from_slice(&kinesis_record(&response, 0)?.value_bytes)?;
    assert_eq!(update, InventoryUpdate { item_id: "apple".into(), restocked: 3, in_stock: 5 });
    let sent = orders.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert_eq!(sent, [serde_json::json!({"item_id": "apple", "quantity": 5})]);

    // Requests for items are not the supplier's business.
    let ask = RequestItem { quantity: 1, request_id: "r".into() };
    let request = inventory("apple", Some(5), None)?.with_proto_invocation(Some(user("u1")), &ask);
    functions.handle(&request.to_bytes()).await?;
    assert_eq!(orders.lock().unwrap_or_else(|e| e.into_inner()).len(), 1);
    Ok(())
}

#[tokio::test]
async fn a_supplier_that_does_not_answer_fails_the_restock_for_a_retry_not_for_good() -> TestResult {
    // A port that was just free: nobody listens there.
    let url = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        format!("http://{}/deliveries", listener.local_addr()?)
    };
    let functions = functions_with_supplier(Supplier::new(&url)?);
    let restock = RestockItem { item_id: "apple".into(), quantity: 5 };
    let request = inventory("apple", Some(2), None)?.with_proto_invocation(None, &restock);
    let err = functions.handle(&request.to_bytes()).await.err();
    assert!(err.as_ref().is_some_and(|e| !e.is_permanent()), "{err:?}");
    assert!(err.is_some_and(|e| e.to_string().contains(&url)), "the error names the supplier");
    let bad = RestockItem { item_id: "apple".into(), quantity: 0 };
    let request = inventory("apple", Some(2), None)?.with_proto_invocation(None, &bad);
    let err = functions.handle(&request.to_bytes()).await.err();
    assert!(err.is_some_and(|e| e.is_permanent()), "a bad order is refused before the supplier is asked");
    Ok(())
}
