//! The StateFun Kinesis egress kind, `io.statefun.kinesis.v1/egress`.
//!
//! ```yaml
//! kind: io.statefun.kinesis.v1/egress
//! spec:
//!   id: shop/results
//!   awsRegion: {type: specific, id: eu-west-1}
//!   awsCredentials: {type: default}
//!   maxOutstandingRecords: 9999
//!   clientConfigProperties:
//!     - ThreadingModel: POOLED
//! ```
//!
//! Functions address an egress by `egress_namespace`/`egress_type`, which together must equal
//! `id`; the target stream comes from each `KinesisEgressRecord`, not from this document.

use std::collections::BTreeMap;

use super::aws::{self, AwsCredentials, AwsRegion};
use super::walk::{Node, Walked};

/// The `kind` this file parses.
pub const KIND: &str = "io.statefun.kinesis.v1/egress";

const SPEC_FIELDS: &[&str] = &["id", "awsRegion", "awsCredentials", "maxOutstandingRecords", "clientConfigProperties"];

/// One Kinesis egress document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EgressConfig {
    /// The egress id, `namespace/name` (`spec.id`); unique among egresses.
    pub id: String,
    /// Region and endpoint of the streams written (`spec.awsRegion`, default: provider chain).
    pub region: AwsRegion,
    /// Credentials to write with (`spec.awsCredentials`, default: provider chain).
    pub credentials: AwsCredentials,
    /// Cap on records sent but not yet acknowledged (`spec.maxOutstandingRecords`); `None`
    /// leaves it to the egress (StateFun's default is 1000).
    pub max_outstanding_records: Option<usize>,
    /// `spec.clientConfigProperties` as given (StateFun passes them to the Kinesis Producer
    /// Library; kept here for the Kinesis client to interpret).
    pub client_properties: BTreeMap<String, String>,
    /// The 1-based number of the YAML document that declared this egress, for messages.
    pub document: usize,
}

/// Parses the `spec` of one Kinesis egress document.
pub(crate) fn parse(spec: &Node<'_>, document: usize) -> Walked<EgressConfig> {
    let fields = spec.fields(SPEC_FIELDS, &[])?;
    Ok(EgressConfig {
        id: fields.required("id")?.typename()?,
        region: aws::region(fields.optional("awsRegion"))?,
        credentials: aws::credentials(fields.optional("awsCredentials"))?,
        max_outstanding_records: fields
            .optional("maxOutstandingRecords")
            .map(|node| node.positive_usize())
            .transpose()?,
        client_properties: aws::client_properties(fields.optional("clientConfigProperties"))?,
        document,
    })
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{error_of, loads};
    use super::*;

    #[test]
    fn egress_with_only_an_id_uses_defaults() {
        let config = loads("kind: io.statefun.kinesis.v1/egress\nspec:\n  id: shop/results\n");
        let egress = config.egress("shop", "results").expect("declared");
        assert_eq!(egress.max_outstanding_records, None);
        assert_eq!(egress.region, AwsRegion::Default);
        assert!(egress.client_properties.is_empty());
        assert!(config.egress("shop", "other").is_none());
    }

    #[test]
    fn missing_egress_id_and_zero_outstanding_records_are_reported() {
        let error = error_of("kind: io.statefun.kinesis.v1/egress\nspec:\n  maxOutstandingRecords: 10\n");
        assert_eq!(error, "module.yaml, document 1 (io.statefun.kinesis.v1/egress): spec.id: missing required field");
        let error =
            error_of("kind: io.statefun.kinesis.v1/egress\nspec:\n  id: shop/results\n  maxOutstandingRecords: 0\n");
        assert!(
            error.contains("(io.statefun.kinesis.v1/egress): spec.maxOutstandingRecords: must be at least 1, found 0"),
            "{error}"
        );
    }

    #[test]
    fn bad_region_type_names_the_path_and_the_choices() {
        let error = error_of(
            "kind: io.statefun.kinesis.v1/egress\nspec:\n  id: shop/results\n  awsRegion:\n    type: specifc\n    id: eu-west-1\n",
        );
        assert!(
            error.contains("spec.awsRegion.type: unknown type \"specifc\"; one of: default, specific, custom-endpoint"),
            "{error}"
        );
    }
}
