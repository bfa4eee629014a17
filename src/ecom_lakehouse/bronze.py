"""Bronze: raw CSV lines -> Delta, exactly once, nothing lost.

Each table is a Structured Streaming file source with an ``availableNow`` trigger and a
checkpoint, so a rerun reads only files it has not seen (the same on open-source Spark,
EMR and Databricks). Each line is parsed with the columns of its own file's header (both
the 2025 header with ``*_geom`` and the older one are accepted); a line that is not a
well-formed record of the table, whose values do not parse as the table's types, or whose file
has no known header, goes to ``bronze/_quarantine`` with the raw line and the reason.

Every write of a micro-batch is an idempotent Delta append keyed by the stream's id (which Spark
keeps in the checkpoint) and the batch id, so a run killed between two writes replays the batch
without writing anything twice, and a new checkpoint never collides with an old one's keys.
``bronze/_ingested_files`` records each file read with its size and modification time: a file
rewritten in place stops the next run with a message instead of being silently skipped.
After the streams, :mod:`ecom_lakehouse.reconcile` counts each new file's records with a read of
its own and compares them with the rows the Delta tables hold for it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from pyspark.sql import Column, DataFrame, Observation, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery

from ecom_lakehouse import files, reconcile
from ecom_lakehouse.config import Lakehouse
from ecom_lakehouse.schemas import (
    BATCH_ID,
    INGESTED_AT,
    INGESTED_FILES_SCHEMA,
    KEYS,
    QUARANTINE_SCHEMA,
    RAW_COLUMNS,
    SOURCE_FILE,
    STREAM_ID,
    TABLES,
    accepted_headers,
    bronze_schema,
    parse_problem,
    raw_names,
    raw_string_schema,
)
from ecom_lakehouse.session import raw_files_split_finely, side_by_side
from ecom_lakehouse.settings import setting

CORRUPT = "_corrupt_record"
VARIANT = "_header_variant"
IS_HEADER = "_is_header"
LINE = "_line"
INGESTED_FILES = "_ingested_files"
NO_HEADER_REASON = ("no header known for this file (it arrived after this run checked the headers); "
                    "re-ingest it with `ecom-lakehouse bronze --reset <table>`")


@dataclass
class BronzeResult:
    table: str
    files_seen: int
    stream_id: str | None = None
    ingested: list[str] = field(default_factory=list)  # files read by this run's micro-batches
    checks: list[reconcile.FileCheck] = field(default_factory=list)
    seconds: float = 0.0

    def total(self, attr: str) -> int:
        return sum(getattr(c, attr) for c in self.checks)


# --- pure transformations ------------------------------------------------------------

def tag_lines(lines: DataFrame, header_by_name: dict[str, tuple[str, ...]], table: str) -> DataFrame:
    """Raw lines (value, _source_file) -> the line without BOM or CR, the index of its file's
    header version in VARIANT (NULL for a file whose header is not known) and IS_HEADER."""
    versions = [",".join(h) for h in accepted_headers(table)]
    mapping = F.create_map(*[x for name, h in header_by_name.items()
                             for x in (F.lit(name), F.lit(versions.index(",".join(h))))])
    # String tests and substrings, not regexp_replace: the two regexes cost ~5 s of the 28 s that parsing
    # scale 1's events took.
    line = F.col(LINE)
    return (lines.withColumn(LINE, F.when(F.col("value").startswith("\ufeff"), F.expr("substring(value, 2)"))
                             .otherwise(F.col("value")))
            .withColumn(LINE, F.when(line.endswith("\r"), F.expr(f"substring({LINE}, 1, length({LINE}) - 1)"))
                        .otherwise(line))
            .withColumn(VARIANT, mapping[files.file_name(F.col(SOURCE_FILE))])
            .withColumn(IS_HEADER, F.col(LINE).isin(versions)))


def parse_lines(tagged: DataFrame, table: str) -> DataFrame:
    """Tagged data lines -> raw string columns of the table (NULL where a file lacks a column),
    plus a `reason` that is NULL for a good row. One pass: each line is parsed once, with the
    header version of its own file."""
    variants = accepted_headers(table)
    variant = F.col(VARIANT)
    options = {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": CORRUPT}
    records = tagged.select(SOURCE_FILE, LINE, VARIANT, *[
        F.when(variant == i, F.from_csv(F.col(LINE), raw_string_schema(columns).add(CORRUPT, "string").simpleString(),
                                        options)).alias(f"_rec{i}")
        for i, columns in enumerate(variants)])

    def field(name: str) -> Column:  # only the line's own variant is non-NULL
        return F.coalesce(*[F.col(f"_rec{i}.{name}") for i, columns in enumerate(variants)
                            if name in columns or name == CORRUPT])

    n_fields = F.lit(None)
    for i, columns in enumerate(variants):
        n_fields = F.when(variant == i, F.lit(len(columns))).otherwise(n_fields)
    parsed = records.select(*[field(c).alias(c) for c in raw_names(table)], field(CORRUPT).alias(CORRUPT),
                            SOURCE_FILE, LINE, VARIANT, n_fields.alias("_n"))
    # A file the run has no header for (it arrived after the check): its lines are kept, not guessed at.
    reason = F.when(variant.isNull(), F.lit(NO_HEADER_REASON)).otherwise(row_problems(table))
    return parsed.withColumn("reason", reason).drop(CORRUPT, "_n", VARIANT)


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


def _delivery(batch_id: int, stream_id: str) -> list[Column]:
    return [F.current_timestamp().alias(INGESTED_AT), F.lit(batch_id).cast("long").alias(BATCH_ID),
            F.lit(stream_id).alias(STREAM_ID)]


def bronze_rows(parsed: DataFrame, table: str, batch_id: int, stream_id: str) -> DataFrame:
    return (parsed.where(F.col("reason").isNull())
            .select(*raw_names(table), SOURCE_FILE, *_delivery(batch_id, stream_id)))


def quarantine_rows(parsed: DataFrame, table: str, batch_id: int, stream_id: str) -> DataFrame:
    return (parsed.where(F.col("reason").isNotNull())
            .select(F.lit(table).alias("source_table"), F.col(SOURCE_FILE).alias("source_file"),
                    F.col(LINE).alias("record"), "reason", *_delivery(batch_id, stream_id)))


# --- the stage entry point (I/O at the edges) ----------------------------------------

def _idempotent_append(df: DataFrame, table, app_id: str, version: int) -> None:
    table.save(df.write.format("delta").mode("append").option("mergeSchema", "true")
               .option("txnAppId", app_id).option("txnVersion", version))


def _ingested_files_rows(spark: SparkSession, source: files.TableSource, paths: list[str],
                         batch_id: int, stream_id: str) -> DataFrame:
    known = {f.path: f for f in source.files}
    rows = []
    for path in paths:
        f = known.get(path)
        if f is None:  # arrived after discovery: record what it is now
            status = files.file_status(spark, path)
            size, modified = (status.size, status.modified_ms) if status else (None, None)
        else:
            size, modified = f.size, f.modified_ms
        rows.append((source.table, path, size, modified, stream_id, batch_id, None))
    return (spark.createDataFrame(rows, INGESTED_FILES_SCHEMA)
            .withColumn(INGESTED_AT, F.current_timestamp()))


def raw_stream_source(lake: Lakehouse, name_glob: str) -> tuple[str, dict[str, str]]:
    """The one place that chooses how raw lines are streamed: (source format, its options). On
    Databricks: Auto Loader (`cloudFiles`, text), what Databricks users expect, with its default of
    ignoring rewritten files (`cloudFiles.allowOverwrites` false; bronze's own check stops the run on
    those). Elsewhere, and in the Databricks twin test (ECOM_RAW_STREAM=files, Auto Loader exists only on
    Databricks): Spark's file source. Both keep their state in the same checkpoint folder, report
    `_metadata.file_path` and take `pathGlobFilter`."""
    if lake.env == "databricks" and setting("ECOM_RAW_STREAM") != "files":
        return "cloudFiles", {"cloudFiles.format": "text", "cloudFiles.allowOverwrites": "false",
                              "pathGlobFilter": name_glob}
    return "text", {"pathGlobFilter": name_glob}


def raw_line_stream(spark: SparkSession, lake: Lakehouse, source: files.TableSource) -> DataFrame:
    source_format, options = raw_stream_source(lake, source.name_glob)
    return (spark.readStream.format(source_format).options(**options)
            .load(files.literal_path(files.folder_path(source.directory))))


def stream_id(spark: SparkSession, checkpoint: str) -> str:
    """The stream's id, as Spark keeps it in the checkpoint's `metadata` file (`{"id": ...}`): the same
    across restarts from the checkpoint, new after a reset. Spark writes it when the query starts, before
    any batch; a batch reads it there because under Spark Connect the batch function runs in a Python
    process of the server's, which sees only what it was given and what storage holds."""
    return json.loads(files.first_line(spark, f"{checkpoint}/metadata"))["id"]


