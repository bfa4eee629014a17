"""Table schemas, in one place: raw CSV headers and types, keys, and how to parse values.

Bronze keeps every raw value as a string (plus ingestion metadata); the types below say
what each string must parse to. Bronze quarantines rows that do not parse, silver casts
with the same expressions, so the two layers cannot disagree.
"""
from __future__ import annotations

from pyspark.sql import Column
from pyspark.sql import functions as F
from pyspark.sql.types import BooleanType, DoubleType, LongType, StringType, StructField, StructType, TimestampType

# table -> ordered (column, type). Types: id (integer key), int, double, timestamp,
# string, geometry (WKT, optional trailing column that newer exports add).
RAW_COLUMNS: dict[str, list[tuple[str, str]]] = {
    "distribution_centers": [
        ("id", "id"), ("name", "string"), ("latitude", "double"), ("longitude", "double"),
        ("distribution_center_geom", "geometry"),
    ],
    "events": [
        ("id", "id"), ("user_id", "id"), ("sequence_number", "int"), ("session_id", "string"),
        ("created_at", "timestamp"), ("ip_address", "string"), ("city", "string"),
        ("state", "string"), ("postal_code", "string"), ("browser", "string"),
        ("traffic_source", "string"), ("uri", "string"), ("event_type", "string"),
    ],
    "inventory_items": [
        ("id", "id"), ("product_id", "id"), ("created_at", "timestamp"), ("sold_at", "timestamp"),
        ("cost", "double"), ("product_category", "string"), ("product_name", "string"),
        ("product_brand", "string"), ("product_retail_price", "double"),
        ("product_department", "string"), ("product_sku", "string"),
        ("product_distribution_center_id", "id"),
    ],
    "order_items": [
        ("id", "id"), ("order_id", "id"), ("user_id", "id"), ("product_id", "id"),
        ("inventory_item_id", "id"), ("status", "string"), ("created_at", "timestamp"),
        ("shipped_at", "timestamp"), ("delivered_at", "timestamp"), ("returned_at", "timestamp"),
        ("sale_price", "double"),
    ],
    "orders": [
        ("order_id", "id"), ("user_id", "id"), ("status", "string"), ("gender", "string"),
        ("created_at", "timestamp"), ("returned_at", "timestamp"), ("shipped_at", "timestamp"),
        ("delivered_at", "timestamp"), ("num_of_item", "int"),
    ],
    "products": [
        ("id", "id"), ("cost", "double"), ("category", "string"), ("name", "string"),
        ("brand", "string"), ("retail_price", "double"), ("department", "string"),
        ("sku", "string"), ("distribution_center_id", "id"),
    ],
    "users": [
        ("id", "id"), ("first_name", "string"), ("last_name", "string"), ("email", "string"),
        ("age", "int"), ("gender", "string"), ("state", "string"), ("street_address", "string"),
        ("postal_code", "string"), ("city", "string"), ("country", "string"),
        ("latitude", "double"), ("longitude", "double"), ("traffic_source", "string"),
        ("created_at", "timestamp"), ("user_geom", "geometry"),
    ],
}
TABLES: tuple[str, ...] = tuple(sorted(RAW_COLUMNS))

# Primary keys; silver MERGEs on them.
KEYS = {t: ("order_id" if t == "orders" else "id") for t in TABLES}

# Bronze metadata columns added to every raw row. A row was delivered by micro-batch BATCH_ID of
# the stream STREAM_ID (the id Spark keeps in the streaming checkpoint, new after a reset).
SOURCE_FILE, INGESTED_AT, BATCH_ID, STREAM_ID = "_source_file", "_ingested_at", "_batch_id", "_stream_id"

# Silver's data-quality flags: an array of the checks a kept row failed (empty when it passed all).
FLAGS = "dq_flags"

# Quarantine tables of every layer share this schema (record is the raw line or JSON).
QUARANTINE_SCHEMA = StructType([
    StructField("source_table", StringType()),
    StructField("source_file", StringType()),
    StructField("record", StringType()),
    StructField("reason", StringType()),
    StructField(INGESTED_AT, TimestampType()),
    StructField(BATCH_ID, LongType()),
    StructField(STREAM_ID, StringType()),  # bronze only: which stream delivered the row
])

# bronze/_ingested_files: one row per raw file a bronze stream read, with the size and modification
# time it had then, so a file rewritten in place is noticed instead of silently ignored.
INGESTED_FILES_SCHEMA = StructType([
    StructField("source_table", StringType()),
    StructField("source_file", StringType()),
    StructField("size", LongType()),
    StructField("modified_ms", LongType()),
    StructField(STREAM_ID, StringType()),
    StructField(BATCH_ID, LongType()),
    StructField(INGESTED_AT, TimestampType()),
])

