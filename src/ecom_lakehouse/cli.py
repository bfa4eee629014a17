"""`ecom-lakehouse <command> [--env local|databricks|emr] [--raw PATH] [--lakehouse PATH] ...`

Every stage is its own command so that Databricks tasks and EMR steps can call them one
by one; `run` runs them all. Errors the user can fix end with one line on stderr and exit
code 2; a reconciliation that finds rows missing or doubled exits 1, and so does a model check
that stops publication (leakage); nothing is written when a file is rejected. Any other failure also
ends in one line (a JVM failure's root cause, else the exception's first line) and exit 1; set
ECOM_DEBUG=1 to see the traceback. `entry` is the console script: it exits with the code, because
a Databricks python_wheel_task ignores a returned one.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

from ecom_lakehouse import __version__
from ecom_lakehouse.config import DEFAULTS, ENVIRONMENTS, ConfigError, Lakehouse
from ecom_lakehouse.files import InputFileError
from ecom_lakehouse.lock import LakehouseBusy, exclusive
from ecom_lakehouse.ml import ModelCheckFailed
from ecom_lakehouse.reconcile import ReconciliationError
from ecom_lakehouse.schemas import TABLES
from ecom_lakehouse.summary import print_reconciliation

STAGES = ("bronze", "silver", "gold", "segment", "recommend", "report")
# What the scheduled platforms run (Databricks job tasks, EMR steps): the pipeline, then maintenance.
STEP_STAGES = (*STAGES, "maintain")
SERVERLESS_COMMANDS = ("run", *STEP_STAGES)
RUN_SCALE = 0.1


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--env", choices=ENVIRONMENTS, default="local",
                   help="where this runs: local Spark + Delta on disk (default), a Databricks job "
                        "(Unity Catalog tables), or an EMR step (Delta on S3)")
    p.add_argument("--raw", default=DEFAULTS["raw"],
                   help="folder with <table>.csv or <table>/*.csv for the 7 tables: a local path, "
                        "s3://bucket/raw or /Volumes/<catalog>/<schema>/<volume>/raw (default: %(default)s)")
    p.add_argument("--lakehouse", default=DEFAULTS["lakehouse"],
                   help="root of the Delta tables (<root>/<layer>/<table>), checkpoints and models; "
                        "s3://bucket on EMR, a volume path on Databricks (default: %(default)s)")
    p.add_argument("--catalog", help="Unity Catalog catalog (only with --env databricks)")
    p.add_argument("--schema", help="Databricks: Unity Catalog schema of the bronze_ and silver_ tables; "
                                    "EMR: Glue database to register the silver tables in (with --gold-schema)")
    p.add_argument("--gold-schema", help="Databricks: Unity Catalog schema of the gold tables, the one analysts may "
                                         "read (default: <schema>_gold); EMR: Glue database to register the gold "
                                         "tables in, for Athena")
    p.add_argument("--experiment",
                   help="Databricks: the MLflow experiment (a workspace path) that segment and recommend log to; the "
                        "bundle declares it and passes its name (elsewhere runs go to <lakehouse>/mlruns)")
    p.add_argument("--registered-model",
                   help="Databricks: the Unity Catalog model (catalog.schema.name) that segment or recommend "
                        "registers its model under; the bundle declares it and passes its name (default elsewhere: "
                        "customer_segmentation, product_recommender_als)")
    p.add_argument("--tables", nargs="+", choices=TABLES, default=list(TABLES), metavar="TABLE",
                   help="bronze only: ingest these tables (default: all 7)")


def _add_generator_options(p: argparse.ArgumentParser, scale_default: float) -> None:
    p.add_argument("--scale", type=float, default=scale_default,
                   help="1.0 = the real dataset's size (100k users, ~2.4M events); default %(default)s")
    p.add_argument("--seed", type=int, default=42, help="random seed; same seed, same bytes (default %(default)s)")
    p.add_argument("--taste", action="store_true",
                   help="plant user taste (category/brand affinity, popularity skew) so a recommender has "
                        "signal to find; the faithful default has none beyond gender")


def _add_data_mode(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-mode", choices=("faithful", "taste"), default=None,
                   help="what the data is, for the recommender's checks: 'faithful' (no signal beyond gender: "
                        "ALS hitting more often than chance is leakage, and the run stops without publishing) or "
                        "'taste' (generated with --taste: no leakage check). Either way ALS serves only if it beats "
                        "the best baseline, else that baseline serves. Default: taste if --taste was given, else "
                        "faithful")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ecom-lakehouse",
        description="thelook e-commerce lakehouse on Spark + Delta Lake: raw CSV -> bronze -> silver -> gold.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")

    gen = sub.add_parser("generate", help="write realistic thelook CSVs (the real export format)",
                         description="Write the 7 thelook tables as CSV in the real BigQuery export format.")
    gen.add_argument("--out", default=DEFAULTS["raw"], help="output folder; writes <out>/<table>.csv (default: %(default)s)")
    _add_generator_options(gen, 0.1)

    helps = {
        "bronze": "ingest new raw CSV files into Delta bronze tables (exactly once; bad rows quarantined)",
        "silver": "type, deduplicate (MERGE, latest wins), conform and check rules into silver",
        "gold": "build the feature and insight tables from silver",
        "segment": "K-means customer segments from gold customer_features (k chosen by silhouette, stable seeds)",
        "recommend": "ALS product recommendations, evaluated against baselines on a time split; every user gets 10 "
                     "(gold served_recommendations) from the strategy that won",
        "report": "write an HTML report with charts (and the PNGs) from the gold tables",
        "maintain": "compact small files (OPTIMIZE) and remove files no version of the last --retain-hours needs "
                    "(VACUUM, skipped where no file is that old), in every table; scheduled after the pipeline on "
                    "Databricks and EMR",
    }
    for stage, text in helps.items():
        stage_parser = sub.add_parser(stage, help=text, description=text)
        _add_common(stage_parser)
        if stage == "recommend":
            _add_data_mode(stage_parser)
        if stage == "maintain":
            stage_parser.add_argument("--retain-hours", type=int, default=168,
                                      help="keep files any version of this many hours needs; at least 168 "
                                           "(7 days, Delta's safety floor) (default %(default)s)")
        if stage == "bronze":
            stage_parser.add_argument(
                "--reset", nargs="+", choices=TABLES, default=[], metavar="TABLE",
                help="re-ingest these tables from all their raw files: removes the table's streaming checkpoint, "
                     "its bronze rows, quarantined rows and file log first (silver then MERGEs the re-read rows, "
                     "so nothing doubles). Use after a raw file was rewritten in place")

    run = sub.add_parser("run", help="the whole pipeline; generates sample data first if --raw is empty",
                         description="Run bronze -> silver -> gold -> segment -> recommend -> report and print "
                                     "a summary. Locally, when the raw folder holds no CSVs, first generates "
                                     "sample data there.")
    _add_common(run)
    _add_generator_options(run, RUN_SCALE)
    _add_data_mode(run)
    _add_databricks_commands(sub)
    _add_emr_commands(sub)
    return parser


def _add_emr_commands(sub) -> None:
    emr = sub.add_parser("emr", help="run the pipeline on AWS EMR: ship code and data, submit steps",
                         description="EMR operations with boto3. Names come from `terraform output -json` in "
                                     "--terraform-dir, or from the options. AWS credentials come from the usual "
                                     "chain (AWS_PROFILE, SSO, instance role).")
    emr.add_argument("--terraform-dir", help="read bucket names, cluster id, roles, security groups and Glue "
                                             "databases from this Terraform folder's outputs")
    emr.add_argument("--region", help="AWS region (default: the AWS profile's)")
    for name in ("raw-bucket", "lake-bucket", "artifacts-bucket"):
        emr.add_argument(f"--{name}", help=f"S3 bucket name (Terraform output {name.replace('-', '_')})")
    emr.add_argument("--log-uri", help="EMR log URI, s3://<logs>/emr/ (Terraform output log_uri)")
    ops = emr.add_subparsers(dest="operation", required=True, metavar="operation")
    house = ops.add_parser("build-wheelhouse", help="the wheels the cluster's Python needs, downloaded once per "
                                                     "requirements file into ~/.cache/ecom_lakehouse (no AWS calls); "
                                                     "Terraform uploads this folder for the bootstrap")
    house.add_argument("--out", default="dist/wheelhouse", help="folder to fill (default %(default)s)")
    wheel_help = "an already built wheel (default: build one into dist/)"
    deploy = ops.add_parser("deploy-artifacts", help="upload this build (wheel, step entry), the wheelhouse and the "
                                                      "bootstrap script; submit and run-transient do this themselves")
    deploy.add_argument("--wheel", help=wheel_help)
    up = ops.add_parser("upload-raw", help="upload <DIR>/<table>.csv to the raw bucket (multipart, skips unchanged)")
    up.add_argument("dir", help="local folder holding the 7 <table>.csv files")
    submit = ops.add_parser("submit", help="upload this build and add one spark-submit step per stage to the running cluster")
    submit.add_argument("--cluster-id", help="j-… (Terraform output cluster_id)")
    submit.add_argument("--wheel", help=wheel_help)
    submit.add_argument("--stages", nargs="+", choices=STEP_STAGES, default=list(STEP_STAGES), metavar="STAGE",
                        help=f"stages to run, in order (default: all of {', '.join(STEP_STAGES)})")
    submit.add_argument("--wait", action="store_true", help="wait for every step; exit 1 naming the failure and its logs")
    env = ops.add_parser("build-environment", help="the Python 3.11 environment EMR Serverless jobs run on (the "
                                                   "wheelhouse installed, packed as one tar.gz), built once per "
                                                   "requirements file into ~/.cache/ecom_lakehouse (no AWS calls)")
    env.add_argument("--out", default="dist", help="folder to copy the archive to (default %(default)s)")
    serverless = ops.add_parser(
        "serverless-submit", help="upload this build and its Python environment; run the pipeline as EMR Serverless "
                                  "job runs (no cluster): one job run per command, in order")
    serverless.add_argument("--application-id", help="EMR Serverless application (Terraform output serverless_application_id)")
    serverless.add_argument("--job-role-arn", help="the job runtime role (Terraform output serverless_job_role_arn)")
    serverless.add_argument("--wheel", help=wheel_help)
    serverless.add_argument("--commands", nargs="+", choices=SERVERLESS_COMMANDS, default=["run"], metavar="COMMAND",
                            help="what each job run does, in order: `run` (the default) is the whole pipeline in one "
                                 "job, one driver start-up; a stage name runs that stage alone (e.g. `maintain`, weekly)")
    serverless.add_argument("--no-wait", action="store_true", help="start the job runs and return (default: wait for "
                                                                   "each, exit 1 naming the failure and its driver log)")
    transient = ops.add_parser("run-transient", help="upload this build; start a cluster that runs the steps and terminates")
    transient.add_argument("--instance-type", default="m5.xlarge", help="primary and core node type (default %(default)s)")
    transient.add_argument("--core-count", type=int, default=2, help="core nodes (default %(default)s)")
    transient.add_argument("--wheel", help=wheel_help)


def _emr_target(args):
    from ecom_lakehouse.ops import emr_ops as ops

    outputs = ops.terraform_outputs(args.terraform_dir) if args.terraform_dir else {}
    pick = lambda opt, key: getattr(args, opt, None) or outputs.get(key)  # noqa: E731
    return ops.EmrTarget(
        raw_bucket=pick("raw_bucket", "raw_bucket"), lake_bucket=pick("lake_bucket", "lake_bucket"),
        artifacts_bucket=pick("artifacts_bucket", "artifacts_bucket"), log_uri=pick("log_uri", "log_uri") or "",
        cluster_id=pick("cluster_id", "cluster_id"), release_label=outputs.get("release_label", "emr-7.12.0"),
        service_role=outputs.get("service_role"), instance_profile=outputs.get("instance_profile"),
        subnet_id=outputs.get("subnet_id"), security_configuration=outputs.get("security_configuration"),
        primary_security_group=outputs.get("primary_security_group"),
        core_security_group=outputs.get("core_security_group"),
        service_access_security_group=outputs.get("service_access_security_group"),
        silver_database=outputs.get("silver_database"), gold_database=outputs.get("gold_database"),
        delta_log_table=outputs.get("delta_log_table"), region=outputs.get("region"), kms_key_arn=outputs.get("kms_key_arn"),
        serverless_application_id=pick("application_id", "serverless_application_id"),
        serverless_job_role=pick("job_role_arn", "serverless_job_role_arn"))


def _aws_error(err: Exception) -> str:
    """boto3's errors as one line saying what to do."""
    from botocore.exceptions import ClientError, NoCredentialsError, NoRegionError

    if isinstance(err, NoCredentialsError):
        return "no AWS credentials found: set AWS_PROFILE (after `aws sso login`) or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
    if isinstance(err, NoRegionError):
        return "no AWS region: pass --region or set AWS_DEFAULT_REGION"
    if isinstance(err, ClientError):
        error = err.response.get("Error", {})
        return (f"AWS refused {err.operation_name}: {error.get('Code', '?')}: {error.get('Message', '')} "
                "(check the names from --terraform-dir and that your credentials may do this)")
    return f"AWS call failed: {_one_line(err)}"


