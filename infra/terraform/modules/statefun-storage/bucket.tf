# The checkpoint bucket. Checkpoint objects are immutable; the runtime itself deletes the ones a newer
# snapshot replaced (and the leftovers of fenced writers older than that snapshot), so no lifecycle
# rule touches current objects: a rule expiring them could delete a checkpoint the commit table
# still names. The rules only clean up what nothing references any more: parts of multipart uploads
# that never completed, and (with versioning) replaced versions and their delete markers; and, if
# asked, dead-letter objects older than dead_letter_expiration_days (a prefix of their own, apart
# from the checkpoints' partition-NNNNN/ prefixes).

resource "aws_s3_bucket" "checkpoints" {
  bucket        = local.bucket_name
  force_destroy = var.force_destroy
  tags          = merge(var.tags, { "statefun:deployment" = var.name })
}

resource "aws_s3_bucket_ownership_controls" "checkpoints" {
  bucket = aws_s3_bucket.checkpoints.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "checkpoints" {
  bucket                  = aws_s3_bucket.checkpoints.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_server_side_encryption_configuration" "checkpoints" {
  bucket = aws_s3_bucket.checkpoints.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

resource "aws_s3_bucket_versioning" "checkpoints" {
  count  = var.bucket_versioning ? 1 : 0
  bucket = aws_s3_bucket.checkpoints.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "checkpoints" {
  count  = var.lifecycle_rules ? 1 : 0
  bucket = aws_s3_bucket.checkpoints.id

  rule {
    id     = "abort-incomplete-multipart-uploads"
    status = "Enabled"
    filter {
      prefix = ""
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = var.abort_incomplete_multipart_days
    }
  }

  rule {
    id     = "expire-replaced-checkpoint-versions"
    status = "Enabled"
    filter {
      prefix = var.checkpoint_prefix
    }
    noncurrent_version_expiration {
      noncurrent_days = var.noncurrent_version_days
    }
    expiration {
      expired_object_delete_marker = true
    }
  }

  dynamic "rule" {
    for_each = var.dead_letter_destination == "objects" && var.dead_letter_expiration_days != null ? [var.dead_letter_expiration_days] : []
    content {
      id     = "expire-dead-letters"
      status = "Enabled"
      filter {
        prefix = "${var.checkpoint_prefix}dead-letters/"
      }
      expiration {
        days = rule.value
      }
    }
  }

  depends_on = [aws_s3_bucket_versioning.checkpoints]
}

# Requests without TLS are refused.
data "aws_iam_policy_document" "tls_only" {
  statement {
    sid     = "DenyInsecureTransport"
    effect  = "Deny"
    actions = ["s3:*"]
    resources = [
      aws_s3_bucket.checkpoints.arn,
      "${aws_s3_bucket.checkpoints.arn}/*",
    ]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "checkpoints" {
  bucket = aws_s3_bucket.checkpoints.id
  policy = data.aws_iam_policy_document.tls_only.json

  depends_on = [aws_s3_bucket_public_access_block.checkpoints]
}
