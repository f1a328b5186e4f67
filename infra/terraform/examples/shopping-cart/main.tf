# The shopping cart (functions/examples/shopping-cart) on AWS: the `cart` and `inventory` functions
# in one Lambda function, a worker on Fargate, ingress streams add-to-cart and restock, egress
# streams cart-results and inventory-updates (the names the functions write to).
#
# scripts/deploy.sh builds the artifacts and applies this; by hand:
#
#   cargo lambda build --release --arm64 --output-format zip -p shopping-cart
#   terraform init
#   terraform apply -target=aws_ecr_repository.runtime -var image=<repository URL>:<tag>
#   docker build -t <repository URL>:<tag> . && docker push <repository URL>:<tag>
#   terraform apply -var image=<repository URL>:<tag>
#
# Without subnet_ids, the worker runs in the default VPC's subnets with a public IP (no NAT gateway
# to pay for); its security group admits nothing inbound.

provider "aws" {
  region = var.region

  default_tags {
    tags = { "statefun:example" = "shopping-cart" }
  }
}

data "aws_vpc" "default" {
  count   = length(var.subnet_ids) == 0 ? 1 : 0
  default = true
}

data "aws_subnets" "default" {
  count = length(var.subnet_ids) == 0 ? 1 : 0
  filter {
    name   = "vpc-id"
    values = [data.aws_vpc.default[0].id]
  }
  filter {
    name   = "default-for-az"
    values = ["true"]
  }
}

data "aws_partition" "current" {}
data "aws_caller_identity" "current" {}

locals {
  # Built from its name rather than read from the repository, so the plan shows the execution role's
  # policy in full.
  repository_arn = "arn:${data.aws_partition.current.partition}:ecr:${var.region}:${data.aws_caller_identity.current.account_id}:repository/${aws_ecr_repository.runtime.name}"

  subnet_ids       = length(var.subnet_ids) > 0 ? var.subnet_ids : data.aws_subnets.default[0].ids
  vpc_id           = length(var.subnet_ids) > 0 ? var.vpc_id : data.aws_vpc.default[0].id
  assign_public_ip = length(var.subnet_ids) > 0 ? var.assign_public_ip : true
  artifact         = coalesce(var.artifact, "${path.module}/../../../../target/lambda/shopping-cart/bootstrap.zip")
}

resource "aws_ecr_repository" "runtime" {
  name                 = "${var.name}-runtime"
  image_tag_mutability = "MUTABLE"
  force_delete         = true

  image_scanning_configuration {
    scan_on_push = true
  }

  encryption_configuration {
    encryption_type = "AES256"
  }
}

resource "aws_ecr_lifecycle_policy" "runtime" {
  repository = aws_ecr_repository.runtime.name
  policy = jsonencode({
    rules = [{
      rulePriority = 1
      description  = "Keep the 10 most recent images"
      selection    = { tagStatus = "any", countType = "imageCountMoreThan", countNumber = 10 }
      action       = { type = "expire" }
    }]
  })
}

module "statefun" {
  source = "../../modules/statefun"

  name       = var.name
  partitions = var.partitions

  ingress_streams = {
    "add-to-cart" = { value_type = "type.googleapis.com/shoppingcart.AddToCart", targets = ["shoppingcart/cart"] }
    "restock"     = { value_type = "type.googleapis.com/shoppingcart.RestockItem", targets = ["shoppingcart/inventory"] }
  }
  ingress_id     = "shoppingcart/ingress"
  egress_streams = ["cart-results", "inventory-updates"]
  egress_ids     = ["shoppingcart/kinesis"]

  functions = {
    functions = {
      artifact        = local.artifact
      function_types  = ["shoppingcart/*"]
      architecture    = "arm64"
      memory_mb       = 256
      timeout_seconds = 30
    }
  }

  image                = var.image
  image_repository_arn = local.repository_arn
  cpu_architecture     = var.worker_cpu_architecture
  cpu                  = 512
  memory_mb            = 1024
  desired_count        = var.desired_count

  vpc_id           = local.vpc_id
  subnet_ids       = local.subnet_ids
  assign_public_ip = local.assign_public_ip

  dead_letter_destination     = var.dead_letter_destination
  dead_letter_expiration_days = var.dead_letter_expiration_days

  alarm_actions = var.alarm_actions
  force_destroy = var.force_destroy
}