def _emr(args) -> int:
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    from ecom_lakehouse.ops import emr_ops as ops
    from ecom_lakehouse.ops import emr_serverless

    try:
        if args.operation == "build-wheelhouse":
            out = shutil.copytree(ops.cached_wheelhouse(), args.out, dirs_exist_ok=True)
            print(f"wheelhouse for {ops.cluster_spec()['python']}: {out}")
            return 0
        if args.operation == "build-environment":
            Path(args.out).mkdir(parents=True, exist_ok=True)
            out = shutil.copy(emr_serverless.cached_environment_archive(), args.out)
            print(f"EMR Serverless environment for {ops.cluster_spec()['python']}: {out}")
            return 0
        target = _emr_target(args)
        session = boto3.session.Session(region_name=args.region)
        s3, emr = session.client("s3"), session.client("emr")
        if args.operation == "upload-raw":
            ops.upload_raw(s3, target, args.dir)
            return 0
        if args.operation == "submit" and not target.cluster_id:
            raise ops.OperationFailed("no cluster: pass --cluster-id or --terraform-dir")
        if args.operation == "serverless-submit":
            emr_serverless.require_application(target)
        wheel = Path(args.wheel) if args.wheel else ops.build_wheel(".", "dist")
        artifacts = ops.deploy_artifacts(s3, target, wheel)
        if args.operation == "deploy-artifacts":
            for name, uri in vars(artifacts).items():
                print(f"{name:<15} {uri}")
        elif args.operation == "serverless-submit":
            environment = emr_serverless.deploy_environment(s3, target)
            emr_serverless.run_jobs(session.client("emr-serverless"), target, artifacts, environment, args.commands,
                                    wait=not args.no_wait)
        elif args.operation == "submit":
            step_ids = ops.add_steps(emr, target.cluster_id, target, artifacts, args.stages)
            print(f"added steps {', '.join(step_ids)} to {target.cluster_id} running build {artifacts.wheel_uri}")
            if args.wait:
                ops.wait_for_steps(emr, target.cluster_id, step_ids, target)
        else:
            cluster = ops.run_transient(emr, target, artifacts, args.instance_type, args.core_count)
            print(f"started transient cluster {cluster}; it terminates after the steps")
    except ops.OperationFailed as err:
        print(f"ecom-lakehouse emr: {err}", file=sys.stderr)
        return 1
    except (BotoCoreError, ClientError) as err:
        print(f"ecom-lakehouse emr: {_aws_error(err)}", file=sys.stderr)
        return 1
    return 0


