# Alarms on what needs a person:
#
#   <stream>-iterator-age   a reader of an ingress stream or of the exchange falls behind (the worker
#                           is down, stuck, or short of capacity)
#   commit-failures         a worker logged a failed checkpoint write or commit, a partition that
#                           lost its lease, one it could not recover, or one whose task or committer
#                           died of a bug (a metric filter on the log
#                           group; the phrases are parts of the runtime's own log messages, which
#                           tests/tests/terraform.rs checks)
#   dead-letters            records reached the dead-letter stream, or objects the dead-letter
#                           prefix (`statefun dead-letters` shows them and why)
#   stuck-partitions        a worker reported a stuck partition (StuckPartitions, from the metrics
#                           the workers publish in their log) every minute for
#                           stuck_partition_alarm_minutes: one that keeps failing to recover or to
#                           commit and publish (a restart loop), that has been recovering for longer
#                           than stuck_partition_seconds, or that holds work without a commit for
#                           that long. The iterator age misses these: a partition wedged in a
#                           restart loop, or one that stopped reading because it cannot publish,
#                           reads nothing, and a shard nobody reads has no iterator age data (the
#                           stream's age shows only the shards still read; no data at all is not
#                           breaching). An idle partition is never stuck, and no data (no worker
#                           running) is not an alarm either.

locals {
  iterator_age_streams = concat(keys(var.ingress_streams), [local.exchange_stream])

  # Each phrase is part of a message the runtime logs when a commit goes wrong.
  commit_failure_phrases = [
    "commit failed",
    "commit of epoch",
    "writing checkpoint",
    "lost its lease",
    "cannot recover",
    "task panicked",
    "ended unexpectedly",
  ]
}

resource "aws_cloudwatch_metric_alarm" "iterator_age" {
  for_each = toset(local.iterator_age_streams)

  alarm_name          = "${var.name}-${each.key}-iterator-age"
  alarm_description   = "Readers of stream ${each.key} are more than ${var.iterator_age_threshold_ms} ms behind (statefun deployment ${var.name})"
  namespace           = "AWS/Kinesis"
  metric_name         = "GetRecords.IteratorAgeMilliseconds"
  dimensions          = { StreamName = each.key }
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 5
  datapoints_to_alarm = 3
  threshold           = var.iterator_age_threshold_ms
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = var.alarm_actions
  ok_actions          = var.alarm_actions
  tags                = var.tags

  depends_on = [module.storage]
}

resource "aws_cloudwatch_log_metric_filter" "commit_failures" {
  name           = "${var.name}-commit-failures"
  log_group_name = aws_cloudwatch_log_group.worker.name
  pattern        = join(" ", [for p in local.commit_failure_phrases : "?\"${p}\""])

  metric_transformation {
    name          = "CommitFailures"
    namespace     = "StateFun/${var.name}"
    value         = "1"
    default_value = "0"
  }
}

resource "aws_cloudwatch_metric_alarm" "commit_failures" {
  alarm_name          = "${var.name}-commit-failures"
  alarm_description   = "The statefun workers of ${var.name} logged failed checkpoint writes or commits, a lost lease or a partition that cannot recover"
  namespace           = "StateFun/${var.name}"
  metric_name         = "CommitFailures"
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  threshold           = 0
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = var.alarm_actions
  ok_actions          = var.alarm_actions
  tags                = var.tags

  depends_on = [aws_cloudwatch_log_metric_filter.commit_failures]
}

resource "aws_cloudwatch_metric_alarm" "dead_letters" {
  alarm_name          = "${var.name}-dead-letters"
  alarm_description   = "Dead letters arrived (statefun deployment ${var.name}); `statefun dead-letters` shows them and why"
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  threshold           = 0
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = var.alarm_actions
  ok_actions          = var.alarm_actions
  tags                = var.tags

  # Records put on the dead-letter stream, or objects put under the dead-letter prefix.
  namespace   = length(local.dead_letter_streams) == 0 ? "AWS/S3" : "AWS/Kinesis"
  metric_name = length(local.dead_letter_streams) == 0 ? "PutRequests" : "IncomingRecords"
  dimensions = (length(local.dead_letter_streams) == 0
    ? { BucketName = local.bucket_name, FilterId = "dead-letters" }
    : { StreamName = local.dead_letter_streams[0] }
  )

  depends_on = [aws_s3_bucket_metric.dead_letters]
}

# S3 request metrics of the dead-letter prefix (billed as custom metrics), for the alarm above.
resource "aws_s3_bucket_metric" "dead_letters" {
  count  = var.dead_letter_destination == "objects" ? 1 : 0
  bucket = local.bucket_name
  name   = "dead-letters"
  filter {
    prefix = module.storage.dead_letter_prefix
  }
}

# Each worker reports its own stuck partitions once a minute (its STATEFUN_METRICS_EMF_INTERVAL, 60 s
# by default, matches the period): the alarm takes the worst worker's.
resource "aws_cloudwatch_metric_alarm" "stuck_partitions" {
  alarm_name          = "${var.name}-stuck-partitions"
  alarm_description   = "A statefun worker of ${var.name} has had a partition stuck (failing to recover, commit or publish, or holding work without a commit for ${var.stuck_partition_seconds} s) for ${var.stuck_partition_alarm_minutes} minutes; its log says why"
  namespace           = var.metrics_namespace
  metric_name         = "StuckPartitions"
  dimensions          = { Deployment = var.name }
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = var.stuck_partition_alarm_minutes
  threshold           = 0
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  alarm_actions       = var.alarm_actions
  ok_actions          = var.alarm_actions
  tags                = var.tags
}
