"""The EMR twin: every step of `ecom-lakehouse emr submit`, run the way an EMR node runs it, on S3.

What is the same as on EMR:
* the artifacts are the ones `emr deploy-artifacts` uploads (this build under builds/<sha>/, the
  wheelhouse, the bootstrap script), sent by that code to S3;
* a node: a fresh Python 3.11 (the cluster's PYSPARK_PYTHON) holding nothing, not even pip, with Spark 3.5.6 (EMR
  7.12's) on the side and Delta's jars on the class path as delta-defaults puts them; the bootstrap
  script, fetched from S3, installs the wheelhouse into it with `pip --no-index` (the `aws` command it
  calls is a small stand-in that copies from the same S3 endpoint with boto3, `sudo` runs the command);
* each step is the exact argument list of the steps `emr submit` adds (`emr_ops.steps_for`: the pipeline as
  one step, then maintain), not retyped, with the
  spark-defaults and spark-env of emr_configurations.json, our code arriving by `--py-files s3://…`;
* S3 is moto's server over HTTP, read through Hadoop S3A with `s3://` mapped to it, so tables,
  checkpoints, quarantine, models and the report really live in object storage;
* the steps run with the credentials of an IAM user holding exactly the instance role's policy, as
  Terraform renders it (tests/terraform_eval.py evaluates iam.tf with `terraform console`), and
  moto enforces it on every S3 request.

What differs: the master is local[2] in client mode (`--deploy-mode cluster` needs YARN); S3A, not
EMRFS, makes the S3 calls (and deletes one key at a time: moto checks a bulk delete against the
bucket, S3 against each key); the Glue catalog is a Derby metastore (spark-hive-site's Glue factory
exists only on EMR), so the Glue IAM statements are not exercised; moto checks identity policies on
S3 actions and resources, but not policy conditions, bucket-policy allows or KMS (FACTS.md), so this
proves the policy is sufficient and that writes elsewhere are denied, not the encryption path; boto3
in a step (MLflow's artifact store) takes the instance role's credentials from the environment, not
from the instance metadata service; Delta's DynamoDB log store is left out of the steps (`twin_step`:
its jar is not served here), so they commit with Delta's default S3 log store.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from ecom_lakehouse.analyst_views import views
from ecom_lakehouse.ops import emr_ops as ops
from ecom_lakehouse.schemas import TABLES
from tests import terraform_eval
from tests.aws_twin import (
    BUCKETS,
    DATABASES,
    REGION,
    SPARK_HOME,
    assert_complete_lake,
    client,
    delta_row_count,
    enforce_iam,
    lake_world,
    make_databases,
    require_jars,
    serve_moto,
    spark_properties,
    without_log_store,
)

AWS_CLI_STANDIN = '''#!{python}
"""`aws s3 cp --recursive [--only-show-errors] s3://bucket/prefix/ DIR`, the one call the bootstrap makes."""
import sys, pathlib, boto3
args = [a for a in sys.argv[1:] if a not in ("--recursive", "--only-show-errors")]
if args[:2] != ["s3", "cp"] or "--recursive" not in sys.argv:
    sys.exit(f"aws stand-in: unsupported call {{sys.argv[1:]}}")
bucket, _, prefix = args[2][len("s3://"):].partition("/")
s3 = boto3.client("s3")
for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
    for obj in page.get("Contents", []):
        target = pathlib.Path(args[3]) / obj["Key"][len(prefix):]
        target.parent.mkdir(parents=True, exist_ok=True)
        s3.download_file(bucket, obj["Key"], str(target))
'''

pytestmark = [pytest.mark.twin,
              pytest.mark.skipif(not terraform_eval.available(), reason="terraform is not installed: the twin "
                                 "renders the instance role's policy with `terraform console`")]


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory):
    yield from serve_moto(tmp_path_factory.mktemp("moto"))


def node_environment(node_python: Path) -> dict[str, str]:
    """spark-env's exports, with the cluster's Python path mapped to the twin node's."""
    spark_env = ops.classification("spark-env")
    exports = next(c for c in spark_env["Configurations"] if c["Classification"] == "export")["Properties"]
    cluster_python = ops.cluster_spec()["python"]
    ours = ("AWS_", "PYSPARK", "SPARK", "ECOM_", "MLFLOW_", "VIRTUAL_ENV")
    env = {k: v for k, v in os.environ.items() if not k.startswith(ours)}
    env.update({k: str(node_python) if v == cluster_python else v for k, v in exports.items()})
    env.update({"SPARK_HOME": str(SPARK_HOME), "PYTHONPATH": "", "ECOM_DEBUG": "1"})  # a failing step shows its traceback
    return env


