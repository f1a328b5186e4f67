//! Values by typename, for people: JSON in (`send`), JSON out (`tail`, `state`).
//!
//! StateFun's built-in types use their wrapper messages; protobuf types
//! (`type.googleapis.com/<name>`) are encoded through a descriptor pool holding
//! this project's messages plus any descriptor sets the user passes; any other
//! typename is taken as JSON text, the encoding of the SDKs' JSON types.

use base64::Engine as _;
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage};
use serde_json::Value;
use statefun_proto::{typenames, types};

#[derive(Debug, thiserror::Error)]
pub enum ValueError {
    #[error("value for {typename}: {detail}")]
    Invalid { typename: String, detail: String },
    #[error("descriptor set {path}: {detail}")]
    Descriptors { path: String, detail: String },
}

pub struct ValueCodec {
    pool: DescriptorPool,
}

const PROTOBUF_PREFIX: &str = "type.googleapis.com/";

impl ValueCodec {
    /// The built-in pool plus the given `FileDescriptorSet` files.
    pub fn new(descriptor_sets: &[std::path::PathBuf]) -> Result<Self, ValueError> {
        let mut pool = DescriptorPool::decode(statefun_proto::FILE_DESCRIPTOR_SET)
            .map_err(|e| ValueError::Descriptors { path: "(built in)".into(), detail: e.to_string() })?;
        for path in descriptor_sets {
            let describe = |detail: String| ValueError::Descriptors { path: path.display().to_string(), detail };
            let bytes = std::fs::read(path).map_err(|e| describe(e.to_string()))?;
            pool.decode_file_descriptor_set(bytes.as_slice()).map_err(|e| describe(e.to_string()))?;
        }
        Ok(Self { pool })
    }

    /// Encodes a JSON value as the bytes of `typename`.
    pub fn encode(&self, typename: &str, json: &Value) -> Result<Vec<u8>, ValueError> {
        let invalid = |detail: String| ValueError::Invalid { typename: typename.to_owned(), detail };
        let number = || json.as_f64().ok_or_else(|| invalid(format!("expected a number, got {json}")));
        let integer = || json.as_i64().ok_or_else(|| invalid(format!("expected an integer, got {json}")));
        Ok(match typename {
            typenames::BOOL => types::BooleanWrapper {
                value: json.as_bool().ok_or_else(|| invalid(format!("expected true or false, got {json}")))?,
            }
            .encode_to_vec(),
            typenames::INT => {
                let value =
                    i32::try_from(integer()?).map_err(|_| invalid(format!("{json} does not fit in 32 bits")))?;
                types::IntWrapper { value }.encode_to_vec()
            }
            typenames::LONG => types::LongWrapper { value: integer()? }.encode_to_vec(),
            typenames::FLOAT => types::FloatWrapper { value: number()? as f32 }.encode_to_vec(),
            typenames::DOUBLE => types::DoubleWrapper { value: number()? }.encode_to_vec(),
            typenames::STRING => {
                let value = json.as_str().ok_or_else(|| invalid(format!("expected a JSON string, got {json}")))?;
                types::StringWrapper { value: value.to_owned() }.encode_to_vec()
            }
            _ => match typename.strip_prefix(PROTOBUF_PREFIX) {
                Some(name) => {
                    let descriptor = self.pool.get_message_by_name(name).ok_or_else(|| {
                        invalid(format!(
                            "unknown protobuf message `{name}`; pass its descriptor set with --descriptor-set"
                        ))
                    })?;
                    let message =
                        DynamicMessage::deserialize(descriptor, json.clone()).map_err(|e| invalid(e.to_string()))?;
                    message.encode_to_vec()
                }
                None => serde_json::to_vec(json).map_err(|e| invalid(e.to_string()))?,
            },
        })
    }

    /// Decodes bytes of `typename` (or of unknown type, when `None`) for display.
    pub fn decode(&self, typename: Option<&str>, bytes: &[u8]) -> Value {
        if let Some(typename) = typename
            && let Some(value) = self.decode_typed(typename, bytes)
        {
            return value;
        }
        raw_to_json(bytes)
    }

    fn decode_typed(&self, typename: &str, bytes: &[u8]) -> Option<Value> {
        Some(match typename {
            typenames::BOOL => Value::from(types::BooleanWrapper::decode(bytes).ok()?.value),
            typenames::INT => Value::from(types::IntWrapper::decode(bytes).ok()?.value),
            typenames::LONG => Value::from(types::LongWrapper::decode(bytes).ok()?.value),
            typenames::FLOAT => Value::from(types::FloatWrapper::decode(bytes).ok()?.value),
            typenames::DOUBLE => Value::from(types::DoubleWrapper::decode(bytes).ok()?.value),
            typenames::STRING => Value::from(types::StringWrapper::decode(bytes).ok()?.value),
            _ => {
                let name = typename.strip_prefix(PROTOBUF_PREFIX)?;
                let descriptor = self.pool.get_message_by_name(name)?;
                let message = DynamicMessage::decode(descriptor, bytes).ok()?;
                serde_json::to_value(&message).ok()?
            }
        })
    }
}

/// JSON when the bytes are JSON, a string when they are text, else `{"base64": ...}`.
pub fn raw_to_json(bytes: &[u8]) -> Value {
    if let Ok(value) = serde_json::from_slice::<Value>(bytes) {
        return value;
    }
    match std::str::from_utf8(bytes) {
        Ok(text) if !text.chars().any(|c| c.is_control() && c != '\n' && c != '\t') => Value::from(text),
        _ => serde_json::json!({ "base64": base64::engine::general_purpose::STANDARD.encode(bytes) }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn codec() -> ValueCodec {
        ValueCodec::new(&[]).expect("built-in descriptors")
    }

    #[test]
    fn built_in_int_encodes_as_statefun_wrapper() {
        assert_eq!(codec().encode(typenames::INT, &json!(1)).expect("int"), [0x0d, 1, 0, 0, 0]);
        assert_eq!(codec().decode(Some(typenames::INT), &[0x0d, 1, 0, 0, 0]), json!(1));
    }

    #[test]
    fn protobuf_messages_round_trip_through_json() {
        let typename = "type.googleapis.com/shoppingcart.AddToCart";
        let json = json!({"userId": "u1", "itemId": "apple", "quantity": 2, "requestId": "r1"});
        let bytes = codec().encode(typename, &json).expect("encode");
        let decoded = statefun_proto::shoppingcart::AddToCart::decode(bytes.as_slice()).expect("decode");
        assert_eq!(decoded.item_id, "apple");
        assert_eq!(decoded.quantity, 2);
        assert_eq!(codec().decode(Some(typename), &bytes)["userId"], json!("u1"));
    }

    #[test]
    fn wrong_json_names_the_type_and_the_problem() {
        let err = codec().encode(typenames::INT, &json!("x")).expect_err("not an int");
        assert!(err.to_string().contains("io.statefun.types/int: expected an integer"), "{err}");
        let err = codec().encode("type.googleapis.com/no.Such", &json!({})).expect_err("unknown");
        assert!(err.to_string().contains("unknown protobuf message `no.Such`"), "{err}");
    }

    #[test]
    fn other_typenames_are_json_text() {
        assert_eq!(codec().encode("com.example/Thing", &json!({"a": 1})).expect("json"), br#"{"a":1}"#);
        assert_eq!(raw_to_json(b"\x00\x01"), json!({"base64": "AAE="}));
    }
}
