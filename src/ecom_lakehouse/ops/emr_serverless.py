"""`ecom-lakehouse emr serverless-submit`: the pipeline as EMR Serverless job runs.

No cluster, no bootstrap, no security groups: the application (Terraform `serverless.tf`) starts
workers when a job arrives and stops when idle. What a job needs travels with it:
* the dependencies as one archive, a Python 3.11 virtual environment holding the wheelhouse
  (`environments/<requirements hash>/…tar.gz`), which EMR Serverless unpacks as `./environment` in
  the driver's and each executor's working directory (`spark.archives=…#environment`);
* our code as on EMR steps: `--py-files s3://<artifacts>/builds/<sha>/<wheel>`, with the same entry script.

The archive's interpreter is the image's `/usr/bin/python3.11` (the cluster's too: emr_cluster.json):
the environment links to it rather than carrying a copy, as a virtual environment does. It is built
without running the target's Python (pip's `--platform`/`--target`), so it can be built on any
machine and is the same wherever it is built.
"""
from __future__ import annotations

import gzip
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from botocore.exceptions import WaiterError
from botocore.waiter import WaiterModel, create_waiter_with_client

from ecom_lakehouse.ops import emr_ops
from ecom_lakehouse.ops.emr_ops import Artifacts, EmrTarget, OperationFailed

ENVIRONMENT_PREFIX = "environments/"
ARCHIVE_NAME = "ecom_lakehouse_environment.tar.gz"
ENVIRONMENT = "./environment/bin/python"
# Delta's jars on EMR images (7.x: /usr/share/aws/delta/lib, aws/FACTS.md); EMR Serverless puts them on
# the class path only when a job names them (aws-samples/emr-serverless-samples, examples/pyspark/delta-lake).
DELTA_JARS = tuple(f"/usr/share/aws/delta/lib/{jar}" for jar in
                   ("delta-spark.jar", "delta-storage.jar", "delta-storage-s3-dynamodb.jar"))
# The pipeline in one job run: one driver start-up, one bill minimum, one log. maintain is its own run.
DEFAULT_JOBS = ("run",)
# boto3 has no waiter for EMR Serverless: this is the model botocore's own waiters are made of.
_JOB_RUN_WAITER = WaiterModel({"version": 2, "waiters": {"JobRunFinished": {
    "operation": "GetJobRun", "delay": 30, "maxAttempts": 240, "acceptors": [
        {"matcher": "path", "argument": "jobRun.state", "expected": "SUCCESS", "state": "success"},
        {"matcher": "path", "argument": "jobRun.state", "expected": "FAILED", "state": "failure"},
        {"matcher": "path", "argument": "jobRun.state", "expected": "CANCELLED", "state": "failure"}]}}})


def environment_key() -> str:
    """environments/<the wheelhouse's requirements hash>/…: a new archive exactly when the requirements change."""
    return f"{ENVIRONMENT_PREFIX}{emr_ops.wheelhouse_key().split('/')[1]}/{ARCHIVE_NAME}"


def build_environment_archive(wheelhouse: Path, out: Path) -> Path:
    """A Linux x86_64 Python 3.11 virtual environment holding every wheel of the wheelhouse, as a tar.gz
    whose root is the environment (bin/python, pyvenv.cfg, lib/python3.11/site-packages)."""
    python = Path(emr_ops.cluster_spec()["python"])  # /usr/bin/python3.11
    version = emr_ops.cluster_python_version()
    with tempfile.TemporaryDirectory() as tmp:
        env = Path(tmp) / "environment"
        site = env / "lib" / f"python{version}" / "site-packages"
        done = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", "--no-compile",
             "--only-binary=:all:", "--platform", "manylinux2014_x86_64", "--platform", "manylinux_2_28_x86_64",
             "--python-version", version, "--implementation", "cp", "--target", str(site),
             "--find-links", str(wheelhouse), "-r", str(wheelhouse / "requirements.txt")],
            capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise OperationFailed(f"installing the wheelhouse into the EMR Serverless environment failed: "
                                  f"{emr_ops.last_line(done.stderr)}")
        (env / "bin").mkdir()
        for name in ("python", "python3", f"python{version}"):
            (env / "bin" / name).symlink_to(python)
        (env / "pyvenv.cfg").write_text(f"home = {python.parent}\ninclude-system-site-packages = false\n"
                                        f"version = {version}\n")
        out.parent.mkdir(parents=True, exist_ok=True)
        # gzip without a timestamp or name in its header: the same wheels give the same bytes
        with out.open("wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=6, mtime=0) as gz, \
                tarfile.open(fileobj=gz, mode="w") as archive:
            for path in sorted(env.rglob("*")):  # sorted, owner- and time-free: the same wheels give the same archive
                info = archive.gettarinfo(str(path), arcname=str(path.relative_to(env)))
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                info.mtime = 0
                if info.isfile():
                    with path.open("rb") as f:
                        archive.addfile(info, f)
                else:
                    archive.addfile(info)
    return out


def cached_environment_archive() -> Path:
    """The archive of the current requirements, built once into the user's cache beside the wheelhouse."""
    root = emr_ops.cache_root() / "environments"
    archive = root / environment_key().split("/")[1] / ARCHIVE_NAME
    if archive.exists():
        return archive
    root.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(dir=root, prefix=".partial-"))
    try:
        built = build_environment_archive(emr_ops.cached_wheelhouse(), partial / ARCHIVE_NAME)
        archive.parent.mkdir(parents=True, exist_ok=True)
        os.replace(built, archive)  # whole, or not there at all
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return archive