def _add_databricks_commands(sub) -> None:
    dbx = sub.add_parser("databricks", help="operate the deployed bundle: upload data, run the job, read results",
                         description="Operations on a Databricks workspace through databricks-sdk. Authentication: "
                                     "DATABRICKS_HOST + DATABRICKS_TOKEN (or OAuth client id/secret) in the "
                                     "environment, or a ~/.databrickscfg profile.")
    dbx.add_argument("--profile", help="~/.databrickscfg profile to use (default: environment variables / DEFAULT)")
    ops = dbx.add_subparsers(dest="operation", required=True, metavar="operation")
    up = ops.add_parser("upload-raw", help="upload <DIR>/<table>.csv to <volume>/raw/ (skips unchanged files)")
    up.add_argument("dir", help="local folder holding the 7 <table>.csv files")
    up.add_argument("--volume", required=True, help="Unity Catalog volume path, /Volumes/<catalog>/<schema>/<volume>")
    run = ops.add_parser("run", help="start the pipeline job and follow it")
    run.add_argument("--wait", action="store_true", help="follow task states until the run ends; exit 1 on failure")
    run.add_argument("--job-name", default="ecom_lakehouse_pipeline",
                     help="job name as in resources/ (dev targets prefix it with [dev <user>]; default %(default)s)")
    res = ops.add_parser("results", help="print the key gold findings via a SQL warehouse")
    res.add_argument("--warehouse-id", required=True, help="SQL warehouse id (Compute > SQL warehouses)")
    res.add_argument("--catalog", default="main", help="Unity Catalog catalog (default %(default)s)")
    res.add_argument("--schema", default="ecom_lakehouse_gold",
                     help="Unity Catalog schema of the gold tables (the bundle's gold_schema; default %(default)s)")


