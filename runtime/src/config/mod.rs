//! The `module.yaml` loader: StateFun's multi-document `{kind, spec}` format, read into typed,
//! validated structs once at startup.
//!
//! A StateFun user's existing module.yaml must load unchanged (DESIGN.md section 3), so the
//! StateFun kinds keep their field names, defaults and accepted-but-unused fields; our own
//! additions use the `statefun-aws.` namespace. One file per kind:
//!
//! | kind                                | file         | becomes                         |
//! |-------------------------------------|--------------|---------------------------------|
//! | `io.statefun.endpoints.v2/http`     | `http.rs`    | [`EndpointConfig`] (`Http`)     |
//! | `statefun-aws.endpoints.v1/lambda`  | `lambda.rs`  | [`EndpointConfig`] (`Lambda`)   |
//! | `io.statefun.kinesis.v1/ingress`    | `ingress.rs` | [`IngressConfig`]               |
//! | `io.statefun.kinesis.v1/egress`     | `egress.rs`  | [`EgressConfig`]                |
//!
//! `endpoint.rs` holds what both endpoint kinds share, `aws.rs` the region/credential blocks of
//! the Kinesis kinds, and `walk.rs` the path-tracking YAML walker. This file parses the
//! documents, runs the checks that span documents (duplicate ids, patterns and streams) and
//! answers lookups.
//!
//! Errors are the point: every problem names the file, the 1-based document number and kind,
//! the field path and what is wrong, e.g.
//! `module.yaml, document 2 (io.statefun.kinesis.v1/ingress): spec.streams[0].valueType: missing required field`.
//! All documents are checked and every problem is reported at once, so one run shows
//! everything to fix. Fields accepted only for StateFun compatibility land in
//! [`ModuleConfig::warnings`] for the caller to log.

mod auth;
mod aws;
mod egress;
mod endpoint;
mod http;
mod ingress;
mod lambda;
mod walk;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_yaml_ng::Value;

use crate::address::FunctionType;

pub use auth::function_url_region;
pub use aws::{AwsCredentials, AwsRegion};
pub use egress::EgressConfig;
pub use endpoint::{
    DEFAULT_CALL_TIMEOUT, DEFAULT_CONNECT_TIMEOUT, DEFAULT_HTTP_PAYLOAD_MAX_BYTES, DEFAULT_MAX_BATCH,
    DEFAULT_POOL_SIZE, DEFAULT_POOL_TTL, EndpointAuth, EndpointConfig, EndpointTarget, FUNCTION_NAME_PLACEHOLDER,
    FunctionPattern, LAMBDA_PAYLOAD_MAX_BYTES, Signing, TlsFiles,
};
pub(crate) use http::is_https;
pub use ingress::{IngressConfig, IngressStream, StartupPosition};

use walk::{Fault, Node, Walked, describe};

/// Every `kind` this loader understands.
pub const KINDS: [&str; 4] = [http::KIND, lambda::KIND, ingress::KIND, egress::KIND];

/// Everything one `module.yaml` declares, validated.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModuleConfig {
    /// HTTP and Lambda endpoints, in document order.
    pub endpoints: Vec<EndpointConfig>,
    /// Kinesis ingresses, in document order.
    pub ingresses: Vec<IngressConfig>,
    /// Kinesis egresses, in document order.
    pub egresses: Vec<EgressConfig>,
    /// Things worth logging that do not stop the load: StateFun fields accepted but unused,
    /// overridden settings, ingress targets no endpoint serves.
    pub warnings: Vec<Diagnostic>,
}