# gold/model_verdicts: the latest verdict of each check per model and data mode, with what it was
# computed on (the input tables' Delta versions) and the MLflow run holding its full record.
VERDICT_SCHEMA = StructType([
    StructField("model", StringType()),
    StructField("data_mode", StringType()),
    StructField("check", StringType()),
    StructField("verdict", StringType()),
    StructField("statistic", DoubleType()),
    StructField("interval_low", DoubleType()),
    StructField("interval_high", DoubleType()),
    StructField("p_value", DoubleType()),
    StructField("detail", StringType()),
    StructField("consequence", StringType()),
    StructField("built_from", StringType()),
    StructField("run_id", StringType()),
    StructField("decided_at", TimestampType()),
])
# one partition per model: segment and recommend, side by side on Databricks, replace disjoint files
VERDICT_PARTITIONING = ("model",)


# gold/strategy_verdicts: the recommender's verdict table, one row per strategy and data mode (recommend.StrategyVerdict):
# its served lists' hits of the warm test users with the exact 95% interval, against chance and against the
# default, and whether it serves and why.
STRATEGY_VERDICT_SCHEMA = StructType([
    StructField("data_mode", StringType()),
    StructField("strategy", StringType()),
    StructField("users", LongType()),
    StructField("hits", LongType()),
    StructField("hit_rate", DoubleType()),
    StructField("hit_rate_low", DoubleType()),
    StructField("hit_rate_high", DoubleType()),
    StructField("validation_hits", LongType()),
    StructField("chance_hits", DoubleType()),
    StructField("ratio_to_chance", DoubleType()),
    StructField("chance_p", DoubleType()),
    StructField("versus_chance", StringType()),
    StructField("in_gender_share", DoubleType()),
    StructField("p_value", DoubleType()),
    StructField("adjusted_p", DoubleType()),
    StructField("verdict", StringType()),
    StructField("served", BooleanType()),
    StructField("why", StringType()),
    StructField("run_id", StringType()),
])


def raw_names(table: str) -> list[str]:
    return [c for c, _ in RAW_COLUMNS[table]]


def accepted_headers(table: str) -> list[list[str]]:
    """Header versions we accept: the 2025 export, and the older one without geometry."""
    full = raw_names(table)
    without_geom = [c for c, t in RAW_COLUMNS[table] if t != "geometry"]
    return [full] if without_geom == full else [full, without_geom]


def raw_string_schema(columns: list[str]) -> StructType:
    return StructType([StructField(c, StringType()) for c in columns])


def bronze_schema(table: str) -> StructType:
    return raw_string_schema(raw_names(table)).add(SOURCE_FILE, StringType()).add(
        INGESTED_AT, TimestampType()).add(BATCH_ID, LongType()).add(STREAM_ID, StringType())


# --- value parsing (ANSI-safe: try_* never throws, a bad value becomes NULL) --------
# Both real forms: 'YYYY-MM-DD HH:MM:SS UTC' and 'YYYY-MM-DD HH:MM:SS.ffffff UTC'.
# Anything else (e.g. the Italian-locale '22/04/2021 12.16.45') is NULL, never a guess.
_TS_RE = r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(\.\d{1,6})? UTC$"


def parse_value(name: str, kind: str) -> Column:
    """Typed value of raw string column `name`; NULL when empty or unparseable."""
    c = F.col(name)
    if kind == "timestamp":
        # The regex admits only the export's form; the cast reads its ' UTC' as the zone, whatever the
        # session time zone (and costs a third of a pattern-based parse).
        return F.when(c.rlike(_TS_RE), F.expr(f"try_cast(`{name}` AS TIMESTAMP)"))
    if kind == "double":
        return F.expr(f"try_cast(`{name}` AS DOUBLE)")
    if kind in ("id", "int"):
        # '60' and '9.0' both occur in real exports; '9.5' is not an integer.
        # try_cast to the integer too: out of its range is NULL (a reason) with ANSI on or off, where a
        # cast raises (ANSI, Spark 4's default) or wraps the value (legacy).
        d = F.expr(f"try_cast(`{name}` AS DOUBLE)")
        integer = F.expr(f"try_cast(try_cast(`{name}` AS DOUBLE) AS {'BIGINT' if kind == 'id' else 'INT'})")
        return F.when(d == F.floor(d), integer)
    return F.when(c != "", c)  # string / geometry: empty field is NULL


def parse_problem(name: str, kind: str) -> Column:
    """A reason string when a non-empty raw value does not parse as `kind`, else NULL."""
    c = F.col(name)
    return F.when(
        (c.isNotNull()) & (c != "") & parse_value(name, kind).isNull(),
        F.concat(F.lit(f"unparseable {kind} in {name}: '"), F.substring(c, 1, 60), F.lit("'")),
    )
