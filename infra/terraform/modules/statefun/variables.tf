# --- the deployment -------------------------------------------------------------------------------

variable "name" {
  description = "Name of the deployment: prefixes every resource name (3 to 32 characters: lower-case letters, digits and hyphens)."
  type        = string
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}[a-z0-9]$", var.name))
    error_message = "name must be 3 to 32 characters: lower-case letters, digits and hyphens, starting with a letter and not ending with a hyphen."
  }
}

variable "partitions" {
  description = "Number of partitions (the exchange stream gets one shard per partition). Fixed for the life of the data."
  type        = number
  validation {
    condition     = var.partitions >= 1 && var.partitions <= 4096 && floor(var.partitions) == var.partitions
    error_message = "partitions must be a whole number between 1 and 4096."
  }
}

variable "tags" {
  description = "Tags of every resource."
  type        = map(string)
  default     = {}
}

# --- streams, table, bucket (passed to modules/statefun-storage) ---------------------------------

variable "ingress_streams" {
  description = "Kinesis ingress streams by name: the type of their records' values and the function types every record goes to (its id is the record's partition key). They become the io.statefun.kinesis.v1/ingress document of the generated module.yaml."
  type = map(object({
    value_type = string
    targets    = list(string)
  }))
  default = {}
  validation {
    condition     = alltrue([for s, v in var.ingress_streams : length(v.targets) > 0 && alltrue([for t in v.targets : can(regex("^[^/]+/[^/]+$", t))])])
    error_message = "Every ingress stream needs at least one target, each a function type \"namespace/name\"."
  }
}

variable "ingress_id" {
  description = "The id of the generated ingress document (namespace/name)."
  type        = string
  default     = "statefun/ingress"
}

variable "ingress_startup_position" {
  description = "Where the ingress streams are first read from: earliest or latest (later, from the committed positions)."
  type        = string
  default     = "earliest"
  validation {
    condition     = contains(["earliest", "latest"], var.ingress_startup_position)
    error_message = "ingress_startup_position must be earliest or latest."
  }
}

variable "egress_streams" {
  description = "Kinesis egress streams the functions write to (by the stream named in their KinesisEgressRecords)."
  type        = list(string)
  default     = []
}

variable "egress_ids" {
  description = "Ids of the Kinesis egresses the functions name (io.statefun.kinesis.v1/egress documents of the generated module.yaml), e.g. \"shoppingcart/kinesis\"."
  type        = list(string)
  default     = []
}

variable "extra_module_documents" {
  description = "More module.yaml documents appended to the generated ones, e.g. io.statefun.endpoints.v2/http endpoints of functions served elsewhere."
  type        = string
  default     = ""
}

variable "stream_mode" {
  description = "PROVISIONED or ON_DEMAND, for the ingress, egress and dead-letter streams (the exchange is always provisioned)."
  type        = string
  default     = "PROVISIONED"
}

variable "stream_shards" {
  description = "Shards of each ingress and egress stream in PROVISIONED mode."
  type        = number
  default     = 1
}

variable "stream_retention_hours" {
  description = "Retention of every stream: a worker down for longer than this loses the ingress records that expired meanwhile."
  type        = number
  default     = 24
}

variable "stream_encryption" {
  description = "Encrypt the streams with the AWS managed key alias/aws/kinesis."
  type        = bool
  default     = true
}

variable "dead_letter_destination" {
  description = "Where dead letters go: \"stream\" (the dead-letter stream) or \"objects\" (one object per letter under <checkpoint_prefix>dead-letters/ in the bucket, no stream)."
  type        = string
  default     = "stream"
}

variable "dead_letter_expiration_days" {
  description = "With dead_letter_destination = \"objects\": days after which dead-letter objects expire (null: kept)."
  type        = number
  default     = null
}

variable "create_dead_letter_stream" {
  description = "Create the dead-letter stream; false uses an existing one named dead_letter_stream_name."
  type        = bool
  default     = true
}

variable "dead_letter_stream_name" {
  description = "Name of the dead-letter stream; default \"<name>-dead-letters\"."
  type        = string
  default     = null
}

