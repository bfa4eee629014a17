# `ecom-lakehouse emr … --terraform-dir terraform` reads these with `terraform output -json`.
output "cluster_id" {
  value = aws_emr_cluster.this.id
}

output "raw_bucket" {
  value = aws_s3_bucket.this["raw"].id
}

output "lake_bucket" {
  value = aws_s3_bucket.this["lake"].id
}

output "artifacts_bucket" {
  value = aws_s3_bucket.this["artifacts"].id
}

output "logs_bucket" {
  value = aws_s3_bucket.this["logs"].id
}

output "log_uri" {
  value = local.log_uri
}

output "release_label" {
  value = var.release_label
}

output "service_role" {
  value = aws_iam_role.emr_service.name
}

output "instance_profile" {
  value = aws_iam_instance_profile.emr_instance.name
}

output "subnet_id" {
  value = var.subnet_id
}

output "security_configuration" {
  value = aws_emr_security_configuration.this.name
}

output "kms_key_arn" {
  value = aws_kms_key.lake.arn
}

output "primary_security_group" {
  value = aws_security_group.emr_node["primary"].id
}

output "core_security_group" {
  value = aws_security_group.emr_node["core"].id
}

output "service_access_security_group" {
  value = aws_security_group.emr_service_access.id
}

output "silver_database" {
  value = aws_glue_catalog_database.layer["silver"].name
}

output "gold_database" {
  value = aws_glue_catalog_database.layer["gold"].name
}

output "wheelhouse_uri" {
  value = local.wheelhouse_uri
}

output "delta_log_table" {
  value = aws_dynamodb_table.delta_log.name
}

output "region" {
  value = var.region
}

output "serverless_application_id" {
  value = aws_emrserverless_application.this.id
}

output "serverless_job_role_arn" {
  value = aws_iam_role.serverless_job.arn
}

output "athena_workgroup" {
  value = aws_athena_workgroup.analysts.name
}

output "analyst_policy_arn" {
  value = aws_iam_policy.analyst.arn
}
