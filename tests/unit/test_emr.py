"""The boto3 EMR flow against moto: uploads, steps, waiting, failure, transient cluster, serverless job runs."""
import dataclasses
import json
import shlex
import subprocess
from pathlib import Path

import boto3
import pytest
from moto import mock_aws
from moto.core import DEFAULT_ACCOUNT_ID

from ecom_lakehouse.ops import emr_ops as ops
from ecom_lakehouse.ops import emr_serverless
from ecom_lakehouse.schemas import TABLES
from tests import terraform_eval

REGION = "eu-west-1"
ROOT = Path(__file__).resolve().parents[2]
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
                       security_configuration="sec-conf", primary_security_group="sg-primary",
                       core_security_group="sg-core", service_access_security_group="sg-service",
                       silver_database="silver_db", gold_database="gold_db", delta_log_table="lake-delta-log",
                       region="eu-west-1")


def _cluster(emr):
    return emr.run_job_flow(Name="c", ReleaseLabel="emr-7.12.0", Instances={
        "MasterInstanceType": "m5.xlarge", "SlaveInstanceType": "m5.xlarge", "InstanceCount": 3,
        "KeepJobFlowAliveWhenNoSteps": True}, JobFlowRole="inst-profile", ServiceRole="svc-role")["JobFlowId"]


def _set_step_states(cluster_id, states):
    from moto.emr.models import emr_backends

    cluster = emr_backends[DEFAULT_ACCOUNT_ID][REGION].clusters[cluster_id]
    for step, state in zip(cluster.steps, states, strict=True):
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


ARTIFACTS = ops.Artifacts(wheel_uri="s3://art-b/builds/abc/ecom_lakehouse-0.1.0-py3-none-any.whl",
                          entry_uri="s3://art-b/builds/abc/emr_entry.py", wheelhouse_uri="s3://art-b/wheelhouse/def/",
                          bootstrap_uri="s3://art-b/bootstrap/123/install_ecom_lakehouse.sh")


def _fake_wheelhouse(tmp_path):
    house = tmp_path / "wheelhouse"
    house.mkdir(parents=True)
    (house / "numpy-1.26.4-cp311-cp311-manylinux2014_x86_64.whl").write_bytes(b"PK numpy")
    (house / "requirements.txt").write_text("numpy==1.26.4\n")
    return house


def test_each_build_gets_its_own_keys_and_node_setup_is_content_addressed(aws, tmp_path):
    s3, _ = aws
    wheel = tmp_path / "ecom_lakehouse-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"PK build one")
    first = ops.deploy_artifacts(s3, TARGET, wheel, _fake_wheelhouse(tmp_path), echo=lambda *_: None)
    assert first.wheel_uri.startswith("s3://art-b/builds/") and first.wheel_uri.endswith("/" + wheel.name)
    entry = s3.get_object(Bucket="art-b", Key=first.entry_uri.split("art-b/")[1])["Body"].read().decode()
    assert "from ecom_lakehouse.cli import main" in entry
    assert first.wheelhouse_uri == f"s3://art-b/{ops.wheelhouse_key()}"
    assert s3.head_object(Bucket="art-b", Key=ops.wheelhouse_key() + "requirements.txt")
    wheel.write_bytes(b"PK build two")  # a new build never overwrites the one a submitted step runs
    second = ops.deploy_artifacts(s3, TARGET, wheel, _fake_wheelhouse(tmp_path / "x"), echo=lambda *_: None)
    assert second.wheel_uri != first.wheel_uri
    assert s3.get_object(Bucket="art-b", Key=first.wheel_uri.split("art-b/")[1])["Body"].read() == b"PK build one"
    assert (second.wheelhouse_uri, second.bootstrap_uri) == (first.wheelhouse_uri, first.bootstrap_uri)


def test_terraform_computes_the_same_artifact_keys():
    from tests import terraform_eval

    if not terraform_eval.available():
        pytest.skip("terraform is not installed")
    locals_ = terraform_eval.blocks("locals")
    ops_dir = {"local.ops_dir": f'"{ROOT / "src/ecom_lakehouse/ops"}"'}
    for name, key in (("wheelhouse_key", ops.wheelhouse_key()), ("bootstrap_key", ops.bootstrap_key())):
        assert terraform_eval.evaluate(terraform_eval.substitute(locals_[name], ops_dir)) == key, name


