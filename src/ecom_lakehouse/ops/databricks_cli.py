"""`ecom-lakehouse databricks …`: the workspace operations' options and their run (databricks-sdk)."""
from __future__ import annotations

import sys


def add_commands(sub) -> None:
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
    res = ops.add_parser("results", help="print the analyst views over gold (the dashboard's datasets) via a SQL warehouse")
    res.add_argument("--warehouse-id", required=True, help="SQL warehouse id (Compute > SQL warehouses)")
    res.add_argument("--catalog", default="main", help="Unity Catalog catalog (default %(default)s)")
    res.add_argument("--schema", default="ecom_lakehouse_gold",
                     help="Unity Catalog schema of the gold tables (the bundle's gold_schema; default %(default)s)")


def run(args) -> int:
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
