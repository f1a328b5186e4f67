//! The addresses of a partition and their records, keyed compactly.
//!
//! A partition may hold millions of addresses, most of them idle, so each key is
//! its function type's number (types are few and kept once) and its id, and the
//! records sit in one dense array indexed by a hash table. Callers speak in
//! protocol [`Address`]es; lookups by one allocate nothing.

use std::hash::{Hash, Hasher};

use indexmap::{Equivalent, IndexMap, IndexSet};
use statefun_proto::reqreply::Address;

use super::record::{AddressRecord, Names};
use crate::address::FunctionType;

#[derive(Debug, Default)]
pub struct AddressTable {
    types: IndexSet<FunctionType>,
    records: IndexMap<Key, AddressRecord>,
    names: Names,
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct Key {
    function_type: u32,
    id: Box<str>,
}

/// Hashes as [`Key`] does, to look one up without building it.
struct KeyRef<'a> {
    function_type: u32,
    id: &'a str,
}

impl Hash for KeyRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.function_type.hash(state);
        self.id.hash(state);
    }
}

impl Equivalent<Key> for KeyRef<'_> {
    fn equivalent(&self, key: &Key) -> bool {
        self.function_type == key.function_type && self.id == &*key.id
    }
}

/// Hashes as [`FunctionType`] does (its derived `Hash`: namespace, then name).
struct TypeRef<'a> {
    namespace: &'a str,
    name: &'a str,
}

impl Hash for TypeRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.namespace.hash(state);
        self.name.hash(state);
    }
}

impl Equivalent<FunctionType> for TypeRef<'_> {
    fn equivalent(&self, key: &FunctionType) -> bool {
        self.namespace == key.namespace && self.name == key.name
    }
}

impl AddressTable {
    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn clear(&mut self) {
        self.records.clear();
    }

    /// Room for `additional` more addresses (a snapshot being restored).
    pub fn reserve(&mut self, additional: usize) {
        self.records.reserve_exact(additional);
    }

    pub fn get(&self, address: &Address) -> Option<&AddressRecord> {
        self.records.get(&self.key_ref(address)?)
    }

    pub fn get_mut(&mut self, address: &Address) -> Option<&mut AddressRecord> {
        let key = self.key_ref(address)?;
        self.records.get_mut(&key)
    }

    /// The record and the partition's shared names, to write states with.
    pub fn get_mut_with_names(&mut self, address: &Address) -> Option<(&mut AddressRecord, &mut Names)> {
        let key = self.key_ref(address)?;
        let record = self.records.get_mut(&key)?;
        Some((record, &mut self.names))
    }

    pub fn get_or_insert(&mut self, address: &Address) -> &mut AddressRecord {
        let function_type = self.type_number(address);
        let index = match self.records.get_index_of(&KeyRef { function_type, id: &address.id }) {
            Some(index) => index,
            None => {
                let key = Key { function_type, id: address.id.as_str().into() };
                self.records.insert_full(key, AddressRecord::default()).0
            }
        };
        &mut self.records[index]
    }

    /// Inserts (or replaces) a record built with the partition's shared names.
    pub fn insert_with(&mut self, address: &Address, build: impl FnOnce(&mut Names) -> AddressRecord) {
        let record = build(&mut self.names);
        *self.get_or_insert(address) = record;
    }

    pub fn remove(&mut self, address: &Address) {
        if let Some(key) = self.key_ref(address) {
            self.records.swap_remove(&key);
        }
    }

