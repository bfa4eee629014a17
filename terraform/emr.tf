locals {
  ops_dir = "${path.module}/../src/ecom_lakehouse/ops"
  # One source of truth for the cluster: the same files shape the transient clusters that
  # `ecom-lakehouse emr run-transient` starts (emr_ops.cluster_request).
  emr_configurations = file("${local.ops_dir}/emr_configurations.json")
  cluster            = jsondecode(file("${local.ops_dir}/emr_cluster.json"))
  # The keys emr_ops.wheelhouse_key() and emr_ops.bootstrap_key() compute from the same files.
  wheelhouse_key = "wheelhouse/${substr(filesha256("${local.ops_dir}/emr_requirements.txt"), 0, 12)}/"
  bootstrap_key  = "bootstrap/${substr(filesha256("${local.ops_dir}/emr_bootstrap.sh"), 0, 12)}/install_ecom_lakehouse.sh"
  wheelhouse_uri = "s3://${aws_s3_bucket.this["artifacts"].id}/${local.wheelhouse_key}"
  log_uri        = "s3://${aws_s3_bucket.this["logs"].id}/emr/"
  # AmazonEMRServicePolicy_v2 only launches into, and creates, resources carrying this tag.
  managed_policy_tags = local.cluster.tags
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
    # IMDSv2 only: instance credentials need a session token, which SSRF-style reads cannot get.
    InstanceMetadataServiceConfiguration = {
      MinimumInstanceMetadataServiceVersion = 2
      HttpPutResponseHopLimit               = 1
    }
  })
}

resource "aws_emr_cluster" "this" {
  name          = local.name
  release_label = var.release_label
  applications  = local.cluster.applications
  service_role  = aws_iam_role.emr_service.arn
  log_uri       = local.log_uri
  tags          = local.managed_policy_tags
  #checkov:skip=CKV_AWS_114:Kerberos needs a KDC this project does not run; access is IAM-only (no SSH ingress, private subnet)
  #checkov:skip=CKV_AWS_351:In-transit encryption needs a TLS certificate bundle per deployment; traffic stays inside the VPC, S3 is TLS-only by bucket policy

  security_configuration            = aws_emr_security_configuration.this.name
  termination_protection            = false
  keep_job_flow_alive_when_no_steps = true
  visible_to_all_users              = true
  step_concurrency_level            = local.cluster.step_concurrency_level

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
      size                 = local.cluster.ebs.primary.size_gib
      type                 = local.cluster.ebs.primary.type
      volumes_per_instance = 1
    }
  }

  core_instance_group {
    instance_type  = var.core_instance_type
    instance_count = var.core_instance_count
    ebs_config {
      size                 = local.cluster.ebs.core.size_gib
      type                 = local.cluster.ebs.core.type
      volumes_per_instance = 1
    }
  }

  bootstrap_action {
    name = "install-ecom-lakehouse"
    path = "s3://${aws_s3_bucket.this["artifacts"].id}/${aws_s3_object.bootstrap.key}"
    args = [local.wheelhouse_uri, local.cluster.python]
  }

  configurations_json = local.emr_configurations

  auto_termination_policy {
    idle_timeout = coalesce(var.idle_timeout_seconds, local.cluster.idle_timeout_seconds)
  }

  lifecycle {
    precondition {
      condition     = try(filesha256("${var.wheelhouse_dir}/requirements.txt"), "") == filesha256("${local.ops_dir}/emr_requirements.txt")
      error_message = "No wheelhouse for the current requirements in var.wheelhouse_dir: run `make wheelhouse` first (the nodes install from it, without PyPI)."
    }
  }

  depends_on = [
    aws_iam_role_policy.emr_instance,
    aws_iam_role_policy.emr_service_kms,
    aws_iam_role_policy_attachment.emr_service,
    aws_s3_object.wheelhouse,
    aws_ec2_tag.subnet_managed_policy,
    aws_vpc_security_group_ingress_rule.service_access_from_primary,
    aws_vpc_security_group_ingress_rule.primary_from_service_access,
    aws_vpc_security_group_egress_rule.service_access_to_nodes,
  ]
}

# Managed scaling counts core and task nodes only (never the primary). Core nodes stay at
# core_instance_count: they hold HDFS blocks and leave slowly; extra capacity comes as task nodes.
resource "aws_emr_instance_group" "task" {
  name          = "task"
  cluster_id    = aws_emr_cluster.this.id
  instance_type = var.core_instance_type
  # Created empty: providers before 5.65.0 sent 1 for a configured 0 (an instance started, then
  # scaled away: terraform-provider-aws#38837, fixed by #37740); versions.tf requires ~> 5.70.
  instance_count = 0
  ebs_config {
    size                 = local.cluster.ebs.task.size_gib
    type                 = local.cluster.ebs.task.type
    volumes_per_instance = 1
  }
  lifecycle {
    ignore_changes = [instance_count] # managed scaling owns it
  }
}

resource "aws_emr_managed_scaling_policy" "this" {
  cluster_id = aws_emr_cluster.this.id
  compute_limits {
    unit_type                       = "Instances"
    minimum_capacity_units          = var.core_instance_count
    maximum_capacity_units          = var.max_capacity_units
    maximum_core_capacity_units     = var.core_instance_count
    maximum_ondemand_capacity_units = var.max_capacity_units
  }
  depends_on = [aws_emr_instance_group.task]
}

# Glue Data Catalog databases the silver and gold steps register their tables in (by location),
# so Athena queries them. Analysts get the gold database only: personal data stops at silver.
resource "aws_glue_catalog_database" "layer" {
  for_each     = local.catalog_databases
  name         = each.value
  location_uri = "s3://${aws_s3_bucket.this["lake"].id}/${each.key}/"
}
