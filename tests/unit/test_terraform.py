"""Terraform: parses, is wired together, and checkov finds nothing unexplained."""
import json
import shutil
import subprocess
from pathlib import Path

import hcl2
import pytest

UNQUOTED = hcl2.SerializationOptions(strip_string_quotes=True)
TF = Path(__file__).resolve().parents[2] / "terraform"
CHECKOV = Path(__file__).resolve().parents[2] / ".venv-checkov" / "bin" / "checkov"


@pytest.fixture(scope="module")
def tf():
    merged = {}
    for path in sorted(TF.glob("*.tf")):
        for block, items in hcl2.loads(path.read_text(), serialization_options=UNQUOTED).items():
            merged.setdefault(block, []).extend(items)
    return merged


def _resources(tf, kind):
    out = {}
    for item in tf.get("resource", []):
        out.update(item.get(kind, {}))
    return out


def _text(value) -> str:
    return json.dumps(value)


def test_files_split_by_concern():
    names = {p.name for p in TF.glob("*.tf")}
    assert {"versions.tf", "variables.tf", "s3.tf", "iam.tf", "network.tf", "emr.tf", "outputs.tf"} <= names
    assert (TF / "terraform.tfvars.example").exists()


def test_provider_is_pinned_and_no_credentials(tf):
    providers = _text(tf["terraform"])
    assert "hashicorp/aws" in providers and "~> 5." in providers
    everything = "".join(p.read_text() for p in TF.glob("*.tf*")).lower()
    for secret in ("access_key", "secret_key", "aws_secret", "akia"):
        assert secret not in everything


def test_buckets_are_private_encrypted_versioned_tls_only_with_lifecycle(tf):
    buckets = _resources(tf, "aws_s3_bucket")["this"]
    for companion in ("aws_s3_bucket_public_access_block", "aws_s3_bucket_versioning",
                      "aws_s3_bucket_server_side_encryption_configuration", "aws_s3_bucket_policy",
                      "aws_s3_bucket_lifecycle_configuration"):
        res = _resources(tf, companion)["this"]
        assert res["for_each"] == buckets["for_each"], companion
        assert "aws_s3_bucket.this[each.key].id" in _text(res["bucket"]), companion
    sse = _text(_resources(tf, "aws_s3_bucket_server_side_encryption_configuration")["this"])
    assert "aws:kms" in sse and "aws_kms_key.lake.arn" in sse
    pab = _resources(tf, "aws_s3_bucket_public_access_block")["this"]
    blocks = ("block_public_acls", "block_public_policy", "ignore_public_acls", "restrict_public_buckets")
    assert all(pab[k] is True for k in blocks)


@pytest.mark.skipif(not shutil.which("terraform"), reason="terraform is not installed")
def test_each_bucket_gets_the_lifecycle_rules_meant_for_it_and_the_lake_its_layers():
    """Which dynamic rule each bucket gets, by Terraform evaluating each rule's for_each for that bucket."""
    from tests import terraform_eval

    lifecycle = terraform_eval.blocks("resource")["aws_s3_bucket_lifecycle_configuration"]["this"]
    dynamic_rules = [next(iter(block.values())) for block in lifecycle["dynamic"]]
    static = {rule["id"].strip('"') for rule in lifecycle["rule"]}
    buckets = list(terraform_eval.blocks("locals")["buckets"])
    # one console call: {bucket = [each dynamic rule's for_each with each.key = that bucket]}
    for_each = terraform_eval.evaluate("{" + ", ".join(
        f'{bucket} = [' + ", ".join(terraform_eval.substitute(rule["for_each"][2:-1], {"each.key": f'"{bucket}"'})
                                    for rule in dynamic_rules) + "]" for bucket in buckets) + "}")
    rules = {bucket: static | {rule["content"][0]["id"].strip('"') for rule, instances in zip(dynamic_rules, for_each[bucket],
                                                                                                strict=True) if instances}
             for bucket in buckets}
    multipart = "abort-incomplete-multipart-uploads"
    assert rules == {"logs": {multipart, "expire-logs"},
                     "lake": {multipart, "expire-old-checkpoint-versions", "expire-noncurrent-versions"},
                     "raw": {multipart, "expire-noncurrent-versions"}, "artifacts": {multipart, "expire-noncurrent-versions"},
                     "query_results": {multipart, "expire-query-results"}}
    layers = terraform_eval.evaluate(terraform_eval.as_expression(terraform_eval.blocks("locals")["lake_prefixes"]))
    assert {"bronze", "silver", "gold", "checkpoints", "models"} <= set(layers)