@pytest.mark.skipif(not terraform_eval.available(), reason="terraform is not installed")
def test_objects_terraform_uploads_carry_the_metadata_the_cli_checks(aws, tmp_path):
    """Terraform uploads the bootstrap and the wheelhouse; `emr submit` uploads them too when they are
    missing or differ. Both must write the same object, or each submit re-uploads it and the next
    `terraform plan` shows a change."""
    s3, _ = aws
    resources = terraform_eval.blocks("resource")["aws_s3_object"]
    ops_dir = ROOT / "src/ecom_lakehouse/ops"
    house = _fake_wheelhouse(tmp_path)
    wheel = house / "numpy-1.26.4-cp311-cp311-manylinux2014_x86_64.whl"
    for name, local, references in (
            ("bootstrap", ops_dir / "emr_bootstrap.sh", {"local.ops_dir": f'"{ops_dir}"'}),
            ("wheelhouse", wheel, {"var.wheelhouse_dir": f'"{house}"', "each.value": f'"{wheel.name}"'})):
        metadata = terraform_eval.as_expression(resources[name]["metadata"])
        rendered = terraform_eval.evaluate(terraform_eval.substitute(metadata, references))
        # as Terraform writes it, then as the CLI would: unchanged, so not sent again
        s3.put_object(Bucket="art-b", Key=f"tf/{name}", Body=local.read_bytes(), Metadata=rendered)
        assert ops.upload_if_changed(s3, local, "art-b", f"tf/{name}", echo=lambda *_: None) is False, name
        assert ops.upload_if_changed(s3, local, "art-b", f"cli/{name}", echo=lambda *_: None) is True
        assert s3.head_object(Bucket="art-b", Key=f"cli/{name}")["Metadata"] == rendered, name


def test_the_wheelhouse_is_downloaded_once_per_requirements_file(monkeypatch, tmp_path):
    downloads = []

    def pip_download(cmd, **_):
        downloads.append(cmd)
        out = Path(cmd[cmd.index("-d") + 1])
        (out / "numpy-1.26.4-cp311-cp311-manylinux2014_x86_64.whl").write_bytes(b"PK numpy")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(ops.subprocess, "run", pip_download)
    first = ops.cached_wheelhouse()
    assert first == ops.cached_wheelhouse() and len(downloads) == 1
    assert first.parent.name == "wheelhouse" and first.name == ops.wheelhouse_key().split("/")[1]
    assert sorted(p.name for p in first.iterdir()) == ["numpy-1.26.4-cp311-cp311-manylinux2014_x86_64.whl", "requirements.txt"]


def test_steps_are_spark_submits_of_the_pipeline_then_maintain_carrying_their_build(aws):
    _, emr = aws
    cluster_id = _cluster(emr)
    step_ids = ops.add_steps(emr, cluster_id, TARGET, ARTIFACTS)
    steps = [emr.describe_step(ClusterId=cluster_id, StepId=s)["Step"] for s in step_ids]
    assert [s["Name"] for s in steps] == ["ecom_lakehouse run", "ecom_lakehouse maintain"]
    for stage, step in zip(("run", "maintain"), steps, strict=True):
        assert step["ActionOnFailure"] == "CANCEL_AND_WAIT"
        assert step["Config"]["Jar"] == "command-runner.jar"
        assert step["Config"]["Args"] == [
            "spark-submit", "--deploy-mode", "cluster",
            "--conf", "spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension",
            "--conf", "spark.sql.catalog.spark_catalog=org.apache.spark.sql.delta.catalog.DeltaCatalog",
            # Delta's multi-cluster log store: a commit is claimed in DynamoDB first, so two clusters
            # writing one table cannot both write version N (S3 alone would keep the last one)
            "--conf", "spark.delta.logStore.s3.impl=io.delta.storage.S3DynamoDBLogStore",
            "--conf", "spark.io.delta.storage.S3DynamoDBLogStore.ddb.tableName=lake-delta-log",
            "--conf", "spark.io.delta.storage.S3DynamoDBLogStore.ddb.region=eu-west-1",
            "--py-files", ARTIFACTS.wheel_uri, ARTIFACTS.entry_uri, stage, "--env", "emr", "--raw", "s3://raw-b",
            "--lakehouse", "s3://lake-b", "--schema", "silver_db", "--gold-schema", "gold_db"]