def twin_step(args: list[str], target) -> list[str]:
    """A step's spark-submit arguments after `spark-submit --deploy-mode cluster`, less Delta's DynamoDB log store."""
    assert args[:3] == ["spark-submit", "--deploy-mode", "cluster"]
    return without_log_store(args[3:], target)


@pytest.fixture(scope="module")
def emr_run(s3_endpoint, tmp_path_factory):
    require_jars()
    work = tmp_path_factory.mktemp("emr-twin")
    world = lake_world(s3_endpoint, work, "emr-instance")
    target, artifacts, creds = world.target, world.artifacts, world.credentials
    enforce_iam(s3_endpoint)

    node = work / "node"
    # A Python without pip: the bootstrap must bring its own (the wheelhouse's pip wheel).
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(node)], check=True)
    node_python = node / "bin" / "python"
    shims = work / "bin"
    shims.mkdir()
    (shims / "aws").write_text(AWS_CLI_STANDIN.format(python=sys.executable))
    (shims / "sudo").write_text('#!/bin/sh\nexec "$@"\n')
    for shim in shims.iterdir():
        shim.chmod(0o755)
    env = node_environment(node_python)
    aws_env = {"AWS_ACCESS_KEY_ID": creds[0], "AWS_SECRET_ACCESS_KEY": creds[1], "AWS_DEFAULT_REGION": REGION,
               "AWS_ENDPOINT_URL": s3_endpoint}
    instance_s3 = client("s3", s3_endpoint, *creds)
    bootstrap = work / "install_ecom_lakehouse.sh"
    bucket, _, bootstrap_key = artifacts.bootstrap_uri[len("s3://"):].partition("/")
    instance_s3.download_file(bucket, bootstrap_key, str(bootstrap))
    started = time.time()
    # The arguments Terraform and run-transient give the bootstrap, the cluster's Python mapped to the node's.
    done = subprocess.run(["bash", str(bootstrap), artifacts.wheelhouse_uri, str(node_python)],
                          env={**env, **aws_env, "PATH": f"{shims}:{node / 'bin'}:{env['PATH']}"},
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    timings = {"bootstrap": time.time() - started}
    print(f"[emr twin] bootstrap: {timings['bootstrap']:.0f}s", flush=True)

    # What boto3 on a node (MLflow's S3 artifact store) finds: the instance profile's credentials, from
    # the instance metadata service on EMR, from the environment here; S3 is the twin's endpoint.
    env = {**env, **aws_env}
    properties = work / "spark-defaults.conf"
    properties.write_text("".join(f"{k} {v}\n" for k, v in spark_properties(s3_endpoint, *creds, work).items()))
    submit = [str(SPARK_HOME / "bin" / "spark-submit"), "--properties-file", str(properties)]

    make_databases(submit, env, work)

    outputs = {}
    for step in ops.steps_for(target, artifacts):  # what `emr submit` adds by default
        name, args = step["Name"], step["HadoopJarStep"]["Args"]
        started = time.time()
        done = subprocess.run([*submit, *twin_step(args, target)], env=env, cwd=work, capture_output=True, text=True)
        timings[name] = time.time() - started
        print(f"[emr twin] {name}: {timings[name]:.0f}s", flush=True)
        assert done.returncode == 0, f"step {name} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
        outputs[name.split()[-1]] = done.stdout
    print("EMR twin timings (s):", {k: round(v, 1) for k, v in timings.items()})
    return {"s3": instance_s3, "generated": world.generated, "outputs": outputs, "submit": submit, "env": env, "work": work,
            "target": target, "artifacts": artifacts}


def test_every_step_runs_on_s3_under_the_instance_role_and_leaves_the_lake_complete(emr_run):
    assert_complete_lake(emr_run["s3"], emr_run["generated"])
    assert list(emr_run["outputs"]) == ["run", "maintain"]
    assert "tables compacted" in emr_run["outputs"]["maintain"]
    assert f"registered {DATABASES['gold']}.category_performance" in emr_run["outputs"]["run"]


def test_registered_tables_read_by_name_like_athena_would(emr_run):
    """Gold read by name from its database, as an analyst would; and personal data stops at silver: no
    column of any table registered in the gold database holds it (silver users does, so the check sees)."""
    from ecom_lakehouse.silver import PII_COLUMNS

    query = emr_run["work"] / "query.py"
    named = emr_run["work"] / "named_queries.json"  # Athena's named queries, as Terraform creates them
    named.write_text(json.dumps(terraform_eval.named_queries()))
    query.write_text(
        "import json\nfrom pyspark.sql import SparkSession\nspark = SparkSession.builder.getOrCreate()\n"
        f"print('ROWS', spark.table('{DATABASES['gold']}.category_performance').count())\n"
        "print('COLUMNS', json.dumps({f'{db}.{t.name}': spark.table(f'{db}.{t.name}').columns\n"
        f"    for db in ('{DATABASES['silver']}', '{DATABASES['gold']}') for t in spark.catalog.listTables(db)}}))\n"
        # each named query in the gold database, as the workgroup runs it with the query's database set
        f"spark.sql('USE {DATABASES['gold']}')\n"
        f"print('NAMED', json.dumps({{n: spark.sql(q).count() for n, q in json.load(open('{named}')).items()}}))\n")
    done = subprocess.run([*emr_run["submit"], str(query)], env=emr_run["env"], cwd=emr_run["work"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = int(done.stdout.split("ROWS ")[1].split()[0])
    assert rows == delta_row_count(emr_run["s3"], BUCKETS["lake"], "gold/category_performance")
    columns = json.loads(done.stdout.split("COLUMNS ")[1].splitlines()[0])
    assert {f"{DATABASES['silver']}.{t}" for t in TABLES} <= set(columns)
    assert set(PII_COLUMNS) <= set(columns[f"{DATABASES['silver']}.users"])
    gold_tables = {name: cols for name, cols in columns.items() if name.startswith(f"{DATABASES['gold']}.")}
    assert f"{DATABASES['gold']}.served_recommendations" in gold_tables
    assert {name: set(PII_COLUMNS) & set(cols) for name, cols in gold_tables.items() if set(PII_COLUMNS) & set(cols)} == {}
    # every named query ran in Spark SQL against the registered gold tables, and found rows where its table has them
    found = json.loads(done.stdout.split("NAMED ")[1].splitlines()[0])
    assert set(found) == set(views())
    for name, view in views().items():
        assert (found[name] > 0) == (delta_row_count(emr_run["s3"], BUCKETS["lake"], f"gold/{view.table}") > 0), name


def test_the_instance_role_cannot_write_outside_the_lake_prefixes(emr_run):
    s3 = emr_run["s3"]
    for bucket, key in ((BUCKETS["lake"], "elsewhere/x"), (BUCKETS["lake"], "bronzeish/x"),
                        (BUCKETS["raw"], "orders.csv"), (BUCKETS["artifacts"], "builds/x")):
        with pytest.raises(ClientError) as denied:
            s3.put_object(Bucket=bucket, Key=key, Body=b"x")
        assert denied.value.response["Error"]["Code"] == "AccessDenied", (bucket, key)
    s3.put_object(Bucket=BUCKETS["lake"], Key="reports/probe.txt", Body=b"x")  # the same client may write the lake
    s3.delete_object(Bucket=BUCKETS["lake"], Key="reports/probe.txt")


def test_a_denied_s3_write_fails_the_step_in_one_line_naming_the_cause(emr_run):
    """What a user sees when the role may not write where a step writes: Spark's own line ("An error
    occurred while calling oNN...") names no cause; the one line must carry S3's AccessDenied from the
    end of the Java exception chain. The step as submitted, with a lake the instance role cannot write
    (the artifacts bucket), and without ECOM_DEBUG, as on a cluster."""
    import dataclasses

    elsewhere = dataclasses.replace(emr_run["target"], lake_bucket=BUCKETS["artifacts"])
    args = ops.step_arguments(elsewhere, emr_run["artifacts"], "bronze")  # `emr submit --stages bronze`
    env = {k: v for k, v in emr_run["env"].items() if k != "ECOM_DEBUG"}
    # spark-submit's Python runner merges the driver's stderr into its stdout: the step log a user opens
    done = subprocess.run([*emr_run["submit"], *twin_step(args, elsewhere)], env=env, cwd=emr_run["work"],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert done.returncode != 0
    marker = "ecom-lakehouse: error:"  # the JVM's log lines share the pipe: a line may start mid-way
    ours = [line[line.index(marker):] for line in done.stdout.splitlines() if marker in line]
    assert len(ours) == 1 and "Traceback" not in done.stdout, done.stdout[-3000:]
    assert "AccessDenied" in ours[0] and "check its S3 policy" in ours[0], ours[0]
    assert "An error occurred while calling" not in ours[0]
