"""The EMR twin: every step of `ecom-lakehouse emr submit`, run the way an EMR node runs it, on S3.

What is the same as on EMR:
* the artifacts are the ones `emr deploy-artifacts` uploads (this build under builds/<sha>/, the
  wheelhouse, the bootstrap script), sent by that code to S3;
* a node: a fresh Python 3.11 (the cluster's PYSPARK_PYTHON) holding nothing, not even pip, with Spark 3.5.6 (EMR
  7.12's) on the side and Delta's jars on the class path as delta-defaults puts them; the bootstrap
  script, fetched from S3, installs the wheelhouse into it with `pip --no-index` (the `aws` command it
  calls is a small stand-in that copies from the same S3 endpoint with boto3, `sudo` runs the command);
* each step is the exact argument list `emr_ops.stage_arguments` builds (not retyped), with the
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
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import boto3
import pyspark
import pytest
import yaml
from botocore.exceptions import ClientError

from ecom_lakehouse import gold
from ecom_lakehouse.generator import GeneratorOptions, generate
from ecom_lakehouse.ops import emr_ops as ops
from ecom_lakehouse.schemas import TABLES
from ecom_lakehouse.session import _local_delta_jars
from tests import terraform_eval

ROOT = Path(__file__).resolve().parents[1]
SPARK_HOME = Path(pyspark.__file__).parent
M2 = Path(os.environ.get("M2_REPO", Path.home() / ".m2" / "repository"))
S3A_JARS = [M2 / "org/apache/hadoop/hadoop-aws/3.3.4/hadoop-aws-3.3.4.jar",
            M2 / "com/amazonaws/aws-java-sdk-bundle/1.12.262/aws-java-sdk-bundle-1.12.262.jar"]
BUCKETS = {"raw": "twin-raw", "lake": "twin-lake", "artifacts": "twin-artifacts", "logs": "twin-logs"}
ACCOUNT, REGION = "123456789012", "us-east-1"
DATABASES = {"silver": "twin_silver", "gold": "twin_gold"}
# moto verifies signatures with botocore, which leaves user-agent out; the AWS Java SDK signs it.
MOTO_SERVER = ("import sys, botocore.auth; botocore.auth.SIGNED_HEADERS_BLACKLIST.clear(); "
               "from moto.server import main; main(['-H', '127.0.0.1', '-p', sys.argv[1]])")
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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory):
    port = _free_port()
    log = (tmp_path_factory.mktemp("moto") / "server.log").open("w")
    server = subprocess.Popen([sys.executable, "-c", MOTO_SERVER, str(port)], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(f"{url}/moto-api/data.json", timeout=1)
            break
        except OSError:
            time.sleep(0.2)
    yield url
    server.terminate()
    server.wait(timeout=10)


def _client(service: str, endpoint: str, key: str = "testing", secret: str = "testing"):
    return boto3.client(service, endpoint_url=endpoint, region_name=REGION, aws_access_key_id=key,
                        aws_secret_access_key=secret)


def instance_policy() -> dict:
    """iam.tf's emr_instance policy document, rendered by Terraform for the twin's bucket names."""
    locals_ = terraform_eval.blocks("locals")
    arn = {k: f'"arn:aws:s3:::{v}"' for k, v in BUCKETS.items()}
    return terraform_eval.policy_document("emr_instance", {
        **{f'aws_s3_bucket.this["{k}"].arn': v for k, v in arn.items()},
        "local.lake_prefixes": terraform_eval.as_expression(locals_["lake_prefixes"]),
        "local.catalog_databases": "{" + ", ".join(f'{k} = "{v}"' for k, v in DATABASES.items()) + "}",
        "var.region": f'"{REGION}"', "data.aws_caller_identity.current.account_id": f'"{ACCOUNT}"',
        "aws_kms_key.lake.arn": f'"arn:aws:kms:{REGION}:{ACCOUNT}:key/twin"',
        "aws_dynamodb_table.delta_log.arn": f'"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/twin-delta-log"'})


def spark_properties(endpoint: str, key: str, secret: str, work: Path) -> dict[str, str]:
    """spark-defaults as EMR writes them from emr_configurations.json, plus what only the twin needs."""
    conf = next(c for c in ops.emr_configurations() if c["Classification"] == "spark-defaults")["Properties"]
    jars = [*_local_delta_jars(), *map(str, S3A_JARS)]
    twin = {
        "spark.master": "local[2]",
        "spark.driver.extraClassPath": ":".join(jars),  # EMR: /usr/share/aws/delta/lib, EMRFS
        "spark.hadoop.fs.s3.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",
        "spark.hadoop.fs.s3a.endpoint": endpoint,
        "spark.hadoop.fs.s3a.endpoint.region": REGION,
        "spark.hadoop.fs.s3a.path.style.access": "true",
        "spark.hadoop.fs.s3a.connection.ssl.enabled": "false",
        "spark.hadoop.fs.s3a.aws.credentials.provider": "org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider",
        # moto checks a multi-object delete against the bucket ARN, real S3 against each key (FACTS.md):
        # one DELETE per key keeps the check per key, as on S3.
        "spark.hadoop.fs.s3a.multiobjectdelete.enable": "false",
        "spark.hadoop.fs.s3a.access.key": key,  # EMR: the instance profile
        "spark.hadoop.fs.s3a.secret.key": secret,
        "spark.sql.warehouse.dir": str(work / "warehouse"),  # the Glue catalog's stand-in: Derby
        "spark.driver.extraJavaOptions": f"-Dderby.system.home={work} -Duser.timezone=UTC",
        # tiny data on 2 cores, as in the local session: few partitions for shuffles and Delta snapshots
        "spark.sql.shuffle.partitions": "2",
        "spark.databricks.delta.snapshotPartitions": "2",
        "spark.ui.enabled": "false",
    }
    return {**conf, **twin}


def node_environment(node_python: Path) -> dict[str, str]:
    """spark-env's exports, with the cluster's Python path mapped to the twin node's."""
    spark_env = next(c for c in ops.emr_configurations() if c["Classification"] == "spark-env")
    exports = next(c for c in spark_env["Configurations"] if c["Classification"] == "export")["Properties"]
    cluster_python = ops.cluster_spec()["python"]
    ours = ("AWS_", "PYSPARK", "SPARK", "ECOM_", "MLFLOW_", "VIRTUAL_ENV")
    env = {k: v for k, v in os.environ.items() if not k.startswith(ours)}
    env.update({k: str(node_python) if v == cluster_python else v for k, v in exports.items()})
    env.update({"SPARK_HOME": str(SPARK_HOME), "PYTHONPATH": "", "ECOM_DEBUG": "1"})  # a failing step shows its traceback
    return env