def _databricks(args) -> int:
    from ecom_lakehouse.ops import databricks_ops as ops

    w = ops.client(args.profile)
    try:
        if args.operation == "upload-raw":
            ops.upload_raw(w, args.dir, args.volume)
        elif args.operation == "run":
            ops.run_job(w, args.job_name, wait=args.wait)
        else:
            ops.query_results(w, args.warehouse_id, args.catalog, args.schema)
    except ops.OperationFailed as err:
        print(f"ecom-lakehouse databricks: {err}", file=sys.stderr)
        return 1
    return 0


ML_STAGES = ("segment", "recommend")


def _lake(args) -> Lakehouse:
    if args.env == "databricks" and args.command in (*ML_STAGES, "run") and not args.experiment:
        raise ConfigError(f"{args.command} --env databricks needs --experiment: the workspace path of the MLflow "
                          "experiment (the bundle's job passes the one it declares)")
    if args.env == "databricks" and args.command in ML_STAGES and not args.registered_model:
        raise ConfigError(f"{args.command} --env databricks needs --registered-model: the Unity Catalog model "
                          "(catalog.schema.name) the bundle declares for it, which the job passes")
    if args.registered_model and args.command not in ML_STAGES:
        raise ConfigError("--registered-model names the model of one ML stage: give it to segment or recommend")
    return Lakehouse(env=args.env, raw=args.raw, root=args.lakehouse, catalog=args.catalog, schema=args.schema,
                     gold_schema=args.gold_schema, experiment=args.experiment, registered_model=args.registered_model)