variable "point_in_time_recovery" {
  description = "Point-in-time recovery of the lease and commit table."
  type        = bool
  default     = true
}

variable "table_deletion_protection" {
  description = "Deletion protection of the lease and commit table."
  type        = bool
  default     = false
}

variable "bucket_name" {
  description = "Name of the checkpoint bucket; default \"<name>-checkpoints-<account ID>\"."
  type        = string
  default     = null
}

variable "checkpoint_prefix" {
  description = "Key prefix of the checkpoints in the bucket: empty, or ending in '/'. The workers may touch only objects under it."
  type        = string
  default     = "statefun/"
}

variable "bucket_versioning" {
  description = "Keep replaced checkpoint versions for noncurrent_version_days."
  type        = bool
  default     = false
}

variable "noncurrent_version_days" {
  type    = number
  default = 7
}

variable "force_destroy" {
  description = "Let terraform destroy delete the checkpoint bucket with its objects in it."
  type        = bool
  default     = false
}

# --- functions ------------------------------------------------------------------------------------

variable "functions" {
  description = <<-EOT
    Lambda functions to deploy, by key (the function is named "<name>-<key>"). Each serves the
    function types in function_types (module.yaml patterns such as "shoppingcart/*") and is invoked
    by the runtime through the alias `function_alias`, which points at the version published from
    `artifact`: a zip with a `bootstrap` executable, as `cargo lambda build --release --arm64
    --output-format zip` writes to target/lambda/<binary>/bootstrap.zip.
  EOT
  type = map(object({
    artifact           = string
    function_types     = list(string)
    architecture       = optional(string, "arm64")
    memory_mb          = optional(number, 256)
    timeout_seconds    = optional(number, 30)
    environment        = optional(map(string), {})
    max_batch          = optional(number, 1000)
    concurrency_limit  = optional(number, -1)
    log_retention_days = optional(number, 14)
  }))
  default = {}
  validation {
    condition     = alltrue([for k, f in var.functions : can(regex("^[a-zA-Z0-9_-]{1,24}$", k)) && length(f.function_types) > 0 && contains(["arm64", "x86_64"], f.architecture)])
    error_message = "Function keys are 1 to 24 letters, digits, '-' or '_'; every function needs function_types; architecture is arm64 or x86_64."
  }
  validation {
    condition     = alltrue([for k, f in var.functions : f.timeout_seconds >= 1 && f.timeout_seconds <= 900 && f.memory_mb >= 128 && f.memory_mb <= 10240])
    error_message = "timeout_seconds must be between 1 and 900 and memory_mb between 128 and 10240."
  }
}

variable "function_alias" {
  description = "Name of the alias the runtime invokes each function by."
  type        = string
  default     = "live"
}

variable "extra_invoke_arns" {
  description = "Qualified ARNs (with version or alias) of functions deployed elsewhere that the workers may invoke (name them in extra_module_documents). No wildcards."
  type        = list(string)
  default     = []
  validation {
    condition     = alltrue([for a in var.extra_invoke_arns : can(regex("^arn:[^:*]+:lambda:[^:*]+:[0-9]{12}:function:[^:*]+:[^:*]+$", a))])
    error_message = "extra_invoke_arns must be qualified Lambda function ARNs (arn:...:function:<name>:<version or alias>) without wildcards."
  }
}

# --- the workers ----------------------------------------------------------------------------------

variable "image" {
  description = "The runtime's container image (built from the repository's Dockerfile), e.g. \"<account>.dkr.ecr.<region>.amazonaws.com/statefun:<tag>\"."
  type        = string
}

variable "image_repository_arn" {
  description = "ARN of the ECR repository of `image`: the task may pull from it, and from nothing else. Null for an image the task pulls without credentials."
  type        = string
  default     = null
}

variable "desired_count" {
  description = "Worker tasks to run (0 stops processing and keeps everything). Workers share the partitions through their leases: each takes its share, and a task that stops hands its partitions on. More workers than partitions would sit idle."
  type        = number
  default     = 1
  validation {
    condition     = var.desired_count >= 0 && floor(var.desired_count) == var.desired_count
    error_message = "desired_count must be a whole number, 0 or more."
  }
}

