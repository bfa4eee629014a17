"""What a derived table was built from, recorded in its Delta commit.

Each stage knows the versions of the tables it reads (of their latest commit that changed rows);
it writes them into the commit's `userMetadata`. A rerun whose inputs have the same versions finds
them there and skips the work, so reruns without new data cost almost nothing and change nothing.
"""
from __future__ import annotations

from contextlib import contextmanager

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

USER_METADATA = "spark.databricks.delta.commitInfo.userMetadata"
# The commits that change what a reader of the table gets: the operations Delta itself marks as
# changing data (`changesData` in DeltaOperations.scala: writes, streaming updates, MERGE, UPDATE,
# DELETE, TRUNCATE, RESTORE, CLONE, CONVERT, CTAS/RTAS), Databricks' COPY INTO, the table's creation
# and schema changes. Every other commit rewrites files or metadata only: `maintain`'s OPTIMIZE and
# VACUUM, and whatever predictive optimization runs in the background (compaction, clustering,
# deletion-vector purges, statistics, row-tracking backfills). A table built from the versions
# before those is still current, so it is not rebuilt.
DATA_OPERATIONS = frozenset({
    "WRITE", "STREAMING UPDATE", "MERGE", "UPDATE", "DELETE", "TRUNCATE", "RESTORE", "CLONE", "CONVERT",
    "COPY INTO", "CREATE TABLE", "CREATE TABLE AS SELECT", "REPLACE TABLE", "REPLACE TABLE AS SELECT",
    "CREATE OR REPLACE TABLE", "CREATE OR REPLACE TABLE AS SELECT",
    "ADD COLUMNS", "DROP COLUMNS", "RENAME COLUMN", "CHANGE COLUMN", "REPLACE COLUMNS", "UPDATE SCHEMA"})


def label(versions: dict, extra: str = "") -> str:
    """`layer.name@version,...` for {table: version}, in a stable order, then `extra`."""
    parts = [f"{t.layer}.{t.name}@{v}" for t, v in sorted(versions.items(), key=lambda tv: (tv[0].layer, tv[0].name))]
    return ",".join(parts + ([extra] if extra else []))


def of(spark: SparkSession, tables, extra: str = "") -> str:
    return label({t: data_version(spark, t) for t in tables}, extra)


def _last_data_commit(spark: SparkSession, table):
    if not table.exists(spark):
        return None
    return (table.history(spark).where(F.col("operation").isin(*DATA_OPERATIONS))
            .orderBy(F.desc("version")).select("version", "userMetadata").first())  # one row per commit


def data_version(spark: SparkSession, table) -> int | None:
    """The version of the table's latest commit that changed its rows (None: no such table)."""
    commit = _last_data_commit(spark, table)
    return commit["version"] if commit else None


def versions(label_: str) -> dict[str, int]:
    """{"layer.name": version} of a label (its `extra` part left out)."""
    pairs = (part.rpartition("@") for part in label_.split(","))
    return {name: int(v) for name, at, v in pairs if at and v.isdigit()}


def built_from(spark: SparkSession, table) -> str | None:
    commit = _last_data_commit(spark, table)
    return commit["userMetadata"] if commit else None


def is_current(spark: SparkSession, tables, lineage: str) -> bool:
    return all(built_from(spark, t) == lineage for t in tables)


@contextmanager
def recorded(spark: SparkSession, lineage: str):
    """Delta commits made inside carry `lineage` as their userMetadata."""
    spark.conf.set(USER_METADATA, lineage)
    try:
        yield
    finally:
        spark.conf.unset(USER_METADATA)
