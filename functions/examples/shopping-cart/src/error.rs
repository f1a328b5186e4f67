//! The example's errors: bad input that the runtime should retry and then
//! dead-letter with a clear reason.

use statefun_sdk::Address;

/// Why the cart or the inventory rejected a message.
#[derive(Debug, thiserror::Error)]
pub enum CartError {
    /// A quantity of zero or less.
    #[error("{address}: quantity must be positive, got {quantity}")]
    NonPositiveQuantity {
        /// The function instance that received it.
        address: Address,
        /// The quantity received.
        quantity: i32,
    },
    /// A message of a type the function does not handle.
    #[error("{address}: unexpected message of typename {typename}")]
    UnexpectedMessage {
        /// The function instance that received it.
        address: Address,
        /// The typename of the message.
        typename: String,
    },
    /// A message without the item id it needs.
    #[error("{address}: the message names no item")]
    MissingItem {
        /// The function instance that received it.
        address: Address,
    },
    /// A `RequestItem` from an ingress: there is nobody to answer.
    #[error("{address}: RequestItem has no caller to answer")]
    NoCaller {
        /// The function instance that received it.
        address: Address,
    },
    /// An `ItemAvailability` with a status this code does not know.
    #[error("{address}: unknown ItemAvailability status {status}")]
    UnknownStatus {
        /// The function instance that received it.
        address: Address,
        /// The raw status.
        status: i32,
    },
    /// A count would overflow a 32-bit integer.
    #[error("{address}: {what} would overflow")]
    Overflow {
        /// The function instance that received it.
        address: Address,
        /// The count.
        what: &'static str,
    },
}
