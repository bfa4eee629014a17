"""The one place that makes a SparkSession.

Locally it builds ``local[*]`` with Delta's SQL extension and catalog. On Databricks
and EMR the platform owns the session (Delta is already configured there), so we
return the active one untouched.
"""
from __future__ import annotations

import os
import re
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pyspark
from pyspark.sql import SparkSession
from pyspark.util import inheritable_thread_target

from ecom_lakehouse.settings import setting

# The Delta release for each Spark line this project runs on, and the Scala both are built with
# (Delta's compatibility table: Delta 3.3 on Spark 3.5, Delta 4.0 on Spark 4.0). `make install` fetches
# these jars; pyproject's extras pin the matching Python packages (`local` and `spark4`).
DELTA_FOR_SPARK = {"3.5": ("3.3.2", "2.12"), "4.0": ("4.0.1", "2.13")}
SPARK_LINE = ".".join(pyspark.__version__.split(".")[:2])
DELTA_VERSION, SCALA_VERSION = DELTA_FOR_SPARK[SPARK_LINE]
DELTA_PACKAGE = f"io.delta:delta-spark_{SCALA_VERSION}:{DELTA_VERSION}"
# HotSpot's server compiler (C2) with less inlining and no escape analysis, for a local driver JVM: a run of a few
# minutes spends much of its CPU compiling rather than computing, and smaller compilations cost less than the
# code they make loses. A local `run` took 9-17% less time and 17-25% less of the JVM's CPU at scales 0.004 and
# 0.1 (docs/performance.md, "Small data"). All three are HotSpot product flags (defaults: 325 bytes, 2,500
# bytes, on).
SHORT_RUN_JIT_OPTIONS = "-XX:FreqInlineSize=100 -XX:InlineSmallCode=1000 -XX:-DoEscapeAnalysis"


def _local_delta_jars(delta_version: str = DELTA_VERSION, scala_version: str = SCALA_VERSION) -> list[str]:
    """Delta jars that `make install` put into ~/.m2, so sessions never download (this Spark line's, or
    another line's: the Databricks twin's job clusters)."""
    repo = Path(os.environ.get("M2_REPO", Path.home() / ".m2" / "repository"))
    jars = [
        repo / f"io/delta/delta-spark_{scala_version}/{delta_version}/delta-spark_{scala_version}-{delta_version}.jar",
        repo / f"io/delta/delta-storage/{delta_version}/delta-storage-{delta_version}.jar",
    ]
    return [str(j) for j in jars] if all(j.exists() for j in jars) else []


def is_connect(spark: SparkSession) -> bool:
    """Whether `spark` is a Spark Connect session (standard access mode, serverless, a Connect server),
    which has no driver JVM of its own to reach (`sparkContext`, `_jvm`)."""
    return type(spark).__module__.startswith("pyspark.sql.connect")


def cores(spark: SparkSession) -> int:
    """The cores Spark's tasks run on, for sizing a job's partitions: the context's default parallelism on
    classic compute. A Connect client cannot see its server's context: the local master's cores when the
    server is local, else 8 (serverless sizes its own clusters; a few tasks a core of a small one)."""
    if not is_connect(spark):
        return spark.sparkContext.defaultParallelism
    master = re.fullmatch(r"local\[(\d+|\*)\]", spark.conf.get("spark.master", "") or "")
    if master:
        return (os.cpu_count() or 1) if master.group(1) == "*" else int(master.group(1))
    return 8


