variable "name" {
  description = "Name of the deployment: prefixes the exchange and dead-letter streams, the table and (with the account ID) the bucket."
  type        = string
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}[a-z0-9]$", var.name))
    error_message = "name must be 3 to 32 characters: lower-case letters, digits and hyphens, starting with a letter and not ending with a hyphen."
  }
}

variable "partitions" {
  description = "Number of partitions; the exchange stream gets one shard per partition. Fixed for the life of the data: the runtime refuses to start when the exchange's shard count differs from its partition count."
  type        = number
  validation {
    condition     = var.partitions >= 1 && var.partitions <= 4096 && floor(var.partitions) == var.partitions
    error_message = "partitions must be a whole number between 1 and 4096."
  }
}

variable "ingress_streams" {
  description = "Names of the Kinesis ingress streams (the streams of module.yaml's io.statefun.kinesis.v1/ingress), created as given."
  type        = list(string)
  default     = []
  validation {
    condition     = alltrue([for s in var.ingress_streams : can(regex("^[a-zA-Z0-9_.-]{1,128}$", s))])
    error_message = "Kinesis stream names are 1 to 128 characters of letters, digits, '_', '.' and '-'."
  }
}

variable "egress_streams" {
  description = "Names of the Kinesis egress streams (the streams functions name in their KinesisEgressRecords), created as given."
  type        = list(string)
  default     = []
  validation {
    condition     = alltrue([for s in var.egress_streams : can(regex("^[a-zA-Z0-9_.-]{1,128}$", s))])
    error_message = "Kinesis stream names are 1 to 128 characters of letters, digits, '_', '.' and '-'."
  }
}

variable "stream_mode" {
  description = "Capacity mode of the ingress, egress and dead-letter streams: PROVISIONED (stream_shards shards each) or ON_DEMAND. The exchange is always PROVISIONED: it must keep exactly one shard per partition."
  type        = string
  default     = "PROVISIONED"
  validation {
    condition     = contains(["PROVISIONED", "ON_DEMAND"], var.stream_mode)
    error_message = "stream_mode must be PROVISIONED or ON_DEMAND."
  }
}

variable "stream_shards" {
  description = "Shards of each ingress and egress stream in PROVISIONED mode (the dead-letter stream gets one). Ingress shards are spread over the partitions, shard i to partition i mod partitions."
  type        = number
  default     = 1
  validation {
    condition     = var.stream_shards >= 1 && var.stream_shards <= 10000 && floor(var.stream_shards) == var.stream_shards
    error_message = "stream_shards must be a whole number between 1 and 10000."
  }
}

variable "stream_retention_hours" {
  description = "Retention of every stream. A partition resumes from its committed input positions, so a worker down for longer than this loses the records that expired meanwhile."
  type        = number
  default     = 24
  validation {
    condition     = var.stream_retention_hours >= 24 && var.stream_retention_hours <= 8760
    error_message = "stream_retention_hours must be between 24 and 8760."
  }
}

variable "stream_encryption" {
  description = "Encrypt the streams at rest with the AWS managed key alias/aws/kinesis (no key policy or IAM grant needed)."
  type        = bool
  default     = true
}

variable "exchange_stream_name" {
  description = "Name of the exchange stream (messages between partitions); default \"<name>-exchange\"."
  type        = string
  default     = null
}

variable "dead_letter_destination" {
  description = "Where the runtime puts dead letters (STATEFUN_DEAD_LETTER_DESTINATION): \"stream\", the dead-letter stream, or \"objects\", one object per letter under <checkpoint_prefix>dead-letters/ in the bucket (then no dead-letter stream is made)."
  type        = string
  default     = "stream"
  validation {
    condition     = contains(["stream", "objects"], var.dead_letter_destination)
    error_message = "dead_letter_destination must be stream or objects."
  }
}

