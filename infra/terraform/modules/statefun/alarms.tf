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
