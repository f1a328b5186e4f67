//! Protobuf messages, named `type.googleapis.com/<full name>`.

use std::fmt;
use std::marker::PhantomData;

use super::Type;
use crate::error::BoxError;

/// A prost message, under StateFun's protobuf typename
/// `type.googleapis.com/<package>.<Message>` (from [`prost::Name`]).
///
/// ```
/// use statefun_sdk::{ProtobufType, Type};
/// use statefun_proto::shoppingcart::AddToCart;
///
/// let ty = ProtobufType::<AddToCart>::new();
/// assert_eq!(ty.typename(), "type.googleapis.com/shoppingcart.AddToCart");
/// ```
pub struct ProtobufType<M> {
    typename: String,
    message: PhantomData<fn() -> M>,
}

impl<M: prost::Name> ProtobufType<M> {
    /// The type of message `M`.
    pub fn new() -> Self {
        Self { typename: M::type_url(), message: PhantomData }
    }
}

impl<M: prost::Name> Default for ProtobufType<M> {
    fn default() -> Self {
        Self::new()
    }
}

impl<M> Clone for ProtobufType<M> {
    fn clone(&self) -> Self {
        Self { typename: self.typename.clone(), message: PhantomData }
    }
}

impl<M> fmt::Debug for ProtobufType<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ProtobufType").field(&self.typename).finish()
    }
}

impl<M: prost::Message + prost::Name + Default + 'static> Type for ProtobufType<M> {
    type Value = M;

    fn typename(&self) -> &str {
        &self.typename
    }

    fn encode(&self, value: &M) -> Result<Vec<u8>, BoxError> {
        Ok(value.encode_to_vec())
    }

    fn decode(&self, bytes: &[u8]) -> Result<M, BoxError> {
        Ok(M::decode(bytes)?)
    }
}