def _policy_document(tf, name) -> dict:
    docs = {}
    for d in tf["data"]:
        docs.update(d.get("aws_iam_policy_document", {}))
    return docs[name]


def _policy_statements(tf, name) -> list[dict]:
    return _policy_document(tf, name)["statement"]


def _policy(tf, name):
    return {st["sid"]: st for st in _policy_statements(tf, name) if "sid" in st}


def test_instance_role_is_least_privilege(tf):
    iam_text = (TF / "iam.tf").read_text()
    by_sid = _policy(tf, "emr_instance")
    for sid, st in by_sid.items():
        assert '"*"' not in _text(st["resources"]), sid
    assert "PutObject" not in _text(by_sid["ReadRawAndArtifacts"]["actions"])
    lake = _text(by_sid["ReadWriteLakePrefixes"]["resources"])
    # the folder key itself, its objects and EMRFS's marker: never the whole bucket
    assert "local.lake_prefixes" in lake and "${prefix}/*" in lake and "${prefix}_$folder$" in lake
    assert "local.catalog_databases" in _text(by_sid["RegisterTablesInProjectDatabases"]["resources"])
    assert "AmazonEMRServicePolicy_v2" in iam_text
    # SSE-KMS needs a data key to write and Decrypt to read; the nodes never encrypt or re-encrypt
    assert set(by_sid["UseProjectKey"]["actions"]) == {"kms:Decrypt", "kms:GenerateDataKey", "kms:DescribeKey"}


def _conditions(statement) -> dict[str, tuple[str, list]]:
    blocks = statement.get("condition", [])
    return {c["variable"]: (c["test"], c["values"]) for c in (blocks if isinstance(blocks, list) else [blocks])}


def test_service_principals_act_only_for_this_account(tf):
    """Confused-deputy protection: the EMR service role's trust and the key's grant to S3 log delivery
    hold only for this account's clusters and buckets."""
    [trust] = _policy_statements(tf, "emr_assume")
    conditions = _conditions(trust)
    assert conditions["aws:SourceAccount"][0] == "StringEquals"
    test, [arn] = conditions["aws:SourceArn"]
    account = "${data.aws_caller_identity.current.account_id}"
    assert test == "ArnLike" and arn.startswith(f"arn:aws:elasticmapreduce:${{var.region}}:{account}:")
    logs = _policy(tf, "kms")["S3AccessLogDelivery"]
    assert {"aws:SourceAccount", "aws:SourceArn"} <= set(_conditions(logs))


@pytest.mark.skipif(shutil.which("terraform") is None, reason="terraform is not installed")
def test_buckets_refuse_plain_http_and_tls_below_1_2(tf):
    from tests import terraform_eval

    quoted = terraform_eval.blocks("data")["aws_iam_policy_document"]["tls_only"]  # strings as HCL has them
    [for_each] = [d['"statement"']["for_each"] for d in quoted["dynamic"] if "DenyOutdatedTls" in _text(d['"statement"'])]
    rules = terraform_eval.evaluate(terraform_eval.as_expression(for_each))
    [denials] = [d for d in _policy_document(tf, "tls_only")["dynamic"] if "DenyOutdatedTls" in _text(d["statement"]["for_each"])]
    assert rules == {"DenyInsecureTransport": {"test": "Bool", "variable": "aws:SecureTransport", "value": "false"},
                     "DenyOutdatedTls": {"test": "NumericLessThan", "variable": "s3:TlsVersion", "value": "1.2"}}
    content = denials["statement"]["content"]
    content = content[0] if isinstance(content, list) else content
    assert content["effect"] == "Deny" and content["actions"] == ["s3:*"]