def write_batch_function(lake: Lakehouse, source: files.TableSource):
    """The foreachBatch function of one table's stream: appends the batch's rows to bronze, its bad rows
    to the quarantine and its files to the file log, each append idempotent per (stream, batch). It keeps
    nothing in this process: what a run ingested is read back from the file log (`finished`)."""
    table, checkpoint = source.table, lake.checkpoint("bronze", source.table)
    target, quarantine, log = lake.table("bronze", table), lake.quarantine("bronze"), lake.table("bronze", INGESTED_FILES)
    header_by_name = source.header_by_name()

    def write_batch(batch: DataFrame, batch_id: int) -> None:
        spark = batch.sparkSession
        sid = stream_id(spark, checkpoint)
        # The batch is parsed once, by the bronze append, which also observes the batch's file names and
        # its quarantined rows. The observed nodes keep the appends' filters on `reason` from being pushed
        # into the parse, which would repeat the CSV parse once per field (scale 1's events: 105 s).
        # Caching the parsed batch for both appends cost ~12 s of its 37 s; a batch without a bad row
        # (the usual one) is not read again at all.
        files_seen, problems = Observation(), Observation()
        tagged = tag_lines(batch, header_by_name, table).observe(
            files_seen, F.to_json(F.collect_set(SOURCE_FILE)).alias("files"))  # JSON: Py4J passes no Scala Seq
        parsed = parse_lines(tagged.where(~F.col(IS_HEADER)), table).observe(problems, F.count("reason").alias("rows"))
        version_before = target.version(spark)
        _idempotent_append(bronze_rows(parsed, table, batch_id, sid), target, f"bronze-{table}-{sid}", batch_id)
        # Read only once the append ran: a replayed batch whose append was committed before is skipped by
        # Delta and observes nothing, and Observation.get would wait for it for ever on classic compute.
        seen = files_seen.get if target.version(spark) != version_before else {}
        if "files" in seen:
            delivered, quarantined = sorted(json.loads(seen["files"])), problems.get["rows"]
        else:  # that replayed batch, or Spark Connect, which reports no observation of a write (Spark 4.0)
            delivered = [r[SOURCE_FILE] for r in tagged.select(SOURCE_FILE).distinct().collect()]  # file names only
            quarantined = None
        if quarantined != 0:
            _idempotent_append(quarantine_rows(parsed, table, batch_id, sid), quarantine,
                               f"bronze-quarantine-{table}-{sid}", batch_id)
        _idempotent_append(_ingested_files_rows(spark, source, delivered, batch_id, sid), log,
                           f"bronze-files-{table}-{sid}", batch_id)

    return write_batch


