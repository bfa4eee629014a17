# The cluster runs in an existing VPC/subnet. Every rule is its own resource: EMR adds rules of its
# own to these groups, and inline rule blocks would make each `terraform apply` remove them again.
# Nothing opens ingress from the internet (use SSM, not SSH). All three groups and the subnet carry
# the tag AmazonEMRServicePolicy_v2 requires before EMR will use them.

resource "aws_security_group" "emr_node" {
  for_each               = toset(["primary", "core"])
  name                   = "${local.name}-emr-${each.key}"
  description            = "EMR ${each.key} nodes (EMR adds its own rules)"
  vpc_id                 = var.vpc_id
  revoke_rules_on_delete = true
  tags                   = local.managed_policy_tags
}

resource "aws_security_group" "emr_service_access" {
  name                   = "${local.name}-emr-service-access"
  description            = "EMR service access for clusters in a private subnet"
  vpc_id                 = var.vpc_id
  revoke_rules_on_delete = true
  tags                   = local.managed_policy_tags
}

resource "aws_ec2_tag" "subnet_managed_policy" {
  for_each    = local.managed_policy_tags
  resource_id = var.subnet_id
  key         = each.key
  value       = each.value
}

# All traffic out, as AWS lists it for the primary and core/task groups of a cluster in a private
# subnet (emr-man-sec-groups.html). EMR adds missing inbound rules to custom managed groups but never
# outbound ones: nodes talk to each other on many ports (YARN, HDFS, Spark's block manager) and to the
# service-access group, and reach S3, KMS, STS and Glue through the gateway endpoint or NAT. Narrowing
# this to 443 left a cluster that never finished starting. Inbound stays closed to the internet.
resource "aws_vpc_security_group_egress_rule" "nodes_all" {
  for_each          = aws_security_group.emr_node
  security_group_id = each.value.id
  description       = "All traffic out, as EMR requires of its managed groups"
  ip_protocol       = "-1"
  cidr_ipv4         = "0.0.0.0/0"
  #checkov:skip=CKV_AWS_382:EMR's managed primary and core groups need all egress (emr-man-sec-groups.html)
}

# The rules EMR needs between the service-access group and the nodes in a private subnet.
resource "aws_vpc_security_group_ingress_rule" "service_access_from_primary" {
  security_group_id            = aws_security_group.emr_service_access.id
  description                  = "Primary node to the EMR service (EMR 5.30+)"
  ip_protocol                  = "tcp"
  from_port                    = 9443
  to_port                      = 9443
  referenced_security_group_id = aws_security_group.emr_node["primary"].id
}

resource "aws_vpc_security_group_egress_rule" "service_access_to_nodes" {
  for_each                     = aws_security_group.emr_node
  security_group_id            = aws_security_group.emr_service_access.id
  description                  = "EMR service to the ${each.key} nodes"
  ip_protocol                  = "tcp"
  from_port                    = 8443
  to_port                      = 8443
  referenced_security_group_id = each.value.id
}

resource "aws_vpc_security_group_ingress_rule" "primary_from_service_access" {
  security_group_id            = aws_security_group.emr_node["primary"].id
  description                  = "EMR service to the primary node"
  ip_protocol                  = "tcp"
  from_port                    = 8443
  to_port                      = 8443
  referenced_security_group_id = aws_security_group.emr_service_access.id
}
