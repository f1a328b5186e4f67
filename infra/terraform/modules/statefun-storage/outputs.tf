output "exchange_stream_name" {
  description = "The exchange stream (STATEFUN_EXCHANGE_STREAM)."
  value       = aws_kinesis_stream.this[local.exchange_stream].name
}

output "exchange_stream_arn" {
  value = aws_kinesis_stream.this[local.exchange_stream].arn
}

output "dead_letter_destination" {
  value = var.dead_letter_destination
}

output "dead_letter_stream_name" {
  description = "The dead-letter stream (STATEFUN_DEAD_LETTER_STREAM), created here or not; null when dead letters are objects."
  value       = local.dead_letter_stream
}

output "dead_letter_stream_arn" {
  description = "ARN of the dead-letter stream when this module created it, else null."
  value       = local.create_dead_letter_stream ? aws_kinesis_stream.this[local.dead_letter_stream].arn : null
}

output "dead_letter_prefix" {
  description = "Key prefix of the dead-letter objects in the bucket when dead letters are objects, else null."
  value       = var.dead_letter_destination == "objects" ? "${var.checkpoint_prefix}dead-letters/" : null
}

output "ingress_stream_names" {
  value = [for s in var.ingress_streams : aws_kinesis_stream.this[s].name]
}

output "ingress_stream_arns" {
  description = "ARN of every ingress stream, by name."
  value       = { for s in var.ingress_streams : s => aws_kinesis_stream.this[s].arn }
}

output "egress_stream_names" {
  value = [for s in var.egress_streams : aws_kinesis_stream.this[s].name]
}

output "egress_stream_arns" {
  description = "ARN of every egress stream, by name."
  value       = { for s in var.egress_streams : s => aws_kinesis_stream.this[s].arn }
}

output "streams" {
  description = "Every stream this module created: name => {arn, role (ingress, egress, exchange, dead-letters), mode, shards}."
  value = {
    for name, s in local.streams : name => {
      arn    = aws_kinesis_stream.this[name].arn
      role   = s.role
      mode   = s.mode
      shards = s.mode == "PROVISIONED" ? s.shards : null
    }
  }
}

output "table_name" {
  description = "The lease and commit table (STATEFUN_TABLE)."
  value       = aws_dynamodb_table.partitions.name
}

output "table_arn" {
  value = aws_dynamodb_table.partitions.arn
}

output "bucket_name" {
  description = "The checkpoint bucket (STATEFUN_BUCKET)."
  value       = aws_s3_bucket.checkpoints.bucket
}

output "bucket_arn" {
  value = aws_s3_bucket.checkpoints.arn
}

output "checkpoint_prefix" {
  description = "Key prefix of the checkpoints (STATEFUN_PREFIX)."
  value       = var.checkpoint_prefix
}

output "partitions" {
  value = var.partitions
}

output "statefun_environment" {
  description = "The variables that point the runtime and its CLI (statefun run, send, tail, state, dead-letters) at this deployment, next to the standard AWS configuration."
  value = merge(
    {
      STATEFUN_BACKEND                 = "aws"
      STATEFUN_TABLE                   = aws_dynamodb_table.partitions.name
      STATEFUN_BUCKET                  = aws_s3_bucket.checkpoints.bucket
      STATEFUN_PREFIX                  = var.checkpoint_prefix
      STATEFUN_EXCHANGE_STREAM         = aws_kinesis_stream.this[local.exchange_stream].name
      STATEFUN_PARTITIONS              = tostring(var.partitions)
      STATEFUN_DEAD_LETTER_DESTINATION = var.dead_letter_destination
    },
    local.dead_letter_stream == null ? {} : { STATEFUN_DEAD_LETTER_STREAM = local.dead_letter_stream },
  )
}
