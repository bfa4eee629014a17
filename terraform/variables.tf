variable "region" {
  description = "AWS region for the buckets and the cluster"
  type        = string
  default     = "eu-west-1"
}

variable "project" {
  description = "Name prefix for every resource"
  type        = string
  default     = "ecom-lakehouse"
}

variable "environment" {
  description = "dev, staging or prod: part of bucket names"
  type        = string
  default     = "dev"
}

variable "vpc_id" {
  description = "Existing VPC for the cluster"
  type        = string
}

variable "subnet_id" {
  description = "Existing private subnet for the cluster: needs an S3 gateway endpoint, and a NAT or interface endpoints for KMS, EMR, STS, Glue (see docs/emr.md); Terraform tags it for EMR's managed policy"
  type        = string
}

variable "release_label" {
  description = "EMR release: 7.11.0+ runs Spark 3.5.6 with Delta 3.3.2, the versions this project pins"
  type        = string
  default     = "emr-7.12.0"
  validation {
    # the same rule as `ecom-lakehouse emr run-transient` (emr_ops.check_cluster_shape)
    condition     = try(tonumber(split(".", trimprefix(var.release_label, "emr-"))[0]) * 1000 + tonumber(split(".", trimprefix(var.release_label, "emr-"))[1]) >= 7011 && can(regex("^emr-[0-9]+\\.[0-9]+\\.[0-9]+$", var.release_label)), false)
    error_message = "release_label must be emr-7.11.0 or later: Spark 3.5.6 and Delta 3.3.2, which the wheelhouse pins, and Python 3.11."
  }
}

variable "master_instance_type" {
  description = "Primary node instance type (x86_64: the wheelhouse has no arm64 wheels)"
  type        = string
  default     = "m5.xlarge"
  validation {
    condition     = !can(regex("^(a1|[a-z]+[0-9]+[a-z]*g[a-z]*)(-[a-z]+)?\\.", var.master_instance_type))
    error_message = "master_instance_type is a Graviton (arm64) type; the wheelhouse holds x86_64 wheels only: use e.g. m5.xlarge or m6i.xlarge."
  }
}

variable "core_instance_type" {
  description = "Core and task node instance type (x86_64: the wheelhouse has no arm64 wheels)"
  type        = string
  default     = "m5.xlarge"
  validation {
    condition     = !can(regex("^(a1|[a-z]+[0-9]+[a-z]*g[a-z]*)(-[a-z]+)?\\.", var.core_instance_type))
    error_message = "core_instance_type is a Graviton (arm64) type; the wheelhouse holds x86_64 wheels only: use e.g. m5.xlarge or m6i.xlarge."
  }
}

variable "core_instance_count" {
  description = "Core nodes: at start, the managed-scaling minimum, and the most core nodes there will be (extra capacity comes as task nodes, which hold no HDFS data and leave cleanly)"
  type        = number
  default     = 2
}

variable "max_capacity_units" {
  description = "Managed scaling upper bound in instances, core + task (EMR does not count the primary node)"
  type        = number
  default     = 6
  validation {
    condition     = var.max_capacity_units >= var.core_instance_count
    error_message = "max_capacity_units counts core + task nodes: it cannot be below core_instance_count."
  }
}

variable "idle_timeout_seconds" {
  description = "Auto-termination after this much idle time (null: the value in src/ecom_lakehouse/ops/emr_cluster.json)"
  type        = number
  default     = null
}

variable "wheelhouse_dir" {
  description = "Folder `make wheelhouse` fills with the wheels the nodes install (uploaded to the artifacts bucket)"
  type        = string
  default     = "../dist/wheelhouse"
}

variable "athena_bytes_scanned_cutoff" {
  description = "Bytes one Athena query of the analysts' workgroup may scan before Athena cancels it (a cost guard)"
  type        = number
  default     = 10737418240 # 10 GiB
}

variable "query_result_retention_days" {
  description = "Days the analysts' Athena query results are kept"
  type        = number
  default     = 30
}

variable "log_retention_days" {
  description = "Days EMR and S3 access logs are kept"
  type        = number
  default     = 30
}

variable "checkpoint_noncurrent_days" {
  description = "Days old versions of streaming checkpoint files are kept"
  type        = number
  default     = 7
}

variable "serverless_max_vcpu" {
  description = "EMR Serverless: the most vCPUs the application's workers may hold at once (memory: 4 GB per vCPU); caps the cost of a runaway job"
  type        = number
  default     = 16
  validation {
    condition     = var.serverless_max_vcpu >= 4
    error_message = "serverless_max_vcpu must be at least 4: a Spark job needs a driver and one executor of the default size (4 vCPU each is EMR Serverless's default worker)."
  }
}
