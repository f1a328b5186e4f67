# The storage and streaming part of a deployment: exactly the resources `statefun setup` creates, in the
# shapes the runtime expects (runtime/src/cli/setup.rs):
#
#   Kinesis   the exchange (one shard per partition, always provisioned), the dead-letter stream, the
#             ingress and egress streams
#   DynamoDB  the lease and commit table: hash key `partition` (N), one item per partition, on-demand
#   S3        the checkpoint bucket: objects under <checkpoint_prefix>partition-NNNNN/ (and the dead
#             letters under <checkpoint_prefix>dead-letters/ when they are objects)
#
# It makes no IAM and no compute, so it can be applied on its own, to a local AWS stack for tests
# (infra/terraform/local) or next to a runtime run elsewhere.

data "aws_caller_identity" "current" {
  count = var.bucket_name == null ? 1 : 0
}

locals {
  exchange_stream = coalesce(var.exchange_stream_name, "${var.name}-exchange")
  # No dead-letter stream when dead letters are objects.
  dead_letter_stream        = var.dead_letter_destination == "stream" ? coalesce(var.dead_letter_stream_name, "${var.name}-dead-letters") : null
  create_dead_letter_stream = var.create_dead_letter_stream && var.dead_letter_destination == "stream"
  table_name                = coalesce(var.table_name, "${var.name}-partitions")
  bucket_name               = var.bucket_name != null ? var.bucket_name : "${var.name}-checkpoints-${data.aws_caller_identity.current[0].account_id}"

  # Every stream this module creates, by name.
  streams = merge(
    { for s in var.ingress_streams : s => { role = "ingress", mode = var.stream_mode, shards = var.stream_shards } },
    { for s in var.egress_streams : s => { role = "egress", mode = var.stream_mode, shards = var.stream_shards } },
    local.create_dead_letter_stream ? { (local.dead_letter_stream) = { role = "dead-letters", mode = var.stream_mode, shards = 1 } } : {},
    { (local.exchange_stream) = { role = "exchange", mode = "PROVISIONED", shards = var.partitions } },
  )
  # Every stream name the deployment uses, created here or not: they must all differ.
  stream_names = concat(var.ingress_streams, var.egress_streams, compact([local.dead_letter_stream]), [local.exchange_stream])
}

resource "aws_kinesis_stream" "this" {
  for_each = local.streams

  name                      = each.key
  shard_count               = each.value.mode == "PROVISIONED" ? each.value.shards : null
  retention_period          = var.stream_retention_hours
  encryption_type           = var.stream_encryption ? "KMS" : "NONE"
  kms_key_id                = var.stream_encryption ? "alias/aws/kinesis" : null
  enforce_consumer_deletion = true

  stream_mode_details {
    stream_mode = each.value.mode
  }

  tags = merge(var.tags, { "statefun:deployment" = var.name, "statefun:role" = each.value.role })

  lifecycle {
    precondition {
      condition     = length(distinct(local.stream_names)) == length(local.stream_names)
      error_message = "The ingress, egress, exchange and dead-letter streams must have different names."
    }
  }
}

# One item per partition. Only the key is declared: the runtime writes the other attributes (owner,
# lease, epoch, snapshot_epoch, chain_lease) under conditions of its own.
resource "aws_dynamodb_table" "partitions" {
  name                        = local.table_name
  billing_mode                = "PAY_PER_REQUEST"
  hash_key                    = "partition"
  deletion_protection_enabled = var.table_deletion_protection

  attribute {
    name = "partition"
    type = "N"
  }

  point_in_time_recovery {
    enabled = var.point_in_time_recovery
  }

  tags = merge(var.tags, { "statefun:deployment" = var.name })
}