/// One finding about one place in a module file: an error inside [`ConfigError::Invalid`], or a warning.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file name given to [`ModuleConfig::parse`] (the path for [`ModuleConfig::load`]).
    pub source: String,
    /// 1-based number of the YAML document, counting empty ones, as an editor would find it.
    pub document: usize,
    /// The document's `kind`, when it has a string one.
    pub kind: Option<String>,
    /// Field path inside the document, e.g. `spec.streams[1].targets[0]`; empty for the whole document.
    pub path: String,
    /// What is wrong.
    pub message: String,
    /// Line and column (1-based) for YAML syntax errors, from the YAML parser.
    pub line_column: Option<(usize, usize)>,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}, document {}", self.source, self.document)?;
        if let Some(kind) = &self.kind {
            write!(f, " ({kind})")?;
        }
        if !self.path.is_empty() {
            write!(f, ": {}", self.path)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Why a module file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read the module file: {source}", path.display())]
    Read {
        /// The path given to [`ModuleConfig::load`].
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// The file holds no documents (empty, only comments, or only `---`).
    #[error(
        "{source_name}: no documents; a module file holds one or more YAML documents, each with `kind` and `spec` (kinds: {})",
        KINDS.join(", ")
    )]
    Empty {
        /// The file name.
        source_name: String,
    },
    /// One or more documents are invalid; every problem found is listed.
    #[error("{}", list(.0))]
    Invalid(Vec<Diagnostic>),
}

impl ConfigError {
    /// The individual problems (empty for `Read` and `Empty`).
    pub fn problems(&self) -> &[Diagnostic] {
        match self {
            Self::Invalid(problems) => problems,
            _ => &[],
        }
    }
}

fn list(problems: &[Diagnostic]) -> String {
    match problems {
        [one] => one.to_string(),
        many => {
            let lines: Vec<String> = many.iter().map(|problem| format!("  - {problem}")).collect();
            format!("{} problems:\n{}", many.len(), lines.join("\n"))
        }
    }
}

/// What one document declares.
enum Component {
    Endpoint(EndpointConfig),
    Ingress(IngressConfig),
    Egress(EgressConfig),
}

impl ModuleConfig {
    /// Reads and parses a module file; messages name it by `path` as given.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses module YAML; `source` is the file name used in messages.
    pub fn parse(text: &str, source: &str) -> Result<Self, ConfigError> {
        let mut config = ModuleConfig::default();
        let mut problems = Vec::new();
        let mut documents = 0;
        let diagnostic = |document: usize, kind: Option<&str>, fault: Fault| Diagnostic {
            source: source.to_owned(),
            document,
            kind: kind.map(str::to_owned),
            path: fault.path,
            message: fault.message,
            line_column: None,
        };

        for (index, deserializer) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
            let document = index + 1;
            let value = match Value::deserialize(deserializer) {
                Ok(value) => value,
                Err(error) => {
                    // The parser cannot resume after a syntax error (it would repeat it forever).
                    let line_column = error.location().map(|at| (at.line(), at.column()));
                    problems.push(Diagnostic {
                        line_column,
                        ..diagnostic(document, None, Fault::new("", format!("invalid YAML: {error}")))
                    });
                    break;
                }
            };
            if value.is_null() {
                continue; // an empty document, e.g. a lone `---`
            }
            documents += 1;
            let kind = value.get("kind").and_then(Value::as_str);
            let mut warnings = Vec::new();
            match parse_document(&value, document, &mut warnings) {
                Ok(Component::Endpoint(endpoint)) => config.endpoints.push(endpoint),
                Ok(Component::Ingress(ingress)) => config.ingresses.push(ingress),
                Ok(Component::Egress(egress)) => config.egresses.push(egress),
                Err(fault) => problems.push(diagnostic(document, kind, fault)),
            }
            config.warnings.extend(warnings.into_iter().map(|fault| diagnostic(document, kind, fault)));
        }