def get_spark(env: str = "local", app_name: str = "ecom_lakehouse") -> SparkSession:
    if env != "local":
        spark = SparkSession.getActiveSession() or SparkSession.builder.appName(app_name).getOrCreate()
        # Dates are cut in UTC everywhere. Set here rather than in a cluster's spark_conf: serverless compute
        # has no cluster to configure, and lets a session set this one (its supported Spark properties).
        spark.conf.set("spark.sql.session.timeZone", "UTC")
        return spark

    # Python workers must run this interpreter (the one with this package installed).
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    remote = setting("ECOM_SPARK_REMOTE")
    builder = SparkSession.builder.remote(remote) if remote else SparkSession.builder.master(setting("ECOM_SPARK_MASTER"))
    builder = (
        builder
        .appName(app_name)
        .config("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension")
        .config("spark.sql.catalog.spark_catalog", "org.apache.spark.sql.delta.catalog.DeltaCatalog")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.driver.extraJavaOptions", f"-Duser.timezone=UTC {SHORT_RUN_JIT_OPTIONS}")
        # A few shuffle partitions for 2 cores. Spark's 200 with AQE was tried: AQE does not merge the
        # partitions of cached plans (recommend's evaluation frames), and recommend took 256 s at scale 1
        # instead of 146 s. Silver sizes its large cached plan from the data itself (silver.cached_partitions).
        .config("spark.sql.shuffle.partitions", setting("ECOM_SHUFFLE_PARTITIONS"))
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.databricks.delta.snapshotPartitions", "2")
        .config("spark.sql.warehouse.dir", setting("ECOM_WAREHOUSE_DIR"))
    )
    if setting("ECOM_DRIVER_MEMORY"):  # the JVM's heap; takes effect only before the JVM starts
        builder = builder.config("spark.driver.memory", setting("ECOM_DRIVER_MEMORY"))
    jars = _local_delta_jars()
    if jars:
        builder = builder.config("spark.jars", ",".join(jars))
    else:  # no `make install` here: let Spark's resolver fetch Delta from Maven Central
        builder = builder.config("spark.jars.packages", DELTA_PACKAGE)
    with warnings.catch_warnings():
        # A local Connect server starts with these settings; its client then tries to set the static ones
        # again and warns that it cannot (CANNOT_MODIFY_CONFIG), which says nothing to a user.
        warnings.filterwarnings("ignore", message="Failed to set spark")
        spark = builder.getOrCreate()
    if not is_connect(spark):  # a Connect server logs as its own log4j settings say
        spark.sparkContext.setLogLevel("ERROR")
    return spark


def end_session(spark: SparkSession) -> None:
    """Close a Spark Connect client's session at the end of a command: that frees its server-side state,
    models cached by pyspark.ml among them. Left to Python's exit, each remote model's finalizer asks the
    server to drop it from a gRPC thread that a finalizing interpreter cannot start, and the process hangs
    (Databricks Connect 17.2's pyspark.ml.util.del_remote_cache; a stopped session skips the call). A
    classic session is the platform's (a job cluster's context serves the job's next task) and stays.
    Closing is a courtesy to the server: a failure to close does not change the command's outcome."""
    if is_connect(spark):
        try:
            spark.stop()
        except Exception as err:  # noqa: BLE001 - see above
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            print(f"ecom-lakehouse: note: the Spark Connect session did not close: {first}", file=sys.stderr)


@contextmanager
def conf_within(spark: SparkSession, key: str, value: str):
    """The session setting `key` is `value` inside, and what it was before afterwards."""
    previous = spark.conf.get(key, None)
    spark.conf.set(key, value)
    try:
        yield
    finally:
        if previous is None:
            spark.conf.unset(key)
        else:
            spark.conf.set(key, previous)


# Tables worked on at once where each table's work is small jobs and waits (log reads, listings, commits).
TABLES_AT_ONCE = 4


def side_by_side(spark: SparkSession, work, items, at_once: int = TABLES_AT_ONCE):
    """work(item) for each item, `at_once` at a time from driver threads, yielded in the items' order
    as each is done. Spark runs jobs from several threads at once (CrossValidator's `parallelism`):
    the small jobs of one piece of work leave cores idle between their stages, which another's fill.
    Each thread inherits the session's properties; from Spark 4 on also its tags, which needs the session
    (and Spark Connect needs it to find the session at all)."""
    if SPARK_LINE == "3.5":
        in_thread = inheritable_thread_target(work)
    else:  # Spark 4's signature, which mypy reads from the 3.5 stubs installed here
        in_thread = inheritable_thread_target(spark)(work)  # type: ignore[arg-type]
    with ThreadPoolExecutor(at_once) as pool:
        yield from pool.map(in_thread, items)


@contextmanager
def raw_files_split_finely(spark: SparkSession):
    """On a local master, files read inside split into at least 4 tasks per core.

    Spark's own floor is one split per core, capped at 128 MB: with 2 cores the 385 MB events file was
    3 splits, and the third ran alone on one core. Only bronze's raw reads need this: for every read,
    it gave the ML stages' small Delta tables so many tasks that segmentation at scale 0.1 took 55 s
    instead of 33. A cluster's many cores already spread a file; its sessions are left as they are."""
    if not (spark.conf.get("spark.master", "") or "").startswith("local"):
        yield
        return
    with conf_within(spark, "spark.sql.files.minPartitionNum", str(4 * cores(spark))):
        yield
