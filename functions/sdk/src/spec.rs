//! State declarations: [`ValueSpec`] and [`Expiration`].
//!
//! A function declares its states when it is registered. The runtime keeps the
//! values and sends all of them with every batch; the function answers
//! `incomplete_invocation_context` with the [`StateSpec`]s of any it did not
//! receive, so the runtime learns names, typenames and expirations from the
//! function itself (StateFun's state negotiation).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use statefun_proto::reqreply::from_function::{ExpirationSpec, PersistedValueSpec, expiration_spec::ExpireMode};

use crate::types::Type;

/// When a state value expires. The runtime enforces it; the function only
/// declares it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Expiration(Mode);

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Mode {
    #[default]
    Never,
    AfterWrite(Duration),
    AfterInvoke(Duration),
}

impl Expiration {
    /// The value never expires.
    pub fn none() -> Self {
        Self(Mode::Never)
    }

    /// The value expires `ttl` after it was last written.
    pub fn after_write(ttl: Duration) -> Self {
        Self(Mode::AfterWrite(ttl))
    }

    /// The value expires `ttl` after the function was last invoked (read or written).
    pub fn after_invoke(ttl: Duration) -> Self {
        Self(Mode::AfterInvoke(ttl))
    }

    /// The time to live, `None` if the value never expires.
    pub fn ttl(&self) -> Option<Duration> {
        match self.0 {
            Mode::Never => None,
            Mode::AfterWrite(ttl) | Mode::AfterInvoke(ttl) => Some(ttl),
        }
    }

    /// The wire form; absent for "never", which StateFun reads as `NONE`.
    pub(crate) fn to_proto(self) -> Option<ExpirationSpec> {
        let (mode, ttl) = match self.0 {
            Mode::Never => return None,
            Mode::AfterWrite(ttl) => (ExpireMode::AfterWrite, ttl),
            Mode::AfterInvoke(ttl) => (ExpireMode::AfterInvoke, ttl),
        };
        Some(ExpirationSpec {
            mode: mode as i32,
            expire_after_millis: i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX),
        })
    }
}

/// The untyped declaration of one state: name, typename and expiration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateSpec {
    name: String,
    typename: String,
    expiration: Expiration,
}

impl StateSpec {
    /// The state name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The typename of its values.
    pub fn typename(&self) -> &str {
        &self.typename
    }

    /// When its values expire.
    pub fn expiration(&self) -> Expiration {
        self.expiration
    }

    /// The wire form, as listed in `incomplete_invocation_context`.
    pub fn to_proto(&self) -> PersistedValueSpec {
        PersistedValueSpec {
            state_name: self.name.clone(),
            expiration_spec: self.expiration.to_proto(),
            type_typename: self.typename.clone(),
        }
    }
}

/// A typed state declaration: a name, a [`Type`] and an [`Expiration`].
///
/// ```
/// use std::time::Duration;
/// use statefun_sdk::{Expiration, IntType, ValueSpec};
///
/// let seen: ValueSpec<i32> = ValueSpec::new("seen", IntType)
///     .with_expiration(Expiration::after_write(Duration::from_secs(60)));
/// assert_eq!(seen.name(), "seen");
/// assert_eq!(seen.typename(), "io.statefun.types/int");
/// ```
pub struct ValueSpec<T> {
    spec: StateSpec,
    ty: Arc<dyn Type<Value = T>>,
}

impl<T: 'static> ValueSpec<T> {
    /// A state named `name` holding values of `ty`, never expiring.
    pub fn new(name: impl Into<String>, ty: impl Type<Value = T>) -> Self {
        Self {
            spec: StateSpec { name: name.into(), typename: ty.typename().to_owned(), expiration: Expiration::none() },
            ty: Arc::new(ty),
        }
    }
}

impl<T> ValueSpec<T> {
    /// The same state with another expiration.
    pub fn with_expiration(mut self, expiration: Expiration) -> Self {
        self.spec.expiration = expiration;
        self
    }

    /// The state name.
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// The typename of its values.
    pub fn typename(&self) -> &str {
        &self.spec.typename
    }

    /// When its values expire.
    pub fn expiration(&self) -> Expiration {
        self.spec.expiration
    }

    /// The untyped declaration.
    pub fn state_spec(&self) -> &StateSpec {
        &self.spec
    }

    /// The value type.
    pub fn value_type(&self) -> &dyn Type<Value = T> {
        self.ty.as_ref()
    }
}

impl<T> Clone for ValueSpec<T> {
    fn clone(&self) -> Self {
        Self { spec: self.spec.clone(), ty: Arc::clone(&self.ty) }
    }
}

impl<T> fmt::Debug for ValueSpec<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ValueSpec").field(&self.spec).finish()
    }
}

/// Anything that declares a state: a [`ValueSpec`] of any value type, or a
/// [`StateSpec`]. Lets one registration list states of different types.
pub trait AnyValueSpec {
    /// The untyped declaration.
    fn to_state_spec(&self) -> StateSpec;
}

impl<T> AnyValueSpec for ValueSpec<T> {
    fn to_state_spec(&self) -> StateSpec {
        self.spec.clone()
    }
}

impl AnyValueSpec for StateSpec {
    fn to_state_spec(&self) -> StateSpec {
        self.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{IntType, StringType};

    #[test]
    fn no_expiry_is_encoded_as_an_absent_expiration_spec() {
        let spec = ValueSpec::new("n", IntType).state_spec().to_proto();
        assert_eq!(spec.state_name, "n");
        assert_eq!(spec.type_typename, "io.statefun.types/int");
        assert_eq!(spec.expiration_spec, None);
    }

    #[test]
    fn after_write_is_encoded_with_mode_and_millis() {
        let spec = ValueSpec::new("s", StringType)
            .with_expiration(Expiration::after_write(Duration::from_secs(5)))
            .state_spec()
            .to_proto();
        assert_eq!(
            spec.expiration_spec,
            Some(ExpirationSpec { mode: ExpireMode::AfterWrite as i32, expire_after_millis: 5000 })
        );
    }

    #[test]
    fn after_invoke_is_encoded_with_mode_and_millis() {
        let exp = Expiration::after_invoke(Duration::from_millis(1500)).to_proto();
        assert_eq!(exp, Some(ExpirationSpec { mode: ExpireMode::AfterInvoke as i32, expire_after_millis: 1500 }));
        assert_eq!(ExpireMode::AfterInvoke as i32, 2);
        assert_eq!(ExpireMode::AfterWrite as i32, 1);
    }

    #[test]
    fn huge_ttl_saturates_at_i64_max_millis() {
        let exp = Expiration::after_write(Duration::MAX).to_proto();
        assert_eq!(exp.map(|e| e.expire_after_millis), Some(i64::MAX));
    }
}
