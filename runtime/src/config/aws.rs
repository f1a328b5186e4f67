//! The AWS settings shared by the Kinesis ingress and egress kinds: `awsRegion`,
//! `awsCredentials` and `clientConfigProperties`, spelled as in StateFun.
//!
//! ```yaml
//! awsRegion: {type: default}                       # or
//! awsRegion: {type: specific, id: eu-west-1}       # or
//! awsRegion: {type: custom-endpoint, endpoint: http://localhost:4566, id: us-east-1}
//! awsCredentials: {type: default}                  # or
//! awsCredentials: {type: basic, accessKeyId: ..., secretAccessKey: ...}   # or
//! awsCredentials: {type: profile, profileName: dev, profilePath: ~/.aws/credentials}
//! clientConfigProperties:                          # StateFun's list of one-entry maps (a plain map works too)
//!   - SocketTimeout: 9999
//! ```

use std::collections::BTreeMap;
use std::fmt;

use serde_yaml_ng::Value;

use super::walk::{Fault, Node, Walked, describe};

/// Which AWS region (and endpoint) a Kinesis ingress or egress talks to.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum AwsRegion {
    /// The SDK's default provider chain (`AWS_REGION`, profile, instance metadata).
    #[default]
    Default,
    /// A region by id, e.g. `eu-west-1`.
    Specific(String),
    /// A non-standard service endpoint (LocalStack, VPC endpoints) signed for `region`.
    CustomEndpoint {
        /// The endpoint URL, e.g. `http://localhost:4566`.
        endpoint: String,
        /// The region requests are signed for.
        region: String,
    },
}

/// Which AWS credentials a Kinesis ingress or egress uses.
///
/// `Debug` never prints the secret access key.
#[derive(Clone, PartialEq, Eq, Default)]
pub enum AwsCredentials {
    /// The SDK's default provider chain (environment, profile, container or instance role).
    #[default]
    Default,
    /// Static keys written in the module file.
    Basic {
        /// `accessKeyId`.
        access_key_id: String,
        /// `secretAccessKey`.
        secret_access_key: String,
    },
    /// A named profile from an AWS config or credentials file.
    Profile {
        /// `profileName`.
        profile_name: String,
        /// `profilePath`; `None` means the SDK's default file locations.
        profile_path: Option<String>,
    },
}

impl fmt::Debug for AwsCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Default => f.write_str("Default"),
            Self::Basic { access_key_id, .. } => f
                .debug_struct("Basic")
                .field("access_key_id", access_key_id)
                .field("secret_access_key", &"<redacted>")
                .finish(),
            Self::Profile { profile_name, profile_path } => f
                .debug_struct("Profile")
                .field("profile_name", profile_name)
                .field("profile_path", profile_path)
                .finish(),
        }
    }
}

/// Reads an optional `awsRegion` (default: [`AwsRegion::Default`]).
pub(crate) fn region(node: Option<Node<'_>>) -> Walked<AwsRegion> {
    let Some(node) = node else { return Ok(AwsRegion::Default) };
    let kind = type_of(&node, &["default", "specific", "custom-endpoint"])?;
    match kind {
        "default" => {
            node.fields(&["type"], &[])?;
            Ok(AwsRegion::Default)
        }
        "specific" => {
            let fields = node.fields(&["type", "id"], &[])?;
            Ok(AwsRegion::Specific(region_id(&fields.required("id")?)?))
        }
        _ => {
            let fields = node.fields(&["type", "endpoint", "id"], &[])?;
            let endpoint = fields.required("endpoint")?.http_url()?;
            let region = region_id(&fields.required("id")?)?;
            Ok(AwsRegion::CustomEndpoint { endpoint, region })
        }
    }
}

/// Reads an optional `awsCredentials` (default: [`AwsCredentials::Default`]).
pub(crate) fn credentials(node: Option<Node<'_>>) -> Walked<AwsCredentials> {
    let Some(node) = node else { return Ok(AwsCredentials::Default) };
    let kind = type_of(&node, &["default", "basic", "profile"])?;
    match kind {
        "default" => {
            node.fields(&["type"], &[])?;
            Ok(AwsCredentials::Default)
        }
        "basic" => {
            let fields = node.fields(&["type", "accessKeyId", "secretAccessKey"], &[])?;
            Ok(AwsCredentials::Basic {
                access_key_id: fields.required("accessKeyId")?.non_empty_str()?.to_owned(),
                secret_access_key: fields.required("secretAccessKey")?.non_empty_str()?.to_owned(),
            })
        }
        _ => {
            let fields = node.fields(&["type", "profileName", "profilePath"], &[])?;
            let profile_path = match fields.optional("profilePath") {
                Some(path) => Some(path.non_empty_str()?.to_owned()),
                None => None,
            };
            Ok(AwsCredentials::Profile { profile_name: fields.required("profileName")?.text()?, profile_path })
        }
    }
}

