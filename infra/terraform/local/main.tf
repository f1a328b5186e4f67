# The storage and streaming part of a deployment (modules/statefun-storage) on the local AWS stack of
# scripts/local-aws.sh: Kinesis and S3 on LocalStack, DynamoDB on moto. The end-to-end tests apply it
# with a unique name, run the runtime against what it created and destroy it
# (tests/tests/terraform.rs); by hand:
#
#   bash scripts/local-aws.sh up
#   terraform -chdir=infra/terraform/local init
#   terraform -chdir=infra/terraform/local apply -var name=statefun-local
#   eval "$(bash scripts/local-aws.sh env)"
#   terraform -chdir=infra/terraform/local output -json statefun_environment   # STATEFUN_* for the CLI
#
# The credentials are the dummy ones local stacks accept; nothing here reaches AWS.

provider "aws" {
  region                      = var.region
  access_key                  = "test"
  secret_key                  = "test"
  skip_credentials_validation = true
  skip_requesting_account_id  = true
  skip_metadata_api_check     = true
  skip_region_validation      = true
  s3_use_path_style           = true

  endpoints {
    kinesis  = var.localstack_endpoint
    s3       = var.localstack_endpoint
    sts      = var.localstack_endpoint
    dynamodb = var.dynamodb_endpoint
  }
}

module "storage" {
  source = "../modules/statefun-storage"

  name            = var.name
  partitions      = var.partitions
  ingress_streams = var.ingress_streams
  egress_streams  = var.egress_streams
  stream_shards   = var.stream_shards
  bucket_name     = coalesce(var.bucket_name, var.name)

  # What a test run leaves behind goes with it.
  force_destroy     = true
  bucket_versioning = true

  # Off by default: both work on LocalStack, but the provider polls a stream every 10 s while its
  # encryption is switched on, and waits about a minute after creating lifecycle rules until S3 keeps
  # reporting them, time the end-to-end tests do not need to spend.
  stream_encryption = var.stream_encryption
  lifecycle_rules   = var.lifecycle_rules
}
