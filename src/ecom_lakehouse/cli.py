"""`ecom-lakehouse <command> [--env local|databricks|emr] [--raw PATH] [--lakehouse PATH] ...`

Every stage is its own command so that Databricks tasks, EMR steps and EMR Serverless job runs can call
them one by one; `run` runs them all. What a stage reads, checks and registers is in stages.py; this
module parses arguments and turns outcomes into exit codes. Errors the user can fix end with one line on stderr and exit
code 2; a reconciliation that finds rows missing or doubled exits 1, and so do a model check
that stops publication (leakage) and an output that breaks its contract (contracts.py); nothing is
written when a file is rejected. Any other failure also
ends in one line (a JVM failure's root cause, else the exception's first line) and exit 1; set
ECOM_DEBUG=1 to see the traceback. `entry` is the console script: it exits with the code, because
a Databricks python_wheel_task ignores a returned one.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

from ecom_lakehouse import __version__, stages
from ecom_lakehouse.config import DEFAULTS, ENVIRONMENTS, ConfigError, Lakehouse
from ecom_lakehouse.contracts import ContractBroken
from ecom_lakehouse.errors import error_line
from ecom_lakehouse.files import InputFileError
from ecom_lakehouse.lock import LakehouseBusy, exclusive
from ecom_lakehouse.ml import ModelCheckFailed
from ecom_lakehouse.ml.ab import CONTROL_SERVES
from ecom_lakehouse.ml.baselines import SERVABLE_BASELINES
from ecom_lakehouse.ml.checks import AUTO, DATA_MODES
from ecom_lakehouse.ops import databricks_cli, emr_cli
from ecom_lakehouse.reconcile import ReconciliationError
from ecom_lakehouse.schemas import TABLES
from ecom_lakehouse.settings import described, setting

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
                        "signal to find; the faithful default has none beyond gender. The truth (each user's taste "
                        "group) is written to <out>/_truth/, which bronze does not read")
    p.add_argument("--taste-strength", type=_strength, default=None, metavar="S",
                   help="with taste (implies --taste): the share of order items drawn by the user's taste, between "
                        "0 (no signal beyond gender, as faithful data) and 1 (the default: the full taste); the rest "
                        "are drawn as faithful data draws them")


def _strength(value: str) -> float:
    try:
        strength = float(value)
    except ValueError:
        strength = math.nan
    if not 0 <= strength <= 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number between 0 and 1")
    return strength


def _add_data_mode(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-mode", choices=DATA_MODES, default=AUTO,
                   help="what the data is, for the recommender's leakage check: 'faithful' (no signal beyond gender, "
                        "as thelook documents its own: ALS hitting more often than chance is leakage), 'taste' (buyers "
                        "have tastes: ALS's test hit rate far above its validation rate is leakage) or 'auto' (the "
                        "default: the taste_signal check decides, from how often a buyer's purchases share a category)")
    p.add_argument("--default-strategy", choices=SERVABLE_BASELINES, default=stages.StageOptions.default_strategy,
                   help="what serves users with history unless another strategy is promoted: one that hit more "
                        "validation users than it and then beats it on the test period in an exact paired test, "
                        "Holm-corrected across the strategies tested (ALS must beat every baseline that way). "
                        "Default %(default)s")
    p.add_argument("--control-share", type=_share, default=stages.StageOptions.control_share,
                   help="the A/B hold-out's control arm: this share of the users, chosen by a stable hash of the user "
                        "id, gets what --control-serves says; `measure` compares its purchases with the others' "
                        "(default %(default)s)")
    p.add_argument("--control-serves", choices=CONTROL_SERVES, default=stages.StageOptions.control_serves,
                   help="what the control arm is shown: the default strategy's lists ('default': the experiment "
                        "measures the promoted strategy against the default) or 'nothing' (it measures showing "
                        "recommendations at all) (default %(default)s)")


def _share(text: str) -> float:
    value = float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a share between 0 and 1 (e.g. 0.1)")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ecom-lakehouse", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="thelook e-commerce lakehouse on Spark + Delta Lake: raw CSV -> bronze -> silver -> gold.",
        epilog="environment variables:\n" + described())
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
        "measure": "read the A/B hold-out: each arm's users who bought a product of a list shown (or, for a "
                   "control shown nothing, recorded) for them since its serving, the difference and an always-valid "
                   "sequential test, appended to gold ab_looks (safe to read after every run)",
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
                         description="Run bronze -> silver -> gold -> segment -> recommend -> measure -> report and print "
                                     "a summary. Locally, when the raw folder holds no CSVs, first generates "
                                     "sample data there.")
    _add_common(run)
    _add_generator_options(run, RUN_SCALE)
    _add_data_mode(run)
    databricks_cli.add_commands(sub)
    emr_cli.add_commands(sub)
    return parser


def _lake(args) -> Lakehouse:
    ml_stages = stages.ML_STAGES
    if args.env == "databricks" and args.command in (*ml_stages, "run") and not args.experiment:
        raise ConfigError(f"{args.command} --env databricks needs --experiment: the workspace path of the MLflow "
                          "experiment (the bundle's job passes the one it declares)")
    if args.env == "databricks" and args.command in ml_stages and not args.registered_model:
        raise ConfigError(f"{args.command} --env databricks needs --registered-model: the Unity Catalog model "
                          "(catalog.schema.name) the bundle declares for it, which the job passes")
    if args.registered_model and args.command not in ml_stages:
        raise ConfigError("--registered-model names the model of one ML stage: give it to segment or recommend")
    return Lakehouse(env=args.env, raw=args.raw, root=args.lakehouse, catalog=args.catalog, schema=args.schema,
                     gold_schema=args.gold_schema, experiment=args.experiment, registered_model=args.registered_model)


def _generate(out: str, scale: float, seed: int, taste: bool, strength: float | None) -> None:
    from ecom_lakehouse.generator import GeneratorOptions, generate

    started = time.time()
    taste = taste or strength is not None
    options = GeneratorOptions(scale=scale, seed=seed, taste=taste, taste_strength=1.0 if strength is None else strength)
    shown = f", taste (strength {options.taste_strength:g})" if taste else ""
    print(f"generate: scale {scale}, seed {seed}{shown} -> {out}/<table>.csv")
    counts = generate(out, options,
                      progress=lambda done, total: print(f"  users {done:,}/{total:,}", flush=True))
    for table, n in counts.items():
        print(f"  {table:<21} {n:>10,} rows")
    print(f"  {time.time() - started:.1f}s")


def _needs_sample_data(raw: str) -> bool:
    path = Path(raw)
    return not path.exists() or not any(path.glob("*.csv")) and not any(path.glob("*/*.csv"))


def _stage_options(args) -> stages.StageOptions:
    return stages.StageOptions(tables=tuple(getattr(args, "tables", TABLES)), reset=tuple(getattr(args, "reset", ())),
                               data_mode=getattr(args, "data_mode", AUTO),
                               default_strategy=getattr(args, "default_strategy", stages.StageOptions.default_strategy),
                               control_share=getattr(args, "control_share", stages.StageOptions.control_share),
                               control_serves=getattr(args, "control_serves", stages.StageOptions.control_serves),
                               retain_hours=getattr(args, "retain_hours", stages.StageOptions.retain_hours))


def _run_commands(args) -> int:
    if args.command == "generate":
        _generate(args.out, args.scale, args.seed, args.taste, args.taste_strength)
        return 0
    if args.command == "databricks":
        return databricks_cli.run(args)
    if args.command == "emr":
        return emr_cli.run(args)
    lake = _lake(args)
    with exclusive(lake, args.command):
        if args.command == "run" and args.env == "local" and _needs_sample_data(args.raw):
            print(f"no CSVs under {args.raw}: generating sample data first")
            _generate(args.raw, args.scale, args.seed, args.taste, args.taste_strength)
        from ecom_lakehouse.session import end_session, get_spark

        spark = get_spark(args.env)
        try:
            names = stages.PIPELINE if args.command == "run" else (args.command,)
            started = time.time()
            for name in names:
                stages.run_stage(name, spark, lake, _stage_options(args))
            if args.command == "run":
                from ecom_lakehouse.summary import print_summary
                print_summary(spark, lake)
                print(f"pipeline finished in {time.time() - started:.1f}s; tables under {lake.root}; "
                      f"report at {lake.reports_path()}/report.html")
        finally:
            end_session(spark)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _run_commands(args)
    except (InputFileError, ConfigError, stages.MissingInputError, LakehouseBusy) as err:
        print(f"ecom-lakehouse: error: {err}", file=sys.stderr)
        return 2
    except (ReconciliationError, ModelCheckFailed, ContractBroken) as err:
        print(f"ecom-lakehouse: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("ecom-lakehouse: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - the last resort: one line, never a traceback
        if setting("ECOM_DEBUG"):
            raise
        print(f"ecom-lakehouse: error: {error_line(err)} (set ECOM_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1


def entry() -> None:
    """The console script. Exits with main's code: Databricks' wheel-task launcher ignores return values."""
    sys.exit(main())


if __name__ == "__main__":
    entry()
