# Data-lake layout:
#   raw       s3://<raw>/<table>.csv or <table>/*.csv   (landing zone, read-only for the cluster)
#   lake      s3://<lake>/{bronze,silver,gold,models,checkpoints,reports,mlruns}/...
#   artifacts s3://<artifacts>/{builds/<sha>,wheelhouse/<sha>,bootstrap/<sha>}/...
#   logs      s3://<logs>/{emr,s3-access}/...
#   query_results s3://<query_results>/athena/...   (the analysts' Athena workgroup writes results here)
locals {
  name = "${var.project}-${var.environment}"
  buckets = {
    raw           = "${local.name}-raw-${data.aws_caller_identity.current.account_id}"
    lake          = "${local.name}-lake-${data.aws_caller_identity.current.account_id}"
    artifacts     = "${local.name}-artifacts-${data.aws_caller_identity.current.account_id}"
    logs          = "${local.name}-logs-${data.aws_caller_identity.current.account_id}"
    query_results = "${local.name}-query-results-${data.aws_caller_identity.current.account_id}"
  }
  lake_prefixes = ["bronze", "silver", "gold", "models", "checkpoints", "reports", "mlruns"]
  # Glue databases the EMR steps register silver and gold in (names: letters, digits, underscores).
  catalog_databases = { for layer in ["silver", "gold"] : layer => "${replace(local.name, "-", "_")}_${layer}" }
  # Every bucket but the log bucket sends its access logs to the log bucket.
  logged_buckets = { for k, v in local.buckets : k => v if k != "logs" }
}

data "aws_caller_identity" "current" {}

resource "aws_kms_key" "lake" {
  description             = "${local.name}: S3 objects, EMR local disks and EBS volumes"
  deletion_window_in_days = 30
  enable_key_rotation     = true
  policy                  = data.aws_iam_policy_document.kms.json
}

resource "aws_kms_alias" "lake" {
  name          = "alias/${local.name}"
  target_key_id = aws_kms_key.lake.key_id
}

resource "aws_s3_bucket" "this" {
  for_each = local.buckets
  bucket   = each.value
  #checkov:skip=CKV_AWS_144:Cross-region replication is a disaster-recovery choice per deployment; the lake can be rebuilt from raw
  #checkov:skip=CKV2_AWS_62:No consumer of bucket event notifications; ingestion is scheduled, not event-driven
  #checkov:skip=CKV_AWS_18:Access logging is aws_s3_bucket_logging.this, for every bucket but the log bucket (logging it into itself would loop); checkov does not link a filtered for_each
}

