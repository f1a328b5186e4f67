variable "region" {
  type    = string
  default = "us-east-1"
}

variable "name" {
  description = "Name of the deployment (prefix of every resource)."
  type        = string
  default     = "shopping-cart"
}

variable "partitions" {
  type    = number
  default = 4
}

variable "image" {
  description = "The runtime image, pushed to the repository this configuration creates (output image_repository_url)."
  type        = string
}

variable "worker_cpu_architecture" {
  description = "ARM64 or X86_64: the architecture the image was built for."
  type        = string
  default     = "ARM64"
}

variable "artifact" {
  description = "The functions' Lambda zip; default: where `cargo lambda build --release --arm64 --output-format zip -p shopping-cart` writes it (target/lambda/shopping-cart/bootstrap.zip)."
  type        = string
  default     = null
}

variable "desired_count" {
  type    = number
  default = 1
}

variable "vpc_id" {
  description = "VPC of subnet_ids (ignored without subnet_ids)."
  type        = string
  default     = null
}

variable "subnet_ids" {
  description = "Subnets of the worker; empty: the default VPC's default subnets, with a public IP."
  type        = list(string)
  default     = []
}

variable "assign_public_ip" {
  description = "Give the worker a public IP in subnet_ids (ignored without subnet_ids)."
  type        = bool
  default     = false
}

variable "alarm_actions" {
  description = "ARNs to notify when an alarm fires or clears, e.g. an SNS topic."
  type        = list(string)
  default     = []
}

variable "force_destroy" {
  description = "Let terraform destroy delete the checkpoint bucket with its checkpoints."
  type        = bool
  default     = true
}

variable "dead_letter_destination" {
  description = "\"stream\" (a dead-letter stream) or \"objects\" (objects under statefun/dead-letters/ in the checkpoint bucket, kept dead_letter_expiration_days)."
  type        = string
  default     = "stream"
}

variable "dead_letter_expiration_days" {
  type    = number
  default = 30
}