def test_steps_without_the_commit_log_table_are_refused():
    import dataclasses

    with pytest.raises(ops.OperationFailed, match="delta_log_table"):
        ops.step_arguments(dataclasses.replace(TARGET, delta_log_table=None), ARTIFACTS, "bronze")


def test_submit_to_a_terminated_cluster_says_what_to_do(aws):
    _, emr = aws
    cluster_id = _cluster(emr)
    emr.terminate_job_flows(JobFlowIds=[cluster_id])
    with pytest.raises(ops.OperationFailed) as failure:
        ops.add_steps(emr, cluster_id, TARGET, ARTIFACTS)
    assert "TERMINATED" in str(failure.value) and "terraform apply" in str(failure.value)
    assert emr.list_steps(ClusterId=cluster_id)["Steps"] == []


def test_waiting_succeeds_when_every_step_completes(aws, capsys):
    _, emr = aws
    cluster_id = _cluster(emr)
    step_ids = ops.add_steps(emr, cluster_id, TARGET, ARTIFACTS)
    _set_step_states(cluster_id, ["COMPLETED"] * len(step_ids))
    ops.wait_for_steps(emr, cluster_id, step_ids, TARGET, waiter_config=FAST)
    assert capsys.readouterr().out.count("COMPLETED") == len(ops.DEFAULT_STEPS)


def test_a_failed_step_names_its_reason_and_both_log_locations(aws):
    _, emr = aws
    cluster_id = _cluster(emr)
    step_ids = ops.add_steps(emr, cluster_id, TARGET, ARTIFACTS, ("bronze", "silver", "gold"))  # a stage per step
    _set_step_states(cluster_id, ["COMPLETED", "FAILED", "CANCELLED"])
    with pytest.raises(ops.OperationFailed) as failure:
        ops.wait_for_steps(emr, cluster_id, step_ids, TARGET, waiter_config=FAST)
    message = str(failure.value)
    assert "ecom_lakehouse silver" in message and "FAILED" in message
    assert f"s3://logs-b/emr/{cluster_id}/steps/{step_ids[1]}/stderr.gz" in message
    assert f"stdout.gz of the first container of the step's application under s3://logs-b/emr/{cluster_id}/containers/" in message


def test_failure_details_are_reported_when_emr_gives_them():
    step = {"Id": "s-1", "Name": "ecom_lakehouse gold", "Status": {"State": "FAILED", "FailureDetails": {
        "Reason": "Unknown Error.", "Message": "Exception in thread main: ...", "LogFile": "s3://logs-b/emr/j-1/steps/s-1/"}}}
    message = ops.failure_report(TARGET, "j-1", step)
    assert "Unknown Error. — Exception in thread main" in message and "step log: s3://logs-b/emr/j-1/steps/s-1/" in message


