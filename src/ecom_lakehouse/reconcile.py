"""Reconciliations that read back what was written, independently of the code that wrote it.

* Bronze, per file a run ingested: the file's data records, counted by a read of their own of the
  file as stored, must equal the rows the bronze table and the bronze quarantine hold for that file
  and that delivery (`_source_file`, `_stream_id`), read back from the Delta tables.
* Silver, per table: bronze rows = silver rows + superseded + quarantined, where superseded
  (older deliveries of a key) comes from bronze's own distinct keys and the other three are counts
  of the Delta tables.

A mismatch raises :class:`ReconciliationError` naming the file or table and the counts.
"""
from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from ecom_lakehouse import files
from ecom_lakehouse.config import Lakehouse
from ecom_lakehouse.schemas import FLAGS, KEYS, RAW_COLUMNS, SOURCE_FILE, STREAM_ID, parse_value
from ecom_lakehouse.session import side_by_side


class ReconciliationError(Exception):
    """Rows are missing or doubled: the tables do not account for their inputs."""


@dataclass(frozen=True)
class FileCheck:
    table: str
    source_file: str
    in_file: int  # data records in the file as stored
    in_bronze: int
    quarantined: int

    @property
    def ok(self) -> bool:
        return self.in_file == self.in_bronze + self.quarantined

    def __str__(self) -> str:
        return (f"{self.source_file}: {self.in_file:,} records in the file, {self.in_bronze:,} in bronze "
                f"+ {self.quarantined:,} quarantined")


@dataclass(frozen=True)
class TableCheck:
    table: str
    bronze: int
    silver: int
    superseded: int
    quarantined: int
    flagged: int  # silver rows kept with flags: part of the silver count, reported beside it

    @property
    def ok(self) -> bool:
        return self.bronze == self.silver + self.superseded + self.quarantined

    def __str__(self) -> str:
        return (f"silver {self.table}: {self.bronze:,} bronze rows, {self.silver:,} in silver + "
                f"{self.superseded:,} superseded + {self.quarantined:,} quarantined")


def _counts_by_file(df, file_column: str, paths: list[str]) -> dict[str, int]:
    rows = df.where(F.col(file_column).isin(paths)).groupBy(file_column).count().collect()  # one row per file
    return {r[file_column]: r["count"] for r in rows}


def bronze_files(spark: SparkSession, lake: Lakehouse, table: str, stream_id: str | None,
                 paths: list[str]) -> list[FileCheck]:
    """One check per file this run's stream `stream_id` ingested."""
    if not paths:
        return []
    in_file = files.count_records(spark, paths)
    delivery = F.col(STREAM_ID) == stream_id
    in_bronze = _counts_by_file(lake.table("bronze", table).read(spark).where(delivery), SOURCE_FILE, paths)
    quarantined = _counts_by_file(
        lake.quarantine("bronze").read(spark).where(delivery & (F.col("source_table") == table)), "source_file", paths)
    return [FileCheck(table, p, in_file[p], in_bronze.get(p, 0), quarantined.get(p, 0)) for p in sorted(paths)]


def silver_tables(spark: SparkSession, lake: Lakehouse, tables: list[str]) -> list[TableCheck]:
    """One check per table, in their order. Two aggregates per table (bronze rows and keys; silver
    rows and flagged rows) and one for the quarantine of all of them: on small data each job costs
    about a second of planning, so five counts per table cost more than the data."""
    if not tables:  # a rerun that skipped every table reads nothing
        return []
    quarantined = quarantined_by_table(spark, lake, "silver")
    return list(side_by_side(spark, lambda t: _silver_table(spark, lake, t, quarantined.get(t, 0)), tables))


def quarantined_by_table(spark: SparkSession, lake: Lakehouse, layer: str) -> dict[str, int]:
    """Rows in `layer`'s quarantine per source table, read from the Delta table (one row per table)."""
    by_table = lake.quarantine(layer).read(spark).groupBy("source_table").count().collect()
    return {r["source_table"]: r["count"] for r in by_table}


def rows_and_keys(bronze: DataFrame, table: str) -> DataFrame:
    """One row: bronze `rows` and the distinct `keys` among them as silver types them ('9' and '9.0'
    are one key). COUNT(DISTINCT) leaves NULL out, but rows without a key are one key to
    silver's latest-per-key, so NULL counts once."""
    key = KEYS[table]
    k = bronze.select(parse_value(key, dict(RAW_COLUMNS[table])[key]).alias("k"))
    return k.agg(F.count("*").alias("rows"),
                 (F.count_distinct("k") + F.coalesce(F.max(F.col("k").isNull().cast("int")), F.lit(0))).alias("keys"))


def _silver_table(spark: SparkSession, lake: Lakehouse, table: str, quarantined: int) -> TableCheck:
    n_bronze, keys = rows_and_keys(lake.table("bronze", table).read(spark), table).first()
    n_silver, flagged = lake.table("silver", table).read(spark).agg(
        F.count("*"), F.count_if(F.size(FLAGS) > 0)).first()
    return TableCheck(table, n_bronze, n_silver, n_bronze - keys, quarantined, flagged)


def raise_on_mismatch(checks, layer: str) -> None:
    bad = [c for c in checks if not c.ok]
    if bad:
        raise ReconciliationError(f"{layer} reconciliation failed: " + "; ".join(map(str, bad)))
