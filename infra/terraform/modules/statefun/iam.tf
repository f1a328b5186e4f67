# The worker's two roles. The task role is what `statefun run` calls AWS with: it reads only the
# ingress streams and the exchange, writes only the exchange, the egress and the dead-letter
# streams, reads and writes only this deployment's items, objects under the checkpoint prefix (which
# holds the dead-letter objects too, when dead letters are objects), and invokes only the aliases of
# the deployment's functions (and extra_invoke_arns). The execution role
# is ECS's, to pull the image and ship the logs.

data "aws_iam_policy_document" "ecs_tasks_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

locals {
  input_stream_arns  = [for s in concat(keys(var.ingress_streams), [local.exchange_stream]) : local.stream_arn[s]]
  output_stream_arns = [for s in concat([local.exchange_stream], var.egress_streams, local.dead_letter_streams) : local.stream_arn[s]]
  invoke_arns        = concat(values(local.alias_arns), var.extra_invoke_arns)
}

data "aws_iam_policy_document" "worker" {
  statement {
    sid       = "ReadInputStreams"
    actions   = ["kinesis:DescribeStreamSummary", "kinesis:ListShards", "kinesis:GetShardIterator", "kinesis:GetRecords"]
    resources = local.input_stream_arns
  }

  statement {
    sid       = "WriteOutputStreams"
    actions   = ["kinesis:DescribeStreamSummary", "kinesis:ListShards", "kinesis:PutRecord", "kinesis:PutRecords"]
    resources = local.output_stream_arns
  }

  statement {
    sid       = "LeasesAndCommits"
    actions   = ["dynamodb:DescribeTable", "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"]
    resources = [local.table_arn]
  }

  statement {
    sid       = "CheckpointObjects"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"]
    resources = ["${local.bucket_arn}/${var.checkpoint_prefix}*"]
  }

  statement {
    sid       = "ListCheckpoints"
    actions   = ["s3:ListBucket"]
    resources = [local.bucket_arn]
    dynamic "condition" {
      for_each = var.checkpoint_prefix == "" ? [] : [var.checkpoint_prefix]
      content {
        test     = "StringLike"
        variable = "s3:prefix"
        values   = ["${condition.value}*"]
      }
    }
  }

  dynamic "statement" {
    for_each = length(local.invoke_arns) > 0 ? [local.invoke_arns] : []
    content {
      sid       = "InvokeFunctions"
      actions   = ["lambda:InvokeFunction"]
      resources = statement.value
    }
  }
}

resource "aws_iam_role" "worker_task" {
  name               = "${var.name}-worker-task"
  description        = "statefun workers of deployment ${var.name}: its streams, table, checkpoints and functions only"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
  tags               = var.tags
}

resource "aws_iam_role_policy" "worker_task" {
  name   = "statefun-worker"
  role   = aws_iam_role.worker_task.id
  policy = data.aws_iam_policy_document.worker.json
}

data "aws_iam_policy_document" "worker_execution" {
  statement {
    sid       = "WorkerLogs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${local.arn_prefix}:logs:${local.region}:${local.account_id}:log-group:${local.worker_log_group}:log-stream:*"]
  }

  dynamic "statement" {
    for_each = var.image_repository_arn == null ? [] : [var.image_repository_arn]
    content {
      sid       = "PullImage"
      actions   = ["ecr:BatchCheckLayerAvailability", "ecr:GetDownloadUrlForLayer", "ecr:BatchGetImage"]
      resources = [statement.value]
    }
  }

  # GetAuthorizationToken has no resource-level permissions: "*" is the only resource it takes.
  dynamic "statement" {
    for_each = var.image_repository_arn == null ? [] : [var.image_repository_arn]
    content {
      sid       = "RegistryLogin"
      actions   = ["ecr:GetAuthorizationToken"]
      resources = ["*"]
    }
  }
}

resource "aws_iam_role" "worker_execution" {
  name               = "${var.name}-worker-execution"
  description        = "ECS, for the statefun workers of deployment ${var.name}: pull the image, write the logs"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks_assume.json
  tags               = var.tags
}

resource "aws_iam_role_policy" "worker_execution" {
  name   = "pull-and-log"
  role   = aws_iam_role.worker_execution.id
  policy = data.aws_iam_policy_document.worker_execution.json
}
