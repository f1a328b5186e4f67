variable "name" {
  description = "Name of the deployment (and of its bucket unless bucket_name is set): give each test run its own, e.g. with a random suffix."
  type        = string
}

variable "partitions" {
  type    = number
  default = 4
}

variable "ingress_streams" {
  type    = list(string)
  default = []
}

variable "egress_streams" {
  description = "Egress streams to create. The example functions write to fixed names (cart-results, inventory-updates) that every deployment on a shared test stack uses: leave those out here, or destroying this deployment deletes them under the others."
  type        = list(string)
  default     = []
}

variable "stream_shards" {
  type    = number
  default = 2
}

variable "bucket_name" {
  type    = string
  default = null
}

variable "region" {
  type    = string
  default = "us-east-1"
}

variable "localstack_endpoint" {
  description = "LocalStack (Kinesis, S3, STS): AWS_ENDPOINT_URL of `scripts/local-aws.sh env`."
  type        = string
  default     = "http://127.0.0.1:4566"
}

variable "dynamodb_endpoint" {
  description = "The DynamoDB emulator (moto): AWS_ENDPOINT_URL_DYNAMODB of `scripts/local-aws.sh env`."
  type        = string
  default     = "http://127.0.0.1:4567"
}

variable "stream_encryption" {
  description = "Encrypt the streams, as on AWS (slower to apply)."
  type        = bool
  default     = false
}

variable "lifecycle_rules" {
  description = "Create the bucket's lifecycle rules, as on AWS (about a minute slower to apply)."
  type        = bool
  default     = false
}
