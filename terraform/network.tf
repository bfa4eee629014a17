# The cluster runs in an existing VPC/subnet. EMR manages the rules of these groups for
# its own traffic; nothing here opens ingress from the internet (use SSM, not SSH).

resource "aws_security_group" "emr_node" {
  for_each               = toset(["primary", "core"])
  name                   = "${local.name}-emr-${each.key}"
  description            = "EMR ${each.key} nodes (rules managed by EMR)"
  vpc_id                 = var.vpc_id
  revoke_rules_on_delete = true

  egress {
    description = "HTTPS to AWS APIs and package mirrors"
    from_port   = 443
    to_port     = 443
    protocol    = "tcp"
    cidr_blocks = ["0.0.0.0/0"]
  }
}

resource "aws_security_group" "emr_service_access" {
  name                   = "${local.name}-emr-service-access"
  description            = "EMR service access for clusters in a private subnet (rules managed by EMR)"
  vpc_id                 = var.vpc_id
  revoke_rules_on_delete = true

  egress {
    description = "EMR service to the primary node"
    from_port   = 8443
    to_port     = 8443
    protocol    = "tcp"
    cidr_blocks = [data.aws_vpc.this.cidr_block]
  }
}

data "aws_vpc" "this" {
  id = var.vpc_id
}
