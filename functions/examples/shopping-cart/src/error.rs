//! The example's errors: input the functions will never accept. They are
//! answered as [`Permanent`], so the runtime dead-letters the message at once
//! with the reason, instead of trying it again; any other error (a state that
//! does not decode, the supplier being down) stays retryable.

use statefun_sdk::{Address, BoxError, Permanent};

/// Marks the example's own errors as permanent; leaves the others retryable.
pub(crate) fn classify(error: BoxError) -> BoxError {
    if error.is::<CartError>() { Permanent::new(error).into() } else { error }
}

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