def deploy_environment(s3, target: EmrTarget, archive: Path | None = None, echo=print) -> str:
    """Upload the archive unless the same one is there; its s3:// URI."""
    emr_ops.upload_if_changed(s3, archive or cached_environment_archive(), target.artifacts_bucket,
                              environment_key(), echo)
    return f"s3://{target.artifacts_bucket}/{environment_key()}"


def submit_parameters(target: EmrTarget, artifacts: Artifacts, environment_uri: str) -> str:
    """`sparkSubmitParameters`: the environment, Delta and its DynamoDB log store, the cluster's spark-defaults."""
    defaults = emr_ops.classification("spark-defaults")["Properties"]
    conf = {
        "spark.archives": f"{environment_uri}#environment",
        "spark.emr-serverless.driverEnv.PYSPARK_DRIVER_PYTHON": ENVIRONMENT,
        "spark.emr-serverless.driverEnv.PYSPARK_PYTHON": ENVIRONMENT,
        "spark.executorEnv.PYSPARK_PYTHON": ENVIRONMENT,
        "spark.jars": ",".join(DELTA_JARS),
        **defaults,
        **dict(c.split("=", 1) for c in emr_ops.log_store_conf(target)),
    }
    # EMR Serverless reads the Glue Data Catalog as the metastore when asked to (the cluster: spark-hive-site)
    conf["spark.hadoop.hive.metastore.client.factory.class"] = (
        emr_ops.classification("spark-hive-site")["Properties"]["hive.metastore.client.factory.class"])
    args = [part for key, value in conf.items() for part in ("--conf", f"{key}={value}")]
    return shlex.join([*args, "--py-files", artifacts.wheel_uri])


def require_application(target: EmrTarget) -> None:
    if not (target.serverless_application_id and target.serverless_job_role):
        raise OperationFailed("no EMR Serverless application or job role: give --terraform-dir (Terraform outputs "
                              "serverless_application_id and serverless_job_role_arn) or --application-id and --job-role-arn")


def job_run_request(target: EmrTarget, artifacts: Artifacts, environment_uri: str, command: str) -> dict:
    """start_job_run's arguments for one command (`run` or a stage), its logs encrypted under the lake's key."""
    require_application(target)
    monitoring = {"logUri": serverless_log_uri(target)}
    if target.kms_key_arn:
        monitoring["encryptionKeyArn"] = target.kms_key_arn
    return {
        "applicationId": target.serverless_application_id,
        "executionRoleArn": target.serverless_job_role,
        "name": f"ecom_lakehouse {command}",
        "jobDriver": {"sparkSubmit": {
            "entryPoint": artifacts.entry_uri, "entryPointArguments": emr_ops.command_arguments(target, command),
            "sparkSubmitParameters": submit_parameters(target, artifacts, environment_uri)}},
        "configurationOverrides": {"monitoringConfiguration": {"s3MonitoringConfiguration": monitoring}},
    }


def serverless_log_uri(target: EmrTarget) -> str:
    """s3://<logs>/serverless/: beside the clusters' s3://<logs>/emr/, where the job role may write."""
    return target.log_uri.rstrip("/").rsplit("/", 1)[0] + "/serverless/"


def driver_log(target: EmrTarget, job_run_id: str) -> str:
    """Where a job's driver output lands (the Python driver's stderr is merged into its stdout)."""
    return (f"{serverless_log_uri(target)}applications/{target.serverless_application_id}/jobs/{job_run_id}/"
            "SPARK_DRIVER/stdout.gz")


def wait_for_job_run(client, target: EmrTarget, job_run_id: str, waiter_config=None) -> dict:
    """Wait until the job run ends; raise with its state, EMR's reason and the driver log on failure."""
    waiter = create_waiter_with_client("JobRunFinished", _JOB_RUN_WAITER, client)
    try:
        waiter.wait(applicationId=target.serverless_application_id, jobRunId=job_run_id,
                    WaiterConfig=waiter_config or {"Delay": 30, "MaxAttempts": 240})
    except WaiterError:
        run = client.get_job_run(applicationId=target.serverless_application_id, jobRunId=job_run_id)["jobRun"]
        raise OperationFailed(
            f"job run {run['name']} ({job_run_id}) {run['state']}"
            f"{': ' + run['stateDetails'] if run.get('stateDetails') else ''}; "
            f"the driver's error: {driver_log(target, job_run_id)}") from None
    return client.get_job_run(applicationId=target.serverless_application_id, jobRunId=job_run_id)["jobRun"]


def run_jobs(client, target: EmrTarget, artifacts: Artifacts, environment_uri: str, commands=DEFAULT_JOBS,
             wait: bool = True, waiter_config=None, echo=print) -> list[str]:
    """Start each command as a job run, in order; with wait, each after the previous succeeded."""
    ids = []
    for command in commands:
        job_run_id = client.start_job_run(**job_run_request(target, artifacts, environment_uri, command))["jobRunId"]
        ids.append(job_run_id)
        echo(f"  started job run {job_run_id}: {command}")
        if wait:
            run = wait_for_job_run(client, target, job_run_id, waiter_config)
            echo(f"  {run['name']:<24} {run['state']}")
    return ids
