# A CloudWatch dashboard of the deployment: the metrics the workers publish every minute as embedded
# metric format lines in their log (namespace var.metrics_namespace, dimension Deployment = name;
# see STATEFUN_METRICS_EMF in worker.tf), the iterator age of the streams the workers read, and the
# alarms. Each worker reports its own partitions, so counts and gauges are summed over the workers
# (one line per worker a minute), the lag and the stuck partitions are the worst worker's.
#
# Its body is known at plan time (the alarms by ARNs built from their names), so `terraform plan`
# shows every metric it graphs.

locals {
  dashboard_name = var.name

  # One metric of the workers' as a dashboard metric line; `options` sets its stat, label or axis.
  emf_metric = { for m in [
    "Invocations", "InvocationsDeadLettered", "DeadLetters", "BacklogMessages", "IngressLagMaxMilliseconds",
    "Commits", "PartitionFailures", "StuckPartitions", "PartitionsHeld", "InvocationDurationAverage",
    "IngressRecords", "EgressRecords",
  ] : m => [var.metrics_namespace, m, "Deployment", var.name] }

  alarm_arn_prefix = "${local.arn_prefix}:cloudwatch:${local.region}:${local.account_id}:alarm:"

  # What every graph shares: one point a minute, as the workers report.
  graph = { region = local.region, view = "timeSeries", stacked = false, period = 60 }

  # Every widget is 12 wide and 6 high, two to a row, in this order.
  dashboard_widgets = [
    {
      type = "metric"
      properties = merge(local.graph, {
        title = "Invocations and dead letters (per minute)"
        stat  = "Sum"
        metrics = [
          concat(local.emf_metric["Invocations"], [{ label = "invocations" }]),
          concat(local.emf_metric["InvocationsDeadLettered"], [{ label = "invocations dead-lettered" }]),
          concat(local.emf_metric["DeadLetters"], [{ label = "dead letters (all causes)" }]),
        ]
      })
    },
    {
      type = "metric"
      properties = merge(local.graph, {
        title   = "Invocation duration (ms, one attempt)"
        stat    = "Average"
        metrics = [concat(local.emf_metric["InvocationDurationAverage"], [{ label = "average" }])]
      })
    },
    {
      type = "metric"
      properties = merge(local.graph, {
        title   = "Messages waiting for their function (backlog)"
        stat    = "Sum"
        metrics = [concat(local.emf_metric["BacklogMessages"], [{ label = "backlog" }])]
      })
    },
    {
      type = "metric"
      properties = merge(local.graph, {
        title   = "Ingress lag (ms behind the newest record)"
        stat    = "Maximum"
        metrics = [concat(local.emf_metric["IngressLagMaxMilliseconds"], [{ label = "worst shard" }])]
      })
    },
    {
      type = "metric"
      properties = merge(local.graph, {
        title = "Commits and partition failures (per minute)"
        stat  = "Sum"
        metrics = [
          concat(local.emf_metric["Commits"], [{ label = "commits" }]),
          concat(local.emf_metric["PartitionFailures"], [{ label = "partition failures", yAxis = "right" }]),
        ]
      })
    },
    {
      type = "metric"
      properties = merge(local.graph, {
        title = "Partitions held and stuck"
        metrics = [
          concat(local.emf_metric["PartitionsHeld"], [{ label = "held (all workers)", stat = "Sum" }]),
          concat(local.emf_metric["StuckPartitions"], [{ label = "stuck (worst worker)", stat = "Maximum", yAxis = "right" }]),
        ]
      })
    },
    {
      type = "metric"
      properties = merge(local.graph, {
        title = "Records in and out (per minute)"
        stat  = "Sum"
        metrics = [
          concat(local.emf_metric["IngressRecords"], [{ label = "ingress records read" }]),
          concat(local.emf_metric["EgressRecords"], [{ label = "egress records written" }]),
        ]
      })
    },
    {
      type = "metric"
      properties = merge(local.graph, {
        title   = "Iterator age of the streams the workers read (ms)"
        stat    = "Maximum"
        metrics = [for s in local.iterator_age_streams : ["AWS/Kinesis", "GetRecords.IteratorAgeMilliseconds", "StreamName", s, { label = s }]]
      })
    },
    {
      type = "alarm"
      properties = {
        title = "Alarms"
        alarms = concat(
          ["${local.alarm_arn_prefix}${aws_cloudwatch_metric_alarm.stuck_partitions.alarm_name}"],
          [for a in aws_cloudwatch_metric_alarm.iterator_age : "${local.alarm_arn_prefix}${a.alarm_name}"],
          ["${local.alarm_arn_prefix}${aws_cloudwatch_metric_alarm.commit_failures.alarm_name}"],
          ["${local.alarm_arn_prefix}${aws_cloudwatch_metric_alarm.dead_letters.alarm_name}"],
        )
      }
    },
  ]
}

resource "aws_cloudwatch_dashboard" "this" {
  dashboard_name = local.dashboard_name
  dashboard_body = jsonencode({
    widgets = [for i, w in local.dashboard_widgets : merge(w, {
      x      = (i % 2) * 12
      y      = floor(i / 2) * 6
      width  = 12
      height = 6
    })]
  })
}
