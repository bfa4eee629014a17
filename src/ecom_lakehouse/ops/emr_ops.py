"""`ecom-lakehouse emr …`: ship the code, upload the data and run the stages as EMR steps.

Bucket names, the cluster id and the roles come from Terraform's outputs
(`terraform output -json` in --terraform-dir) or from explicit options. AWS credentials come
from the usual boto3 chain (AWS_PROFILE, SSO, instance role): never from this repository.
"""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError, WaiterError

from ecom_lakehouse.schemas import TABLES

STAGES = ("bronze", "silver", "gold", "segment", "recommend", "report")
WHEEL_PREFIX = "wheels/"
ENTRY_KEY = "jobs/emr_entry.py"
BOOTSTRAP_KEY = "bootstrap/install_ecom_lakehouse.sh"
DELTA_CONF = (
    "spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog=org.apache.spark.sql.delta.catalog.DeltaCatalog",
)
# Multipart above 64 MiB, in 64 MiB parts: large event files upload in parallel parts.
TRANSFER = TransferConfig(multipart_threshold=64 * 2**20, multipart_chunksize=64 * 2**20)


class OperationFailed(RuntimeError):
    """The remote operation ended badly; the message says what and where to look."""


@dataclass(frozen=True)
class EmrTarget:
    raw_bucket: str
    lake_bucket: str
    artifacts_bucket: str
    log_uri: str
    cluster_id: str | None = None
    release_label: str = "emr-7.12.0"
    service_role: str | None = None
    instance_profile: str | None = None
    subnet_id: str | None = None
    security_configuration: str | None = None

    @property
    def entry_uri(self) -> str:
        return f"s3://{self.artifacts_bucket}/{ENTRY_KEY}"


def terraform_outputs(terraform_dir: str) -> dict[str, str]:
    out = subprocess.run(["terraform", f"-chdir={terraform_dir}", "output", "-json"], capture_output=True,
                         text=True, check=False)
    if out.returncode != 0:
        raise OperationFailed(f"`terraform output -json` in {terraform_dir} failed: {out.stderr.strip().splitlines()[-1:]}; "
                              "run `terraform apply` there first or pass the bucket options")
    return {k: v["value"] for k, v in json.loads(out.stdout).items()}


def emr_configurations() -> list[dict]:
    """The Spark/Delta classifications Terraform also gives the long-running cluster."""
    return json.loads(resources.files("ecom_lakehouse.ops").joinpath("emr_configurations.json").read_text())


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def upload_if_changed(s3, local: Path, bucket: str, key: str, echo=print) -> bool:
    """Upload unless an object with the same size and SHA-256 is already there."""
    size, sha = local.stat().st_size, _sha256(local)
    try:
        head = s3.head_object(Bucket=bucket, Key=key)
        if head["ContentLength"] == size and head.get("Metadata", {}).get("sha256") == sha:
            echo(f"  s3://{bucket}/{key} unchanged: skipped")
            return False
    except ClientError as err:
        if err.response["Error"]["Code"] not in ("404", "NoSuchKey", "NotFound"):
            raise
    s3.upload_file(str(local), bucket, key, ExtraArgs={"Metadata": {"sha256": sha}}, Config=TRANSFER)
    echo(f"  s3://{bucket}/{key} uploaded ({size:,} bytes)")
    return True


def build_wheel(project_dir: str, out_dir: str) -> Path:
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", out_dir, project_dir],
                   check=True, capture_output=True)
    wheels = sorted(Path(out_dir).glob("ecom_lakehouse-*.whl"), key=lambda p: p.stat().st_mtime)
    return wheels[-1]


def deploy_artifacts(s3, target: EmrTarget, wheel: Path, echo=print) -> dict[str, str]:
    """Wheel, spark-submit entry script and bootstrap script to the artifacts bucket."""
    package = resources.files("ecom_lakehouse.ops")
    keys = {"wheel": WHEEL_PREFIX + wheel.name, "entry": ENTRY_KEY, "bootstrap": BOOTSTRAP_KEY}
    with resources.as_file(package.joinpath("emr_entry.py")) as entry, \
            resources.as_file(package.joinpath("emr_bootstrap.sh")) as bootstrap:
        for local, key in ((wheel, keys["wheel"]), (entry, keys["entry"]), (bootstrap, keys["bootstrap"])):
            upload_if_changed(s3, Path(local), target.artifacts_bucket, key, echo)
    return {name: f"s3://{target.artifacts_bucket}/{key}" for name, key in keys.items()}


