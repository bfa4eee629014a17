"""The EMR Serverless twin: `ecom-lakehouse emr serverless-submit`'s job runs, run the way EMR Serverless runs them.

What is the same as on EMR Serverless:
* the job runs are the requests `emr_serverless.run_jobs` sends with `start_job_run` (moto's EMR Serverless
  API checks their shape and keeps them); the twin reads each back with `get_job_run` and runs exactly
  its `entryPoint`, `entryPointArguments` and `sparkSubmitParameters`, not a retyped copy;
* the environment archive is the one `deploy_environment` uploads, unpacked as `./environment` in the
  driver's working directory (what `spark.archives=…#environment` does on EMR Serverless: AWS's
  aws-samples/emr-serverless-samples, examples/pyspark/custom_python_version, shows the driver's
  `sys.executable` as /home/hadoop/environment/bin/python, the job's working directory), and the driver
  runs on its `bin/python`: the archive's link to `/usr/bin/python3.11`, which here is Debian's bare
  Python 3.11 (no numpy, no MLflow, no boto3), so everything the job imports comes from the archive;
* `spark.emr-serverless.driverEnv.*` becomes the driver's environment (EMR Serverless's name for what YARN
  calls spark.yarn.appMasterEnv; the same sample sets PYSPARK_PYTHON that way);
* S3 is moto's server with IAM checks, the job runs with the credentials of a user holding exactly the
  job role's policy as Terraform renders it (serverless.tf gives the job role the instance role's
  document), and the driver's output is written, as that user, to the log path `emr_serverless.driver_log`
  names (`<logUri>/applications/<app>/jobs/<job run>/SPARK_DRIVER/stdout.gz`, where the same sample
  reads it); the job run's final state is what the driver process returned, so boto3's waiter model in
  `wait_for_job_run` sees SUCCESS or FAILED as it would.

What differs: the master is local[2]; EMR's jar paths in `spark.jars` (/usr/share/aws/delta/lib) are not
on this machine, so Delta's jars come from ~/.m2 on the class path; Delta's DynamoDB log store is left
out (its jar is not served here, as in the cluster twin); the Glue catalog is Derby; S3A, not EMRFS.
"""
from __future__ import annotations

import dataclasses
import gzip
import os
import shlex
import subprocess
import tarfile
import time

import boto3
import pytest
from moto import mock_aws
from moto.emrserverless.models import emrserverless_backends

from ecom_lakehouse.ops import emr_serverless
from ecom_lakehouse.ops.emr_ops import OperationFailed
from tests import terraform_eval
from tests.aws_twin import (
    ACCOUNT,
    BUCKETS,
    REGION,
    SPARK_HOME,
    assert_complete_lake,
    client,
    enforce_iam,
    lake_world,
    make_databases,
    require_jars,
    serve_moto,
    spark_properties,
    without_log_store,
)

pytestmark = [pytest.mark.twin,
              pytest.mark.skipif(not terraform_eval.available(), reason="terraform is not installed: the twin "
                                 "renders the job role's policy with `terraform console`"),
              pytest.mark.skipif(not os.path.exists("/usr/bin/python3.11"), reason="the archive's interpreter, "
                                 "/usr/bin/python3.11 as on EMR images, is not on this machine")]
DRIVER_ENV = "spark.emr-serverless.driverEnv."


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory):
    yield from serve_moto(tmp_path_factory.mktemp("moto"))