        if documents == 0 && problems.is_empty() {
            return Err(ConfigError::Empty { source_name: source.to_owned() });
        }
        for (document, kind, fault) in config.conflicts() {
            problems.push(diagnostic(document, Some(kind), fault));
        }
        for (document, kind, fault) in config.unserved_targets() {
            config.warnings.push(diagnostic(document, Some(kind), fault));
        }
        if !problems.is_empty() {
            problems.sort_by_key(|problem| problem.document);
            return Err(ConfigError::Invalid(problems));
        }
        Ok(config)
    }

    /// Whether an endpoint signs its requests with the worker's AWS credentials.
    pub fn signs_requests(&self) -> bool {
        self.endpoints.iter().any(|e| matches!(&e.target, EndpointTarget::Http { auth, .. } if auth.signing.is_some()))
    }

    /// The endpoint serving `function_type`.
    ///
    /// An exact `ns/name` pattern wins over `ns/*`; among equals the first document wins.
    pub fn endpoint_for(&self, function_type: &FunctionType) -> Option<&EndpointConfig> {
        let serving = || self.endpoints.iter().filter(|endpoint| endpoint.functions.matches(function_type));
        serving().find(|endpoint| endpoint.functions.is_exact()).or_else(|| serving().next())
    }

    /// Every ingress stream with the ingress that declares it, in document order.
    pub fn ingress_streams(&self) -> impl Iterator<Item = (&IngressConfig, &IngressStream)> {
        self.ingresses.iter().flat_map(|ingress| ingress.streams.iter().map(move |stream| (ingress, stream)))
    }

    /// The Kinesis ingress and egress settings the runtime cannot honor, each
    /// named with its document and field: every stream is read and written
    /// through the worker's own AWS configuration (`AWS_REGION` or `--region`,
    /// `AWS_ENDPOINT_URL_KINESIS`, the default credential chain), so a document
    /// naming another region, endpoint or credentials would silently talk to
    /// other streams than it says. StateFun's `type: default` is accepted.
    pub fn unhonored_aws_settings(&self) -> Vec<String> {
        let documents = self
            .ingresses
            .iter()
            .map(|i| (i.document, "io.statefun.kinesis.v1/ingress", &i.id, &i.region, &i.credentials))
            .chain(
                self.egresses
                    .iter()
                    .map(|e| (e.document, "io.statefun.kinesis.v1/egress", &e.id, &e.region, &e.credentials)),
            );
        let mut refused = Vec::new();
        for (document, kind, id, region, credentials) in documents {
            let place = format!("document {document} ({kind} `{id}`)");
            let region = match region {
                AwsRegion::Default => None,
                AwsRegion::Specific(region) => Some(format!("type specific (`{region}`)")),
                AwsRegion::CustomEndpoint { endpoint, .. } => Some(format!("type custom-endpoint (`{endpoint}`)")),
            };
            if let Some(region) = region {
                refused.push(format!(
                    "{place}: spec.awsRegion {region} is not supported: the runtime reaches every stream in the \
                     worker's own region and endpoint (AWS_REGION or --region, AWS_ENDPOINT_URL_KINESIS); remove the \
                     field or give it `type: default`"
                ));
            }
            let credentials = match credentials {
                AwsCredentials::Default => None,
                AwsCredentials::Basic { .. } => Some("type basic"),
                AwsCredentials::Profile { .. } => Some("type profile"),
            };
            if let Some(credentials) = credentials {
                refused.push(format!(
                    "{place}: spec.awsCredentials {credentials} is not supported: the runtime uses the worker's \
                     default credential chain (environment, profile, container or instance role) for every stream; \
                     remove the field or give it `type: default`"
                ));
            }
        }
        refused
    }

    /// The egress with the id `namespace/name` (a function's `egress_namespace/egress_type`).
    /// Every egress message asks, so the id is compared in place rather than built.
    pub fn egress(&self, namespace: &str, name: &str) -> Option<&EgressConfig> {
        self.egresses
            .iter()
            .find(|egress| egress.id.strip_prefix(namespace).and_then(|rest| rest.strip_prefix('/')) == Some(name))
    }

    /// Declarations that collide across (or within) documents: the later one is reported.
    fn conflicts(&self) -> Vec<(usize, &'static str, Fault)> {
        let mut found = Vec::new();

        let mut patterns: HashMap<&FunctionPattern, usize> = HashMap::new();
        for endpoint in &self.endpoints {
            let kind = match endpoint.target {
                EndpointTarget::Http { .. } => http::KIND,
                EndpointTarget::Lambda { .. } => lambda::KIND,
            };
            if let Some(first) = patterns.insert(&endpoint.functions, endpoint.document) {
                patterns.insert(&endpoint.functions, first);
                found.push((
                    endpoint.document,
                    kind,
                    Fault::new(
                        "spec.functions",
                        format!("{} is already declared by document {first}", endpoint.functions),
                    ),
                ));
            }
        }

        let mut ingress_ids: HashMap<&str, usize> = HashMap::new();
        let mut streams: HashMap<&str, (&IngressConfig, usize)> = HashMap::new();
        for ingress in &self.ingresses {
            if let Some(&first) = ingress_ids.get(ingress.id.as_str()) {
                let message = format!("ingress {:?} is already declared by document {first}", ingress.id);
                found.push((ingress.document, ingress::KIND, Fault::new("spec.id", message)));
            } else {
                ingress_ids.insert(&ingress.id, ingress.document);
            }
            for (index, stream) in ingress.streams.iter().enumerate() {
                let Some(&(owner, owner_index)) = streams.get(stream.stream.as_str()) else {
                    streams.insert(&stream.stream, (ingress, index));
                    continue;
                };
                let by = if std::ptr::eq(owner, ingress) {
                    format!("spec.streams[{owner_index}] of this ingress")
                } else {
                    format!("ingress {:?} (document {})", owner.id, owner.document)
                };
                found.push((
                    ingress.document,
                    ingress::KIND,
                    Fault::new(
                        format!("spec.streams[{index}].stream"),
                        format!(
                            "stream {:?} is already read by {by}; list all its targets in one entry",
                            stream.stream
                        ),
                    ),
                ));
            }
        }

        let mut egress_ids: HashMap<&str, usize> = HashMap::new();
        for egress in &self.egresses {
            if let Some(&first) = egress_ids.get(egress.id.as_str()) {
                let message = format!("egress {:?} is already declared by document {first}", egress.id);
                found.push((egress.document, egress::KIND, Fault::new("spec.id", message)));
            } else {
                egress_ids.insert(&egress.id, egress.document);
            }
        }
        found
    }

    /// Ingress targets that no endpoint in this file serves (a warning: their records could not be delivered).
    fn unserved_targets(&self) -> Vec<(usize, &'static str, Fault)> {
        let mut found = Vec::new();
        for ingress in &self.ingresses {
            for (stream_index, stream) in ingress.streams.iter().enumerate() {
                for (target_index, target) in stream.targets.iter().enumerate() {
                    if self.endpoint_for(target).is_none() {
                        found.push((
                            ingress.document,
                            ingress::KIND,
                            Fault::new(
                                format!("spec.streams[{stream_index}].targets[{target_index}]"),
                                format!("no endpoint in this file serves {target}"),
                            ),
                        ));
                    }
                }
            }
        }
        found
    }
}

