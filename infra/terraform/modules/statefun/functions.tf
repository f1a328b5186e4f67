# The functions: stateless code behind the Lambda Invoke API. Each gets a role that may only write its
# own logs, a log group with a retention, a version published from its artifact and an alias the
# runtime invokes by, so a new artifact takes effect atomically when the alias moves.

data "aws_iam_policy_document" "lambda_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["lambda.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

resource "aws_iam_role" "function" {
  for_each           = var.functions
  name               = "${var.name}-${each.key}-fn"
  description        = "Lambda function ${local.function_names[each.key]} of statefun deployment ${var.name}: its own logs only"
  assume_role_policy = data.aws_iam_policy_document.lambda_assume.json
  tags               = var.tags
}

data "aws_iam_policy_document" "function" {
  for_each = var.functions
  statement {
    sid       = "OwnLogs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${local.arn_prefix}:logs:${local.region}:${local.account_id}:log-group:/aws/lambda/${local.function_names[each.key]}:log-stream:*"]
  }
}

resource "aws_iam_role_policy" "function" {
  for_each = var.functions
  name     = "logs"
  role     = aws_iam_role.function[each.key].id
  policy   = data.aws_iam_policy_document.function[each.key].json
}

resource "aws_cloudwatch_log_group" "function" {
  for_each          = var.functions
  name              = "/aws/lambda/${local.function_names[each.key]}"
  retention_in_days = each.value.log_retention_days
  tags              = var.tags
}

resource "aws_lambda_function" "this" {
  for_each = var.functions

  function_name                  = local.function_names[each.key]
  description                    = "Stateful functions ${join(", ", each.value.function_types)} of statefun deployment ${var.name}"
  role                           = aws_iam_role.function[each.key].arn
  filename                       = each.value.artifact
  source_code_hash               = filebase64sha256(each.value.artifact)
  handler                        = "bootstrap"
  runtime                        = "provided.al2023"
  architectures                  = [each.value.architecture]
  memory_size                    = each.value.memory_mb
  timeout                        = each.value.timeout_seconds
  reserved_concurrent_executions = each.value.concurrency_limit
  publish                        = true

  dynamic "environment" {
    for_each = length(each.value.environment) > 0 ? [each.value.environment] : []
    content {
      variables = environment.value
    }
  }

  logging_config {
    log_format = "Text"
    log_group  = aws_cloudwatch_log_group.function[each.key].name
  }

  tags = var.tags

  depends_on = [aws_iam_role_policy.function]
}

resource "aws_lambda_alias" "this" {
  for_each         = var.functions
  name             = var.function_alias
  description      = "The version the statefun workers invoke"
  function_name    = aws_lambda_function.this[each.key].function_name
  function_version = aws_lambda_function.this[each.key].version
}
