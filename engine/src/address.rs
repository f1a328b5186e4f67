//! Addresses, function types and the routing of addresses to partitions.
//!
//! The routing hash is a wire contract: checkpoints and exchange shards are laid
//! out by it, so it must never change (golden values are tested below).

use std::fmt;

use statefun_proto::reqreply::Address;
use xxhash_rust::xxh3::xxh3_64;

/// Key groups are the fixed unit addresses hash into; partitions own contiguous
/// ranges of them, so the partition count can change later without rehashing.
pub const KEY_GROUPS: u32 = 4096;

/// A function type, `namespace/name`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FunctionType {
    pub namespace: String,
    pub name: String,
}

impl FunctionType {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self { namespace: namespace.into(), name: name.into() }
    }

    /// Parses `namespace/name`, splitting at the last `/` as StateFun typenames do.
    pub fn parse(text: &str) -> Option<Self> {
        let (namespace, name) = text.rsplit_once('/')?;
        if namespace.is_empty() || name.is_empty() {
            return None;
        }
        Some(Self::new(namespace, name))
    }

    pub fn of(address: &Address) -> Self {
        Self::new(address.namespace.clone(), address.r#type.clone())
    }

    pub fn address(&self, id: impl Into<String>) -> Address {
        Address { namespace: self.namespace.clone(), r#type: self.name.clone(), id: id.into() }
    }
}

impl fmt::Display for FunctionType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// `namespace/type/id`, for logs and error messages.
pub fn display(address: &Address) -> String {
    format!("{}/{}/{}", address.namespace, address.r#type, address.id)
}

/// The key group of an address: xxh3-64 of `namespace 0x1f type 0x1f id`, modulo [`KEY_GROUPS`].
pub fn key_group(address: &Address) -> u32 {
    key_group_of(&address.namespace, &address.r#type, &address.id)
}

/// [`key_group`] of the address these parts make, without making it.
pub fn key_group_of(namespace: &str, name: &str, id: &str) -> u32 {
    let parts = [namespace.as_bytes(), b"\x1f", name.as_bytes(), b"\x1f", id.as_bytes()];
    let len: usize = parts.iter().map(|p| p.len()).sum();
    // Every message is routed: most keys fit on the stack.
    let mut small = [0u8; 128];
    let mut large = Vec::new();
    let key = if len <= small.len() {
        &mut small[..len]
    } else {
        large.resize(len, 0);
        &mut large[..]
    };
    let mut at = 0;
    for part in parts {
        key[at..at + part.len()].copy_from_slice(part);
        at += part.len();
    }
    (xxh3_64(key) % u64::from(KEY_GROUPS)) as u32
}

/// The partition that owns a key group: partitions own contiguous, near-equal ranges.
pub fn partition_of_key_group(key_group: u32, partitions: u32) -> u32 {
    (u64::from(key_group) * u64::from(partitions) / u64::from(KEY_GROUPS)) as u32
}

pub fn partition_of(address: &Address, partitions: u32) -> u32 {
    partition_of_key_group(key_group(address), partitions)
}

/// Which of `shards` shards a record with this partition key goes to (local streams).
pub fn shard_of_key(partition_key: &str, shards: u32) -> u32 {
    (xxh3_64(partition_key.as_bytes()) % u64::from(shards.max(1))) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_type_splits_at_last_slash() {
        let t = FunctionType::parse("com.example/fns/greeter").expect("valid");
        assert_eq!(t.namespace, "com.example/fns");
        assert_eq!(t.name, "greeter");
        assert!(FunctionType::parse("noslash").is_none());
        assert!(FunctionType::parse("ns/").is_none());
    }

    #[test]
    fn key_groups_are_stable_golden_values() {
        // These values are a wire contract: checkpoints and exchange routing depend on them.
        let cart = FunctionType::new("shoppingcart", "cart").address("user-1");
        let inventory = FunctionType::new("shoppingcart", "inventory").address("apple");
        assert_eq!(key_group(&cart), GOLDEN_CART);
        assert_eq!(key_group(&inventory), GOLDEN_INVENTORY);
    }

    #[test]
    fn long_addresses_hash_the_same_bytes() {
        let id = "x".repeat(300);
        let long = FunctionType::new("ns", "f").address(id.clone());
        let bytes = format!("ns\u{1f}f\u{1f}{id}");
        assert_eq!(key_group(&long), (xxh3_64(bytes.as_bytes()) % u64::from(KEY_GROUPS)) as u32);
    }

    const GOLDEN_CART: u32 = 626;
    const GOLDEN_INVENTORY: u32 = 1758;

    #[test]
    fn partitions_cover_all_key_groups_contiguously() {
        for partitions in [1, 3, 4, 7, 64] {
            let mut last = 0;
            for kg in 0..KEY_GROUPS {
                let p = partition_of_key_group(kg, partitions);
                assert!(p < partitions);
                assert!(p == last || p == last + 1, "ranges are contiguous");
                last = p;
            }
            assert_eq!(last, partitions - 1);
        }
    }
}
