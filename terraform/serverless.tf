# EMR Serverless: the same stages as job runs, with no cluster, bootstrap, security groups or idle hour.
# Workers start when a job arrives and stop when the application has been idle; each job brings its
# Python environment (`ecom-lakehouse emr serverless-submit` uploads it) and this build. No network
# configuration: without one, EMR Serverless jobs reach S3, Glue, DynamoDB, KMS and CloudWatch in the
# application's Region, and nothing else (docs.aws.amazon.com/emr/latest/EMR-Serverless-UserGuide/vpc-access.html).
resource "aws_emrserverless_application" "this" {
  name          = "${local.name}-serverless"
  release_label = var.release_label # the cluster's: the same Spark and Delta
  type          = "spark"
  architecture  = "X86_64" # the environment archive holds x86_64 wheels only

  maximum_capacity {
    cpu    = "${var.serverless_max_vcpu} vCPU"
    memory = "${var.serverless_max_vcpu * 4} GB"
  }

  auto_start_configuration {
    enabled = true
  }

  auto_stop_configuration {
    enabled              = true
    idle_timeout_minutes = 15
  }

  tags = local.cluster.tags
}

# The job runtime role: what Spark runs as, with exactly the cluster nodes' policy (one document).
data "aws_iam_policy_document" "serverless_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["emr-serverless.amazonaws.com"]
    }
    # Confused-deputy protection: only EMR Serverless acting for this account's applications in this Region.
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [data.aws_caller_identity.current.account_id]
    }
    condition {
      test     = "ArnLike"
      variable = "aws:SourceArn"
      values   = ["arn:aws:emr-serverless:${var.region}:${data.aws_caller_identity.current.account_id}:/applications/*"]
    }
  }
}

resource "aws_iam_role" "serverless_job" {
  name               = "${local.name}-serverless-job"
  assume_role_policy = data.aws_iam_policy_document.serverless_assume.json
}

resource "aws_iam_role_policy" "serverless_job" {
  name   = "lake-access"
  role   = aws_iam_role.serverless_job.id
  policy = data.aws_iam_policy_document.emr_instance.json
}
