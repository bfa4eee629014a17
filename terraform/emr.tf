locals {
  # One source of truth for Spark/Delta settings: the same file configures the transient
  # clusters that `ecom-lakehouse emr run-transient` starts.
  emr_configurations = file("${path.module}/../src/ecom_lakehouse/ops/emr_configurations.json")
  wheel_uri          = "s3://${aws_s3_bucket.this["artifacts"].id}/${aws_s3_object.wheel.key}"
  bootstrap_uri      = "s3://${aws_s3_bucket.this["artifacts"].id}/${aws_s3_object.bootstrap.key}"
  log_uri            = "s3://${aws_s3_bucket.this["logs"].id}/emr/"
}

resource "aws_emr_security_configuration" "this" {
  name = "${local.name}-security"
  configuration = jsonencode({
    EncryptionConfiguration = {
      EnableAtRestEncryption    = true
      EnableInTransitEncryption = false
      AtRestEncryptionConfiguration = {
        S3EncryptionConfiguration = {
          EncryptionMode = "SSE-KMS"
          AwsKmsKey      = aws_kms_key.lake.arn
        }
        LocalDiskEncryptionConfiguration = {
          EncryptionKeyProviderType = "AwsKms"
          AwsKmsKey                 = aws_kms_key.lake.arn
          EnableEbsEncryption       = true
        }
      }
    }
  })
}

resource "aws_emr_cluster" "this" {
  name          = local.name
  release_label = var.release_label
  applications  = ["Spark", "Hadoop"]
  service_role  = aws_iam_role.emr_service.arn
  log_uri       = local.log_uri
  #checkov:skip=CKV_AWS_114:Kerberos needs a KDC this project does not run; access is IAM-only (no SSH ingress, private subnet)
  #checkov:skip=CKV_AWS_351:In-transit encryption needs a TLS certificate bundle per deployment; traffic stays inside the VPC, S3 is TLS-only by bucket policy

  security_configuration            = aws_emr_security_configuration.this.name
  termination_protection            = false
  keep_job_flow_alive_when_no_steps = true
  visible_to_all_users              = true

  ec2_attributes {
    subnet_id                         = var.subnet_id
    instance_profile                  = aws_iam_instance_profile.emr_instance.arn
    emr_managed_master_security_group = aws_security_group.emr_node["primary"].id
    emr_managed_slave_security_group  = aws_security_group.emr_node["core"].id
    service_access_security_group     = aws_security_group.emr_service_access.id
  }

  master_instance_group {
    instance_type = var.master_instance_type
    ebs_config {
      size                 = 64
      type                 = "gp3"
      volumes_per_instance = 1
    }
  }

  core_instance_group {
    instance_type  = var.core_instance_type
    instance_count = var.core_instance_count
    ebs_config {
      size                 = 128
      type                 = "gp3"
      volumes_per_instance = 1
    }
  }

  bootstrap_action {
    name = "install-ecom-lakehouse"
    path = local.bootstrap_uri
    args = [local.wheel_uri]
  }

  configurations_json = local.emr_configurations

  auto_termination_policy {
    idle_timeout = var.idle_timeout_seconds
  }

  depends_on = [aws_iam_role_policy.emr_instance, aws_iam_role_policy_attachment.emr_service]
}

resource "aws_emr_managed_scaling_policy" "this" {
  cluster_id = aws_emr_cluster.this.id
  compute_limits {
    unit_type              = "Instances"
    minimum_capacity_units = 1 + var.core_instance_count
    maximum_capacity_units = var.max_capacity_units
  }
}
