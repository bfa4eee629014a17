"""`ecom-lakehouse emr …`: ship the code, upload the data and run the stages as EMR steps.

Bucket names, the cluster id, roles and security groups come from Terraform's outputs
(`terraform output -json` in --terraform-dir) or from explicit options. AWS credentials come
from the usual boto3 chain (AWS_PROFILE, SSO, instance role): never from this repository.

How code reaches the cluster:
* the bootstrap action installs the *dependencies* on every node (also nodes managed scaling adds
  later) from a wheelhouse in the artifacts bucket, with `pip --no-index`: no node needs PyPI;
* every step carries *our code*: `--py-files s3://<artifacts>/builds/<sha256>/<wheel>`, uploaded by
  the same command that adds the step, so a step runs exactly the build it was submitted with.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError, WaiterError

from ecom_lakehouse.schemas import TABLES

# The pipeline as one step, then maintain: each step is a YARN application whose driver starts anew, so two
# steps start two drivers where a step per stage started seven (`--stages` still runs stages one at a time,
# e.g. to rerun one).
DEFAULT_STEPS = ("run", "maintain")
BUILD_PREFIX = "builds/"
WHEELHOUSE_PREFIX = "wheelhouse/"
BOOTSTRAP_PREFIX = "bootstrap/"
DELTA_CONF = (
    "spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog=org.apache.spark.sql.delta.catalog.DeltaCatalog",
)
USABLE_STATES = ("STARTING", "BOOTSTRAPPING", "RUNNING", "WAITING")
# Multipart above 64 MiB, in 64 MiB parts: large event files upload in parallel parts.
TRANSFER = TransferConfig(multipart_threshold=64 * 2**20, multipart_chunksize=64 * 2**20)
_PACKAGE = resources.files("ecom_lakehouse.ops")


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
    primary_security_group: str | None = None
    core_security_group: str | None = None
    service_access_security_group: str | None = None
    silver_database: str | None = None  # Glue Data Catalog databases the tables are registered in
    gold_database: str | None = None
    delta_log_table: str | None = None  # DynamoDB table of Delta's multi-cluster S3 log store
    region: str | None = None
    kms_key_arn: str | None = None  # the lake's key: EMR Serverless encrypts the job logs with it
    serverless_application_id: str | None = None
    serverless_job_role: str | None = None  # the job runtime role's ARN


@dataclass(frozen=True)
class Artifacts:
    """Where one build and the node set-up it needs live in the artifacts bucket."""
    wheel_uri: str
    entry_uri: str
    wheelhouse_uri: str
    bootstrap_uri: str


def terraform_outputs(terraform_dir: str) -> dict[str, str]:
    out = subprocess.run(["terraform", f"-chdir={terraform_dir}", "output", "-json"], capture_output=True,
                         text=True, check=False)
    if out.returncode != 0:
        raise OperationFailed(f"`terraform output -json` in {terraform_dir} failed: {out.stderr.strip().splitlines()[-1:]}; "
                              "run `terraform apply` there first or pass the bucket options")
    return {k: v["value"] for k, v in json.loads(out.stdout).items()}


def emr_configurations() -> list[dict]:
    """The Spark/Delta/Python/Glue classifications; Terraform gives the long-running cluster the same file."""
    return json.loads(_PACKAGE.joinpath("emr_configurations.json").read_text())


def classification(name: str) -> dict:
    """One classification of emr_configurations.json (spark-defaults, spark-env, …), whole."""
    return next(c for c in emr_configurations() if c["Classification"] == name)


def cluster_spec() -> dict:
    """Applications, node Python, EBS, tags, step concurrency, idle timeout: read by Terraform too."""
    return json.loads(_PACKAGE.joinpath("emr_cluster.json").read_text())


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:12]


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()


def wheelhouse_key() -> str:
    """wheelhouse/<first 12 hex of the requirements file's SHA-256>/: Terraform computes the same."""
    return f"{WHEELHOUSE_PREFIX}{_digest(_PACKAGE.joinpath('emr_requirements.txt').read_bytes())}/"


def bootstrap_key() -> str:
    return f"{BOOTSTRAP_PREFIX}{_digest(_PACKAGE.joinpath('emr_bootstrap.sh').read_bytes())}/install_ecom_lakehouse.sh"


def build_key(wheel: Path) -> str:
    return f"{BUILD_PREFIX}{_file_sha256(wheel)[:12]}/"


def upload_if_changed(s3, local: Path, bucket: str, key: str, echo=print) -> bool:
    """Upload unless an object with the same size and SHA-256 is already there."""
    size, sha = local.stat().st_size, _file_sha256(local)
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