def _generate(out: str, scale: float, seed: int, taste: bool) -> None:
    from ecom_lakehouse.generator import GeneratorOptions, generate

    started = time.time()
    print(f"generate: scale {scale}, seed {seed}{', taste' if taste else ''} -> {out}/<table>.csv")
    counts = generate(out, GeneratorOptions(scale=scale, seed=seed, taste=taste),
                      progress=lambda done, total: print(f"  users {done:,}/{total:,}", flush=True))
    for table, n in counts.items():
        print(f"  {table:<21} {n:>10,} rows")
    print(f"  {time.time() - started:.1f}s")


def _needs_sample_data(raw: str) -> bool:
    path = Path(raw)
    return not path.exists() or not any(path.glob("*.csv")) and not any(path.glob("*/*.csv"))


class MissingInputError(Exception):
    """A stage's input table does not exist yet."""


def stage_inputs(stage: str) -> list[tuple[str, str]]:
    """(layer, table) each stage reads; they must exist before it starts."""
    from ecom_lakehouse import gold

    return {
        "bronze": [],
        "silver": [("bronze", t) for t in TABLES],
        "gold": [("silver", t) for t in gold.INPUTS],
        "segment": [("gold", "customer_features")],
        "recommend": [("silver", t) for t in ("order_items", "users", "products")],
        "report": [("gold", t) for t in gold.OUTPUTS],
        "maintain": [],
    }[stage]


