//! Fault injection for tests (work in progress): see the full module doc once complete.

/// The Kinesis client configuration, with the fault layer of `STATEFUN_FAULTS` when set.
pub fn kinesis(builder: aws_sdk_kinesis::config::Builder) -> aws_sdk_kinesis::config::Builder {
    builder
}

/// The S3 client configuration, with the fault layer of `STATEFUN_FAULTS` when set.
pub fn s3(builder: aws_sdk_s3::config::Builder) -> aws_sdk_s3::config::Builder {
    builder
}

/// The DynamoDB client configuration, with the fault layer of `STATEFUN_FAULTS` when set.
pub fn dynamodb(builder: aws_sdk_dynamodb::config::Builder) -> aws_sdk_dynamodb::config::Builder {
    builder
}
