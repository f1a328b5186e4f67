//! Function types and addresses.
//!
//! A [`FunctionType`] is `namespace/name` (StateFun splits a typename at its
//! last `/`); an [`Address`] is a function type plus an id, the identity of
//! one function instance with its own state. Both are cheap to clone (shared
//! strings), since every message carries one.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use statefun_proto::reqreply;

use crate::error::Error;

/// The type of a function: a namespace and a name, written `namespace/name`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FunctionType {
    namespace: Arc<str>,
    name: Arc<str>,
}

impl FunctionType {
    /// A function type from its namespace and name.
    ///
    /// ```
    /// let cart = statefun_sdk::FunctionType::new("shoppingcart", "cart");
    /// assert_eq!(cart.to_string(), "shoppingcart/cart");
    /// ```
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self { namespace: Arc::from(namespace.into()), name: Arc::from(name.into()) }
    }

    /// The namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The name within the namespace.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The address of the instance `id` of this type.
    pub fn address(&self, id: impl Into<String>) -> Address {
        Address::new(self.clone(), id)
    }
}

impl fmt::Display for FunctionType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

impl FromStr for FunctionType {
    type Err = Error;

    /// Parses `namespace/name`, splitting at the last `/`.
    fn from_str(s: &str) -> Result<Self, Error> {
        match s.rsplit_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() => Ok(Self::new(ns, name)),
            _ => Err(Error::InvalidTypename(s.to_owned())),
        }
    }
}

/// The identity of one function instance: a function type and an id.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Address {
    function_type: FunctionType,
    id: Arc<str>,
}

impl Address {
    /// The address of instance `id` of `function_type`.
    pub fn new(function_type: FunctionType, id: impl Into<String>) -> Self {
        Self { function_type, id: Arc::from(id.into()) }
    }

    /// The function type.
    pub fn function_type(&self) -> &FunctionType {
        &self.function_type
    }

    /// The id within the function type.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The wire form.
    pub fn to_proto(&self) -> reqreply::Address {
        reqreply::Address {
            namespace: self.function_type.namespace.to_string(),
            r#type: self.function_type.name.to_string(),
            id: self.id.to_string(),
        }
    }
}

impl From<reqreply::Address> for Address {
    fn from(a: reqreply::Address) -> Self {
        Self::new(FunctionType::new(a.namespace, a.r#type), a.id)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.function_type, self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_type_parses_at_the_last_slash() -> Result<(), Error> {
        let t: FunctionType = "com.example/fns/cart".parse()?;
        assert_eq!(t.namespace(), "com.example/fns");
        assert_eq!(t.name(), "cart");
        Ok(())
    }

    #[test]
    fn function_type_without_slash_is_an_error() {
        let err = "cart".parse::<FunctionType>().err().map(|e| e.to_string());
        assert_eq!(err.as_deref(), Some("invalid typename `cart`: expected `namespace/name`"));
    }

    #[test]
    fn address_round_trips_through_the_wire_form() {
        let a = FunctionType::new("shoppingcart", "cart").address("u1");
        assert_eq!(Address::from(a.to_proto()), a);
        assert_eq!(a.to_string(), "shoppingcart/cart/u1");
    }
}
