# Athena for analysts: a workgroup whose results are encrypted with the lake's key in the query_results bucket
# (enforced: a query cannot send them elsewhere or unencrypted), the analyst views of src/ecom_lakehouse/sql
# as named queries over the gold database, and the policy an analyst needs for exactly that. Personal data
# stops at silver: the policy reads the gold database and the lake's gold/ prefix only.
locals {
  views_dir = "${path.module}/../src/ecom_lakehouse/sql"
  # view name => its SQL, the first line a comment naming what it is for (the same files the dashboard uses)
  analyst_views = { for file in fileset(local.views_dir, "*.sql") : trimsuffix(file, ".sql") => file("${local.views_dir}/${file}") }
  workgroup     = "${local.name}-analysts"
}

resource "aws_athena_workgroup" "analysts" {
  name = local.workgroup
  configuration {
    enforce_workgroup_configuration    = true
    publish_cloudwatch_metrics_enabled = true
    bytes_scanned_cutoff_per_query     = var.athena_bytes_scanned_cutoff
    engine_version {
      # engine version 3 (Trino) reads Delta Lake tables registered in Glue natively
      selected_engine_version = "Athena engine version 3"
    }
    result_configuration {
      output_location = "s3://${aws_s3_bucket.this["query_results"].id}/athena/"
      encryption_configuration {
        encryption_option = "SSE_KMS"
        kms_key_arn       = aws_kms_key.lake.arn
      }
    }
  }
}

resource "aws_athena_named_query" "view" {
  for_each    = local.analyst_views
  name        = each.key
  description = trimspace(trimprefix(split("\n", each.value)[0], "--"))
  workgroup   = aws_athena_workgroup.analysts.id
  database    = aws_glue_catalog_database.layer["gold"].name
  query       = each.value
}

data "aws_iam_policy_document" "analyst" {
  statement {
    sid       = "AthenaInTheAnalystsWorkgroup"
    actions   = ["athena:StartQueryExecution", "athena:StopQueryExecution", "athena:GetQueryExecution", "athena:GetQueryResults", "athena:GetWorkGroup", "athena:ListNamedQueries", "athena:GetNamedQuery", "athena:BatchGetNamedQuery", "athena:ListQueryExecutions"]
    resources = ["arn:aws:athena:${var.region}:${data.aws_caller_identity.current.account_id}:workgroup/${local.workgroup}"]
  }
  statement {
    sid     = "GlueGoldOnly"
    actions = ["glue:GetDatabase", "glue:GetTable", "glue:GetTables", "glue:GetPartitions"]
    resources = [
      "arn:aws:glue:${var.region}:${data.aws_caller_identity.current.account_id}:catalog",
      "arn:aws:glue:${var.region}:${data.aws_caller_identity.current.account_id}:database/${local.catalog_databases["gold"]}",
      "arn:aws:glue:${var.region}:${data.aws_caller_identity.current.account_id}:table/${local.catalog_databases["gold"]}/*",
    ]
  }
  statement {
    sid       = "ReadGoldFiles"
    actions   = ["s3:GetObject"]
    resources = ["${aws_s3_bucket.this["lake"].arn}/gold/*"]
  }
  statement {
    sid       = "ListGoldOnly"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.this["lake"].arn]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["gold/*"]
    }
  }
  statement {
    sid       = "QueryResults"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload", "s3:ListBucket", "s3:GetBucketLocation"]
    resources = [aws_s3_bucket.this["query_results"].arn, "${aws_s3_bucket.this["query_results"].arn}/athena/*"]
  }
  statement {
    sid       = "LakeKey"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.lake.arn]
  }
}

resource "aws_iam_policy" "analyst" {
  name        = "${local.name}-analyst"
  description = "Athena over the gold database in the ${local.workgroup} workgroup; nothing of silver or bronze"
  policy      = data.aws_iam_policy_document.analyst.json
}
