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

fn run(request: TestRequest) -> Result<InvocationResponse, Box<dyn std::error::Error>> {
    let bytes = functions().handle(&request.to_bytes())?;
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

#[test]
fn add_to_cart_sends_request_item_to_the_items_inventory() -> TestResult {
    let add = AddToCart { user_id: "u1".into(), item_id: "apple".into(), quantity: 3, request_id: "r1".into() };
    let response = run(cart("u1", None)?.with_proto_invocation(None, &add))?;
    assert!(response.state_mutations.is_empty());
    assert_eq!(response.outgoing_messages.len(), 1);
    let out = &response.outgoing_messages[0];
    assert_eq!(out.target, Some(inventory_type().address("apple").to_proto()));
    let argument = out.argument.clone().unwrap_or_default();
    assert_eq!(argument.typename, "type.googleapis.com/shoppingcart.RequestItem");
    assert_eq!(RequestItem::decode(argument.value.as_slice())?, RequestItem { quantity: 3, request_id: "r1".into() });
    Ok(())
}

#[test]
fn inventory_reserves_when_enough_is_in_stock_and_answers_the_caller() -> TestResult {
    let request = RequestItem { quantity: 3, request_id: "r1".into() };
    let response = run(inventory("apple", Some(5), Some(1))?.with_proto_invocation(Some(user("u1")), &request))?;
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

#[test]
fn inventory_answers_unavailable_and_keeps_its_state_when_stock_is_short() -> TestResult {
    let request = RequestItem { quantity: 3, request_id: "r2".into() };
    let response = run(inventory("apple", Some(2), None)?.with_proto_invocation(Some(user("u1")), &request))?;
    assert!(response.state_mutations.is_empty());
    let out = &response.outgoing_messages[0];
    let answer = ItemAvailability::decode(out.argument.clone().unwrap_or_default().value.as_slice())?;
    assert_eq!(answer.status, item_availability::Status::Unavailable as i32);
    assert_eq!(answer.remaining, 2);
    assert_eq!(answer.quantity, 3);
    Ok(())
}

#[test]
fn restock_adds_to_stock_and_emits_an_inventory_update() -> TestResult {
    let restock = RestockItem { item_id: "apple".into(), quantity: 10 };
    let response = run(inventory("apple", Some(2), None)?.with_proto_invocation(None, &restock))?;
    assert_eq!(int_mutation(&response, "in_stock"), Some(12));
    let record = kinesis_record(&response, 0)?;
    assert_eq!(record.stream, "inventory-updates");
    assert_eq!(record.partition_key, "apple");
    assert_eq!(String::from_utf8(record.value_bytes)?, r#"{"item_id":"apple","restocked":10,"in_stock":12}"#);
    Ok(())
}

#[test]
fn reserved_availability_adds_to_the_cart_and_emits_the_result() -> TestResult {
    let before = Items::from([("apple".to_owned(), 1)]);
    let answer = ItemAvailability {
        status: item_availability::Status::Reserved as i32,
        item_id: "apple".into(),
        quantity: 3,
        request_id: "r1".into(),
        remaining: 2,
    };
    let response =
        run(cart("u1", Some(&before))?.with_proto_invocation(Some(inventory_type().address("apple")), &answer))?;
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

#[test]
fn unavailable_result_leaves_the_cart_and_takes_the_item_from_the_caller() -> TestResult {
    let answer = ItemAvailability {
        status: item_availability::Status::Unavailable as i32,
        item_id: String::new(),
        quantity: 5,
        request_id: "r9".into(),
        remaining: 1,
    };
    let response = run(cart("u2", None)?.with_proto_invocation(Some(inventory_type().address("pear")), &answer))?;
    assert!(response.state_mutations.is_empty());
    let record = kinesis_record(&response, 0)?;
    assert_eq!(
        String::from_utf8(record.value_bytes)?,
        r#"{"request_id":"r9","user_id":"u2","item_id":"pear","quantity":5,"status":"unavailable","in_cart":0,"remaining":1}"#
    );
    Ok(())
}

#[test]
fn cart_to_inventory_to_cart_round_trip_reserves_the_item() -> TestResult {
    let add = AddToCart { user_id: "u1".into(), item_id: "apple".into(), quantity: 2, request_id: "r1".into() };
    let asked = run(cart("u1", None)?.with_proto_invocation(None, &add))?;
    let ask = asked.outgoing_messages[0].argument.clone().unwrap_or_default();
    let answered = run(inventory("apple", Some(2), None)?.with_invocation_value(Some(user("u1")), ask))?;
    let answer = answered.outgoing_messages[0].argument.clone().unwrap_or_default();
    let done = run(cart("u1", None)?.with_invocation_value(Some(inventory_type().address("apple")), answer))?;
    let result: CartResult = serde_json::from_slice(&kinesis_record(&done, 0)?.value_bytes)?;
    assert_eq!(result.status, Status::Reserved);
    assert_eq!(result.in_cart, 2);
    assert_eq!(result.remaining, 0);
    Ok(())
}

#[test]
fn non_positive_quantities_and_unknown_messages_are_clear_errors() -> TestResult {
    let add = AddToCart { user_id: "u1".into(), item_id: "apple".into(), quantity: 0, request_id: "r".into() };
    let err = functions()
        .handle(&cart("u1", None)?.with_proto_invocation(None, &add).to_bytes())
        .err()
        .map(|e| e.to_string());
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
        .err()
        .map(|e| e.to_string());
    assert!(err.is_some_and(|e| e.ends_with("quantity must be positive, got -1")));

    let stray = inventory("apple", None, None)?.with_invocation(None, &IntType, &1)?;
    let err = functions().handle(&stray.to_bytes()).err().map(|e| e.to_string());
    assert!(err.is_some_and(|e| e.ends_with("unexpected message of typename io.statefun.types/int")));
    Ok(())
}

#[test]
fn request_item_from_an_ingress_is_an_error() -> TestResult {
    let request = RequestItem { quantity: 1, request_id: "r".into() };
    let err = functions()
        .handle(&inventory("apple", Some(5), None)?.with_proto_invocation(None, &request).to_bytes())
        .err()
        .map(|e| e.to_string());
    assert!(err.is_some_and(|e| e.ends_with("RequestItem has no caller to answer")));
    Ok(())
}

#[test]
fn first_contact_asks_the_runtime_for_the_declared_states() -> TestResult {
    let request = TestRequest::new(inventory_type().address("apple"))
        .with_proto_invocation(None, &RestockItem { item_id: "apple".into(), quantity: 1 });
    let missing =
        statefun_sdk::testing::missing_values(functions().handle_request(request.to_function())?).unwrap_or_default();
    let specs: Vec<_> = missing
        .iter()
        .map(|s| (s.state_name.as_str(), s.type_typename.as_str(), s.expiration_spec.is_none()))
        .collect();
    assert_eq!(specs, [("in_stock", "io.statefun.types/int", true), ("reserved", "io.statefun.types/int", true)]);
    Ok(())
}