def latest_wheel_uri(s3, target: EmrTarget) -> str:
    objects = s3.list_objects_v2(Bucket=target.artifacts_bucket, Prefix=WHEEL_PREFIX).get("Contents", [])
    if not objects:
        raise OperationFailed(f"no wheel under s3://{target.artifacts_bucket}/{WHEEL_PREFIX}: run `ecom-lakehouse emr deploy-artifacts`")
    newest = max(objects, key=lambda o: o["LastModified"])
    return f"s3://{target.artifacts_bucket}/{newest['Key']}"


def upload_raw(s3, target: EmrTarget, source_dir: str, echo=print) -> None:
    for table in TABLES:
        local = Path(source_dir) / f"{table}.csv"
        if not local.exists():
            raise OperationFailed(f"{local}: missing; `ecom-lakehouse generate --out {source_dir}` writes all 7 tables")
        upload_if_changed(s3, local, target.raw_bucket, f"{table}.csv", echo)


def stage_steps(target: EmrTarget, stages=STAGES) -> list[dict]:
    """One spark-submit step per stage, in order; a failure cancels the rest."""
    steps = []
    for stage in stages:
        args = ["spark-submit", "--deploy-mode", "cluster"]
        for conf in DELTA_CONF:
            args += ["--conf", conf]
        args += [target.entry_uri, stage, "--env", "emr", "--raw", f"s3://{target.raw_bucket}",
                 "--lakehouse", f"s3://{target.lake_bucket}"]
        steps.append({"Name": f"ecom_lakehouse {stage}", "ActionOnFailure": "CANCEL_AND_WAIT",
                      "HadoopJarStep": {"Jar": "command-runner.jar", "Args": args}})
    return steps


def add_steps(emr, cluster_id: str, target: EmrTarget, stages=STAGES) -> list[str]:
    return emr.add_job_flow_steps(JobFlowId=cluster_id, Steps=stage_steps(target, stages))["StepIds"]


def step_log_uri(target: EmrTarget, cluster_id: str, step_id: str) -> str:
    return f"{target.log_uri.rstrip('/')}/{cluster_id}/steps/{step_id}/stderr.gz"


def wait_for_steps(emr, cluster_id: str, step_ids: list[str], target: EmrTarget, waiter_config=None,
                   echo=print) -> None:
    """Wait for each step in order with boto3's step_complete waiter; raise on the first failure."""
    waiter = emr.get_waiter("step_complete")
    for step_id in step_ids:
        try:
            waiter.wait(ClusterId=cluster_id, StepId=step_id, WaiterConfig=waiter_config or {"Delay": 30, "MaxAttempts": 240})
        except WaiterError:
            step = emr.describe_step(ClusterId=cluster_id, StepId=step_id)["Step"]
            state = step["Status"]["State"]
            reason = step["Status"].get("FailureDetails", {}).get("Reason", "")
            raise OperationFailed(f"step {step['Name']} ({step_id}) {state}{': ' + reason if reason else ''}; "
                                  f"stderr: {step_log_uri(target, cluster_id, step_id)}") from None
        step = emr.describe_step(ClusterId=cluster_id, StepId=step_id)["Step"]
        echo(f"  {step['Name']:<24} {step['Status']['State']}")


def run_transient(emr, target: EmrTarget, wheel_uri: str, bootstrap_uri: str, instance_type: str = "m5.xlarge",
                  core_count: int = 2, stages=STAGES) -> str:
    """A cluster that runs the steps and terminates: same Delta configuration and bootstrap
    as the Terraform cluster."""
    if not (target.service_role and target.instance_profile):
        raise OperationFailed("run-transient needs the EMR service role and instance profile (Terraform outputs "
                              "service_role, instance_profile) — pass --terraform-dir or the options")
    instances = {
        "InstanceGroups": [
            {"Name": "primary", "InstanceRole": "MASTER", "InstanceType": instance_type, "InstanceCount": 1},
            {"Name": "core", "InstanceRole": "CORE", "InstanceType": instance_type, "InstanceCount": core_count},
        ],
        "KeepJobFlowAliveWhenNoSteps": False,
        "TerminationProtected": False,
    }
    if target.subnet_id:
        instances["Ec2SubnetId"] = target.subnet_id
    request = dict(
        Name="ecom_lakehouse-transient", ReleaseLabel=target.release_label, LogUri=target.log_uri,
        Applications=[{"Name": "Spark"}, {"Name": "Hadoop"}], Configurations=emr_configurations(),
        Instances=instances, Steps=stage_steps(target, stages),
        BootstrapActions=[{"Name": "install-ecom-lakehouse",
                           "ScriptBootstrapAction": {"Path": bootstrap_uri, "Args": [wheel_uri]}}],
        ServiceRole=target.service_role, JobFlowRole=target.instance_profile, VisibleToAllUsers=True,
    )
    if target.security_configuration:
        request["SecurityConfiguration"] = target.security_configuration
    return emr.run_job_flow(**request)["JobFlowId"]
