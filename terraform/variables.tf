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
  description = "Existing private subnet (with a NAT or S3 gateway endpoint) for the cluster"
  type        = string
}

variable "release_label" {
  description = "EMR release: 7.11.0+ runs Spark 3.5.6 with Delta 3.3.2, the versions this project pins"
  type        = string
  default     = "emr-7.12.0"
}

variable "master_instance_type" {
  description = "Primary node instance type"
  type        = string
  default     = "m5.xlarge"
}

variable "core_instance_type" {
  description = "Core node instance type"
  type        = string
  default     = "m5.xlarge"
}

variable "core_instance_count" {
  description = "Core nodes at start"
  type        = number
  default     = 2
}

variable "max_capacity_units" {
  description = "Managed scaling upper bound (instances)"
  type        = number
  default     = 6
}

variable "idle_timeout_seconds" {
  description = "Auto-termination after this much idle time"
  type        = number
  default     = 3600
}

variable "wheel_path" {
  description = "Local path of the built wheel (make wheel) uploaded to the artifacts bucket"
  type        = string
  default     = "../dist/ecom_lakehouse-0.1.0-py3-none-any.whl"
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