def start_ingest(spark: SparkSession, lake: Lakehouse, source: files.TableSource) -> StreamingQuery:
    """Start one table's availableNow stream."""
    return (raw_line_stream(spark, lake, source)
            .select("value", files.decoded_file_path(F.col("_metadata.file_path")).alias(SOURCE_FILE))
            .writeStream.foreachBatch(write_batch_function(lake, source))
            .option("checkpointLocation", lake.checkpoint("bronze", source.table))
            .trigger(availableNow=True)
            .queryName(f"bronze_{source.table}")
            .start())


def finished(spark: SparkSession, lake: Lakehouse, source: files.TableSource, query: StreamingQuery) -> BronzeResult:
    """A finished stream's result, from what storage and Spark report: the files its run read are the file
    log's rows of the run's batches (each batch reports its progress, a replayed one too; a query keeps its
    last 100 reports, and a batch takes up to 1,000 files), its time the batches' own."""
    progress = query.recentProgress
    batches = sorted({p["batchId"] for p in progress})
    rows = [] if not batches else (
        lake.table("bronze", INGESTED_FILES).read(spark)
        .where((F.col("source_table") == source.table) & (F.col(STREAM_ID) == str(query.id)) & F.col(BATCH_ID).isin(batches))
        .select("source_file").distinct().collect())  # one row per file
    return BronzeResult(source.table, len(source.files), str(query.id), sorted(r["source_file"] for r in rows),
                        seconds=sum(p["durationMs"].get("triggerExecution", 0) for p in progress) / 1000)