def test_the_provider_sends_an_empty_task_group_as_empty(tf):
    """Providers before 5.65.0 created an instance for a task group of 0 (terraform-provider-aws#38837,
    fixed by #37740 in 5.65.0): the constraint must exclude them."""
    constraint = _text(tf["terraform"]).split('"version": "')[1].split('"')[0]
    assert constraint.startswith("~> 5.") and tuple(map(int, constraint[3:].split("."))) >= (5, 65)
    assert _resources(tf, "aws_emr_instance_group")["task"]["instance_count"] == 0


def test_service_role_can_use_the_key_for_encrypted_volumes(tf):
    by_sid = _policy(tf, "emr_service_kms")
    actions = {a for st in by_sid.values() for a in st["actions"]}
    assert {"kms:GenerateDataKeyWithoutPlaintext", "kms:Decrypt", "kms:DescribeKey", "kms:ReEncryptFrom",
            "kms:ReEncryptTo", "kms:CreateGrant"} <= actions
    grant = by_sid["GrantVolumesTheKey"]
    assert grant["actions"] == ["kms:CreateGrant"] and grant["resources"] == ["${aws_kms_key.lake.arn}"]
    assert _text(grant["condition"]).count("kms:GrantIsForAWSResource") == 1 and '"true"' in _text(grant["condition"])
    policy = _resources(tf, "aws_iam_role_policy")["emr_service_kms"]
    assert "aws_iam_role.emr_service.id" in _text(policy["role"])
    assert "aws_iam_role_policy.emr_service_kms" in _text(_resources(tf, "aws_emr_cluster")["this"]["depends_on"])


def test_managed_policy_tag_is_on_the_cluster_the_security_groups_and_the_subnet(tf):
    spec = json.loads((TF.parent / "src/ecom_lakehouse/ops/emr_cluster.json").read_text())
    assert spec["tags"] == {"for-use-with-amazon-emr-managed-policies": "true"}
    assert "local.managed_policy_tags" in _text(_resources(tf, "aws_emr_cluster")["this"]["tags"])
    groups = _resources(tf, "aws_security_group")
    for name in ("emr_node", "emr_service_access"):
        assert "local.managed_policy_tags" in _text(groups[name]["tags"]), name
    subnet_tag = _resources(tf, "aws_ec2_tag")["subnet_managed_policy"]
    assert "var.subnet_id" in _text(subnet_tag["resource_id"]) and "local.managed_policy_tags" in _text(subnet_tag["for_each"])
    managed = next(item["managed_policy_tags"] for item in tf["locals"] if "managed_policy_tags" in item)
    assert "local.cluster.tags" in managed


# The rules AWS lists for EMR-managed security groups of a cluster in a private subnet
# (docs.aws.amazon.com/emr/latest/ManagementGuide/emr-man-sec-groups.html: ElasticMapReduce-Master-Private,
# ElasticMapReduce-Slave-Private, ElasticMapReduce-ServiceAccess), as (protocol, from, to, peer). EMR adds
# missing *inbound* rules to custom managed groups, never outbound ones: every outbound rule below must be
# in the Terraform, or the nodes cannot reach each other or the service and the cluster never starts.
AWS_PRIVATE_SUBNET_EGRESS = {
    "primary": {("-1", None, None, "0.0.0.0/0")},
    "core": {("-1", None, None, "0.0.0.0/0")},
    "service_access": {("tcp", 8443, 8443, "primary"), ("tcp", 8443, 8443, "core")},
}
# Of the inbound rules, the two between the service-access group and the primary node (EMR would add
# them too; the rules among the nodes it adds itself, with the groups' own ids).
AWS_PRIVATE_SUBNET_SERVICE_INGRESS = {"service_access": {("tcp", 9443, 9443, "primary")},
                                      "primary": {("tcp", 8443, 8443, "service_access")}}
NODE_GROUPS = ("primary", "core")


def _rendered_rules(tf, kind) -> dict[str, set]:
    """{group: {(protocol, from, to, peer)}} of every rule resource of `kind`, for_each over the node
    groups expanded, security group references named by their group."""
    def group(ref: str, key: str | None) -> str:
        ref = ref.replace('\\"', '"').replace("each.value.id", f'aws_security_group.emr_node["{key}"].id')
        if "emr_service_access" in ref:
            return "service_access"
        return next(g for g in NODE_GROUPS if f'emr_node["{g}"]' in ref)

    out: dict[str, set] = {}
    for rule in _resources(tf, kind).values():
        keys = NODE_GROUPS if "aws_security_group.emr_node" in _text(rule.get("for_each", "")) else (None,)
        for key in keys:
            peer = rule.get("cidr_ipv4") or group(rule["referenced_security_group_id"], key)
            ports = (rule.get("from_port"), rule.get("to_port"))
            out.setdefault(group(rule["security_group_id"], key), set()).add((str(rule["ip_protocol"]), *ports, peer))
    return out


