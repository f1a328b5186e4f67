//! The state of one address during a batch.
//!
//! [`Storage`] starts from the values the runtime sent, is read and written by
//! every invocation of the batch in order, and at the end yields ONE net set of
//! mutations: a state set several times is one `MODIFY` with the last value, a
//! state removed (even after being set) is one `DELETE`, an untouched state
//! yields nothing. Values stay encoded (`TypedValue`) between invocations, so a
//! state is decoded only when read and its typename is checked every time.

use statefun_proto::reqreply::from_function::{PersistedValueMutation, persisted_value_mutation::MutationType};
use statefun_proto::reqreply::{TypedValue, to_function::PersistedValue};

use crate::address::FunctionType;
use crate::error::Error;
use crate::message::encode;
use crate::spec::{StateSpec, ValueSpec};

/// The declared states of one address and their current values.
#[derive(Debug)]
pub(crate) struct Storage {
    function_type: FunctionType,
    cells: Vec<Cell>,
}

#[derive(Debug)]
struct Cell {
    spec: StateSpec,
    value: Option<TypedValue>,
    modified: bool,
}

impl Storage {
    /// The declared states with the values received; states received but not
    /// declared are ignored, as StateFun's SDKs do.
    pub(crate) fn new(function_type: FunctionType, specs: &[StateSpec], received: &[PersistedValue]) -> Self {
        let cells = specs
            .iter()
            .map(|spec| {
                let value = received
                    .iter()
                    .find(|v| v.state_name == spec.name())
                    .and_then(|v| v.state_value.clone())
                    .filter(|v| v.has_value);
                Cell { spec: spec.clone(), value, modified: false }
            })
            .collect();
        Self { function_type, cells }
    }