def require_inputs(spark, lake: Lakehouse, stage: str) -> None:
    for layer, name in stage_inputs(stage):
        table = lake.table(layer, name)
        if not table.exists(spark):
            producer = {"bronze": "bronze", "silver": "silver", "gold": "gold"}[layer]
            raise MissingInputError(f"{stage} needs the {layer} table {name} ({table}), which does not exist yet: "
                                    f"run `ecom-lakehouse {producer}` with the same --lakehouse first")


def run_stage(stage: str, spark, lake: Lakehouse, args) -> object:
    from ecom_lakehouse import bronze, gold, silver

    print(f"[{stage}]", flush=True)
    started = time.time()
    require_inputs(spark, lake, stage)
    if stage == "bronze":
        reset = tuple(getattr(args, "reset", ()))
        result = bronze.run(spark, lake, tuple(dict.fromkeys([*args.tables, *reset])), reset)
        if not print_reconciliation(result):
            raise ReconciliationError("bronze reconciliation failed: " + "; ".join(
                str(c) for r in result for c in r.checks if not c.ok))
    elif stage == "silver":
        result = silver.run(spark, lake)
    elif stage == "gold":
        result = gold.run(spark, lake)
    elif stage == "segment":
        from ecom_lakehouse.ml import segmentation
        result = segmentation.run(spark, lake)
    elif stage == "recommend":
        from ecom_lakehouse.ml import recommend
        mode = args.data_mode or ("taste" if getattr(args, "taste", False) else "faithful")
        result = recommend.run(spark, lake, data_mode=mode)
    elif stage == "report":
        result = _report(spark, lake)
    else:
        from ecom_lakehouse import maintain
        result = maintain.run(spark, lake, args.retain_hours)
    if stage in ("silver", "gold", "segment", "recommend"):
        for name in lake.register_tables(spark, "silver" if stage == "silver" else "gold"):
            print(f"  registered {name}")
    print(f"[{stage}] done in {time.time() - started:.1f}s", flush=True)
    return result


def _report(spark, lake: Lakehouse):
    import tempfile

    from ecom_lakehouse import files, report

    if lake.env == "local":
        return report.write_report(spark, lake, lake.reports_path())
    local = Path(tempfile.mkdtemp(prefix="ecom-report-"))
    report.write_report(spark, lake, str(local), echo=lambda *_: None)
    files.upload_folder(spark, local, lake.reports_path())
    print(f"  report: {lake.reports_path()}/report.html")
    return lake.reports_path()