def test_security_group_rules_are_the_ones_aws_lists_for_emr_in_a_private_subnet(tf):
    for name, group in _resources(tf, "aws_security_group").items():
        assert "ingress" not in group and "egress" not in group, f"{name}: inline rules fight the rules EMR adds"
    assert _rendered_rules(tf, "aws_vpc_security_group_egress_rule") == AWS_PRIVATE_SUBNET_EGRESS
    ingress = _rendered_rules(tf, "aws_vpc_security_group_ingress_rule")
    assert ingress == AWS_PRIVATE_SUBNET_SERVICE_INGRESS
    assert not any(peer == "0.0.0.0/0" for rules in ingress.values() for *_, peer in rules)  # nothing in from the internet


def test_managed_scaling_counts_core_and_task_nodes_and_caps_core(tf):
    limits = _resources(tf, "aws_emr_managed_scaling_policy")["this"]["compute_limits"]
    limits = limits[0] if isinstance(limits, list) else limits
    assert _text(limits["minimum_capacity_units"]) == '"${var.core_instance_count}"'  # the primary is not counted
    assert _text(limits["maximum_core_capacity_units"]) == '"${var.core_instance_count}"'
    assert "var.max_capacity_units" in _text(limits["maximum_capacity_units"])
    assert "aws_emr_cluster.this.id" in _text(_resources(tf, "aws_emr_instance_group")["task"]["cluster_id"])


@pytest.mark.skipif(not shutil.which("terraform"), reason="terraform is not installed")
def test_the_security_configuration_requires_imdsv2_and_encrypts_s3_and_disks_with_the_key():
    """The JSON Terraform renders, in the shape of AWS's security configuration reference
    (emr-create-security-configuration.html: InstanceMetadataServiceConfiguration, version 2)."""
    from tests import terraform_eval

    expression = terraform_eval.blocks("resource")["aws_emr_security_configuration"]["this"]["configuration"][2:-1]
    rendered = json.loads(terraform_eval.evaluate(terraform_eval.substitute(expression, {"aws_kms_key.lake.arn": '"KEY"'})))
    assert rendered["InstanceMetadataServiceConfiguration"] == {"MinimumInstanceMetadataServiceVersion": 2,
                                                                "HttpPutResponseHopLimit": 1}
    at_rest = rendered["EncryptionConfiguration"]["AtRestEncryptionConfiguration"]
    assert at_rest["S3EncryptionConfiguration"] == {"EncryptionMode": "SSE-KMS", "AwsKmsKey": "KEY"}
    assert at_rest["LocalDiskEncryptionConfiguration"] == {"EncryptionKeyProviderType": "AwsKms", "AwsKmsKey": "KEY",
                                                           "EnableEbsEncryption": True}


def test_nodes_run_one_python_that_the_package_accepts(tf):
    import tomllib
    from packaging.specifiers import SpecifierSet

    ops_dir = TF.parent / "src/ecom_lakehouse/ops"
    python = json.loads((ops_dir / "emr_cluster.json").read_text())["python"]
    conf = json.loads((ops_dir / "emr_configurations.json").read_text())
    spark_env = next(c for c in conf if c["Classification"] == "spark-env")
    exports = next(c for c in spark_env["Configurations"] if c["Classification"] == "export")["Properties"]
    assert exports == {"PYSPARK_PYTHON": python, "PYSPARK_DRIVER_PYTHON": python}
    requires = tomllib.loads((TF.parent / "pyproject.toml").read_text())["project"]["requires-python"]
    assert python.rsplit("python", 1)[1] in SpecifierSet(requires)  # EMR 7's python3 (3.9) would not be
    assert "3.9" not in SpecifierSet(requires)
    bootstrap = (ops_dir / "emr_bootstrap.sh").read_text()
    # pip from the wheelhouse, run by the cluster's Python (the twin's node has no pip of its own)
    assert '"$PYTHON" "$PIP_WHEEL/pip" install' in bootstrap and "--no-index" in bootstrap and "--no-deps" in bootstrap
    assert "local.cluster.python" in _text(_resources(tf, "aws_emr_cluster")["this"]["bootstrap_action"])