resource "aws_s3_bucket_public_access_block" "this" {
  for_each                = local.buckets
  bucket                  = aws_s3_bucket.this[each.key].id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "this" {
  for_each = local.buckets
  bucket   = aws_s3_bucket.this[each.key].id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_versioning" "this" {
  for_each = local.buckets
  bucket   = aws_s3_bucket.this[each.key].id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "this" {
  for_each = local.buckets
  bucket   = aws_s3_bucket.this[each.key].id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = aws_kms_key.lake.arn
    }
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_logging" "this" {
  for_each      = local.logged_buckets
  bucket        = aws_s3_bucket.this[each.key].id
  target_bucket = aws_s3_bucket.this["logs"].id
  target_prefix = "s3-access/${each.key}/"
}

data "aws_iam_policy_document" "tls_only" {
  for_each = local.buckets
  # Any request without TLS, or with TLS below 1.2, is denied to everyone (two statements: the conditions
  # of one statement must all hold, and either one alone is reason to deny).
  dynamic "statement" {
    for_each = {
      DenyInsecureTransport = { test = "Bool", variable = "aws:SecureTransport", value = "false" }
      DenyOutdatedTls       = { test = "NumericLessThan", variable = "s3:TlsVersion", value = "1.2" }
    }
    content {
      sid     = statement.key
      effect  = "Deny"
      actions = ["s3:*"]
      resources = [
        aws_s3_bucket.this[each.key].arn,
        "${aws_s3_bucket.this[each.key].arn}/*",
      ]
      principals {
        type        = "*"
        identifiers = ["*"]
      }
      condition {
        test     = statement.value.test
        variable = statement.value.variable
        values   = [statement.value.value]
      }
    }
  }
  dynamic "statement" {
    # S3 server access logging writes into the log bucket as the logging service.
    for_each = each.key == "logs" ? [1] : []
    content {
      sid       = "AllowS3AccessLogDelivery"
      effect    = "Allow"
      actions   = ["s3:PutObject"]
      resources = ["${aws_s3_bucket.this["logs"].arn}/s3-access/*"]
      principals {
        type        = "Service"
        identifiers = ["logging.s3.amazonaws.com"]
      }
      condition {
        test     = "StringEquals"
        variable = "aws:SourceAccount"
        values   = [data.aws_caller_identity.current.account_id]
      }
    }
  }
}

resource "aws_s3_bucket_policy" "this" {
  for_each   = local.buckets
  bucket     = aws_s3_bucket.this[each.key].id
  policy     = data.aws_iam_policy_document.tls_only[each.key].json
  depends_on = [aws_s3_bucket_public_access_block.this]
}

resource "aws_s3_bucket_lifecycle_configuration" "this" {
  for_each = local.buckets
  bucket   = aws_s3_bucket.this[each.key].id

  # Every rule aborts incomplete multipart uploads after 7 days (checkov reads a
  # configuration's rules from its dynamic blocks only when some static rule is there too).
  rule {
    id     = "abort-incomplete-multipart-uploads"
    status = "Enabled"
    filter {
      prefix = ""
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }

  dynamic "rule" {
    for_each = each.key == "logs" ? [1] : []
    content {
      id     = "expire-logs"
      status = "Enabled"
      filter {}
      expiration {
        days = var.log_retention_days
      }
      noncurrent_version_expiration {
        noncurrent_days = 1
      }
      abort_incomplete_multipart_upload {
        days_after_initiation = 7
      }
    }
  }

  dynamic "rule" {
    # Athena writes a result file per query; nobody reads it after the session that asked.
    for_each = each.key == "query_results" ? [1] : []
    content {
      id     = "expire-query-results"
      status = "Enabled"
      filter {}
      expiration {
        days = var.query_result_retention_days
      }
      noncurrent_version_expiration {
        noncurrent_days = 1
      }
      abort_incomplete_multipart_upload {
        days_after_initiation = 7
      }
    }
  }

  dynamic "rule" {
    # Streaming checkpoints are rewritten constantly: keep few old versions.
    for_each = each.key == "lake" ? [1] : []
    content {
      id     = "expire-old-checkpoint-versions"
      status = "Enabled"
      filter {
        prefix = "checkpoints/"
      }
      noncurrent_version_expiration {
        noncurrent_days = var.checkpoint_noncurrent_days
      }
      abort_incomplete_multipart_upload {
        days_after_initiation = 7
      }
    }
  }

  dynamic "rule" {
    # Delta keeps its own history (time travel); S3 versions of table files are only a safety net.
    for_each = contains(["logs", "query_results"], each.key) ? [] : [1]
    content {
      id     = "expire-noncurrent-versions"
      status = "Enabled"
      filter {}
      noncurrent_version_expiration {
        noncurrent_days = 30
      }
      abort_incomplete_multipart_upload {
        days_after_initiation = 7
      }
    }
  }
}

# Node set-up, content-addressed like `ecom-lakehouse emr deploy-artifacts` does it (emr_ops.bootstrap_key,
# emr_ops.wheelhouse_key), so a cluster and the nodes managed scaling adds later all install the same set.
# Our own code is not here: each step ships its build (see emr_ops.stage_arguments).
resource "aws_s3_object" "bootstrap" {
  bucket      = aws_s3_bucket.this["artifacts"].id
  key         = local.bootstrap_key
  source      = "${local.ops_dir}/emr_bootstrap.sh"
  source_hash = filemd5("${local.ops_dir}/emr_bootstrap.sh")
  kms_key_id  = aws_kms_key.lake.arn
  # what emr_ops.upload_if_changed writes and checks: `emr submit` then finds the object current
  metadata = { sha256 = filesha256("${local.ops_dir}/emr_bootstrap.sh") }
}

# The wheelhouse `make wheelhouse` (ecom-lakehouse emr build-wheelhouse) downloads: every wheel the
# cluster's Python needs, so nodes install with `pip --no-index` and never reach PyPI.
resource "aws_s3_object" "wheelhouse" {
  for_each    = fileset(var.wheelhouse_dir, "*")
  bucket      = aws_s3_bucket.this["artifacts"].id
  key         = "${local.wheelhouse_key}${each.value}"
  source      = "${var.wheelhouse_dir}/${each.value}"
  source_hash = filemd5("${var.wheelhouse_dir}/${each.value}")
  kms_key_id  = aws_kms_key.lake.arn
  metadata    = { sha256 = filesha256("${var.wheelhouse_dir}/${each.value}") }
}

# Delta's commit log for S3 written by more than one cluster (the long-running one, a transient one):
# delta-storage-s3-dynamodb claims each commit here with a conditional put before it writes
# N.json, so two writers cannot both commit version N. Its key schema and TTL attribute are the ones
# Delta's S3DynamoDBLogStore uses (tablePath, fileName, expireTime); created here, so the nodes need
# no dynamodb:CreateTable.
resource "aws_dynamodb_table" "delta_log" {
  name         = "${local.name}-delta-log"
  billing_mode = "PAY_PER_REQUEST"
  hash_key     = "tablePath"
  range_key    = "fileName"

  attribute {
    name = "tablePath"
    type = "S"
  }
  attribute {
    name = "fileName"
    type = "S"
  }
  ttl {
    attribute_name = "expireTime"
    enabled        = true
  }
  server_side_encryption {
    enabled     = true
    kms_key_arn = aws_kms_key.lake.arn
  }
  point_in_time_recovery {
    enabled = true
  }
}
