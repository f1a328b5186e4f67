output "image_repository_url" {
  description = "Push the runtime image here."
  value       = aws_ecr_repository.runtime.repository_url
}

output "statefun_environment" {
  description = "STATEFUN_* variables for `statefun send/tail/state/dead-letters` against this deployment."
  value       = module.statefun.statefun_environment
}

output "module_yaml" {
  value = module.statefun.module_yaml
}

output "streams" {
  value = module.statefun.streams
}

output "table_name" {
  value = module.statefun.table_name
}

output "bucket_name" {
  value = module.statefun.bucket_name
}

output "functions" {
  value = module.statefun.functions
}

output "cluster_name" {
  value = module.statefun.cluster_name
}

output "service_name" {
  value = module.statefun.service_name
}

output "worker_log_group" {
  value = module.statefun.worker_log_group
}

output "worker_task_role_arn" {
  value = module.statefun.worker_task_role_arn
}

output "alarm_arns" {
  value = module.statefun.alarm_arns
}

output "dashboard_url" {
  value = module.statefun.dashboard_url
}