/// Parses one non-empty document into what it declares.
fn parse_document(value: &Value, document: usize, warnings: &mut Vec<Fault>) -> Walked<Component> {
    let Value::Mapping(mapping) = value else {
        return Err(Fault::new("", format!("expected a mapping with `kind` and `spec`, found {}", describe(value))));
    };
    if !mapping.contains_key("kind") && (mapping.contains_key("version") || mapping.contains_key("module")) {
        return Err(Fault::new(
            "",
            "this is the pre-3.0 StateFun module format (`version`/`module`); write one document per \
             component with `kind` and `spec`, as StateFun 3.x does",
        ));
    }
    let root = Node::root(value, "");
    let fields = root.fields(&["kind", "spec"], &[])?;
    let kind_node = fields.required("kind")?;
    let kind = kind_node.non_empty_str()?;
    if !KINDS.contains(&kind) {
        return Err(kind_node.fault(format!("unknown kind {kind:?}; supported kinds are: {}", KINDS.join(", "))));
    }
    let spec = fields.required("spec")?;
    match kind {
        http::KIND => http::parse(&spec, document, warnings).map(Component::Endpoint),
        lambda::KIND => lambda::parse(&spec, document).map(Component::Endpoint),
        ingress::KIND => ingress::parse(&spec, document).map(Component::Ingress),
        _ => egress::parse(&spec, document).map(Component::Egress),
    }
}

