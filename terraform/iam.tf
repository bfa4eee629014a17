# Least privilege: the EMR service role manages the cluster; the instance role (what Spark
# runs as) reads raw and artifacts, writes only the lake prefixes and the logs, and uses
# only this project's KMS key. No S3 permission names "*" as a resource.

data "aws_iam_policy_document" "emr_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["elasticmapreduce.amazonaws.com"]
    }
    # Confused-deputy protection, as AWS documents for the EMR service role: only EMR acting for
    # clusters of this account and region may assume it.
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [data.aws_caller_identity.current.account_id]
    }
    condition {
      test     = "ArnLike"
      variable = "aws:SourceArn"
      values   = ["arn:aws:elasticmapreduce:${var.region}:${data.aws_caller_identity.current.account_id}:*"]
    }
  }
}

resource "aws_iam_role" "emr_service" {
  name               = "${local.name}-emr-service"
  assume_role_policy = data.aws_iam_policy_document.emr_assume.json
}

resource "aws_iam_role_policy_attachment" "emr_service" {
  role       = aws_iam_role.emr_service.name
  policy_arn = "arn:aws:iam::aws:policy/service-role/AmazonEMRServicePolicy_v2"
}

# AmazonEMRServicePolicy_v2 lets EMR pass only roles it is given; allow passing the instance role.
data "aws_iam_policy_document" "emr_service_pass_role" {
  statement {
    actions   = ["iam:PassRole"]
    resources = [aws_iam_role.emr_instance.arn]
    condition {
      test     = "StringEquals"
      variable = "iam:PassedToService"
      values   = ["ec2.amazonaws.com"]
    }
  }
}

resource "aws_iam_role_policy" "emr_service_pass_role" {
  name   = "pass-instance-role"
  role   = aws_iam_role.emr_service.id
  policy = data.aws_iam_policy_document.emr_service_pass_role.json
}

# EBS and local-disk encryption with the project key: EMR launches the instances, so the service role
# must be able to use the key and hand EC2 a grant for the volumes (only a grant for an AWS resource).
data "aws_iam_policy_document" "emr_service_kms" {
  statement {
    sid       = "UseProjectKeyForVolumes"
    actions   = ["kms:GenerateDataKeyWithoutPlaintext", "kms:Decrypt", "kms:DescribeKey", "kms:ReEncryptFrom", "kms:ReEncryptTo"]
    resources = [aws_kms_key.lake.arn]
  }
  statement {
    sid       = "GrantVolumesTheKey"
    actions   = ["kms:CreateGrant"]
    resources = [aws_kms_key.lake.arn]
    condition {
      test     = "Bool"
      variable = "kms:GrantIsForAWSResource"
      values   = ["true"]
    }
  }
}

resource "aws_iam_role_policy" "emr_service_kms" {
  name   = "ebs-encryption-key"
  role   = aws_iam_role.emr_service.id
  policy = data.aws_iam_policy_document.emr_service_kms.json
}

data "aws_iam_policy_document" "ec2_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "emr_instance" {
  name               = "${local.name}-emr-instance"
  assume_role_policy = data.aws_iam_policy_document.ec2_assume.json
}

resource "aws_iam_instance_profile" "emr_instance" {
  name = "${local.name}-emr-instance"
  role = aws_iam_role.emr_instance.name
}