# emr-7.11.0 is the first release with Spark 3.5.6 and Delta 3.3.2, which the wheelhouse's delta-spark and
# this package pin (aws/FACTS.md; Python 3.11 is there from 7.1.0).
MIN_RELEASE = (7, 11, 0)
# EC2 names Graviton (arm64) types with a `g` among the letters after the generation (m6g, c7gn,
# r8gd, is4gen) and a1 (docs.aws.amazon.com/ec2/latest/instancetypes/instance-type-names.html); the
# wheelhouse holds x86_64 wheels only.
_GRAVITON = re.compile(r"^(a1|[a-z]+\d+[a-z]*g[a-z]*)(-[a-z]+)?\.")


def check_cluster_shape(release_label: str, instance_type: str | None = None) -> None:
    """Refuse, in one line each, a release without the Spark/Delta/Python the artifacts are built for,
    and an instance type of an architecture the wheelhouse has no wheels for."""
    version = re.fullmatch(r"emr-(\d+)\.(\d+)\.(\d+)", release_label)
    if not version or tuple(map(int, version.groups())) < MIN_RELEASE:
        raise OperationFailed(f"EMR release {release_label!r} is not supported: use emr-{'.'.join(map(str, MIN_RELEASE))} "
                              "or later (Spark 3.5.6 and Delta 3.3.2, which the wheelhouse pins; Python 3.11)")
    if instance_type and _GRAVITON.match(instance_type):
        raise OperationFailed(f"instance type {instance_type} is Graviton (arm64) and the wheelhouse holds x86_64 "
                              "wheels only: use an x86_64 type such as m5.xlarge or m6i.xlarge")


def build_wheel(project_dir: str, out_dir: str) -> Path:
    done = subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", out_dir, project_dir],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise OperationFailed(f"building the wheel of {project_dir} failed: {last_line(done.stderr)}")
    wheels = sorted(Path(out_dir).glob("ecom_lakehouse-*.whl"), key=lambda p: p.stat().st_mtime)
    return wheels[-1]


def cluster_python_version() -> str:
    """'3.11' from the node Python '/usr/bin/python3.11'."""
    return cluster_spec()["python"].rsplit("python", 1)[1]


def build_wheelhouse(out_dir: str) -> Path:
    """Download every pinned requirement as a binary wheel for the cluster's Python and platform
    (EMR 7 runs Amazon Linux 2023 on x86_64: manylinux wheels), plus the requirements file."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with resources.as_file(_PACKAGE.joinpath("emr_requirements.txt")) as requirements:
        done = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
             "--platform", "manylinux2014_x86_64", "--platform", "manylinux_2_28_x86_64",
             "--python-version", cluster_python_version(), "--implementation", "cp",
             "-r", str(requirements), "-d", str(out)], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise OperationFailed(f"pip download of the EMR wheelhouse failed: {last_line(done.stderr)}")
        (out / "requirements.txt").write_bytes(Path(requirements).read_bytes())
    return out


def cache_root() -> Path:
    """`$XDG_CACHE_HOME` or ~/.cache, then ecom_lakehouse/: what is built once per requirements file."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ecom_lakehouse"


def cached_wheelhouse() -> Path:
    """The wheelhouse of the current requirements file, downloaded once into the user's cache
    (cache_root()/wheelhouse/<requirements hash>): each `emr submit` after the first sends nothing and
    downloads nothing."""
    root = cache_root() / "wheelhouse"
    house = root / wheelhouse_key().split("/")[1]
    if (house / "requirements.txt").exists():  # written last: its presence means the download finished
        return house
    root.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(dir=root, prefix=".partial-"))
    try:
        build_wheelhouse(str(partial))
        shutil.rmtree(house, ignore_errors=True)
        os.replace(partial, house)  # whole, or not there at all
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return house


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def deploy_artifacts(s3, target: EmrTarget, wheel: Path, wheelhouse: Path | None = None, echo=print) -> Artifacts:
    """This build (wheel + step entry script) under builds/<sha>/, and the node set-up (bootstrap
    script, wheelhouse) under content-addressed keys. Unchanged objects are not sent again."""
    bucket = target.artifacts_bucket
    build = build_key(wheel)
    wheelhouse = wheelhouse or cached_wheelhouse()
    uploads = [(wheel, build + wheel.name)]
    uploads += [(f, wheelhouse_key() + f.name) for f in sorted(wheelhouse.iterdir()) if f.is_file()]
    with resources.as_file(_PACKAGE.joinpath("emr_entry.py")) as entry, \
            resources.as_file(_PACKAGE.joinpath("emr_bootstrap.sh")) as bootstrap:
        uploads += [(Path(entry), build + "emr_entry.py"), (Path(bootstrap), bootstrap_key())]
        for local, key in uploads:
            upload_if_changed(s3, local, bucket, key, echo)
    return Artifacts(wheel_uri=f"s3://{bucket}/{build}{wheel.name}", entry_uri=f"s3://{bucket}/{build}emr_entry.py",
                     wheelhouse_uri=f"s3://{bucket}/{wheelhouse_key()}", bootstrap_uri=f"s3://{bucket}/{bootstrap_key()}")