    /// Every address with its record; each address is built for the caller.
    pub fn iter(&self) -> impl Iterator<Item = (Address, &AddressRecord)> {
        self.records.iter().map(|(key, record)| (self.address(key), record))
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (Address, &mut AddressRecord)> {
        let types = &self.types;
        self.records.iter_mut().map(move |(key, record)| (address_of(types, key), record))
    }

    /// Every record with something queued, in flight or parked, with its function type.
    pub fn busy(&self) -> impl Iterator<Item = (&FunctionType, &AddressRecord)> {
        self.records
            .iter()
            .filter(|(_, record)| record.is_busy())
            .filter_map(|(key, record)| Some((self.types.get_index(key.function_type as usize)?, record)))
    }

    /// Runs `f` on every record with its function type; the addresses of those it returned true for.
    pub fn touched_by(&mut self, mut f: impl FnMut(&FunctionType, &mut AddressRecord) -> bool) -> Vec<Address> {
        let types = &self.types;
        let mut touched = Vec::new();
        for (key, record) in self.records.iter_mut() {
            if let Some(function_type) = types.get_index(key.function_type as usize)
                && f(function_type, record)
            {
                touched.push(function_type.address(&*key.id));
            }
        }
        touched
    }

    fn address(&self, key: &Key) -> Address {
        address_of(&self.types, key)
    }

    fn key_ref<'a>(&self, address: &'a Address) -> Option<KeyRef<'a>> {
        let function_type =
            self.types.get_index_of(&TypeRef { namespace: &address.namespace, name: &address.r#type })?;
        Some(KeyRef { function_type: function_type as u32, id: &address.id })
    }

    fn type_number(&mut self, address: &Address) -> u32 {
        let known = self.types.get_index_of(&TypeRef { namespace: &address.namespace, name: &address.r#type });
        let index = known.unwrap_or_else(|| self.types.insert_full(FunctionType::of(address)).0);
        index as u32
    }
}

/// Values per function type, looked up by an address without building its type.
#[derive(Debug, Clone)]
pub struct ByType<V>(IndexMap<FunctionType, V>);

impl<V> Default for ByType<V> {
    fn default() -> Self {
        Self(IndexMap::new())
    }
}

impl<V> ByType<V> {
    pub fn of(&self, address: &Address) -> Option<&V> {
        self.0.get(&TypeRef { namespace: &address.namespace, name: &address.r#type })
    }

    pub fn get(&self, function_type: &FunctionType) -> Option<&V> {
        self.0.get(function_type)
    }

    pub fn get_mut(&mut self, function_type: &FunctionType) -> Option<&mut V> {
        self.0.get_mut(function_type)
    }

    /// Enters (or replaces) a type's value; the type's number.
    pub fn insert(&mut self, function_type: FunctionType, value: V) -> usize {
        self.0.insert_full(function_type, value).0
    }

    /// The number of an address's function type, if it was entered.
    pub fn number_of_known(&self, address: &Address) -> Option<usize> {
        self.0.get_index_of(&TypeRef { namespace: &address.namespace, name: &address.r#type })
    }

    /// The number of an address's function type, entered with `V::default()` the first time.
    pub fn number_of(&mut self, address: &Address) -> usize
    where
        V: Default,
    {
        match self.0.get_index_of(&TypeRef { namespace: &address.namespace, name: &address.r#type }) {
            Some(index) => index,
            None => self.0.insert_full(FunctionType::of(address), V::default()).0,
        }
    }

    /// A type and its value by the number [`Self::number_of`] gave.
    pub fn by_number_mut(&mut self, number: usize) -> Option<(&FunctionType, &mut V)> {
        self.0.get_index_mut(number)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&FunctionType, &V)> {
        self.0.iter()
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.0.values()
    }
}

impl<V> FromIterator<(FunctionType, V)> for ByType<V> {
    fn from_iter<I: IntoIterator<Item = (FunctionType, V)>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

fn address_of(types: &IndexSet<FunctionType>, key: &Key) -> Address {
    match types.get_index(key.function_type as usize) {
        Some(function_type) => function_type.address(&*key.id),
        // Keys are only made from numbers the set gave out.
        None => Address { id: key.id.to_string(), ..Default::default() },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_found_by_type_and_id_and_come_back_whole() {
        let mut table = AddressTable::default();
        let a = FunctionType::new("ns", "f").address("1");
        let b = FunctionType::new("ns", "g").address("1");
        table.get_or_insert(&a).push_message(Default::default(), 0);
        table.get_or_insert(&b);
        assert_eq!(table.len(), 2);
        assert_eq!(table.get(&a).map(|r| r.mailbox().len()), Some(1));
        assert_eq!(table.get(&b).map(|r| r.mailbox().len()), Some(0));
        assert!(table.get(&FunctionType::new("ns", "f").address("2")).is_none());
        assert!(table.get(&FunctionType::new("other", "f").address("1")).is_none());
        let mut all: Vec<Address> = table.iter().map(|(address, _)| address).collect();
        all.sort_by(|x, y| x.r#type.cmp(&y.r#type));
        assert_eq!(all, [a.clone(), b.clone()]);
        table.remove(&a);
        assert!(table.get(&a).is_none());
        assert!(table.get(&b).is_some(), "removing one address moves another in the array, not away");
    }
}