def test_cluster_is_wired_to_profile_bootstrap_delta_glue_and_security(tf):
    cluster = _resources(tf, "aws_emr_cluster")["this"]
    assert "aws_iam_instance_profile.emr_instance.arn" in _text(cluster["ec2_attributes"])
    assert "aws_emr_security_configuration.this.name" in _text(cluster["security_configuration"])
    bootstrap = _text(cluster["bootstrap_action"])
    assert "aws_s3_object.bootstrap.key" in bootstrap and "local.wheelhouse_uri" in bootstrap
    assert "local.emr_configurations" in _text(cluster["configurations_json"])
    assert "auto_termination_policy" in cluster and "log_uri" in cluster
    assert "make wheelhouse" in _text(cluster["lifecycle"])  # no cluster without the wheelhouse its nodes install
    assert "emr-7." in _text(next(v for item in tf["variable"] for k, v in item.items() if k == "release_label")["default"])
    conf = json.loads((TF.parent / "src/ecom_lakehouse/ops/emr_configurations.json").read_text())
    assert {"Classification": "delta-defaults", "Properties": {"delta.enabled": "true"}} in conf
    glue = next(c for c in conf if c["Classification"] == "spark-hive-site")["Properties"]
    assert glue["hive.metastore.client.factory.class"].endswith("AWSGlueDataCatalogHiveClientFactory")
    assert "aws_glue_catalog_database" in _text(tf["resource"])
    sec = _text(_resources(tf, "aws_emr_security_configuration")["this"])
    assert "SSE-KMS" in sec and "EnableEbsEncryption" in sec
    for name in ("bootstrap", "wheelhouse"):
        assert "filemd5" in _text(_resources(tf, "aws_s3_object")[name]["source_hash"]), name


def test_checkov_reports_no_failed_checks():
    if not CHECKOV.exists():
        pytest.skip("checkov is not installed (make install puts it in .venv-checkov)")
    out = subprocess.run([str(CHECKOV), "-d", str(TF), "--framework", "terraform", "--skip-download", "--quiet",
                          "--compact", "-o", "json"], capture_output=True, text=True)
    report = json.loads(out.stdout)
    reports = report if isinstance(report, list) else [report]
    failed = [(c["check_id"], c["resource"]) for r in reports for c in r.get("results", {}).get("failed_checks", [])]
    assert failed == [], failed
    skipped = [c for r in reports for c in r.get("results", {}).get("skipped_checks", [])]
    assert all(c.get("suppress_comment") for c in skipped)  # every skip carries its reason


def test_the_delta_commit_log_table_has_the_schema_delta_uses_and_the_nodes_only_what_it_calls(tf):
    """Key schema and TTL attribute of io.delta.storage.S3DynamoDBLogStore (delta-io/delta,
    storage-s3-dynamodb: ATTR_TABLE_PATH, ATTR_FILE_NAME, ATTR_EXPIRE_TIME); the log store calls
    describeTable, getItem, putItem (conditional) and query, and createTable only when the table is
    missing, which Terraform makes sure it is not."""
    table = _resources(tf, "aws_dynamodb_table")["delta_log"]
    assert (table["hash_key"], table["range_key"]) == ("tablePath", "fileName")
    attributes = table["attribute"] if isinstance(table["attribute"], list) else [table["attribute"]]
    assert {(a["name"], a["type"]) for a in attributes} == {("tablePath", "S"), ("fileName", "S")}
    assert _text(table["ttl"]).count("expireTime") == 1 and "aws_kms_key.lake.arn" in _text(table["server_side_encryption"])
    statement = _policy(tf, "emr_instance")["DeltaCommitLog"]
    assert set(statement["actions"]) == {"dynamodb:DescribeTable", "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:Query"}
    assert statement["resources"] == ["${aws_dynamodb_table.delta_log.arn}"]
    outputs = {k for o in tf["output"] for k in o}
    assert {"delta_log_table", "region"} <= outputs


