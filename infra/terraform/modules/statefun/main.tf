# A whole deployment of the runtime on AWS:
#
#   storage.tf  (modules/statefun-storage) the ingress, exchange, egress and dead-letter streams, the
#               lease and commit table, the checkpoint bucket
#   functions   one Lambda function per entry of var.functions, a published version and an alias
#   worker      an ECS Fargate service running the runtime's image (`statefun run`) with the
#               module.yaml generated here
#   iam         the worker's role: only this deployment's streams, table, checkpoint prefix and
#               function aliases; the functions' roles: only their own log groups
#   alarms      iterator age, commit failures, dead letters, stuck partitions
#   dashboard   a CloudWatch dashboard of the metrics the workers publish (embedded metric format in
#               their log) and of the streams' iterator age
#
# The IAM policies name their resources by ARNs built from names known at plan time, so
# `terraform plan` shows exactly what every role may do before anything exists.

data "aws_partition" "current" {}
data "aws_region" "current" {}
data "aws_caller_identity" "current" {}

module "storage" {
  source = "../statefun-storage"

  name                        = var.name
  partitions                  = var.partitions
  ingress_streams             = keys(var.ingress_streams)
  egress_streams              = var.egress_streams
  stream_mode                 = var.stream_mode
  stream_shards               = var.stream_shards
  stream_retention_hours      = var.stream_retention_hours
  stream_encryption           = var.stream_encryption
  dead_letter_destination     = var.dead_letter_destination
  dead_letter_expiration_days = var.dead_letter_expiration_days
  create_dead_letter_stream   = var.create_dead_letter_stream
  dead_letter_stream_name     = var.dead_letter_stream_name
  point_in_time_recovery      = var.point_in_time_recovery
  table_deletion_protection   = var.table_deletion_protection
  bucket_name                 = coalesce(var.bucket_name, "${var.name}-checkpoints-${local.account_id}")
  checkpoint_prefix           = var.checkpoint_prefix
  bucket_versioning           = var.bucket_versioning
  noncurrent_version_days     = var.noncurrent_version_days
  force_destroy               = var.force_destroy
  tags                        = var.tags
}

locals {
  partition  = data.aws_partition.current.partition
  region     = data.aws_region.current.name
  account_id = data.aws_caller_identity.current.account_id
  arn_prefix = "arn:${local.partition}"

  exchange_stream = module.storage.exchange_stream_name
  # None when dead letters are objects.
  dead_letter_streams = compact([module.storage.dead_letter_stream_name])
  table_name          = module.storage.table_name
  bucket_name         = module.storage.bucket_name

  all_streams = concat(keys(var.ingress_streams), var.egress_streams, [local.exchange_stream], local.dead_letter_streams)
  stream_arn = {
    for s in local.all_streams : s => "${local.arn_prefix}:kinesis:${local.region}:${local.account_id}:stream/${s}"
  }
  table_arn  = "${local.arn_prefix}:dynamodb:${local.region}:${local.account_id}:table/${local.table_name}"
  bucket_arn = "${local.arn_prefix}:s3:::${local.bucket_name}"

  function_names = { for k, f in var.functions : k => "${var.name}-${k}" }
  alias_arns = {
    for k, n in local.function_names : k => "${local.arn_prefix}:lambda:${local.region}:${local.account_id}:function:${n}:${var.function_alias}"
  }

  worker_log_group = "/ecs/${var.name}-worker"

  extra_documents = trimspace(trimprefix(trimspace(var.extra_module_documents), "---"))

  # module.yaml: one Lambda endpoint per function type pattern, the ingress streams, the egresses,
  # then the user's own documents.
  module_documents = concat(
    flatten([for k, f in var.functions : [for t in f.function_types : {
      kind = "statefun-aws.endpoints.v1/lambda"
      spec = {
        functions           = t
        functionName        = local.alias_arns[k]
        maxNumBatchRequests = f.max_batch
        # The runtime gives up on an attempt a little after Lambda would have.
        transport = { call = "${f.timeout_seconds + 5}s", payload_max_bytes = 6291456 }
      }
    }]]),
    length(var.ingress_streams) == 0 ? [] : [{
      kind = "io.statefun.kinesis.v1/ingress"
      spec = {
        id              = var.ingress_id
        awsRegion       = { type = "default" }
        startupPosition = { type = var.ingress_startup_position }
        streams         = [for s, v in var.ingress_streams : { stream = s, valueType = v.value_type, targets = v.targets }]
      }
    }],
    [for id in var.egress_ids : { kind = "io.statefun.kinesis.v1/egress", spec = { id = id, awsRegion = { type = "default" } } }],
  )
  module_yaml = join("---\n", concat(
    [for d in local.module_documents : yamlencode(d)],
    local.extra_documents == "" ? [] : ["${local.extra_documents}\n"],
  ))
}