def _run_commands(args) -> int:
    if args.command == "generate":
        _generate(args.out, args.scale, args.seed, args.taste)
        return 0
    if args.command == "databricks":
        return _databricks(args)
    if args.command == "emr":
        return _emr(args)
    lake = _lake(args)
    with exclusive(lake, args.command):
        if args.command == "run" and args.env == "local" and _needs_sample_data(args.raw):
            print(f"no CSVs under {args.raw}: generating sample data first")
            _generate(args.raw, args.scale, args.seed, args.taste)
        from ecom_lakehouse.session import get_spark

        spark = get_spark(args.env)
        stages = STAGES if args.command == "run" else (args.command,)
        started = time.time()
        for stage in stages:
            run_stage(stage, spark, lake, args)
        if args.command == "run":
            from ecom_lakehouse.summary import print_summary
            print_summary(spark, lake)
            print(f"pipeline finished in {time.time() - started:.1f}s; tables under {lake.root}; "
                  f"report at {lake.reports_path()}/report.html")
    return 0


def _one_line(err: BaseException) -> str:
    """The first line of an error; Spark's JVM errors carry pages of stack below it."""
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0].strip()


# What to do about the root causes a cluster's users meet most, by words in the cause.
# First match wins: Glue's Lake Formation refusal is an AccessDeniedException too, but S3's policy is not the cause.
ROOT_CAUSE_HINTS = (
    (("Lake Formation",), "Lake Formation governs the Glue databases: an admin must grant the role Spark runs as "
                          "CREATE_TABLE and ALTER on the silver and gold databases, and DATA_LOCATION_ACCESS on "
                          "s3://<lake>/silver/ and s3://<lake>/gold/"),
    (("AccessDenied", "Access Denied", "403"), "the role Spark runs as, the cluster's instance role or the "
                                               "serverless job role, may not do this on that path: check its S3 policy"),
    (("KMS", "kms:"), "the role Spark runs as may not use the bucket's KMS key: check the key policy and the role's "
                      "kms: actions"),
    (("FileNotFoundException", "NoSuchKey", "NoSuchBucket", "does not exist"),
     "the path does not exist: check the --raw/--lakehouse URI"),
)


def _java_root_cause(err: BaseException) -> str | None:
    """The last cause of a JVM error's chain, `java.Class: message` (first line); None for a Python error
    or a JVM that is gone. Py4J's own line ("An error occurred while calling o58.save.") names no cause."""
    java = getattr(err, "java_exception", None) or getattr(err, "_origin", None)  # Py4JJavaError, or pyspark's converted one
    try:
        while java is not None and java.getCause() is not None:
            java = java.getCause()
        if java is None:
            return None
        text = str(java.toString()).strip()
    except Exception:  # noqa: BLE001 - the JVM died with the error: the Python line is all there is
        return None
    if "Traceback (most recent call last)" in text:  # Python code called back from the JVM (a stream's foreachBatch) failed
        return [line for line in text.splitlines() if line.strip()][-1].strip()
    return text.splitlines()[0]


def _error_line(err: BaseException) -> str:
    """One line for an unexpected error: the JVM's root cause when there is one, and what to do about it."""
    root, first = _java_root_cause(err), _one_line(err)
    if root is None:
        return f"{type(err).__name__}: {first}"
    # Py4J's own line names no cause; a failed Python callback's line ends in the first line of its traceback
    uninformative = first.startswith("An error occurred while calling") or "Traceback (most recent call last)" in first
    line = root if root in first or uninformative else f"{first}: caused by {root}"
    hint = next((h for words, h in ROOT_CAUSE_HINTS if any(w in root for w in words)), None)
    return f"{line} ({hint})" if hint else line


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _run_commands(args)
    except (InputFileError, ConfigError, MissingInputError, LakehouseBusy) as err:
        print(f"ecom-lakehouse: error: {err}", file=sys.stderr)
        return 2
    except (ReconciliationError, ModelCheckFailed) as err:
        print(f"ecom-lakehouse: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("ecom-lakehouse: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - the last resort: one line, never a traceback
        if os.environ.get("ECOM_DEBUG"):
            raise
        print(f"ecom-lakehouse: error: {_error_line(err)} (set ECOM_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1


def entry() -> None:
    """The console script. Exits with main's code: Databricks' wheel-task launcher ignores return values."""
    sys.exit(main())


if __name__ == "__main__":
    entry()