@pytest.mark.skipif(shutil.which("terraform") is None, reason="terraform is not installed")
def test_files_are_formatted_as_terraform_fmt_writes_them():
    out = subprocess.run(["terraform", "fmt", "-check", "-list=true", str(TF)], capture_output=True, text=True)
    assert out.returncode == 0, f"run `terraform fmt terraform/`: {out.stdout.split()}"


def test_serverless_application_runs_the_clusters_release_on_x86_with_a_capped_size(tf):
    """The same Spark and Delta as the cluster, x86_64 because the environment archive holds x86_64 wheels,
    a cost cap, and workers that stop when idle; no network configuration (so no NAT to pay for: EMR
    Serverless jobs without one reach S3, Glue, DynamoDB and KMS in the Region, nothing else)."""
    app = _resources(tf, "aws_emrserverless_application")["this"]
    cluster = _resources(tf, "aws_emr_cluster")["this"]
    assert app["release_label"] == cluster["release_label"] == "${var.release_label}"
    assert (app["type"], app["architecture"]) == ("spark", "X86_64")
    assert "var.serverless_max_vcpu" in _text(app["maximum_capacity"])
    assert app["auto_stop_configuration"][0]["enabled"] is True
    assert "network_configuration" not in app
    outputs = {k for o in tf["output"] for k in o}
    assert {"serverless_application_id", "serverless_job_role_arn", "kms_key_arn"} <= outputs


def test_the_serverless_job_role_holds_the_node_policy_and_trusts_only_this_accounts_applications(tf):
    """One policy document for whatever Spark runs as (cluster nodes, serverless jobs): no second copy to
    drift. The trust is EMR Serverless's job runtime role trust, with confused-deputy conditions."""
    policy = _resources(tf, "aws_iam_role_policy")
    node_policy = "${data.aws_iam_policy_document.emr_instance.json}"
    assert policy["serverless_job"]["policy"] == policy["emr_instance"]["policy"] == node_policy
    assert policy["serverless_job"]["role"] == "${aws_iam_role.serverless_job.id}"
    [trust] = _policy_statements(tf, "serverless_assume")
    assert trust["principals"][0]["identifiers"] == ["emr-serverless.amazonaws.com"]
    conditions = _conditions(trust)
    account = "${data.aws_caller_identity.current.account_id}"
    assert conditions["aws:SourceAccount"] == ("StringEquals", [account])
    assert conditions["aws:SourceArn"] == ("ArnLike", [f"arn:aws:emr-serverless:${{var.region}}:{account}:/applications/*"])
    # the job logs (s3MonitoringConfiguration) are written as the job role, beside the clusters' logs
    assert "/serverless/*" in _text(_policy(tf, "emr_instance")["WriteEmrLogs"]["resources"])


# What an apply would know, as a test chooses it (tests/terraform_eval.py): the analyst policy's references.
ANALYST_REFERENCES = {
    "var.region": '"eu-west-1"', "data.aws_caller_identity.current.account_id": '"123456789012"',
    "local.workgroup": '"shop-dev-analysts"', 'local.catalog_databases["gold"]': '"shop_dev_gold"',
    'aws_s3_bucket.this["lake"].arn': '"arn:aws:s3:::lake"', 'aws_s3_bucket.this["query_results"].arn': '"arn:aws:s3:::results"',
    "aws_kms_key.lake.arn": '"arn:aws:kms:eu-west-1:123456789012:key/lake"',
}
WRITES = ("s3:Put", "s3:Delete", "s3:AbortMultipartUpload", "glue:Create", "glue:Update", "glue:Delete", "kms:Encrypt")