def twin_step(args: list[str], target) -> list[str]:
    """A step's spark-submit arguments after `spark-submit --deploy-mode cluster`, less Delta's DynamoDB
    log store: its jar (io.delta:delta-storage-s3-dynamodb), on EMR 7's class path, is not served by the
    package registry this machine reaches, so the twin's steps commit with Delta's default S3 log store."""
    assert args[:3] == ["spark-submit", "--deploy-mode", "cluster"]
    log_store, out, rest = set(ops.log_store_conf(target)), [], iter(args[3:])
    for arg in rest:
        value = next(rest) if arg == "--conf" else None
        if value in log_store:
            log_store.discard(value)
        else:
            out += [arg] if value is None else [arg, value]
    assert not log_store, f"the step lacks the log store settings {log_store}"
    return out


def delta_row_count(s3, bucket: str, table_prefix: str) -> int:
    """Rows of a Delta table's current version, replayed from its JSON log (numRecords of live files)."""
    live: dict[str, int] = {}
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{table_prefix}/_delta_log/")
    keys = sorted(o["Key"] for page in pages for o in page.get("Contents", []))
    assert not any(k.endswith(".checkpoint.parquet") for k in keys), "replay assumes no log checkpoint yet"
    for key in (k for k in keys if k.endswith(".json")):
        for line in s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode().splitlines():
            action = json.loads(line)
            if "add" in action:
                live[action["add"]["path"]] = json.loads(action["add"]["stats"])["numRecords"]
            elif "remove" in action:
                live.pop(action["remove"]["path"], None)
    return sum(live.values())


@pytest.fixture(scope="module")
def emr_run(s3_endpoint, tmp_path_factory):
    missing = [str(j) for j in S3A_JARS if not j.exists()]
    if missing or not _local_delta_jars():
        pytest.skip(f"jars missing from ~/.m2 ({missing or 'Delta'}): run `make install`")
    work = tmp_path_factory.mktemp("emr-twin")
    deployer_s3, iam = _client("s3", s3_endpoint), _client("iam", s3_endpoint)
    for bucket in BUCKETS.values():
        deployer_s3.create_bucket(Bucket=bucket)
    iam.create_user(UserName="emr-instance")
    iam.put_user_policy(UserName="emr-instance", PolicyName="lake-access", PolicyDocument=json.dumps(instance_policy()))
    key = iam.create_access_key(UserName="emr-instance")["AccessKey"]
    creds = (key["AccessKeyId"], key["SecretAccessKey"])

    target = ops.EmrTarget(raw_bucket=BUCKETS["raw"], lake_bucket=BUCKETS["lake"], artifacts_bucket=BUCKETS["artifacts"],
                           log_uri=f"s3://{BUCKETS['logs']}/emr/", silver_database=DATABASES["silver"],
                           gold_database=DATABASES["gold"], delta_log_table="twin-delta-log", region=REGION)
    raw = work / "raw"
    # Seed 11, as the Databricks twin: its buyers give a stable segmentation, so a model is written
    # to S3 (with seed 7 no k is stable and one segment is published without a model).
    generated = generate(str(raw), GeneratorOptions(scale=0.004, seed=11))
    ops.upload_raw(deployer_s3, target, str(raw), echo=lambda *_: None)
    wheel = ops.build_wheel(str(ROOT), str(work / "dist"))
    artifacts = ops.deploy_artifacts(deployer_s3, target, wheel, echo=lambda *_: None)  # the cached wheelhouse, as `submit`

    # From here on moto checks every request's signature and identity policy.
    urllib.request.urlopen(urllib.request.Request(f"{s3_endpoint}/moto-api/reset-auth", data=b"0", method="POST",
                                                  headers={"Content-Type": "text/plain"}))

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
    instance_s3 = _client("s3", s3_endpoint, *creds)
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

    # Terraform creates the Glue databases; here the catalog stand-in gets them the same way, before any step.
    make_databases = work / "make_databases.py"
    make_databases.write_text("from pyspark.sql import SparkSession\nspark = SparkSession.builder.getOrCreate()\n"
                              + "".join(f"spark.sql('CREATE DATABASE IF NOT EXISTS {d}')\n" for d in DATABASES.values()))
    done = subprocess.run([*submit, str(make_databases)], env=env, cwd=work, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]

    outputs = {}
    for stage in ops.STAGES:
        args = ops.stage_arguments(target, artifacts, stage)
        started = time.time()
        done = subprocess.run([*submit, *twin_step(args, target)], env=env, cwd=work, capture_output=True, text=True)
        timings[stage] = time.time() - started
        print(f"[emr twin] {stage}: {timings[stage]:.0f}s", flush=True)
        assert done.returncode == 0, f"step {stage} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
        outputs[stage] = done.stdout
    print("EMR twin timings (s):", {k: round(v, 1) for k, v in timings.items()})
    return {"s3": instance_s3, "generated": generated, "outputs": outputs, "submit": submit, "env": env, "work": work,
            "target": target, "artifacts": artifacts}