/// Reads optional `clientConfigProperties`: StateFun's list of one-entry maps, or a map.
pub(crate) fn client_properties(node: Option<Node<'_>>) -> Walked<BTreeMap<String, String>> {
    let mut properties = BTreeMap::new();
    let Some(node) = node else { return Ok(properties) };
    let mut insert = |entry: &Node<'_>, key: &Value, value: &Value| -> Walked<()> {
        let Value::String(key) = key else {
            return Err(entry.fault(format!("property names must be strings, found {}", describe(key))));
        };
        let value_node = Node::root(value, format!("{}.{key}", entry.path()));
        let text = value_node.text()?;
        if properties.insert(key.clone(), text).is_some() {
            return Err(value_node.fault("is set more than once"));
        }
        Ok(())
    };
    match node.value() {
        Value::Sequence(_) => {
            for entry in node.seq()? {
                let mapping = entry.mapping()?;
                if mapping.len() != 1 {
                    return Err(
                        entry.fault(format!("expected one `name: value` entry, found {} entries", mapping.len()))
                    );
                }
                for (key, value) in mapping {
                    insert(&entry, key, value)?;
                }
            }
        }
        Value::Mapping(mapping) => {
            for (key, value) in mapping {
                insert(&node, key, value)?;
            }
        }
        other => {
            return Err(node.fault(format!("expected a list of `name: value` entries, found {}", describe(other))));
        }
    }
    Ok(properties)
}

/// Reads the `type` discriminator of a mapping and checks it is one of `allowed`.
fn type_of<'a>(node: &Node<'a>, allowed: &[&'static str]) -> Walked<&'static str> {
    let mapping = node.mapping()?;
    let Some(value) = mapping.get("type") else {
        return Err(Fault::new(
            format!("{}.type", node.path()),
            format!("missing required field; one of: {}", allowed.join(", ")),
        ));
    };
    let type_node = Node::root(value, format!("{}.type", node.path()));
    let text = type_node.non_empty_str()?;
    allowed
        .iter()
        .find(|candidate| **candidate == text)
        .copied()
        .ok_or_else(|| type_node.fault(format!("unknown type {text:?}; one of: {}", allowed.join(", "))))
}

fn region_id(node: &Node<'_>) -> Walked<String> {
    let id = node.non_empty_str()?;
    if id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
        Ok(id.to_owned())
    } else {
        Err(node.fault(format!("{id:?} is not an AWS region id such as \"eu-west-1\"")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(text: &str) -> Value {
        serde_yaml_ng::from_str(text).expect("test YAML parses")
    }

    #[test]
    fn regions_parse_every_statefun_form() {
        let value = yaml("{type: custom-endpoint, endpoint: 'http://localhost:4566', id: us-east-1}");
        assert_eq!(
            region(Some(Node::root(&value, "spec.awsRegion"))),
            Ok(AwsRegion::CustomEndpoint { endpoint: "http://localhost:4566".into(), region: "us-east-1".into() })
        );
        let value = yaml("{type: specific, id: eu-west-1}");
        assert_eq!(region(Some(Node::root(&value, "r"))), Ok(AwsRegion::Specific("eu-west-1".into())));
        assert_eq!(region(None), Ok(AwsRegion::Default));
        let value = yaml("{type: specific}");
        assert_eq!(region(Some(Node::root(&value, "r"))), Err(Fault::new("r.id", "missing required field")));
        let value = yaml("{type: nearby}");
        let fault = region(Some(Node::root(&value, "r"))).expect_err("unknown type");
        assert_eq!(fault.path, "r.type");
        assert!(fault.message.contains("default, specific, custom-endpoint"), "{}", fault.message);
    }

    #[test]
    fn basic_credentials_debug_hides_the_secret() {
        let value = yaml("{type: basic, accessKeyId: AKIA1, secretAccessKey: s3cr3t}");
        let parsed = credentials(Some(Node::root(&value, "c"))).expect("valid");
        let debug = format!("{parsed:?}");
        assert!(debug.contains("AKIA1") && !debug.contains("s3cr3t"), "{debug}");
        let value = yaml("{type: profile, profileName: dev}");
        assert_eq!(
            credentials(Some(Node::root(&value, "c"))),
            Ok(AwsCredentials::Profile { profile_name: "dev".into(), profile_path: None })
        );
    }

    #[test]
    fn client_properties_accept_statefun_list_and_plain_map() {
        let value = yaml("[{SocketTimeout: 9999}, {MaxConnections: 15}]");
        let list = client_properties(Some(Node::root(&value, "p"))).expect("valid");
        let value = yaml("{SocketTimeout: 9999, MaxConnections: 15}");
        let map = client_properties(Some(Node::root(&value, "p"))).expect("valid");
        assert_eq!(list, map);
        assert_eq!(list.get("SocketTimeout").map(String::as_str), Some("9999"));
        let value = yaml("[{A: 1}, {A: 2}]");
        assert_eq!(
            client_properties(Some(Node::root(&value, "p"))),
            Err(Fault::new("p[1].A", "is set more than once"))
        );
    }
}
