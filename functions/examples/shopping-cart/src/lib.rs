//! The shopping cart of the StateFun blog post "Stateful Functions Internals",
//! on the Rust SDK.
//!
//! ```text
//!  ingress add-to-cart ──AddToCart──▶ shoppingcart/cart/<user>
//!                                        │ RequestItem{quantity, request_id}
//!                                        ▼
//!                                   shoppingcart/inventory/<item> ── in_stock, reserved
//!                                        │ ItemAvailability{RESERVED|UNAVAILABLE, remaining}
//!                                        ▼
//!                                   shoppingcart/cart/<user> ── items ──▶ egress shoppingcart/kinesis
//!                                                                        stream cart-results
//!  ingress restock ──RestockItem──▶ shoppingcart/inventory/<item> ──▶ stream inventory-updates
//! ```
//!
//! The names below (function types, states, typenames, egress, streams and the
//! JSON of the egress records) are a contract other code depends on: the
//! runtime's configuration, the end-to-end tests and the benchmarks.

mod cart;
mod error;
mod inventory;
mod records;
mod supplier;

use statefun_sdk::{EgressIdentifier, FunctionType, Functions, IntType, JsonType, ValueSpec};

pub use error::CartError;
pub use records::{CartResult, InventoryUpdate, Status};
pub use supplier::{Supplier, SupplierError};

/// The namespace of the example's function types and egress.
pub const NAMESPACE: &str = "shoppingcart";

/// The Kinesis stream of [`CartResult`] records.
pub const CART_RESULTS_STREAM: &str = "cart-results";

/// The Kinesis stream of [`InventoryUpdate`] records.
pub const INVENTORY_UPDATES_STREAM: &str = "inventory-updates";

/// The typename of the cart's `items` state.
pub const ITEMS_TYPENAME: &str = "shoppingcart/ItemsInCart";

/// The items in a cart: item id → quantity.
pub type Items = std::collections::BTreeMap<String, i32>;

/// `shoppingcart/cart`, one instance per user (id = user id).
pub fn cart_type() -> FunctionType {
    FunctionType::new(NAMESPACE, "cart")
}

/// `shoppingcart/inventory`, one instance per item (id = item id).
pub fn inventory_type() -> FunctionType {
    FunctionType::new(NAMESPACE, "inventory")
}

/// `shoppingcart/kinesis`, the Kinesis egress both functions write to.
pub fn egress() -> EgressIdentifier {
    EgressIdentifier::new(NAMESPACE, "kinesis")
}

/// The cart's state `items`: JSON, `shoppingcart/ItemsInCart`, no expiry.
pub fn items() -> ValueSpec<Items> {
    ValueSpec::new("items", JsonType::<Items>::new(ITEMS_TYPENAME))
}

/// The inventory's state `in_stock`: `io.statefun.types/int`, no expiry.
pub fn in_stock() -> ValueSpec<i32> {
    ValueSpec::new("in_stock", IntType)
}

/// The inventory's state `reserved`: `io.statefun.types/int`, no expiry.
pub fn reserved() -> ValueSpec<i32> {
    ValueSpec::new("reserved", IntType)
}

/// Both functions, ready to serve over HTTP or Lambda (or in-process in tests).
///
/// ```
/// let functions = shopping_cart::functions();
/// assert!(functions.specs(&shopping_cart::cart_type()).is_some());
/// assert!(functions.specs(&shopping_cart::inventory_type()).is_some());
/// ```
pub fn functions() -> Functions {
    Functions::new().with(cart_type(), &[&items()], cart::handle).with(
        inventory_type(),
        &[&in_stock(), &reserved()],
        inventory::handle,
    )
}

/// Both functions, the inventory an asynchronous one that awaits `supplier`
/// on every restock and adds only what it delivers ([`Supplier`]).
///
/// ```
/// let supplier = shopping_cart::Supplier::new("http://127.0.0.1:9000/deliveries")?;
/// let functions = shopping_cart::functions_with_supplier(supplier);
/// assert!(functions.specs(&shopping_cart::inventory_type()).is_some());
/// # Ok::<(), shopping_cart::SupplierError>(())
/// ```
pub fn functions_with_supplier(supplier: Supplier) -> Functions {
    Functions::new().with(cart_type(), &[&items()], cart::handle).with_async(
        inventory_type(),
        &[&in_stock(), &reserved()],
        move |ctx, message| inventory::handle_with_supplier(supplier.clone(), ctx, message),
    )
}

#[cfg(test)]
mod tests;