def test_aws_errors_end_in_one_line(monkeypatch, tmp_path, capsys):
    from ecom_lakehouse.cli import main

    for var in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for t in TABLES:
        (tmp_path / f"{t}.csv").write_text("a\n")
    code = main(["emr", "--region", REGION, "--raw-bucket", "r", "--lake-bucket", "l", "--artifacts-bucket", "a",
                 "upload-raw", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1 and "no AWS credentials found" in err, err
    with mock_aws():  # credentials, but a bucket that does not exist
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        code = main(["emr", "--region", REGION, "--raw-bucket", "missing", "--lake-bucket", "l",
                     "--artifacts-bucket", "a", "upload-raw", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1 and "NoSuchBucket" in err, err


def test_transient_cluster_is_shaped_like_the_terraform_cluster(aws):
    from tests import terraform_eval

    _, emr = aws
    cluster_id = ops.run_transient(emr, TARGET, ARTIFACTS)
    described = emr.describe_cluster(ClusterId=cluster_id)["Cluster"]
    assert described["ReleaseLabel"] == "emr-7.12.0"
    classifications = {c["Classification"]: c.get("Properties", {}) for c in described["Configurations"]}
    assert classifications["delta-defaults"] == {"delta.enabled": "true"}
    assert set(classifications) == {c["Classification"] for c in ops.emr_configurations()}
    assert {t["Key"]: t["Value"] for t in described["Tags"]} == {"for-use-with-amazon-emr-managed-policies": "true"}
    attrs = described["Ec2InstanceAttributes"]
    assert (attrs["EmrManagedMasterSecurityGroup"], attrs["EmrManagedSlaveSecurityGroup"],
            attrs["ServiceAccessSecurityGroup"]) == ("sg-primary", "sg-core", "sg-service")
    assert described["AutoTerminate"] is True and described["SecurityConfiguration"] == "sec-conf"
    steps = emr.list_steps(ClusterId=cluster_id)["Steps"]
    assert [s["Name"] for s in reversed(steps)] == ["ecom_lakehouse run", "ecom_lakehouse maintain"]
    request = ops.cluster_request(TARGET, ARTIFACTS)
    assert request["BootstrapActions"][0]["ScriptBootstrapAction"] == {
        "Path": ARTIFACTS.bootstrap_uri, "Args": [ARTIFACTS.wheelhouse_uri, ops.cluster_spec()["python"]]}
    # Terraform's cluster takes every one of these from the same two files.
    cluster_tf = terraform_eval.blocks("resource")["aws_emr_cluster"]["this"]
    text = json.dumps(cluster_tf)
    for reference in ("local.cluster.applications", "local.cluster.ebs.primary.size_gib", "local.cluster.ebs.core.size_gib",
                      "local.cluster.step_concurrency_level", "local.cluster.idle_timeout_seconds", "local.cluster.python",
                      "local.managed_policy_tags", "local.emr_configurations", "aws_emr_security_configuration.this.name",
                      'aws_security_group.emr_node[\\"primary\\"].id', "aws_security_group.emr_service_access.id"):
        assert reference in text, reference
    groups = {g["InstanceRole"]: g for g in request["Instances"]["InstanceGroups"]}
    ebs = groups["CORE"]["EbsConfiguration"]["EbsBlockDeviceConfigs"][0]["VolumeSpecification"]
    assert ebs == {"SizeInGB": ops.cluster_spec()["ebs"]["core"]["size_gib"], "VolumeType": "gp3"}
    assert request["AutoTerminationPolicy"] == {"IdleTimeout": ops.cluster_spec()["idle_timeout_seconds"]}


RELEASES = {"emr-7.12.0": True, "emr-7.11.0": True, "emr-8.0.1": True, "emr-7.10.0": False, "emr-7.1.0": False,
            "emr-6.15.0": False, "7.12.0": False, "emr-latest": False}
# x86_64 types, then Graviton ones (EC2's naming: a `g` after the generation, and a1)
INSTANCE_TYPES = {"m5.xlarge": True, "m6i.2xlarge": True, "g4dn.xlarge": True, "m7i-flex.large": True, "r5d.4xlarge": True,
                  "m6g.xlarge": False, "c7gn.large": False, "r8gd.2xlarge": False, "is4gen.xlarge": False,
                  "a1.large": False, "g5g.xlarge": False}


def test_unsupported_releases_and_arm_instance_types_are_refused_in_one_line():
    for release, supported in RELEASES.items():
        if supported:
            ops.check_cluster_shape(release)
        else:
            with pytest.raises(ops.OperationFailed, match="emr-7.11.0 or later"):
                ops.check_cluster_shape(release)
    for instance_type, x86 in INSTANCE_TYPES.items():
        if x86:
            ops.check_cluster_shape("emr-7.12.0", instance_type)
        else:
            with pytest.raises(ops.OperationFailed, match="Graviton"):
                ops.check_cluster_shape("emr-7.12.0", instance_type)


@pytest.mark.skipif(not terraform_eval.available(), reason="terraform is not installed")
def test_terraform_validates_release_and_instance_types_as_the_cli_does():
    variables = terraform_eval.blocks("variable")

    def condition(name: str, values) -> list:
        expression = terraform_eval.as_expression(variables[f'"{name}"']["validation"][0]["condition"])
        return terraform_eval.evaluate("[" + ", ".join(expression.replace(f"var.{name}", json.dumps(v)) for v in values) + "]")

    assert condition("release_label", RELEASES) == list(RELEASES.values())
    for name in ("master_instance_type", "core_instance_type"):
        assert condition(name, INSTANCE_TYPES) == list(INSTANCE_TYPES.values())


SERVERLESS = dataclasses.replace(TARGET, serverless_application_id="app-1", kms_key_arn="arn:aws:kms:eu-west-1:1:key/k",
                                 serverless_job_role=f"arn:aws:iam::{DEFAULT_ACCOUNT_ID}:role/job")
ARTIFACTS = ops.Artifacts(wheel_uri="s3://art-b/builds/abc/ecom_lakehouse-0.1.0-py3-none-any.whl",
                          entry_uri="s3://art-b/builds/abc/emr_entry.py", wheelhouse_uri="", bootstrap_uri="")


def test_a_serverless_job_run_carries_its_environment_build_delta_and_the_clusters_spark_defaults():
    request = emr_serverless.job_run_request(SERVERLESS, ARTIFACTS, "s3://art-b/environments/h/env.tar.gz", "run")
    driver = request["jobDriver"]["sparkSubmit"]
    assert driver["entryPoint"] == ARTIFACTS.entry_uri  # the same entry script as the cluster's steps
    assert driver["entryPointArguments"] == ["run", "--env", "emr", "--raw", "s3://raw-b", "--lakehouse", "s3://lake-b",
                                             "--schema", "silver_db", "--gold-schema", "gold_db"]
    params = shlex.split(driver["sparkSubmitParameters"])
    conf = dict(params[i + 1].split("=", 1) for i, p in enumerate(params) if p == "--conf")
    assert params[-2:] == ["--py-files", ARTIFACTS.wheel_uri]
    assert conf["spark.archives"] == "s3://art-b/environments/h/env.tar.gz#environment"
    for key in ("spark.emr-serverless.driverEnv.PYSPARK_DRIVER_PYTHON", "spark.emr-serverless.driverEnv.PYSPARK_PYTHON",
                "spark.executorEnv.PYSPARK_PYTHON"):
        assert conf[key] == "./environment/bin/python", key
    assert conf["spark.delta.logStore.s3.impl"] == "io.delta.storage.S3DynamoDBLogStore"
    assert {j.rsplit("/", 1)[1] for j in conf["spark.jars"].split(",")} == {
        "delta-spark.jar", "delta-storage.jar", "delta-storage-s3-dynamodb.jar"}  # the names aws/FACTS.md lists
    defaults = ops.classification("spark-defaults")["Properties"]
    assert defaults.items() <= conf.items()
    assert conf["spark.hadoop.hive.metastore.client.factory.class"].endswith("AWSGlueDataCatalogHiveClientFactory")
    logs = request["configurationOverrides"]["monitoringConfiguration"]["s3MonitoringConfiguration"]
    assert logs == {"logUri": "s3://logs-b/serverless/", "encryptionKeyArn": SERVERLESS.kms_key_arn}


def test_serverless_jobs_need_an_application_a_role_and_the_commit_log_table():
    for missing in ({"serverless_application_id": None}, {"serverless_job_role": None}, {"delta_log_table": None}):
        with pytest.raises(ops.OperationFailed, match="--terraform-dir"):
            emr_serverless.job_run_request(dataclasses.replace(SERVERLESS, **missing), ARTIFACTS, "s3://a/e", "run")


@pytest.mark.parametrize("final", ["SUCCESS", "FAILED", "CANCELLED"])
def test_the_job_run_waiter_ends_on_each_final_state_and_names_the_driver_log(aws, final):
    from moto.emrserverless.models import emrserverless_backends

    api = boto3.client("emr-serverless", region_name=REGION)
    app = api.create_application(name="a", releaseLabel="emr-7.12.0", type="SPARK")["applicationId"]
    target = dataclasses.replace(SERVERLESS, serverless_application_id=app)
    [job_run_id] = emr_serverless.run_jobs(api, target, ARTIFACTS, "s3://a/e", ["bronze"], wait=False, echo=lambda *_: None)
    job = emrserverless_backends[DEFAULT_ACCOUNT_ID][REGION].get_job_run(app, job_run_id)
    job.state, job.state_details = "RUNNING", None
    with pytest.raises(ops.OperationFailed, match="RUNNING"):  # not finished within the attempts: says so
        emr_serverless.wait_for_job_run(api, target, job_run_id, FAST)
    job.state = final
    if final == "SUCCESS":
        assert emr_serverless.wait_for_job_run(api, target, job_run_id, FAST)["state"] == "SUCCESS"
        return
    job.state_details = "Job failed, please check complete logs in configured logging destination."
    with pytest.raises(ops.OperationFailed) as failed:
        emr_serverless.wait_for_job_run(api, target, job_run_id, FAST)
    assert f"ecom_lakehouse bronze ({job_run_id}) {final}: Job failed" in str(failed.value)
    assert str(failed.value).endswith(f"s3://logs-b/serverless/applications/{app}/jobs/{job_run_id}/SPARK_DRIVER/stdout.gz")


def test_the_environment_archive_is_a_venv_on_the_images_python_holding_the_wheelhouse(tmp_path):
    """Built from a one-wheel wheelhouse: pip installs it for the cluster's platform into site-packages,
    bin/python links to /usr/bin/python3.11 (not this machine's interpreter), and two builds are identical."""
    import tarfile
    import zipfile

    house = tmp_path / "house"
    house.mkdir()
    wheel = house / "tinypkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("tinypkg/__init__.py", "VALUE = 1\n")
        z.writestr("tinypkg-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: tinypkg\nVersion: 1.0\n")
        z.writestr("tinypkg-1.0.dist-info/WHEEL",
                   "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr("tinypkg-1.0.dist-info/RECORD", "")
    (house / "requirements.txt").write_text("tinypkg==1.0\n")
    first = emr_serverless.build_environment_archive(house, tmp_path / "a" / "env.tar.gz")
    second = emr_serverless.build_environment_archive(house, tmp_path / "b" / "env.tar.gz")
    assert first.read_bytes() == second.read_bytes()
    with tarfile.open(first) as archive:
        members = {m.name: m for m in archive.getmembers()}
        assert members["bin/python"].issym() and members["bin/python"].linkname == "/usr/bin/python3.11"
        assert "lib/python3.11/site-packages/tinypkg/__init__.py" in members
        assert "home = /usr/bin" in archive.extractfile("pyvenv.cfg").read().decode()


def test_the_environment_is_built_once_per_requirements_file(monkeypatch, tmp_path):
    builds = []

    def build(house, out):
        builds.append(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(b"archive")
        return out

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(ops, "cached_wheelhouse", lambda: tmp_path)
    monkeypatch.setattr(emr_serverless, "build_environment_archive", build)
    first = emr_serverless.cached_environment_archive()
    assert first == emr_serverless.cached_environment_archive() and len(builds) == 1
    assert emr_serverless.environment_key().endswith(f"{first.parent.name}/{first.name}")
    assert first.parent.name == ops.wheelhouse_key().split("/")[1]  # a new archive exactly when the wheelhouse changes


def test_serverless_submit_without_an_application_says_what_to_give_before_uploading_anything(aws, capsys):
    from ecom_lakehouse.cli import main

    code = main(["emr", "--region", REGION, "--raw-bucket", "raw-b", "--lake-bucket", "lake-b", "--artifacts-bucket",
                 "art-b", "--log-uri", "s3://logs-b/emr/", "serverless-submit"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1 and "serverless_application_id" in err, err
    s3, _ = aws
    assert s3.list_objects_v2(Bucket="art-b").get("KeyCount", 0) == 0