def test_every_step_runs_on_s3_under_the_instance_role_and_leaves_the_lake_complete(emr_run):
    s3, lake = emr_run["s3"], BUCKETS["lake"]
    for table in TABLES:
        bronze = delta_row_count(s3, lake, f"bronze/{table}")
        quarantined = s3.list_objects_v2(Bucket=lake, Prefix="bronze/_quarantine/_delta_log/").get("KeyCount", 0)
        assert quarantined > 0
        # Generated data is clean: every generated row is in bronze, nothing quarantined for it.
        assert bronze == emr_run["generated"][table], table
        assert 0 < delta_row_count(s3, lake, f"silver/{table}") <= bronze, table
    assert delta_row_count(s3, lake, "bronze/_quarantine") == 0
    for table in (*gold.OUTPUTS, "customer_segments", "segment_summary", "served_recommendations", "model_verdicts",
                  "recommender_evaluation"):
        # restock alerts may rightly be empty on a few hundred users' data; every other table may not
        assert delta_row_count(s3, lake, f"gold/{table}") >= (table != "inventory_restock_alerts"), table
    keys = {o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=lake) for o in page.get("Contents", [])}
    assert "reports/report.html" in keys
    for prefix in ("checkpoints/bronze/orders/", "models/segmentation/", "mlruns/"):
        assert any(k.startswith(prefix) for k in keys), prefix
    # The MLflow store on S3: every artifact its runs and model versions point to is on S3, not on the
    # driver's disk, which is gone with the cluster.
    metas = [yaml.safe_load(s3.get_object(Bucket=lake, Key=k)["Body"].read()) for k in keys
             if k.startswith("mlruns/") and k.endswith("meta.yaml")]
    uris = [m["artifact_uri"] for m in metas if "artifact_uri" in m] + [m["source"] for m in metas if "source" in m]
    assert len(uris) >= 3, metas  # two runs, one registered segmentation model at least
    for uri in uris:
        assert uri.startswith(f"s3://{lake}/models/mlflow/"), uri
    for source in (m["source"] for m in metas if "source" in m):
        assert f"{source[len(f's3://{lake}/'):]}/MLmodel" in keys, source
    allowed = set(terraform_eval.evaluate(terraform_eval.as_expression(terraform_eval.blocks("locals")["lake_prefixes"])))
    assert {k.split("/")[0] for k in keys} <= allowed
    assert "tables compacted" in emr_run["outputs"]["maintain"]
    assert f"registered {DATABASES['gold']}.category_performance" in emr_run["outputs"]["gold"]


def test_registered_tables_read_by_name_like_athena_would(emr_run):
    query = emr_run["work"] / "query.py"
    query.write_text("from pyspark.sql import SparkSession\nspark = SparkSession.builder.getOrCreate()\n"
                     f"print('ROWS', spark.table('{DATABASES['gold']}.category_performance').count())\n"
                     f"print('TABLES', sorted(t.name for t in spark.catalog.listTables('{DATABASES['silver']}')))\n")
    done = subprocess.run([*emr_run["submit"], str(query)], env=emr_run["env"], cwd=emr_run["work"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = int(done.stdout.split("ROWS ")[1].split()[0])
    assert rows == delta_row_count(emr_run["s3"], BUCKETS["lake"], "gold/category_performance")
    assert all(f"'{t}'" in done.stdout for t in TABLES)  # personal data stays in the silver database


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
    args = ops.stage_arguments(elsewhere, emr_run["artifacts"], "bronze")
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
