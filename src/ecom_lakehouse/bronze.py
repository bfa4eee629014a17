"""Bronze: raw CSV lines -> Delta, exactly once, nothing lost.

Each table is a Structured Streaming file source with an ``availableNow`` trigger and a
checkpoint, so a rerun reads only files it has not seen (the same on open-source Spark,
EMR and Databricks). Each line is parsed with the columns of its own file's header (both
the 2025 header with ``*_geom`` and the older one are accepted); a line that is not a
well-formed record of the table, or whose values do not parse as the table's types, goes to
``bronze/_quarantine`` with the raw line and the reason. Both writes of a micro-batch are
idempotent Delta writes (``txnAppId``/``txnVersion``), so a run killed between them and
restarted from the checkpoint does not write anything twice.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from ecom_lakehouse import files
from ecom_lakehouse.config import Lakehouse
from ecom_lakehouse.schemas import (BATCH_ID, QUARANTINE_SCHEMA, accepted_headers, bronze_schema, INGESTED_AT, KEYS, RAW_COLUMNS, SOURCE_FILE, TABLES,
                                    parse_problem, raw_names, raw_string_schema)

CORRUPT = "_corrupt_record"
VARIANT = "_header_variant"
LINE = "_line"


@dataclass
class FileCount:
    table: str
    source_file: str
    rows_read: int = 0
    bronze_rows: int = 0
    quarantined: int = 0

    @property
    def reconciled(self) -> bool:
        return self.rows_read == self.bronze_rows + self.quarantined


@dataclass
class BronzeResult:
    table: str
    files_seen: int
    new_files: list[FileCount] = field(default_factory=list)
    seconds: float = 0.0

    def total(self, attr: str) -> int:
        return sum(getattr(f, attr) for f in self.new_files)


# --- pure transformations ------------------------------------------------------------

def tag_lines(lines: DataFrame, headers: dict[str, list[str]], table: str) -> DataFrame:
    """Raw lines (value, _source_file) -> without each file's header line, with the index of
    the file's header version in VARIANT."""
    versions = [",".join(h) for h in accepted_headers(table)]
    mapping = F.create_map(*[x for f, h in headers.items() for x in (F.lit(f), F.lit(versions.index(",".join(h))))])
    clean = F.regexp_replace(F.regexp_replace(F.col("value"), "^\ufeff", ""), "\r$", "")
    return (lines.withColumn(LINE, clean)
            .withColumn(VARIANT, mapping[F.col(SOURCE_FILE)])
            .where(~F.col(LINE).isin(versions)))