def analyst_access_problems(statements: list[dict]) -> list[str]:
    """Where a rendered analyst policy reaches past gold or writes outside the query results: statements as
    {sid, actions, resources, prefixes (the s3:prefix values a ListBucket is limited to)}."""
    problems = []
    for st in statements:
        for resource in st["resources"]:
            if resource == "*" or any(layer in resource for layer in ("silver", "bronze", "checkpoints", "models")):
                problems.append(f"{st['sid']}: {resource}")
            if resource.startswith("arn:aws:s3:::lake") and resource not in ("arn:aws:s3:::lake", "arn:aws:s3:::lake/gold/*"):
                problems.append(f"{st['sid']}: {resource} is more of the lake than gold/")
            if any(a.startswith(WRITES) for a in st["actions"]) and not resource.startswith("arn:aws:s3:::results"):
                problems.append(f"{st['sid']}: writes {resource}")
        if "s3:ListBucket" in st["actions"] and "arn:aws:s3:::lake" in st["resources"] and st["prefixes"] != ["gold/*"]:
            problems.append(f"{st['sid']}: lists the lake beyond gold/")
    return problems


def _rendered_statements(tf, name) -> list[dict]:
    from tests import terraform_eval

    statements = terraform_eval.blocks("data")["aws_iam_policy_document"][name]["statement"]  # strings as HCL has them
    resources = terraform_eval.evaluate("[" + ", ".join(
        terraform_eval.substitute(terraform_eval.as_expression(st["resources"]), ANALYST_REFERENCES) for st in statements) + "]")
    plain = _policy_statements(tf, name)
    return [{"sid": st["sid"], "actions": st["actions"], "resources": rendered,
             "prefixes": _conditions(st).get("s3:prefix", (None, None))[1]}
            for st, rendered in zip(plain, resources, strict=True)]


@pytest.mark.skipif(not shutil.which("terraform"), reason="terraform is not installed")
def test_an_analyst_reads_gold_only_and_writes_only_query_results(tf):
    statements = _rendered_statements(tf, "analyst")
    assert analyst_access_problems(statements) == []
    granted = {a for st in statements for a in st["actions"]}
    assert {"athena:StartQueryExecution", "athena:GetNamedQuery", "glue:GetTable", "s3:GetObject", "kms:Decrypt"} <= granted
    # each rule fed its fault once
    planted = [{"sid": "A", "actions": ["s3:GetObject"], "resources": ["arn:aws:s3:::lake/*"], "prefixes": None},
               {"sid": "B", "actions": ["glue:GetTable"], "resources": ["arn:aws:glue:r:1:table/shop_dev_silver/*"],
                "prefixes": None},
               {"sid": "C", "actions": ["s3:PutObject"], "resources": ["arn:aws:s3:::lake/gold/*"], "prefixes": None},
               {"sid": "D", "actions": ["s3:ListBucket"], "resources": ["arn:aws:s3:::lake"], "prefixes": None}]
    assert [p.split(":")[0] for p in analyst_access_problems(planted)] == ["A", "B", "C", "D"]


def test_the_analysts_workgroup_enforces_encrypted_results_in_their_bucket_on_engine_3(tf):
    workgroup = _resources(tf, "aws_athena_workgroup")["analysts"]["configuration"][0]
    assert workgroup["enforce_workgroup_configuration"] is True  # a query cannot choose another place
    assert workgroup["engine_version"][0]["selected_engine_version"] == "Athena engine version 3"  # reads Delta natively
    results = workgroup["result_configuration"][0]
    assert results["output_location"].startswith('s3://${aws_s3_bucket.this["query_results"].id}/')
    encryption = {k: v for k, v in results["encryption_configuration"][0].items() if k != "__is_block__"}
    assert encryption == {"encryption_option": "SSE_KMS", "kms_key_arn": "${aws_kms_key.lake.arn}"}
    named = _resources(tf, "aws_athena_named_query")["view"]
    assert named["database"] == '${aws_glue_catalog_database.layer["gold"].name}'
    assert named["workgroup"] == "${aws_athena_workgroup.analysts.id}"


@pytest.mark.skipif(not shutil.which("terraform"), reason="terraform is not installed")
def test_the_named_queries_are_the_analyst_views_as_terraform_reads_their_files():
    """Terraform's fileset over src/ecom_lakehouse/sql, evaluated by Terraform, gives every view with its text."""
    from ecom_lakehouse.analyst_views import views
    from tests import terraform_eval

    queries = terraform_eval.named_queries()
    assert set(queries) == set(views())
    for name, query in queries.items():
        title, _, sql = query.partition("\n")
        assert (title.removeprefix("--").strip(), sql.strip()) == (views()[name].title, views()[name].sql)