def upload_raw(s3, target: EmrTarget, source_dir: str, echo=print) -> None:
    for table in TABLES:
        local = Path(source_dir) / f"{table}.csv"
        if not local.exists():
            raise OperationFailed(f"{local}: missing; `ecom-lakehouse generate --out {source_dir}` writes all 7 tables")
        upload_if_changed(s3, local, target.raw_bucket, f"{table}.csv", echo)


def log_store_conf(target: EmrTarget) -> tuple[str, ...]:
    """Delta's multi-cluster S3 log store (delta-storage-s3-dynamodb, on EMR 7's class path): each commit
    is first claimed in DynamoDB with a conditional write, so two clusters (the long-running one and a
    transient one) writing the same table cannot both write version N; S3 alone keeps the last PUT."""
    if not (target.delta_log_table and target.region):
        raise OperationFailed("no DynamoDB table for Delta's commit log: give --terraform-dir (Terraform outputs "
                              "delta_log_table and region); without it two writers of one table can lose a commit")
    prefix = "spark.io.delta.storage.S3DynamoDBLogStore"
    return ("spark.delta.logStore.s3.impl=io.delta.storage.S3DynamoDBLogStore",
            f"{prefix}.ddb.tableName={target.delta_log_table}", f"{prefix}.ddb.region={target.region}")


def command_arguments(target: EmrTarget, command: str) -> list[str]:
    """`<command> --env emr --raw s3://… --lakehouse s3://… [--schema … --gold-schema …]`: what the entry
    script gets on a cluster step and in an EMR Serverless job run alike."""
    args = [command, "--env", "emr", "--raw", f"s3://{target.raw_bucket}", "--lakehouse", f"s3://{target.lake_bucket}"]
    if target.silver_database and target.gold_database:
        args += ["--schema", target.silver_database, "--gold-schema", target.gold_database]
    return args


def step_arguments(target: EmrTarget, artifacts: Artifacts, command: str) -> list[str]:
    """The spark-submit command of one step running `command`: the build travels with it (--py-files)."""
    args = ["spark-submit", "--deploy-mode", "cluster"]
    for conf in (*DELTA_CONF, *log_store_conf(target)):
        args += ["--conf", conf]
    return [*args, "--py-files", artifacts.wheel_uri, artifacts.entry_uri, *command_arguments(target, command)]


def steps_for(target: EmrTarget, artifacts: Artifacts, commands=DEFAULT_STEPS, on_failure: str = "CANCEL_AND_WAIT") -> list[dict]:
    """One spark-submit step per command, in order; a failure cancels the rest."""
    return [{"Name": f"ecom_lakehouse {command}", "ActionOnFailure": on_failure,
             "HadoopJarStep": {"Jar": "command-runner.jar", "Args": step_arguments(target, artifacts, command)}}
            for command in commands]


def require_usable_cluster(emr, cluster_id: str) -> None:
    """A terminated cluster (auto-termination after its idle hour) takes no steps: say what to do."""
    cluster = emr.describe_cluster(ClusterId=cluster_id)["Cluster"]
    state = cluster["Status"]["State"]
    if state not in USABLE_STATES:
        reason = cluster["Status"].get("StateChangeReason", {}).get("Message", "")
        raise OperationFailed(
            f"cluster {cluster_id} is {state}{' (' + reason + ')' if reason else ''}: it cannot take steps; "
            "`terraform apply` in terraform/ starts a new one (then `terraform output cluster_id`), "
            "or use `ecom-lakehouse emr run-transient`")


def add_steps(emr, cluster_id: str, target: EmrTarget, artifacts: Artifacts, commands=DEFAULT_STEPS) -> list[str]:
    require_usable_cluster(emr, cluster_id)
    return emr.add_job_flow_steps(JobFlowId=cluster_id, Steps=steps_for(target, artifacts, commands))["StepIds"]


def step_log_uri(target: EmrTarget, cluster_id: str, step_id: str) -> str:
    return f"{target.log_uri.rstrip('/')}/{cluster_id}/steps/{step_id}/stderr.gz"


