"""What both EMR twins share: moto's server with IAM, the project's buckets, the role policy as Terraform
renders it, Spark's view of S3 through Hadoop S3A, and a lake read back from its Delta logs.

The cluster twin (test_emr_twin.py) plays steps; the serverless twin (test_emr_serverless_twin.py)
plays job runs. Each starts its own server, so the two worlds share nothing at run time.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import boto3
import pyspark
import pytest
import yaml

from ecom_lakehouse import gold
from ecom_lakehouse.contracts import CONTRACTS
from ecom_lakehouse.generator import GeneratorOptions, generate
from ecom_lakehouse.ops import emr_ops as ops
from ecom_lakehouse.schemas import TABLES
from ecom_lakehouse.session import SHORT_RUN_JIT_OPTIONS, _local_delta_jars
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_moto(log_dir: Path):
    """moto's server on a free port (a generator for a fixture: yields its URL, stops it after)."""
    port = free_port()
    log = (log_dir / "server.log").open("w")
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


def client(service: str, endpoint: str, key: str = "testing", secret: str = "testing"):
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
    conf = ops.classification("spark-defaults")["Properties"]
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
        # and the JIT options of a local session: not EMR's, they change how long compiling takes on small data,
        # not what code computes (session.SHORT_RUN_JIT_OPTIONS)
        "spark.driver.extraJavaOptions": f"-Dderby.system.home={work} -Duser.timezone=UTC {SHORT_RUN_JIT_OPTIONS}",
        # tiny data on 2 cores, as in the local session: few partitions for shuffles and Delta snapshots
        "spark.sql.shuffle.partitions": "2",
        "spark.databricks.delta.snapshotPartitions": "2",
        "spark.ui.enabled": "false",
    }
    return {**conf, **twin}



def delta_row_count(s3, bucket: str, table_prefix: str) -> int:
    """Rows of a Delta table's current version, replayed from its JSON log (numRecords of live files)."""
    live: dict[str, int] = {}
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{table_prefix}/_delta_log/")
    keys = sorted(o["Key"] for page in pages for o in page.get("Contents", []))
    assert keys, f"no Delta table at s3://{bucket}/{table_prefix}"  # a missing table is not an empty one
    assert not any(k.endswith(".checkpoint.parquet") for k in keys), "replay assumes no log checkpoint yet"
    for key in (k for k in keys if k.endswith(".json")):
        for line in s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode().splitlines():
            action = json.loads(line)
            if "add" in action:
                live[action["add"]["path"]] = json.loads(action["add"]["stats"])["numRecords"]
            elif "remove" in action:
                live.pop(action["remove"]["path"], None)
    return sum(live.values())



def enforce_iam(endpoint: str) -> None:
    """From here on moto checks every request's signature and identity policy."""
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset-auth", data=b"0", method="POST",
                                                  headers={"Content-Type": "text/plain"}))


def require_jars() -> None:
    missing = [str(j) for j in S3A_JARS if not j.exists()]
    if missing or not _local_delta_jars():
        pytest.skip(f"jars missing from ~/.m2 ({missing or 'Delta'}): run `make install`")


@dataclass(frozen=True)
class LakeWorld:
    """Buckets holding the raw data and this build, and a user acting as the role Spark runs as."""
    target: ops.EmrTarget
    artifacts: ops.Artifacts
    credentials: tuple[str, str]
    generated: dict[str, int]
    deployer_s3: object


def lake_world(endpoint: str, work: Path, role_user: str) -> LakeWorld:
    """What `terraform apply` and `ecom-lakehouse emr upload-raw` / `deploy-artifacts` leave: the buckets, a
    user holding exactly the role policy Terraform renders (the instance role's; the serverless job role
    gets the same document), the raw data and this build uploaded by the CLI's own code."""
    deployer_s3, iam = client("s3", endpoint), client("iam", endpoint)
    for bucket in BUCKETS.values():
        deployer_s3.create_bucket(Bucket=bucket)
    iam.create_user(UserName=role_user)
    iam.put_user_policy(UserName=role_user, PolicyName="lake-access", PolicyDocument=json.dumps(instance_policy()))
    key = iam.create_access_key(UserName=role_user)["AccessKey"]
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
    return LakeWorld(target, artifacts, (key["AccessKeyId"], key["SecretAccessKey"]), generated, deployer_s3)


def make_databases(submit: list[str], env: dict[str, str], work: Path) -> None:
    """Terraform creates the Glue databases; the catalog stand-in (Derby) gets them the same way, before any job."""
    script = work / "make_databases.py"
    script.write_text("from pyspark.sql import SparkSession\nspark = SparkSession.builder.getOrCreate()\n"
                      + "".join(f"spark.sql('CREATE DATABASE IF NOT EXISTS {d}')\n" for d in DATABASES.values()))
    done = subprocess.run([*submit, str(script)], env=env, cwd=work, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]


def without_log_store(args: list[str], target) -> list[str]:
    """spark-submit arguments less Delta's DynamoDB log store: its jar (io.delta:delta-storage-s3-dynamodb), on
    EMR 7's class path, is not served by the package registry this machine reaches, so the twins' jobs commit
    with Delta's default S3 log store. Fails if the arguments lack any of its settings."""
    log_store, out, rest = set(ops.log_store_conf(target)), [], iter(args)
    for arg in rest:
        value = next(rest) if arg == "--conf" else None
        if value in log_store:
            log_store.discard(value)
        else:
            out += [arg] if value is None else [arg, value]
    assert not log_store, f"the job lacks the log store settings {log_store}"
    return out


def assert_complete_lake(s3, generated: dict[str, int]) -> None:
    """Every table, the quarantine, checkpoints, models, the report and the MLflow store, read back from S3."""
    lake = BUCKETS["lake"]
    for table in TABLES:
        bronze = delta_row_count(s3, lake, f"bronze/{table}")
        # Generated data is clean: every generated row is in bronze, nothing quarantined for it.
        assert bronze == generated[table], table
        assert 0 < delta_row_count(s3, lake, f"silver/{table}") <= bronze, table
    assert delta_row_count(s3, lake, "bronze/_quarantine") == 0  # exists, and holds nothing
    assert set(gold.OUTPUTS) <= set(CONTRACTS)
    for table in CONTRACTS:  # every gold and ML output
        # each exists; restock alerts may rightly be empty on a few hundred users' data, no other table may
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