def play_job_run(run: dict, service: dict) -> subprocess.CompletedProcess:
    """What EMR Serverless does with one job run: a working directory with the entry point and the unpacked
    archive, the driver environment from driverEnv, spark-submit with the job's parameters; then the
    driver's output to the log path, and the job's state from its exit code."""
    driver = run["jobDriver"]["sparkSubmit"]
    params = shlex.split(driver["sparkSubmitParameters"])
    job_dir = service["work"] / run["jobRunId"]
    job_dir.mkdir()
    s3 = service["s3"]  # the job role's credentials

    def fetch(uri: str, path):
        bucket, _, key = uri[len("s3://"):].partition("/")
        s3.download_file(bucket, key, str(path))
        return path

    args, env = [], dict(service["env"])
    rest = iter(without_log_store(params, service["target"]))
    for arg in rest:
        if arg != "--conf":
            args.append(arg)
            continue
        key, _, value = next(rest).partition("=")
        if key == "spark.archives":
            uri, _, name = value.partition("#")
            with tarfile.open(fetch(uri, job_dir / "environment.tar.gz")) as archive:
                archive.extractall(job_dir / name, filter="tar")  # keeps bin/python's link to /usr/bin/python3.11
        elif key.startswith(DRIVER_ENV):
            env[key[len(DRIVER_ENV):]] = value
        elif key != "spark.jars":  # EMR's own jar paths: Delta's jars are on the class path from ~/.m2 instead
            args += ["--conf", f"{key}={value}"]
    entry = fetch(driver["entryPoint"], job_dir / driver["entryPoint"].rsplit("/", 1)[1])
    done = subprocess.run([*service["submit"], *args, str(entry), *driver["entryPointArguments"]], env=env,
                          cwd=job_dir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log = emr_serverless.driver_log(service["target"], run["jobRunId"])
    bucket, _, key = log[len("s3://"):].partition("/")
    s3.put_object(Bucket=bucket, Key=key, Body=gzip.compress(done.stdout.encode()))
    job = emrserverless_backends[ACCOUNT][REGION].get_job_run(run["applicationId"], run["jobRunId"])
    job.state = "SUCCESS" if done.returncode == 0 else "FAILED"
    if done.returncode:
        job.state_details = "Job failed, please check complete logs in configured logging destination."
    return done


@pytest.fixture(scope="module")
def serverless(s3_endpoint, tmp_path_factory):
    require_jars()
    work = tmp_path_factory.mktemp("emr-serverless-twin")
    world = lake_world(s3_endpoint, work, "emr-serverless-job")
    started = time.time()
    environment_uri = emr_serverless.deploy_environment(world.deployer_s3, world.target, echo=lambda *_: None)
    timings = {"environment": time.time() - started}
    enforce_iam(s3_endpoint)
    creds = world.credentials
    properties = work / "spark-defaults.conf"
    properties.write_text("".join(f"{k} {v}\n" for k, v in spark_properties(s3_endpoint, *creds, work).items()))
    ours = ("AWS_", "PYSPARK", "SPARK", "ECOM_", "MLFLOW_", "VIRTUAL_ENV", "PYTHON")
    env = {k: v for k, v in os.environ.items() if not k.startswith(ours)}
    env.update({"SPARK_HOME": str(SPARK_HOME), "ECOM_DEBUG": "1", "AWS_ACCESS_KEY_ID": creds[0],
                "AWS_SECRET_ACCESS_KEY": creds[1], "AWS_DEFAULT_REGION": REGION, "AWS_ENDPOINT_URL": s3_endpoint})
    submit = [str(SPARK_HOME / "bin" / "spark-submit"), "--properties-file", str(properties)]
    make_databases(submit, {**env, "PYSPARK_PYTHON": "/usr/bin/python3.11"}, work)

    with mock_aws():
        api = boto3.client("emr-serverless", region_name=REGION)
        # serverless.tf's application: Spark, the cluster's release, x86_64
        application = api.create_application(name="ecom-lakehouse-dev-serverless", releaseLabel="emr-7.12.0",
                                              type="SPARK", architecture="X86_64")["applicationId"]
        target = dataclasses.replace(world.target, serverless_application_id=application,
                                     serverless_job_role=f"arn:aws:iam::{ACCOUNT}:role/ecom-lakehouse-dev-serverless-job")
        service = {"work": work, "s3": client("s3", s3_endpoint, *creds), "env": env, "submit": submit, "target": target}
        job_runs = emr_serverless.run_jobs(api, target, world.artifacts, environment_uri, wait=False,
                                           echo=lambda *_: None)
        outputs = []
        for job_run_id in job_runs:
            run = api.get_job_run(applicationId=application, jobRunId=job_run_id)["jobRun"]
            started = time.time()
            done = play_job_run(run, service)
            timings[run["name"]] = time.time() - started
            print(f"[emr serverless twin] {run['name']}: {timings[run['name']]:.0f}s", flush=True)
            assert done.returncode == 0, f"job run {run['name']} failed:\n{done.stdout[-4000:]}"
            outputs.append(done.stdout)
            final = emr_serverless.wait_for_job_run(api, target, job_run_id, {"Delay": 0, "MaxAttempts": 1})
            assert final["state"] == "SUCCESS"
        print("EMR Serverless twin timings (s):", {k: round(v, 1) for k, v in timings.items()})
        yield {"api": api, "service": service, "world": world, "target": target, "runs": job_runs, "outputs": outputs,
               "environment_uri": environment_uri}


def test_the_pipeline_runs_as_one_job_on_the_archived_environment_and_leaves_the_lake_complete(serverless):
    assert len(serverless["runs"]) == 1  # `run`: one driver start-up for the whole pipeline
    assert_complete_lake(serverless["service"]["s3"], serverless["world"].generated)
    assert "pipeline finished" in serverless["outputs"][0]


def test_a_failed_job_run_is_reported_with_its_driver_log_which_holds_the_one_line_cause(serverless):
    """A job whose lake the job role may not write (the artifacts bucket): the job run ends FAILED, the
    waiter's error names the driver log, and that log, read back from S3, holds one line with the cause."""
    denied = dataclasses.replace(serverless["target"], lake_bucket=BUCKETS["artifacts"])
    api, service = serverless["api"], dict(serverless["service"], target=denied)
    service["env"] = {k: v for k, v in service["env"].items() if k != "ECOM_DEBUG"}  # as a user sees it
    job_run_id, = emr_serverless.run_jobs(api, denied, serverless["world"].artifacts, serverless["environment_uri"],
                                          ["bronze"], wait=False, echo=lambda *_: None)
    run = api.get_job_run(applicationId=denied.serverless_application_id, jobRunId=job_run_id)["jobRun"]
    assert play_job_run(run, service).returncode != 0
    with pytest.raises(OperationFailed) as failed:
        emr_serverless.wait_for_job_run(api, denied, job_run_id, {"Delay": 0, "MaxAttempts": 1})
    message = str(failed.value)
    assert f"({job_run_id}) FAILED" in message
    log = message.rsplit("the driver's error: ", 1)[1]
    bucket, _, key = log[len("s3://"):].partition("/")
    text = gzip.decompress(service["s3"].get_object(Bucket=bucket, Key=key)["Body"].read()).decode()
    marker = "ecom-lakehouse: error:"
    ours = [line[line.index(marker):] for line in text.splitlines() if marker in line]
    assert len(ours) == 1 and "Traceback" not in text, text[-3000:]
    assert "AccessDenied" in ours[0], ours[0]


def test_the_job_role_reads_its_environment_and_build_but_cannot_change_them(serverless):
    s3, artifacts = serverless["service"]["s3"], BUCKETS["artifacts"]
    key = serverless["environment_uri"].split(f"{artifacts}/", 1)[1]
    assert s3.head_object(Bucket=artifacts, Key=key)["ContentLength"] > 0
    with pytest.raises(Exception, match="AccessDenied"):
        s3.put_object(Bucket=artifacts, Key=key, Body=b"tampered")
