output "statefun_environment" {
  description = "STATEFUN_* variables that point the CLI (statefun send, tail, state, dead-letters) at this deployment, next to the standard AWS configuration (AWS_REGION, credentials)."
  value       = merge(module.storage.statefun_environment, { STATEFUN_REGION = local.region })
}

output "module_yaml" {
  description = "The module.yaml the workers run with (also `statefun send --module` needs it to encode records)."
  value       = local.module_yaml
}

output "streams" {
  description = "Every stream the deployment created: name => {arn, role, mode, shards}."
  value       = module.storage.streams
}

output "ingress_stream_arns" {
  value = module.storage.ingress_stream_arns
}

output "egress_stream_arns" {
  value = module.storage.egress_stream_arns
}

output "exchange_stream_name" {
  value = module.storage.exchange_stream_name
}

output "exchange_stream_arn" {
  value = module.storage.exchange_stream_arn
}

output "dead_letter_stream_name" {
  value = module.storage.dead_letter_stream_name
}

output "dead_letter_stream_arn" {
  value = module.storage.dead_letter_stream_arn
}

output "dead_letter_prefix" {
  description = "Key prefix of the dead-letter objects when dead letters are objects, else null."
  value       = module.storage.dead_letter_prefix
}

output "table_name" {
  value = module.storage.table_name
}

output "table_arn" {
  value = module.storage.table_arn
}

output "bucket_name" {
  value = module.storage.bucket_name
}

output "bucket_arn" {
  value = module.storage.bucket_arn
}

output "checkpoint_prefix" {
  value = module.storage.checkpoint_prefix
}

output "functions" {
  description = "Per function key: name, ARN, published version, the alias ARN the workers invoke, role and log group."
  value = {
    for k, f in aws_lambda_function.this : k => {
      name      = f.function_name
      arn       = f.arn
      version   = f.version
      alias_arn = aws_lambda_alias.this[k].arn
      role_arn  = aws_iam_role.function[k].arn
      log_group = aws_cloudwatch_log_group.function[k].name
    }
  }
}

output "cluster_name" {
  value = aws_ecs_cluster.this.name
}

output "cluster_arn" {
  value = aws_ecs_cluster.this.arn
}

output "service_name" {
  value = aws_ecs_service.worker.name
}

output "task_definition_arn" {
  value = aws_ecs_task_definition.worker.arn
}

output "worker_log_group" {
  value = aws_cloudwatch_log_group.worker.name
}

output "worker_security_group_id" {
  value = aws_security_group.worker.id
}

output "worker_task_role_arn" {
  value = aws_iam_role.worker_task.arn
}

output "worker_execution_role_arn" {
  value = aws_iam_role.worker_execution.arn
}

output "alarm_arns" {
  description = "Every alarm, by name."
  value = merge(
    { for s, a in aws_cloudwatch_metric_alarm.iterator_age : a.alarm_name => a.arn },
    { (aws_cloudwatch_metric_alarm.commit_failures.alarm_name) = aws_cloudwatch_metric_alarm.commit_failures.arn },
    { (aws_cloudwatch_metric_alarm.dead_letters.alarm_name) = aws_cloudwatch_metric_alarm.dead_letters.arn },
    { (aws_cloudwatch_metric_alarm.stuck_partitions.alarm_name) = aws_cloudwatch_metric_alarm.stuck_partitions.arn },
  )
}

output "dashboard_name" {
  description = "Name of the CloudWatch dashboard of the deployment."
  value       = aws_cloudwatch_dashboard.this.dashboard_name
}

output "dashboard_url" {
  description = "The CloudWatch dashboard in the AWS console (of the standard partition)."
  value       = "https://${local.region}.console.aws.amazon.com/cloudwatch/home?region=${local.region}#dashboards/dashboard/${aws_cloudwatch_dashboard.this.dashboard_name}"
}