def parse_lines(tagged: DataFrame, table: str) -> DataFrame:
    """Tagged lines -> raw string columns of the table (NULL where a file lacks a column),
    plus a `reason` that is NULL for a good row."""
    full = raw_names(table)
    parsed = None
    for i, columns in enumerate(accepted_headers(table)):
        schema = raw_string_schema(columns).add(CORRUPT, "string")
        rec = F.from_csv(F.col(LINE), schema.simpleString(), {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": CORRUPT})
        part = tagged.where(F.col(VARIANT) == i).withColumn("_rec", rec)
        part = part.select(
            *[(F.col(f"_rec.{c}") if c in columns else F.lit(None).cast("string")).alias(c) for c in full],
            F.col(f"_rec.{CORRUPT}").alias(CORRUPT), SOURCE_FILE, LINE, F.lit(len(columns)).alias("_n"),
        )
        parsed = part if parsed is None else parsed.unionByName(part)
    return parsed.withColumn("reason", row_problems(table)).drop(CORRUPT, "_n")


def row_problems(table: str) -> Column:
    """Why a parsed row cannot enter bronze, or NULL."""
    key = KEYS[table]
    checks = [
        F.when(F.col(LINE) == "", F.lit("empty line")),
        F.when(F.col(CORRUPT).isNotNull() & (F.col(LINE) != ""),
               F.concat(F.lit("malformed CSV record (wrong field count or broken quoting; expected "),
                        F.col("_n").cast("string"), F.lit(" fields)"))),
        F.when(F.col(CORRUPT).isNull() & (F.coalesce(F.col(key), F.lit("")) == ""), F.lit(f"missing key {key}")),
    ]
    checks += [F.when(F.col(CORRUPT).isNull(), parse_problem(c, kind))
               for c, kind in RAW_COLUMNS[table] if kind not in ("string", "geometry")]
    reasons = F.concat_ws("; ", *checks)
    return F.when(reasons != "", reasons)


def bronze_rows(parsed: DataFrame, table: str, batch_id: int) -> DataFrame:
    return (parsed.where(F.col("reason").isNull())
            .select(*raw_names(table), SOURCE_FILE,
                    F.current_timestamp().alias(INGESTED_AT), F.lit(batch_id).cast("long").alias(BATCH_ID)))


def quarantine_rows(parsed: DataFrame, table: str, batch_id: int) -> DataFrame:
    return (parsed.where(F.col("reason").isNotNull())
            .select(F.lit(table).alias("source_table"), F.col(SOURCE_FILE).alias("source_file"),
                    F.col(LINE).alias("record"), "reason",
                    F.current_timestamp().alias(INGESTED_AT), F.lit(batch_id).cast("long").alias(BATCH_ID)))


# --- the stage entry point (I/O at the edges) ----------------------------------------

def _idempotent_append(df: DataFrame, table, app_id: str, version: int) -> None:
    table.save(df.write.format("delta").mode("append")
               .option("txnAppId", app_id).option("txnVersion", version))


def start_ingest(spark: SparkSession, lake: Lakehouse, source: files.TableSource):
    """Start one table's availableNow stream; returns (query, result filled as batches land)."""
    table = source.table
    result = BronzeResult(table, len(source.files))
    started = time.time()
    target, quarantine = lake.table("bronze", table), lake.quarantine("bronze")

    def write_batch(batch: DataFrame, batch_id: int) -> None:
        parsed = parse_lines(tag_lines(batch, source.headers, table), table).persist()
        try:
            _idempotent_append(bronze_rows(parsed, table, batch_id), target, f"bronze-{table}", batch_id)
            _idempotent_append(quarantine_rows(parsed, table, batch_id), quarantine, f"bronze-quarantine-{table}", batch_id)
            counts = (parsed.groupBy(SOURCE_FILE)
                      .agg(F.count("*").alias("read"), F.count_if(F.col("reason").isNull()).alias("ok"))
                      .collect())  # one row per file
            for r in counts:
                result.new_files.append(FileCount(table, r[SOURCE_FILE], r["read"], r["ok"], r["read"] - r["ok"]))
        finally:
            parsed.unpersist()
        result.seconds = time.time() - started

    query = (spark.readStream.format("text").option("pathGlobFilter", source.name_glob)
             .load(source.directory)
             .select("value", F.col("_metadata.file_path").alias(SOURCE_FILE))
             .writeStream.foreachBatch(write_batch)
             .option("checkpointLocation", lake.checkpoint("bronze", table))
             .trigger(availableNow=True)
             .queryName(f"bronze_{table}")
             .start())
    return query, result


def run(spark: SparkSession, lake: Lakehouse, tables: tuple[str, ...] = TABLES, echo=print) -> list[BronzeResult]:
    # Check every file of every table first: a bad file stops the run before anything is written.
    sources = [files.discover(spark, lake.raw, t) for t in tables]
    lake.quarantine("bronze").ensure(spark, QUARANTINE_SCHEMA)
    for t in tables:
        lake.table("bronze", t).ensure(spark, bronze_schema(t))
    # The tables are independent streams: run them side by side to use every core.
    running = [start_ingest(spark, lake, source) for source in sources]
    results = []
    for query, res in running:
        try:
            query.awaitTermination()
        except Exception:
            for other, _ in running:
                other.stop()
            raise
        echo(f"  bronze {res.table:<21} files {res.files_seen:>3} ({len(res.new_files)} new)  "
             f"read {res.total('rows_read'):>9,}  -> bronze {res.total('bronze_rows'):>9,}  "
             f"quarantined {res.total('quarantined'):>7,}  {res.seconds:5.1f}s")
        results.append(res)
    return results
