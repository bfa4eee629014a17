"""`ecom-lakehouse emr …`: the EMR operations' options and their run (boto3), beside the code they drive."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

from ecom_lakehouse.errors import one_line
from ecom_lakehouse.stages import COMMANDS


def add_commands(sub) -> None:
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
    submit = ops.add_parser("submit", help="upload this build and add spark-submit steps to the running cluster: the "
                                            "pipeline as one step, then maintain")
    submit.add_argument("--cluster-id", help="j-… (Terraform output cluster_id)")
    submit.add_argument("--wheel", help=wheel_help)
    submit.add_argument("--stages", nargs="+", choices=COMMANDS, metavar="STAGE",
                        help=f"one step each, in order: `run` is the whole pipeline in one step (one driver start-up), "
                             f"a stage name runs that stage alone, e.g. to rerun it (choices: {', '.join(COMMANDS)}; "
                             "default: run, then maintain)")
    submit.add_argument("--wait", action="store_true", help="wait for every step; exit 1 naming the failure and its logs")
    env = ops.add_parser("build-environment", help="the Python 3.11 environment EMR Serverless jobs run on (the "
                                                   "wheelhouse installed, packed as one tar.gz), built once per "
                                                   "requirements file into ~/.cache/ecom_lakehouse (no AWS calls)")
    env.add_argument("--out", help="folder to copy the archive to (default: leave it in the cache and print its path)")
    serverless = ops.add_parser(
        "serverless-submit", help="upload this build and its Python environment; run the pipeline as EMR Serverless "
                                  "job runs (no cluster): one job run per command, in order")
    serverless.add_argument("--application-id", help="EMR Serverless application (Terraform output serverless_application_id)")
    serverless.add_argument("--job-role-arn", help="the job runtime role (Terraform output serverless_job_role_arn)")
    serverless.add_argument("--wheel", help=wheel_help)
    serverless.add_argument("--commands", nargs="+", choices=COMMANDS, default=["run"], metavar="COMMAND",
                            help="what each job run does, in order: `run` (the default) is the whole pipeline in one "
                                 "job, one driver start-up; a stage name runs that stage alone (e.g. `maintain`, weekly)")
    serverless.add_argument("--no-wait", action="store_true", help="start the job runs and return (default: wait for "
                                                                   "each, exit 1 naming the failure and its driver log)")
    transient = ops.add_parser("run-transient", help="upload this build; start a cluster that runs the steps and terminates")
    transient.add_argument("--instance-type", default="m5.xlarge", help="primary and core node type (default %(default)s)")
    transient.add_argument("--core-count", type=int, default=2, help="core nodes (default %(default)s)")
    transient.add_argument("--wheel", help=wheel_help)


def target_from(args):
    from ecom_lakehouse.ops import emr_ops
    outputs = emr_ops.terraform_outputs(args.terraform_dir) if args.terraform_dir else {}
    pick = lambda opt, key: getattr(args, opt, None) or outputs.get(key)  # noqa: E731
    return emr_ops.EmrTarget(
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


def aws_error(err: Exception) -> str:
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
    return f"AWS call failed: {one_line(err)}"


def run(args) -> int:
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
            out = emr_serverless.cached_environment_archive()
            if args.out:
                Path(args.out).mkdir(parents=True, exist_ok=True)
                out = shutil.copy(out, args.out)
            print(f"EMR Serverless environment for {ops.cluster_spec()['python']}: {out}")
            return 0
        target = target_from(args)
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
            step_ids = ops.add_steps(emr, target.cluster_id, target, artifacts, args.stages or ops.DEFAULT_STEPS)
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
        print(f"ecom-lakehouse emr: {aws_error(err)}", file=sys.stderr)
        return 1
    return 0
