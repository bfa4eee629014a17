"""The boto3 EMR flow against moto: uploads, steps, waiting, failure, transient cluster."""
import json
from pathlib import Path

import boto3
import pytest
from moto import mock_aws
from moto.core import DEFAULT_ACCOUNT_ID

from ecom_lakehouse.ops import emr_ops as ops
from ecom_lakehouse.schemas import TABLES

REGION = "eu-west-1"
ROOT = Path(__file__).resolve().parents[1]
FAST = {"Delay": 0.01, "MaxAttempts": 3}


@pytest.fixture
def aws(monkeypatch):
    for var in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    with mock_aws():
        s3 = boto3.client("s3", region_name=REGION)
        for b in ("raw-b", "lake-b", "art-b", "logs-b"):
            s3.create_bucket(Bucket=b, CreateBucketConfiguration={"LocationConstraint": REGION})
        yield s3, boto3.client("emr", region_name=REGION)


TARGET = ops.EmrTarget(raw_bucket="raw-b", lake_bucket="lake-b", artifacts_bucket="art-b", log_uri="s3://logs-b/emr/",
                       service_role="svc-role", instance_profile="inst-profile", subnet_id="subnet-1",
                       security_configuration="sec-conf")


def _cluster(emr):
    return emr.run_job_flow(Name="c", ReleaseLabel="emr-7.12.0", Instances={
        "MasterInstanceType": "m5.xlarge", "SlaveInstanceType": "m5.xlarge", "InstanceCount": 3,
        "KeepJobFlowAliveWhenNoSteps": True}, JobFlowRole="inst-profile", ServiceRole="svc-role")["JobFlowId"]


def _set_step_states(cluster_id, states):
    from moto.emr.models import emr_backends

    cluster = emr_backends[DEFAULT_ACCOUNT_ID][REGION].clusters[cluster_id]
    for step, state in zip(cluster.steps, states):
        step.state = state


def test_upload_raw_lands_at_the_table_keys_and_skips_unchanged(aws, tmp_path):
    s3, _ = aws
    for t in TABLES:
        (tmp_path / f"{t}.csv").write_text(f"header,{t}\n1,2\n")
    ops.upload_raw(s3, TARGET, str(tmp_path))
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket="raw-b")["Contents"]}
    assert keys == {f"{t}.csv" for t in TABLES}
    calls = []
    s3.upload_file = lambda *a, **k: calls.append(a)  # noqa: E731  (nothing should be re-sent)
    ops.upload_raw(s3, TARGET, str(tmp_path))
    assert calls == []


def test_deploy_artifacts_uploads_wheel_entry_and_bootstrap(aws, tmp_path):
    s3, _ = aws
    wheel = tmp_path / "ecom_lakehouse-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"PK fake wheel")
    uris = ops.deploy_artifacts(s3, TARGET, wheel)
    assert uris["wheel"] == "s3://art-b/wheels/ecom_lakehouse-0.1.0-py3-none-any.whl"
    entry = s3.get_object(Bucket="art-b", Key="jobs/emr_entry.py")["Body"].read().decode()
    assert "from ecom_lakehouse.cli import main" in entry
    assert ops.latest_wheel_uri(s3, TARGET) == uris["wheel"]


def test_steps_are_spark_submits_in_stage_order_with_delta_and_emr_env(aws):
    _, emr = aws
    cluster_id = _cluster(emr)
    step_ids = ops.add_steps(emr, cluster_id, TARGET)
    steps = [emr.describe_step(ClusterId=cluster_id, StepId=s)["Step"] for s in step_ids]
    assert [s["Name"] for s in steps] == [f"ecom_lakehouse {st}" for st in ops.STAGES]
    for stage, step in zip(ops.STAGES, steps):
        assert step["ActionOnFailure"] == "CANCEL_AND_WAIT"
        assert step["Config"]["Jar"] == "command-runner.jar"
        assert step["Config"]["Args"] == [
            "spark-submit", "--deploy-mode", "cluster",
            "--conf", "spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension",
            "--conf", "spark.sql.catalog.spark_catalog=org.apache.spark.sql.delta.catalog.DeltaCatalog",
            "s3://art-b/jobs/emr_entry.py", stage, "--env", "emr", "--raw", "s3://raw-b", "--lakehouse", "s3://lake-b"]


def test_waiting_succeeds_when_every_step_completes(aws, capsys):
    _, emr = aws
    cluster_id = _cluster(emr)
    step_ids = ops.add_steps(emr, cluster_id, TARGET)
    _set_step_states(cluster_id, ["COMPLETED"] * len(step_ids))
    ops.wait_for_steps(emr, cluster_id, step_ids, TARGET, waiter_config=FAST)
    assert capsys.readouterr().out.count("COMPLETED") == len(ops.STAGES)


def test_a_failed_step_names_its_stderr_location(aws):
    _, emr = aws
    cluster_id = _cluster(emr)
    step_ids = ops.add_steps(emr, cluster_id, TARGET)
    _set_step_states(cluster_id, ["COMPLETED", "FAILED"] + ["CANCELLED"] * (len(step_ids) - 2))
    with pytest.raises(ops.OperationFailed) as failure:
        ops.wait_for_steps(emr, cluster_id, step_ids, TARGET, waiter_config=FAST)
    message = str(failure.value)
    assert "ecom_lakehouse silver" in message and "FAILED" in message
    assert f"s3://logs-b/emr/{cluster_id}/steps/{step_ids[1]}/stderr.gz" in message


def test_transient_cluster_matches_the_terraform_cluster(aws):
    import hcl2

    _, emr = aws
    cluster_id = ops.run_transient(emr, TARGET, "s3://art-b/wheels/w.whl", f"s3://art-b/{ops.BOOTSTRAP_KEY}")
    described = emr.describe_cluster(ClusterId=cluster_id)["Cluster"]
    assert described["ReleaseLabel"] == "emr-7.12.0"
    classifications = {c["Classification"]: c.get("Properties", {}) for c in described["Configurations"]}
    assert classifications["delta-defaults"] == {"delta.enabled": "true"}
    assert classifications["spark-defaults"]["spark.sql.extensions"] == "io.delta.sql.DeltaSparkSessionExtension"
    # Terraform's cluster reads the very same file, and bootstraps from the same key.
    emr_tf = (ROOT / "terraform" / "emr.tf").read_text()
    assert "src/ecom_lakehouse/ops/emr_configurations.json" in emr_tf
    s3_tf = hcl2.loads((ROOT / "terraform" / "s3.tf").read_text(), serialization_options=hcl2.SerializationOptions(strip_string_quotes=True))
    bootstrap = next(r["aws_s3_object"]["bootstrap"] for r in s3_tf["resource"] if "bootstrap" in r.get("aws_s3_object", {}))
    assert ops.BOOTSTRAP_KEY in json.dumps(bootstrap)
    steps = emr.list_steps(ClusterId=cluster_id)["Steps"]
    assert [s["Name"] for s in reversed(steps)] == [f"ecom_lakehouse {st}" for st in ops.STAGES]
    assert described["AutoTerminate"] is True