variable "dead_letter_expiration_days" {
  description = "With dead_letter_destination = \"objects\": days after which a dead-letter object expires (null: kept until deleted). Expired letters can no longer be re-injected."
  type        = number
  default     = null
  validation {
    condition     = var.dead_letter_expiration_days == null || coalesce(var.dead_letter_expiration_days, 1) >= 1
    error_message = "dead_letter_expiration_days must be null or at least 1."
  }
}

variable "create_dead_letter_stream" {
  description = "Create the dead-letter stream (with dead_letter_destination = \"stream\"). Set to false to use an existing stream named dead_letter_stream_name."
  type        = bool
  default     = true
}

variable "dead_letter_stream_name" {
  description = "Name of the dead-letter stream; default \"<name>-dead-letters\"."
  type        = string
  default     = null
  validation {
    condition     = var.dead_letter_stream_name == null || can(regex("^[a-zA-Z0-9_.-]{1,128}$", coalesce(var.dead_letter_stream_name, "x")))
    error_message = "Kinesis stream names are 1 to 128 characters of letters, digits, '_', '.' and '-'."
  }
}

variable "table_name" {
  description = "Name of the DynamoDB table of partition leases and commits; default \"<name>-partitions\"."
  type        = string
  default     = null
}

variable "point_in_time_recovery" {
  description = "Point-in-time recovery of the lease and commit table."
  type        = bool
  default     = true
}

variable "table_deletion_protection" {
  description = "Deletion protection of the table (terraform destroy then fails until it is turned off)."
  type        = bool
  default     = false
}

variable "bucket_name" {
  description = "Name of the S3 bucket of checkpoints; default \"<name>-checkpoints-<account ID>\"."
  type        = string
  default     = null
  validation {
    condition     = var.bucket_name == null || can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", coalesce(var.bucket_name, "xxx")))
    error_message = "bucket_name must be a valid S3 bucket name (3 to 63 lower-case letters, digits, '.' and '-')."
  }
}

variable "checkpoint_prefix" {
  description = "Key prefix of the checkpoint objects in the bucket (the runtime's --prefix): empty, or ending in '/'."
  type        = string
  default     = "statefun/"
  validation {
    condition     = var.checkpoint_prefix == "" || (endswith(var.checkpoint_prefix, "/") && !startswith(var.checkpoint_prefix, "/") && !strcontains(var.checkpoint_prefix, "*"))
    error_message = "checkpoint_prefix must be empty or end with '/', must not start with '/' and must not contain '*'."
  }
}

variable "bucket_versioning" {
  description = "Keep versions of the checkpoint objects. The runtime deletes checkpoints that a newer snapshot replaced; with versioning they stay recoverable for noncurrent_version_days (and are billed meanwhile)."
  type        = bool
  default     = false
}

variable "noncurrent_version_days" {
  description = "Days after which a replaced (noncurrent) checkpoint version expires, when bucket_versioning is on."
  type        = number
  default     = 7
  validation {
    condition     = var.noncurrent_version_days >= 1
    error_message = "noncurrent_version_days must be at least 1."
  }
}

variable "abort_incomplete_multipart_days" {
  description = "Days after which an unfinished multipart upload (a large checkpoint whose writer died) is aborted and its parts deleted."
  type        = number
  default     = 1
  validation {
    condition     = var.abort_incomplete_multipart_days >= 1
    error_message = "abort_incomplete_multipart_days must be at least 1."
  }
}

variable "lifecycle_rules" {
  description = "Create the bucket's lifecycle rules (abort incomplete multipart uploads, expire replaced versions). Creating or changing them takes about a minute: the AWS provider waits until S3 reports the same rules for a while."
  type        = bool
  default     = true
}

variable "force_destroy" {
  description = "Let terraform destroy delete the bucket with its checkpoints (and their versions) in it."
  type        = bool
  default     = false
}

variable "tags" {
  description = "Tags of every resource."
  type        = map(string)
  default     = {}
}