    /// The current value of `spec`, `None` if it has none.
    pub(crate) fn get<T: 'static>(&self, spec: &ValueSpec<T>) -> Result<Option<T>, Error> {
        let cell = self.cells.get(self.index(spec)?).ok_or_else(|| self.undeclared(spec))?;
        let Some(value) = &cell.value else {
            return Ok(None);
        };
        if value.typename != spec.typename() {
            return Err(Error::StateTypename {
                state: spec.name().to_owned(),
                function_type: self.function_type.clone(),
                expected: spec.typename().to_owned(),
                actual: value.typename.clone(),
            });
        }
        spec.value_type().decode(&value.value).map(Some).map_err(|source| Error::StateDecode {
            state: spec.name().to_owned(),
            function_type: self.function_type.clone(),
            typename: spec.typename().to_owned(),
            source,
        })
    }

    /// Sets the value of `spec`.
    pub(crate) fn set<T: 'static>(&mut self, spec: &ValueSpec<T>, value: &T) -> Result<(), Error> {
        let index = self.index(spec)?;
        let encoded = encode(spec.value_type(), value)?;
        self.write(index, Some(encoded));
        Ok(())
    }

    /// Removes the value of `spec`.
    pub(crate) fn remove<T>(&mut self, spec: &ValueSpec<T>) -> Result<(), Error> {
        let index = self.index(spec)?;
        self.write(index, None);
        Ok(())
    }

    /// The net mutations of the batch, in declaration order.
    pub(crate) fn into_mutations(self) -> Vec<PersistedValueMutation> {
        self.cells
            .into_iter()
            .filter(|cell| cell.modified)
            .map(|cell| {
                let state_name = cell.spec.name().to_owned();
                match cell.value {
                    Some(value) => PersistedValueMutation {
                        mutation_type: MutationType::Modify as i32,
                        state_name,
                        state_value: Some(value),
                    },
                    None => PersistedValueMutation {
                        mutation_type: MutationType::Delete as i32,
                        state_name,
                        state_value: None,
                    },
                }
            })
            .collect()
    }

    fn write(&mut self, index: usize, value: Option<TypedValue>) {
        if let Some(cell) = self.cells.get_mut(index) {
            cell.value = value;
            cell.modified = true;
        }
    }

    /// The cell of `spec`, checking it was declared with the same typename.
    fn index<T>(&self, spec: &ValueSpec<T>) -> Result<usize, Error> {
        let index =
            self.cells.iter().position(|c| c.spec.name() == spec.name()).ok_or_else(|| self.undeclared(spec))?;
        let declared = self.cells[index].spec.typename();
        if declared != spec.typename() {
            return Err(Error::StateTypeMismatch {
                state: spec.name().to_owned(),
                function_type: self.function_type.clone(),
                declared: declared.to_owned(),
                used: spec.typename().to_owned(),
            });
        }
        Ok(index)
    }

    fn undeclared<T>(&self, spec: &ValueSpec<T>) -> Error {
        Error::UndeclaredState { state: spec.name().to_owned(), function_type: self.function_type.clone() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{IntType, StringType, Type};

    fn storage(received: &[PersistedValue]) -> (Storage, ValueSpec<i32>) {
        let spec = ValueSpec::new("n", IntType);
        let storage = Storage::new(FunctionType::new("t", "f"), &[spec.state_spec().clone()], received);
        (storage, spec)
    }

    fn int(value: i32) -> PersistedValue {
        PersistedValue { state_name: "n".into(), state_value: encode(&IntType, &value).ok() }
    }

    #[test]
    fn untouched_state_yields_no_mutation() -> Result<(), Error> {
        let (storage, spec) = storage(&[int(3)]);
        assert_eq!(storage.get(&spec)?, Some(3));
        assert!(storage.into_mutations().is_empty());
        Ok(())
    }

    #[test]
    fn set_twice_is_one_modify_with_the_last_value() -> Result<(), Error> {
        let (mut storage, spec) = storage(&[int(3)]);
        storage.set(&spec, &4)?;
        storage.set(&spec, &5)?;
        let mutations = storage.into_mutations();
        assert_eq!(mutations.len(), 1);
        assert_eq!(mutations[0].mutation_type, MutationType::Modify as i32);
        assert_eq!(mutations[0].state_value, encode(&IntType, &5).ok());
        Ok(())
    }

    #[test]
    fn set_then_removed_is_one_delete_with_only_the_name() -> Result<(), Error> {
        let (mut storage, spec) = storage(&[int(3)]);
        storage.set(&spec, &4)?;
        storage.remove(&spec)?;
        assert_eq!(storage.get(&spec)?, None);
        assert_eq!(
            storage.into_mutations(),
            vec![PersistedValueMutation {
                mutation_type: MutationType::Delete as i32,
                state_name: "n".into(),
                state_value: None,
            }]
        );
        Ok(())
    }

    #[test]
    fn a_value_without_has_value_reads_as_no_value() -> Result<(), Error> {
        let absent = PersistedValue {
            state_name: "n".into(),
            state_value: Some(TypedValue { typename: IntType.typename().to_owned(), has_value: false, value: vec![] }),
        };
        let (storage, spec) = storage(&[absent]);
        assert_eq!(storage.get(&spec)?, None);
        Ok(())
    }

    #[test]
    fn a_stored_value_of_another_typename_is_a_clear_error() {
        let wrong = PersistedValue { state_name: "n".into(), state_value: encode(&StringType, &"x".to_owned()).ok() };
        let (storage, spec) = storage(&[wrong]);
        let err = storage.get(&spec).err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("state `n` of t/f: expected typename io.statefun.types/int, got io.statefun.types/string")
        );
    }

    #[test]
    fn an_undeclared_state_is_an_error() {
        let (mut storage, _) = storage(&[]);
        let other = ValueSpec::new("other", IntType);
        let err = storage.set(&other, &1).err().map(|e| e.to_string());
        assert_eq!(err.as_deref(), Some("state `other` is not declared for function type t/f"));
    }

    #[test]
    fn a_state_used_with_another_type_than_declared_is_an_error() {
        let (storage, _) = storage(&[]);
        let as_string = ValueSpec::new("n", StringType);
        let err = storage.get(&as_string).err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some(
                "state `n` of t/f: declared with typename io.statefun.types/int, used with typename io.statefun.types/string"
            )
        );
    }
}
