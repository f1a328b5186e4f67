# The workers: Fargate tasks running `statefun run` on this deployment's resources. The image's
# entrypoint writes STATEFUN_MODULE_YAML (the module.yaml generated in main.tf) to a file and points
# STATEFUN_MODULE at it. Workers share the partitions through their leases: a new task asks for its
# share to be handed over, a task stopped with SIGTERM commits and releases its partitions (within
# stopTimeout), and the partitions of a task that died are taken over after the lease failover time
# (STATEFUN_LEASE_FAILOVER, 10 s by default). So a deployment can start the new tasks before it
# stops the old ones.

locals {
  worker_environment = merge(
    # STATEFUN_BACKEND, _TABLE, _BUCKET, _PREFIX, _EXCHANGE_STREAM, _PARTITIONS, _DEAD_LETTER_*
    module.storage.statefun_environment,
    {
      STATEFUN_REGION          = local.region
      STATEFUN_COMMIT_INTERVAL = var.commit_interval
      STATEFUN_POLL_INTERVAL   = var.poll_interval
      STATEFUN_MODULE_YAML     = local.module_yaml
      STATEFUN_LOG             = "info"
      NO_COLOR                 = "1"
      # Every minute, one line of CloudWatch embedded metric format on stdout: the awslogs driver
      # ships it with the log, and CloudWatch extracts the metrics of the dashboard and the
      # stuck-partitions alarm from it (no agent, no sidecar).
      STATEFUN_METRICS_EMF            = "true"
      STATEFUN_METRICS_EMF_NAMESPACE  = var.metrics_namespace
      STATEFUN_METRICS_EMF_DEPLOYMENT = var.name
      STATEFUN_STUCK_AFTER            = "${var.stuck_partition_seconds}s"
    },
    var.worker_environment,
  )
}

resource "aws_cloudwatch_log_group" "worker" {
  name              = local.worker_log_group
  retention_in_days = var.log_retention_days
  tags              = var.tags
}

resource "aws_ecs_cluster" "this" {
  name = var.name
  setting {
    name  = "containerInsights"
    value = var.container_insights ? "enabled" : "disabled"
  }
  tags = var.tags
}

resource "aws_ecs_task_definition" "worker" {
  family                   = "${var.name}-worker"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.cpu
  memory                   = var.memory_mb
  task_role_arn            = aws_iam_role.worker_task.arn
  execution_role_arn       = aws_iam_role.worker_execution.arn

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = var.cpu_architecture
  }

  container_definitions = jsonencode([{
    name        = "worker"
    image       = var.image
    essential   = true
    command     = ["run"]
    environment = [for k, v in local.worker_environment : { name = k, value = v }]
    stopTimeout = 60
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = aws_cloudwatch_log_group.worker.name
        awslogs-region        = local.region
        awslogs-stream-prefix = "worker"
      }
    }
  }])

  tags = var.tags
}

resource "aws_security_group" "worker" {
  name        = "${var.name}-worker"
  description = "statefun workers of ${var.name}: no inbound, outbound to the AWS APIs and the functions"
  vpc_id      = var.vpc_id
  tags        = var.tags
}

resource "aws_vpc_security_group_egress_rule" "worker_ipv4" {
  security_group_id = aws_security_group.worker.id
  description       = "AWS APIs and HTTP functions"
  ip_protocol       = "-1"
  cidr_ipv4         = "0.0.0.0/0"
}

resource "aws_ecs_service" "worker" {
  name                               = "${var.name}-worker"
  cluster                            = aws_ecs_cluster.this.id
  task_definition                    = aws_ecs_task_definition.worker.arn
  desired_count                      = var.desired_count
  launch_type                        = "FARGATE"
  platform_version                   = "LATEST"
  deployment_minimum_healthy_percent = 100
  deployment_maximum_percent         = 200
  propagate_tags                     = "SERVICE"
  enable_ecs_managed_tags            = true

  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }

  network_configuration {
    subnets          = var.subnet_ids
    security_groups  = concat([aws_security_group.worker.id], var.security_group_ids)
    assign_public_ip = var.assign_public_ip
  }

  tags = var.tags

  # The functions and the role's permissions exist before the first worker starts.
  depends_on = [aws_iam_role_policy.worker_task, aws_lambda_alias.this]

  lifecycle {
    precondition {
      condition     = var.desired_count <= var.partitions
      error_message = "desired_count must not exceed partitions: a worker without a partition has nothing to do."
    }
  }
}