/// Helpers for the per-kind tests.
#[cfg(test)]
pub(crate) mod test_support {
    use super::ModuleConfig;

    /// Parses `text` as `module.yaml`, failing the test with the loader's message if it is invalid.
    pub(crate) fn loads(text: &str) -> ModuleConfig {
        ModuleConfig::parse(text, "module.yaml").unwrap_or_else(|error| panic!("expected to load, got: {error}"))
    }

    /// The message of the error `text` must produce.
    pub(crate) fn error_of(text: &str) -> String {
        match ModuleConfig::parse(text, "module.yaml") {
            Ok(config) => panic!("expected an error, loaded {config:?}"),
            Err(error) => error.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::test_support::{error_of, loads};
    use super::*;

    const STATEFUN_MODULE: &str = r#"
kind: io.statefun.endpoints.v2/http
spec:
  functions: shoppingcart/*
  urlPathTemplate: http://functions:8000/statefun/{function.name}
  transport:
    type: io.statefun.transports.v1/async
    call: 30s
---
kind: io.statefun.kinesis.v1/ingress
spec:
  id: shoppingcart/add-to-cart
  awsRegion:
    type: custom-endpoint
    endpoint: http://localhost:4566
    id: us-east-1
  awsCredentials:
    type: basic
    accessKeyId: test
    secretAccessKey: test
  startupPosition:
    type: earliest
  streams:
    - stream: add-to-cart
      valueType: shoppingcart/AddToCart
      targets:
        - shoppingcart/cart
  clientConfigProperties:
    - SocketTimeout: 9999
    - MaxConnections: 15
---
kind: io.statefun.kinesis.v1/egress
spec:
  id: shoppingcart/results
  awsRegion:
    type: specific
    id: us-east-1
  maxOutstandingRecords: 9999
  clientConfigProperties:
    - ThreadingModel: POOLED
"#;

    #[test]
    fn aws_settings_other_than_the_default_are_named_with_their_document_and_field() {
        let refused = loads(STATEFUN_MODULE).unhonored_aws_settings();
        assert_eq!(refused.len(), 3, "{refused:#?}");
        assert!(refused[0].starts_with(
            "document 2 (io.statefun.kinesis.v1/ingress `shoppingcart/add-to-cart`): spec.awsRegion type \
             custom-endpoint (`http://localhost:4566`) is not supported"
        ));
        assert!(refused[1].starts_with(
            "document 2 (io.statefun.kinesis.v1/ingress `shoppingcart/add-to-cart`): spec.awsCredentials type basic"
        ));
        assert!(!refused[1].contains("test"), "no secret is repeated: {}", refused[1]);
        assert!(refused[2].starts_with(
            "document 3 (io.statefun.kinesis.v1/egress `shoppingcart/results`): spec.awsRegion type specific (`us-east-1`)"
        ));
        let example = include_str!("../../../functions/examples/shopping-cart/module.yaml");
        assert!(
            loads(&example.replace("${FUNCTIONS_PORT}", "8000")).unhonored_aws_settings().is_empty(),
            "`type: default` is the runtime's own configuration"
        );
    }

    #[test]
    fn statefun_module_with_all_three_kinds_loads_with_defaults_filled_in() {
        let config = loads(STATEFUN_MODULE);
        assert_eq!(config.endpoints.len(), 1);
        let endpoint = &config.endpoints[0];
        assert_eq!(endpoint.functions, FunctionPattern::Namespace("shoppingcart".into()));
        assert_eq!(
            endpoint.target,
            EndpointTarget::Http {
                url_template: "http://functions:8000/statefun/{function.name}".into(),
                tls: TlsFiles::default(),
                auth: EndpointAuth::default(),
            }
        );
        assert_eq!(endpoint.call_timeout, Duration::from_secs(30));
        assert_eq!(endpoint.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
        assert_eq!(endpoint.max_batch, 1000);
        assert_eq!(endpoint.payload_max_bytes, 32 * 1024 * 1024);

        let ingress = &config.ingresses[0];
        assert_eq!(ingress.id, "shoppingcart/add-to-cart");
        assert_eq!(ingress.document, 2);
        assert_eq!(
            ingress.region,
            AwsRegion::CustomEndpoint { endpoint: "http://localhost:4566".into(), region: "us-east-1".into() }
        );
        assert_eq!(ingress.startup_position, StartupPosition::Earliest);
        assert_eq!(ingress.client_properties.get("MaxConnections").map(String::as_str), Some("15"));
        let streams: Vec<_> = config.ingress_streams().map(|(ingress, stream)| (ingress.id.as_str(), stream)).collect();
        assert_eq!(
            streams,
            vec![(
                "shoppingcart/add-to-cart",
                &IngressStream {
                    stream: "add-to-cart".into(),
                    value_type: "shoppingcart/AddToCart".into(),
                    targets: vec![FunctionType::new("shoppingcart", "cart")],
                }
            )]
        );

        let egress = config.egress("shoppingcart", "results").expect("declared");
        assert_eq!(egress.max_outstanding_records, Some(9999));
        assert_eq!(egress.region, AwsRegion::Specific("us-east-1".into()));
        assert_eq!(egress.document, 3);
        assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    }

    #[test]
    fn exact_pattern_wins_over_namespace_regardless_of_order() {
        let config = loads(
            "kind: io.statefun.endpoints.v2/http\nspec:\n  functions: shop/*\n  urlPathTemplate: http://all/{function.name}\n---\nkind: statefun-aws.endpoints.v1/lambda\nspec:\n  functions: shop/cart\n  functionName: cart-fn\n",
        );
        let cart = config.endpoint_for(&FunctionType::new("shop", "cart")).expect("served");
        assert_eq!(cart.document, 2);
        let inventory = config.endpoint_for(&FunctionType::new("shop", "inventory")).expect("served");
        assert_eq!(inventory.url_for(&FunctionType::new("shop", "inventory")).as_deref(), Some("http://all/inventory"));
        assert!(config.endpoint_for(&FunctionType::new("other", "cart")).is_none());
    }

    #[test]
    fn empty_documents_are_skipped_and_numbering_counts_them() {
        // A leading `---` opens the first document; each further one opens another.
        let config = loads(
            "---\nkind: io.statefun.kinesis.v1/egress\nspec: {id: shop/a}\n---\n---\nkind: io.statefun.kinesis.v1/egress\nspec: {id: shop/b}\n---\n",
        );
        let documents: Vec<usize> = config.egresses.iter().map(|egress| egress.document).collect();
        assert_eq!(documents, vec![1, 3]);
    }

    #[test]
    fn empty_file_is_a_clear_error() {
        for text in ["", "# only a comment\n", "---\n", "---\n---\n"] {
            let error = ModuleConfig::parse(text, "module.yaml").expect_err("empty");
            assert!(matches!(error, ConfigError::Empty { .. }), "{text:?}");
            assert!(error.to_string().starts_with("module.yaml: no documents;"), "{error}");
        }
    }

    #[test]
    fn yaml_syntax_error_names_document_line_and_column() {
        let error = ModuleConfig::parse(
            "kind: io.statefun.kinesis.v1/egress\nspec: {id: shop/out}\n---\nkind: [oops\nspec: 1\n",
            "module.yaml",
        )
        .expect_err("syntax");
        let problem = &error.problems()[0];
        assert_eq!(problem.document, 2);
        assert_eq!(problem.line_column.map(|(line, _)| line), Some(5));
        let message = error.to_string();
        assert!(
            message.starts_with("module.yaml, document 2: invalid YAML: ") && message.contains("line 5 column"),
            "{message}"
        );
    }

    #[test]
    fn duplicate_keys_are_a_yaml_error() {
        let error =
            error_of("kind: io.statefun.kinesis.v1/egress\nkind: io.statefun.kinesis.v1/egress\nspec: {id: a/b}\n");
        assert!(
            error.starts_with("module.yaml, document 1: invalid YAML: duplicate entry with key \"kind\""),
            "{error}"
        );
    }

    #[test]
    fn document_that_is_not_a_mapping_is_rejected() {
        let error = error_of("kind: io.statefun.kinesis.v1/egress\nspec: {id: a/b}\n---\n- just\n- a list\n");
        assert_eq!(error, "module.yaml, document 2: expected a mapping with `kind` and `spec`, found a list");
    }

    #[test]
    fn missing_kind_or_spec_is_reported() {
        assert_eq!(error_of("spec: {id: a/b}\n"), "module.yaml, document 1: kind: missing required field");
        assert_eq!(
            error_of("kind: io.statefun.kinesis.v1/egress\n"),
            "module.yaml, document 1 (io.statefun.kinesis.v1/egress): spec: missing required field"
        );
        assert_eq!(
            error_of("kind: io.statefun.kinesis.v1/egress\nspec: a/b\n"),
            "module.yaml, document 1 (io.statefun.kinesis.v1/egress): spec: expected a mapping, found a string (\"a/b\")"
        );
    }

    #[test]
    fn unknown_kind_lists_the_supported_kinds() {
        let error = error_of("kind: io.statefun.kafka.v1/ingress\nspec: {}\n");
        assert_eq!(
            error,
            "module.yaml, document 1 (io.statefun.kafka.v1/ingress): kind: unknown kind \"io.statefun.kafka.v1/ingress\"; supported kinds are: \
             io.statefun.endpoints.v2/http, statefun-aws.endpoints.v1/lambda, io.statefun.kinesis.v1/ingress, io.statefun.kinesis.v1/egress"
        );
    }

    #[test]
    fn unknown_top_level_field_and_old_module_format_are_explained() {
        let error = error_of("kind: io.statefun.kinesis.v1/egress\nspec: {id: a/b}\nmeta: {}\n");
        assert!(error.starts_with("module.yaml, document 1 (io.statefun.kinesis.v1/egress): meta: unknown field; allowed fields are: kind, spec"), "{error}");
        let error = error_of("version: \"3.0\"\nmodule:\n  meta: {type: remote}\n");
        assert!(error.contains("document 1: this is the pre-3.0 StateFun module format"), "{error}");
    }

    #[test]
    fn duplicate_ingress_and_egress_ids_name_the_first_declaration() {
        let ingress = "kind: io.statefun.kinesis.v1/ingress\nspec:\n  id: shop/in\n  streams:\n    - stream: STREAM\n      valueType: shop/A\n      targets: [shop/cart]\n";
        let error = error_of(&format!("{}---\n{}", ingress.replace("STREAM", "a"), ingress.replace("STREAM", "b")));
        assert_eq!(
            error,
            "module.yaml, document 2 (io.statefun.kinesis.v1/ingress): spec.id: ingress \"shop/in\" is already declared by document 1"
        );
        let egress = "kind: io.statefun.kinesis.v1/egress\nspec: {id: shop/out}\n";
        let error = error_of(&format!("{egress}---\n{egress}---\n{egress}"));
        assert!(error.starts_with("2 problems:\n"), "{error}");
        assert!(error.contains("  - module.yaml, document 3 (io.statefun.kinesis.v1/egress): spec.id: egress \"shop/out\" is already declared by document 1"), "{error}");
    }

    #[test]
    fn stream_read_by_two_ingress_entries_is_rejected() {
        let across = error_of(
            "kind: io.statefun.kinesis.v1/ingress\nspec:\n  id: shop/a\n  streams:\n    - {stream: orders, valueType: shop/A, targets: [shop/cart]}\n---\nkind: io.statefun.kinesis.v1/ingress\nspec:\n  id: shop/b\n  streams:\n    - {stream: other, valueType: shop/A, targets: [shop/cart]}\n    - {stream: orders, valueType: shop/A, targets: [shop/inventory]}\n",
        );
        assert!(across.starts_with(
            "module.yaml, document 2 (io.statefun.kinesis.v1/ingress): spec.streams[1].stream: stream \"orders\" is already read by ingress \"shop/a\" (document 1)"
        ), "{across}");
        let within = error_of(
            "kind: io.statefun.kinesis.v1/ingress\nspec:\n  id: shop/a\n  streams:\n    - {stream: orders, valueType: shop/A, targets: [shop/cart]}\n    - {stream: orders, valueType: shop/B, targets: [shop/inventory]}\n",
        );
        assert!(
            within.contains(
                "spec.streams[1].stream: stream \"orders\" is already read by spec.streams[0] of this ingress"
            ),
            "{within}"
        );
    }

    #[test]
    fn same_function_pattern_in_two_endpoints_is_rejected() {
        let error = error_of(
            "kind: io.statefun.endpoints.v2/http\nspec: {functions: shop/cart, urlPathTemplate: 'http://a/'}\n---\nkind: statefun-aws.endpoints.v1/lambda\nspec: {functions: shop/cart, functionName: cart}\n",
        );
        assert_eq!(
            error,
            "module.yaml, document 2 (statefun-aws.endpoints.v1/lambda): spec.functions: shop/cart is already declared by document 1"
        );
    }

    #[test]
    fn every_invalid_document_is_reported_in_one_error() {
        let error = ModuleConfig::parse(
            "kind: io.statefun.kinesis.v1/egress\nspec: {}\n---\nkind: nope\nspec: {}\n---\nkind: io.statefun.kinesis.v1/egress\nspec: {id: ok/fine}\n",
            "m.yaml",
        )
        .expect_err("invalid");
        let documents: Vec<usize> = error.problems().iter().map(|problem| problem.document).collect();
        assert_eq!(documents, vec![1, 2]);
    }

    #[test]
    fn ingress_target_without_an_endpoint_is_a_warning() {
        let config = loads(
            "kind: io.statefun.kinesis.v1/ingress\nspec:\n  id: shop/in\n  streams:\n    - {stream: s, valueType: shop/A, targets: [shop/cart]}\n",
        );
        let warnings: Vec<String> = config.warnings.iter().map(ToString::to_string).collect();
        assert_eq!(
            warnings,
            vec![
                "module.yaml, document 1 (io.statefun.kinesis.v1/ingress): spec.streams[0].targets[0]: no endpoint in this file serves shop/cart"
            ]
        );
    }

    #[test]
    fn load_reads_a_file_and_names_it_in_errors() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("module.yaml");
        std::fs::write(&path, STATEFUN_MODULE).expect("write");
        assert_eq!(ModuleConfig::load(&path).expect("loads").endpoints.len(), 1);
        std::fs::write(&path, "kind: io.statefun.kinesis.v1/egress\nspec: {}\n").expect("write");
        let error = ModuleConfig::load(&path).expect_err("invalid").to_string();
        assert!(error.starts_with(&format!("{}, document 1", path.display())), "{error}");
        let missing = ModuleConfig::load(&dir.path().join("absent.yaml")).expect_err("missing");
        assert!(matches!(missing, ConfigError::Read { .. }), "{missing}");
    }
}