def failure_report(target: EmrTarget, cluster_id: str, step: dict) -> str:
    """What failed and where its one-line error (and, with ECOM_DEBUG, its traceback) is. In cluster deploy
    mode the driver runs in a YARN container, and Spark's PythonRunner merges the Python driver's stderr
    into its stdout (ProcessBuilder.redirectErrorStream): the line is in that container's stdout, not
    in the step's log (the EMR twin reads it there)."""
    state = step["Status"]["State"]
    details = step["Status"].get("FailureDetails", {})
    what = " — ".join(x for x in (details.get("Reason"), details.get("Message")) if x)
    logs = details.get("LogFile") or step_log_uri(target, cluster_id, step["Id"])
    containers = f"{target.log_uri.rstrip('/')}/{cluster_id}/containers/"
    return (f"step {step['Name']} ({step['Id']}) {state}{': ' + what if what else ''}; step log: {logs}; "
            f"the driver's error: stdout.gz of the first container of the step's application under {containers}")


def wait_for_steps(emr, cluster_id: str, step_ids: list[str], target: EmrTarget, waiter_config=None,
                   echo=print) -> None:
    """Wait for each step in order with boto3's step_complete waiter; raise on the first failure."""
    waiter = emr.get_waiter("step_complete")
    for step_id in step_ids:
        try:
            waiter.wait(ClusterId=cluster_id, StepId=step_id, WaiterConfig=waiter_config or {"Delay": 30, "MaxAttempts": 240})
        except WaiterError:
            step = emr.describe_step(ClusterId=cluster_id, StepId=step_id)["Step"]
            raise OperationFailed(failure_report(target, cluster_id, step)) from None
        step = emr.describe_step(ClusterId=cluster_id, StepId=step_id)["Step"]
        echo(f"  {step['Name']:<24} {step['Status']['State']}")


def cluster_request(target: EmrTarget, artifacts: Artifacts, instance_type: str = "m5.xlarge", core_count: int = 2,
                    commands=DEFAULT_STEPS) -> dict:
    """run_job_flow arguments for a transient cluster shaped like Terraform's: same classifications,
    applications, bootstrap, EBS, tags, security groups, security configuration, idle timeout."""
    check_cluster_shape(target.release_label, instance_type)
    if not (target.service_role and target.instance_profile):
        raise OperationFailed("run-transient needs the EMR service role and instance profile (Terraform outputs "
                              "service_role, instance_profile) — pass --terraform-dir or the options")
    spec = cluster_spec()

    def group(name: str, role: str, count: int) -> dict:
        ebs = spec["ebs"][name]
        return {"Name": name, "InstanceRole": role, "InstanceType": instance_type, "InstanceCount": count,
                "EbsConfiguration": {"EbsBlockDeviceConfigs": [{"VolumeSpecification": {
                    "SizeInGB": ebs["size_gib"], "VolumeType": ebs["type"]}, "VolumesPerInstance": 1}]}}

    instances = {"InstanceGroups": [group("primary", "MASTER", 1), group("core", "CORE", core_count)],
                 "KeepJobFlowAliveWhenNoSteps": False, "TerminationProtected": False}
    for key, value in (("Ec2SubnetId", target.subnet_id), ("EmrManagedMasterSecurityGroup", target.primary_security_group),
                       ("EmrManagedSlaveSecurityGroup", target.core_security_group),
                       ("ServiceAccessSecurityGroup", target.service_access_security_group)):
        if value:
            instances[key] = value
    request = dict(
        Name="ecom_lakehouse-transient", ReleaseLabel=target.release_label, LogUri=target.log_uri,
        Applications=[{"Name": a} for a in spec["applications"]], Configurations=emr_configurations(),
        Instances=instances, Steps=steps_for(target, artifacts, commands),
        BootstrapActions=[{"Name": "install-ecom-lakehouse", "ScriptBootstrapAction": {
            "Path": artifacts.bootstrap_uri, "Args": [artifacts.wheelhouse_uri, spec["python"]]}}],
        ServiceRole=target.service_role, JobFlowRole=target.instance_profile, VisibleToAllUsers=True,
        Tags=[{"Key": k, "Value": v} for k, v in spec["tags"].items()],
        StepConcurrencyLevel=spec["step_concurrency_level"],
        AutoTerminationPolicy={"IdleTimeout": spec["idle_timeout_seconds"]},
    )
    if target.security_configuration:
        request["SecurityConfiguration"] = target.security_configuration
    return request


def run_transient(emr, target: EmrTarget, artifacts: Artifacts, instance_type: str = "m5.xlarge",
                  core_count: int = 2, commands=DEFAULT_STEPS) -> str:
    """A cluster that runs the steps and terminates."""
    return emr.run_job_flow(**cluster_request(target, artifacts, instance_type, core_count, commands))["JobFlowId"]
