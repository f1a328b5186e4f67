//! The JSON of the records written to the Kinesis egress.
//!
//! Field order is the order of the struct fields (serde_json, compact), so the
//! bytes are stable: consumers and tests may compare them literally.

use serde::{Deserialize, Serialize};

/// Whether an item was added to the cart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The inventory reserved the quantity; it is in the cart.
    Reserved,
    /// Not enough stock; the cart is unchanged.
    Unavailable,
}

/// A record of stream `cart-results`, partition key = user id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CartResult {
    /// The client's request id, from `AddToCart`.
    pub request_id: String,
    /// The user (the cart's id).
    pub user_id: String,
    /// The item.
    pub item_id: String,
    /// The quantity asked for.
    pub quantity: i32,
    /// Whether it was reserved.
    pub status: Status,
    /// The quantity of this item in the cart after this request.
    pub in_cart: i32,
    /// The stock left, as reported by the inventory.
    pub remaining: i32,
}

/// A record of stream `inventory-updates`, partition key = item id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryUpdate {
    /// The item (the inventory's id).
    pub item_id: String,
    /// The quantity added.
    pub restocked: i32,
    /// The stock after the restock.
    pub in_stock: i32,
}
