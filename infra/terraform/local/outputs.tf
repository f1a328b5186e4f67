output "statefun_environment" {
  description = "STATEFUN_* variables for the runtime and its CLI, next to `scripts/local-aws.sh env`."
  value       = module.storage.statefun_environment
}

output "streams" {
  value = module.storage.streams
}

output "table_name" {
  value = module.storage.table_name
}

output "bucket_name" {
  value = module.storage.bucket_name
}

output "checkpoint_prefix" {
  value = module.storage.checkpoint_prefix
}

output "exchange_stream_name" {
  value = module.storage.exchange_stream_name
}

output "dead_letter_stream_name" {
  value = module.storage.dead_letter_stream_name
}

output "ingress_stream_names" {
  value = module.storage.ingress_stream_names
}