variable "cpu" {
  description = "CPU units of the worker task (256 = 0.25 vCPU)."
  type        = number
  default     = 512
}

variable "memory_mb" {
  description = "Memory of the worker task (MiB); it holds every partition's state."
  type        = number
  default     = 1024
}

variable "cpu_architecture" {
  description = "ARM64 or X86_64: must match the image."
  type        = string
  default     = "ARM64"
  validation {
    condition     = contains(["ARM64", "X86_64"], var.cpu_architecture)
    error_message = "cpu_architecture must be ARM64 or X86_64."
  }
}

variable "subnet_ids" {
  description = "Subnets of the worker task. They need a route to the AWS APIs (and the HTTP functions, if any): public subnets with assign_public_ip, or private ones with a NAT gateway or VPC endpoints."
  type        = list(string)
  validation {
    condition     = length(var.subnet_ids) > 0
    error_message = "subnet_ids must name at least one subnet."
  }
}

variable "vpc_id" {
  description = "VPC of the subnets: the module creates the worker's security group (outbound only) in it."
  type        = string
}

variable "security_group_ids" {
  description = "More security groups for the worker task."
  type        = list(string)
  default     = []
}

variable "assign_public_ip" {
  description = "Give the worker task a public IP (needed in public subnets without a NAT gateway)."
  type        = bool
  default     = false
}

variable "commit_interval" {
  description = "How often each partition commits an epoch (STATEFUN_COMMIT_INTERVAL)."
  type        = string
  default     = "100ms"
}

variable "poll_interval" {
  description = "How often idle inputs are polled (STATEFUN_POLL_INTERVAL). Kinesis allows 5 GetRecords calls per second per shard, shared by every reader."
  type        = string
  default     = "250ms"
}

variable "worker_environment" {
  description = "More environment variables of the worker (e.g. STATEFUN_INVOKE_ATTEMPTS, STATEFUN_LOG)."
  type        = map(string)
  default     = {}
}

variable "log_retention_days" {
  description = "Retention of the worker's log group."
  type        = number
  default     = 30
}

variable "container_insights" {
  description = "Turn on CloudWatch Container Insights for the cluster (billed per metric)."
  type        = bool
  default     = false
}

# --- metrics, dashboard and alarms ---------------------------------------------------------------

variable "metrics_namespace" {
  description = "CloudWatch namespace of the metrics the workers publish (as embedded metric format lines in their log), with the dimension Deployment = name; the dashboard and the stuck-partitions alarm read them there."
  type        = string
  default     = "StatefunAws"
}

variable "stuck_partition_seconds" {
  description = "A partition that keeps failing, has been recovering, or holds work without a commit for longer than this many seconds counts as stuck (STATEFUN_STUCK_AFTER). An idle partition is never stuck. Keep it well above commit_interval and a function's timeout."
  type        = number
  default     = 120
  validation {
    condition     = var.stuck_partition_seconds >= 30 && floor(var.stuck_partition_seconds) == var.stuck_partition_seconds
    error_message = "stuck_partition_seconds must be a whole number, 30 or more."
  }
}

variable "stuck_partition_alarm_minutes" {
  description = "Consecutive minutes in which a worker reports a stuck partition before the stuck-partitions alarm fires (on top of stuck_partition_seconds, which a partition must first be stuck for)."
  type        = number
  default     = 3
  validation {
    condition     = var.stuck_partition_alarm_minutes >= 1 && floor(var.stuck_partition_alarm_minutes) == var.stuck_partition_alarm_minutes
    error_message = "stuck_partition_alarm_minutes must be a whole number, 1 or more."
  }
}

# --- alarms ---------------------------------------------------------------------------------------

variable "alarm_actions" {
  description = "ARNs notified when an alarm fires or clears (e.g. an SNS topic)."
  type        = list(string)
  default     = []
}

variable "iterator_age_threshold_ms" {
  description = "The iterator age (how far behind the newest record a reader is) of an ingress or exchange stream above which its alarm fires."
  type        = number
  default     = 60000
}