def ingested_before(spark: SparkSession, lake: Lakehouse, table: str) -> dict[str, tuple[int, int]]:
    """File -> (size, modification time) when bronze last read it (one row per file)."""
    log = lake.table("bronze", INGESTED_FILES)
    if not log.exists(spark):
        return {}
    latest = (log.read(spark).where(F.col("source_table") == table).groupBy("source_file")
              .agg(F.max_by(F.struct("size", "modified_ms"), INGESTED_AT).alias("f")).collect())
    return {r["source_file"]: (r["f"]["size"], r["f"]["modified_ms"]) for r in latest}


def reset(spark: SparkSession, lake: Lakehouse, table: str, echo=print) -> None:
    """Forget what bronze ingested for `table`, so the next run reads all its files again.
    The checkpoint goes first: a run killed after it re-ingests as a new stream (silver dedupes),
    whereas rows deleted under a surviving checkpoint would never come back."""
    files.delete(spark, lake.checkpoint("bronze", table))
    target = lake.table("bronze", table)
    if target.exists(spark):
        target.delete(spark)
    for side_table in (lake.quarantine("bronze"), lake.table("bronze", INGESTED_FILES)):
        if side_table.exists(spark):
            side_table.delete(spark, f"source_table = '{table}'")
    echo(f"  bronze {table:<21} reset: checkpoint, rows, quarantined rows and file log removed; re-ingesting")


def _ingest_side_by_side(spark: SparkSession, lake: Lakehouse, sources) -> list[BronzeResult]:
    """The tables are independent streams: run them side by side to use every core."""
    running = [(source, start_ingest(spark, lake, source)) for source in sources]
    results = []
    for source, query in running:
        try:
            query.awaitTermination()
        except Exception:
            for _, other in running:
                other.stop()
            raise
        results.append(finished(spark, lake, source, query))
    return results


def run(spark: SparkSession, lake: Lakehouse, tables: tuple[str, ...] = TABLES, reset_tables: tuple[str, ...] = (),
        echo=print) -> list[BronzeResult]:
    # Check every file of every table first: a bad or rewritten file stops the run before anything is written.
    sources = [files.discover(spark, lake.raw, t) for t in tables]
    for source in sources:
        if source.table not in reset_tables:
            files.check_unchanged(source, ingested_before(spark, lake, source.table))
    lake.quarantine("bronze").ensure(spark, QUARANTINE_SCHEMA)
    lake.table("bronze", INGESTED_FILES).ensure(spark, INGESTED_FILES_SCHEMA)
    for t in tables:
        lake.table("bronze", t).ensure(spark, bronze_schema(t))
    for t in reset_tables:
        reset(spark, lake, t, echo)
    with raw_files_split_finely(spark):
        results = _ingest_side_by_side(spark, lake, sources)
        # The reconciliation reads the raw files again; each table's is three small counting jobs.
        for res, checks in zip(results, side_by_side(
                spark, lambda r: reconcile.bronze_files(spark, lake, r.table, r.stream_id, r.ingested), results), strict=True):
            res.checks = checks
    for res in results:
        echo(f"  bronze {res.table:<21} files {res.files_seen:>3} ({len(res.ingested)} new)  "
             f"records {res.total('in_file'):>9,}  -> bronze {res.total('in_bronze'):>9,}  "
             f"quarantined {res.total('quarantined'):>7,}  {res.seconds:5.1f}s")
    return results