data "aws_iam_policy_document" "emr_instance" {
  statement {
    sid     = "ListProjectBuckets"
    actions = ["s3:ListBucket", "s3:GetBucketLocation"]
    resources = [
      aws_s3_bucket.this["raw"].arn,
      aws_s3_bucket.this["lake"].arn,
      aws_s3_bucket.this["artifacts"].arn,
      aws_s3_bucket.this["logs"].arn,
    ]
  }

  statement {
    sid       = "ReadRawAndArtifacts"
    actions   = ["s3:GetObject"]
    resources = ["${aws_s3_bucket.this["raw"].arn}/*", "${aws_s3_bucket.this["artifacts"].arn}/*"]
  }

  # Each prefix as a folder: its objects, the folder key itself (S3A and EMRFS HEAD it) and EMRFS's
  # `<prefix>_$folder$` marker. Nothing else in the lake bucket.
  statement {
    sid     = "ReadWriteLakePrefixes"
    actions = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"]
    resources = flatten([for prefix in local.lake_prefixes : [
      "${aws_s3_bucket.this["lake"].arn}/${prefix}",
      "${aws_s3_bucket.this["lake"].arn}/${prefix}/*",
      "${aws_s3_bucket.this["lake"].arn}/${prefix}_$folder$",
    ]])
  }

  # Cluster logs (emr/) and EMR Serverless job logs (serverless/), both written as the role Spark runs as.
  statement {
    sid       = "WriteEmrLogs"
    actions   = ["s3:PutObject", "s3:GetObject"]
    resources = ["${aws_s3_bucket.this["logs"].arn}/emr/*", "${aws_s3_bucket.this["logs"].arn}/serverless/*"]
  }

  # Registering silver and gold by location in the project's Glue databases; Spark's Glue client also
  # reads (and, when missing, creates) the `default` database at start-up.
  statement {
    sid     = "RegisterTablesInProjectDatabases"
    actions = ["glue:GetDatabase", "glue:GetDatabases", "glue:GetTable", "glue:GetTables", "glue:CreateTable", "glue:UpdateTable", "glue:GetPartitions"]
    resources = flatten([
      "arn:aws:glue:${var.region}:${data.aws_caller_identity.current.account_id}:catalog",
      "arn:aws:glue:${var.region}:${data.aws_caller_identity.current.account_id}:database/default",
      [for db in values(local.catalog_databases) : [
        "arn:aws:glue:${var.region}:${data.aws_caller_identity.current.account_id}:database/${db}",
        "arn:aws:glue:${var.region}:${data.aws_caller_identity.current.account_id}:table/${db}/*",
      ]],
    ])
  }

  statement {
    sid       = "CreateDefaultDatabase"
    actions   = ["glue:CreateDatabase"]
    resources = ["arn:aws:glue:${var.region}:${data.aws_caller_identity.current.account_id}:catalog", "arn:aws:glue:${var.region}:${data.aws_caller_identity.current.account_id}:database/default"]
  }

  # Delta's multi-cluster log store: read and claim commits in its table, never create or scan it.
  statement {
    sid       = "DeltaCommitLog"
    actions   = ["dynamodb:DescribeTable", "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:Query"]
    resources = [aws_dynamodb_table.delta_log.arn]
  }

  # SSE-KMS: a write asks KMS for a data key, a read decrypts it. Nothing on the nodes calls
  # kms:Encrypt or re-encrypts (the EBS and local-disk keys are the service role's).
  statement {
    sid       = "UseProjectKey"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey", "kms:DescribeKey"]
    resources = [aws_kms_key.lake.arn]
  }
}

resource "aws_iam_role_policy" "emr_instance" {
  name   = "lake-access"
  role   = aws_iam_role.emr_instance.id
  policy = data.aws_iam_policy_document.emr_instance.json
}

# Key policy: the account administers the key; the EMR roles use it.
data "aws_iam_policy_document" "kms" {
  #checkov:skip=CKV_AWS_111:A KMS key policy's resource "*" means this key only; the account root must administer it
  #checkov:skip=CKV_AWS_356:A KMS key policy's resource "*" means this key only
  #checkov:skip=CKV_AWS_109:A KMS key policy's resource "*" means this key only; the account root must administer it
  statement {
    sid       = "AccountAdministers"
    actions   = ["kms:*"]
    resources = ["*"] # in a key policy, "*" means this key
    principals {
      type        = "AWS"
      identifiers = ["arn:aws:iam::${data.aws_caller_identity.current.account_id}:root"]
    }
  }
  statement {
    sid       = "S3AccessLogDelivery"
    actions   = ["kms:GenerateDataKey", "kms:Decrypt"]
    resources = ["*"]
    principals {
      type        = "Service"
      identifiers = ["logging.s3.amazonaws.com"]
    }
    # only for access logs of this account's buckets
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [data.aws_caller_identity.current.account_id]
    }
    condition {
      test     = "ArnLike"
      variable = "aws:SourceArn"
      values   = ["arn:aws:s3:::${local.name}-*"]
    }
  }
}
