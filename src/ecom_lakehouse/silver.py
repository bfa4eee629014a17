"""Silver: typed, conformed, deduplicated tables, with data-quality rules applied.

* Values are cast with the same expressions bronze validated them with (schemas.parse_value).
* One row per key: the latest ingestion wins; the table is MERGEd on its key, so reruns and
  re-delivered files never duplicate anything.
* Known quirks normalised: the literal city 'null' -> NULL, 'España' -> 'Spain'.
* Rule violations that leave the row usable (shipped before created, sale price under 1,
  status/timestamp mismatch) are kept and listed in ``dq_flags``; rows that cannot be joined
  (orphan foreign keys) go to ``silver/_quarantine`` with the reason.
* Personal data (names, email, street) stops here: gold only uses ids; ``email_sha256``
  is the join key if one is ever needed.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from ecom_lakehouse import lineage, reconcile
from ecom_lakehouse.config import Lakehouse
from ecom_lakehouse.schemas import (
    BATCH_ID,
    FLAGS,
    INGESTED_AT,
    KEYS,
    QUARANTINE_SCHEMA,
    RAW_COLUMNS,
    SOURCE_FILE,
    STREAM_ID,
    parse_value,
)
from ecom_lakehouse.session import conf_within, cores

PII_COLUMNS = ("first_name", "last_name", "email", "street_address")

# child table -> [(column, parent table)]; rows whose non-NULL key has no parent are orphans.
FOREIGN_KEYS = {
    "orders": [("user_id", "users")],
    "order_items": [("order_id", "orders"), ("user_id", "users"), ("product_id", "products"),
                    ("inventory_item_id", "inventory_items")],
    "inventory_items": [("product_id", "products"), ("product_distribution_center_id", "distribution_centers")],
    "products": [("distribution_center_id", "distribution_centers")],
    "events": [("user_id", "users")],
}
# Parents first, so that a child is checked against the parent as silver now holds it.
ORDER = ("distribution_centers", "products", "users", "inventory_items", "orders", "order_items", "events")
COUNTRY_SPELLINGS = {"España": "Spain"}


# --- pure transformations ------------------------------------------------------------

def typed(bronze: DataFrame, table: str) -> DataFrame:
    """Raw strings -> typed columns (geometry dropped: latitude/longitude carry it)."""
    cols = [parse_value(c, kind).alias(c) for c, kind in RAW_COLUMNS[table] if kind != "geometry"]
    return bronze.select(*cols, SOURCE_FILE, INGESTED_AT, BATCH_ID)


def latest_per_key(df: DataFrame, key: str) -> DataFrame:
    """One row per key: the most recent ingestion (ties broken by batch, then file)."""
    w = Window.partitionBy(key).orderBy(F.col(INGESTED_AT).desc(), F.col(BATCH_ID).desc(), F.col(SOURCE_FILE).desc())
    return df.withColumn("_rn", F.row_number().over(w)).where("_rn = 1").drop("_rn")


def normalise_places(df: DataFrame) -> DataFrame:
    """Literal 'null' city -> NULL; one spelling per country."""
    if "city" in df.columns:
        df = df.withColumn("city", F.when(F.lower(F.trim("city")) == "null", None).otherwise(F.col("city")))
    if "country" in df.columns:
        country = F.col("country")
        for spelling, canonical in COUNTRY_SPELLINGS.items():
            country = F.when(F.col("country") == spelling, canonical).otherwise(country)
        df = df.withColumn("country", country)
    return df


def with_email_hash(users: DataFrame) -> DataFrame:
    return users.withColumn("email_sha256", F.sha2(F.lower(F.trim("email")), 256))


def _flag(condition: Column, name: str) -> Column:
    return F.when(condition, F.lit(name))


def order_flags(df: DataFrame, with_price: bool = False) -> DataFrame:
    """dq_flags for orders and order items: timestamp order and status/timestamp agreement."""
    s = F.col("status")
    shipped, delivered, returned = (F.col(c).isNotNull() for c in ("shipped_at", "delivered_at", "returned_at"))
    expected = {  # which timestamps each status implies (published generator)
        "Processing": (False, False, False), "Cancelled": (False, False, False),
        "Shipped": (True, False, False), "Complete": (True, True, False), "Returned": (True, True, True),
    }
    mismatch = F.lit(True)
    for status, (sh, de, re) in expected.items():
        as_implied = (shipped == F.lit(sh)) & (delivered == F.lit(de)) & (returned == F.lit(re))
        mismatch = F.when(s == status, ~as_implied).otherwise(mismatch)
    flags = [
        _flag(F.col("shipped_at") < F.col("created_at"), "shipped_before_created"),
        _flag(F.col("delivered_at") < F.col("shipped_at"), "delivered_before_shipped"),
        _flag(F.col("returned_at") < F.col("delivered_at"), "returned_before_delivered"),
        _flag(mismatch, "status_timestamp_mismatch"),
    ]
    if with_price:
        flags.append(_flag(F.col("sale_price") < 1, "sale_price_under_1"))
    return df.withColumn(FLAGS, F.filter(F.array(*flags), lambda x: x.isNotNull()))


def no_flags(df: DataFrame) -> DataFrame:
    return df.withColumn(FLAGS, F.array().cast("array<string>"))


CONFORM = {
    "users": lambda df: with_email_hash(normalise_places(df)).transform(no_flags),
    "events": lambda df: normalise_places(df).transform(no_flags),
    "orders": order_flags,
    "order_items": lambda df: order_flags(df, with_price=True),
}


def conform(df: DataFrame, table: str) -> DataFrame:
    return CONFORM.get(table, no_flags)(df)


ORPHAN_REASON = "_reason"


def with_orphan_reason(df: DataFrame, table: str, parents: dict[str, DataFrame]) -> DataFrame:
    """`df` plus ORPHAN_REASON: why the row's non-NULL foreign keys do not resolve, NULL when they do.

    A row with a NULL foreign key joins on a stand-in from its own key instead, which the condition
    never lets match: joined on NULL, every such row would hash to one partition, and 46% of thelook's
    events are anonymous (at scale 10, 11M rows in one cached partition ran out of the 1 GB heap)."""
    reason = F.lit(None).cast("string")
    checked = df
    for column, parent in FOREIGN_KEYS.get(table, []):
        keys = parents[parent].select(F.col(KEYS[parent]).alias(f"_pk_{column}"), F.lit(True).alias(f"_ok_{column}"))
        spread = F.coalesce(checked[column], F.xxhash64(checked[KEYS[table]]).cast(checked.schema[column].dataType))
        checked = checked.join(keys, (spread == keys[f"_pk_{column}"]) & checked[column].isNotNull(), "left")
        missing = F.col(column).isNotNull() & F.col(f"_ok_{column}").isNull()
        reason = F.when(missing, F.concat_ws("; ", reason, F.lit(f"orphan {column}: no such {parent}"))).otherwise(reason)
        checked = checked.drop(f"_pk_{column}")
    return checked.withColumn(ORPHAN_REASON, reason).drop(*[c for c in checked.columns if c.startswith("_ok_")])


def orphan_candidates(bronze: DataFrame, table: str, parents: dict[str, DataFrame]) -> DataFrame:
    """Bronze rows of `table` whose foreign keys do not resolve, among all its rows and not only each
    key's latest: when there are none, no row silver keeps can be an orphan. Keys and foreign keys
    only, with no window over the keys, so it costs a narrow scan and joins, not the whole rebuild."""
    kinds = dict(RAW_COLUMNS[table])
    keys = [KEYS[table], *(column for column, _ in FOREIGN_KEYS.get(table, []))]
    narrow = bronze.select(*[parse_value(c, kinds[c]).alias(c) for c in keys])
    return with_orphan_reason(narrow, table, parents).where(F.col(ORPHAN_REASON).isNotNull())


def as_quarantine(checked: DataFrame, table: str) -> DataFrame:
    """Checked rows in the quarantine's shape (reason NULL for rows that resolve)."""
    data = [c for c in checked.columns if c not in PII_COLUMNS + (SOURCE_FILE, INGESTED_AT, BATCH_ID, ORPHAN_REASON)]
    return checked.select(
        F.lit(table).alias("source_table"), F.col(SOURCE_FILE).alias("source_file"),
        # Data columns only: the file and ingestion are columns of their own, and a rerun writes the same record.
        F.to_json(F.struct(*data)).alias("record"),
        F.col(ORPHAN_REASON).alias("reason"), F.col(INGESTED_AT), F.col(BATCH_ID), F.lit(None).cast("string").alias(STREAM_ID))


# --- the stage entry point -------------------------------------------------------------

@dataclass
class SilverResult:
    check: reconcile.TableCheck
    seconds: float

    @property
    def table(self) -> str:
        return self.check.table


def assignments(columns: list[str]) -> str:
    """MERGE's `UPDATE SET` list: each column of the target from the source's column of that name."""
    return ", ".join(f"t.`{c}` = s.`{c}`" for c in columns)


def insertion(columns: list[str]) -> str:
    """MERGE's `INSERT (...) VALUES (...)` of the source's columns."""
    return f"({', '.join(f'`{c}`' for c in columns)}) VALUES ({', '.join(f's.`{c}`' for c in columns)})"


def merge_latest(target, checked: DataFrame, key: str, complete: bool) -> None:
    """Upsert the latest row per key from `checked` (rows with their ORPHAN_REASON): the newer ingestion
    wins, and a key whose latest row is an orphan leaves silver. `complete`: `checked` holds every key
    of bronze, and keys absent from it are removed too, so silver is exactly the current valid state of
    bronze; otherwise it holds only newly delivered keys, and the MERGE touches only theirs."""
    if not target.exists(checked.sparkSession):
        target.overwrite(checked.where(F.col(ORPHAN_REASON).isNull()).drop(ORPHAN_REASON))
        return
    columns = [c for c in checked.columns if c != ORPHAN_REASON]
    changed = f"s.{INGESTED_AT} > t.{INGESTED_AT} OR NOT (s.{FLAGS} <=> t.{FLAGS})"
    target.merge(checked, f"t.{key} = s.{key}",
                 f"WHEN MATCHED AND s.{ORPHAN_REASON} IS NOT NULL THEN DELETE",
                 f"WHEN MATCHED AND ({changed}) THEN UPDATE SET {assignments(columns)}",
                 f"WHEN NOT MATCHED AND s.{ORPHAN_REASON} IS NULL THEN INSERT {insertion(columns)}",
                 *(["WHEN NOT MATCHED BY SOURCE THEN DELETE"] if complete else []))


def merge_quarantine(quarantine_table, rows: DataFrame, key: str) -> None:
    """The quarantine's rows for newly delivered keys: an orphan replaces the key's quarantined row,
    a row that resolves removes it (its key is in silver now)."""
    key_of = lambda side: f"get_json_object({side}.record, '$.{key}')"  # noqa: E731
    quarantine_table.merge(rows, f"t.source_table = s.source_table AND {key_of('t')} = {key_of('s')}",
                           "WHEN MATCHED AND s.reason IS NULL THEN DELETE",
                           f"WHEN MATCHED THEN UPDATE SET {assignments(rows.columns)}",
                           f"WHEN NOT MATCHED AND s.reason IS NOT NULL THEN INSERT {insertion(rows.columns)}")


def keeps_every_row(operation: str, mode: str | None) -> bool:
    """Whether a bronze table holds the rows it held before this commit, and maybe more."""
    return operation not in lineage.DATA_OPERATIONS or (operation, mode) == ("WRITE", "Append")


def delivered_after(spark: SparkSession, lake: Lakehouse, table: str, previous: str | None, now: str):
    """The ingestion time (µs since the epoch) after which bronze `table`'s rows are new to silver, or
    None to rebuild in full.

    Incremental only when silver was last built from the same versions of its silver FK parents (so
    no earlier orphan can have found its parent) and an older version of bronze `table`, and every bronze
    commit since only appended rows (a --reset deletes some). Bronze stamps each micro-batch with the
    time it ran, so the latest ingestion silver holds is a watermark: every row delivered since is
    later, and each key's latest row is among them if it is new."""
    own = f"bronze.{table}"
    before, after = lineage.versions(previous or ""), lineage.versions(now)
    if own not in before or {k: v for k, v in before.items() if k != own} != {k: v for k, v in after.items() if k != own}:
        return None
    commits = (lake.table("bronze", table).history(spark).where(F.col("version") > before[own])
               .select("operation", F.col("operationParameters")["mode"].alias("mode")).collect())  # one row per commit
    if not all(keeps_every_row(c["operation"], c["mode"]) for c in commits):
        return None
    # In microseconds: a Python datetime would pass through the local time zone (ambiguous in a DST change).
    return lake.table("silver", table).read(spark).agg(F.unix_micros(F.max(INGESTED_AT))).first()[0]


# Bronze Parquet bytes per partition of a table's cached checked rows (several times that in memory).
CACHED_PARTITION_BYTES = 8 * 2**20


def cached_partitions(bronze_bytes: int, cores: int) -> int:
    """Shuffle partitions for a table's checked rows, which silver caches. AQE merges small shuffle
    partitions, but not in a plan that is cached, so they are sized here from the data: a fixed 8 made
    scale 10's events partitions overflow the default 1 GB heap, and Spark's 200 wrote 200 files per
    table (silver at scale 1: 140 s, against 99 s sized)."""
    return max(cores, math.ceil(bronze_bytes / CACHED_PARTITION_BYTES))


def _lineage(spark: SparkSession, lake: Lakehouse, table: str) -> str:
    """What a silver table is built from: its bronze table, and its FK parents as silver holds them
    (its rows were checked against those, so a parent rebuilt for any reason rebuilds it)."""
    parents = sorted({parent for _, parent in FOREIGN_KEYS.get(table, [])})
    return lineage.of(spark, [lake.table("bronze", table), *(lake.table("silver", p) for p in parents)])


def run(spark: SparkSession, lake: Lakehouse, echo=print) -> list[SilverResult]:
    written, current = {}, {}  # table -> seconds its write took; table -> its silver rows
    quarantine_table = lake.quarantine("silver")
    quarantine_table.ensure(spark, QUARANTINE_SCHEMA)
    quarantined_before = reconcile.quarantined_by_table(spark, lake, "silver")
    for table in ORDER:
        started = time.time()
        target = lake.table("silver", table)
        built_from = _lineage(spark, lake, table)
        previous = lineage.built_from(spark, target)
        if previous == built_from:
            # Nothing it depends on changed since the last build: skip the MERGE.
            current[table] = target.read(spark)
            echo(f"  silver {table:<21} unchanged (built from {built_from}): skipped")
            continue
        since = delivered_after(spark, lake, table, previous, built_from)
        source = lake.table("bronze", table)
        bronze = source.read(spark)
        if since is not None:  # Delta skips the files of earlier deliveries by their min/max statistics
            bronze = bronze.where(F.col(INGESTED_AT) > F.timestamp_micros(F.lit(since)))
        size = source.detail(spark)["sizeInBytes"]
        # The quarantine is written only when it changes: a table with rows there, or rows that may be
        # orphans. Otherwise the rows are computed once, by the table's write, and not cached (caching
        # scale 1's events for a second write of nothing cost ~11 s of its ~35 s).
        to_quarantine = quarantined_before.get(table, 0) > 0 or (
            table in FOREIGN_KEYS and not orphan_candidates(bronze, table, current).isEmpty())
        # Partitions sized from the data, for whichever write plans the rows (AQE leaves a cached plan's alone).
        with conf_within(spark, "spark.sql.shuffle.partitions",
                         str(cached_partitions(size, cores(spark)))):
            checked = with_orphan_reason(conform(latest_per_key(typed(bronze, table), KEYS[table]), table), table,
                                         current)
            if to_quarantine:
                checked = checked.persist()
            try:
                # Quarantine first, table second: the table's commit records its lineage, so a run
                # killed in between redoes both next time (either write gives the same result twice).
                if to_quarantine and since is None:  # replaceWhere keeps other tables' rows
                    quarantine_table.replace_where(
                        as_quarantine(checked.where(F.col(ORPHAN_REASON).isNotNull()), table), f"source_table = '{table}'")
                elif to_quarantine:
                    merge_quarantine(quarantine_table, as_quarantine(checked, table), KEYS[table])
                with lineage.recorded(spark, built_from):
                    merge_latest(target, checked, KEYS[table], complete=since is None)
            finally:
                checked.unpersist()
        current[table] = target.read(spark)
        written[table] = time.time() - started
        echo(f"  silver {table:<21} written in {written[table]:.1f}s")
    # Read back once every table is written, from the Delta tables.
    results = [SilverResult(check, written[check.table]) for check in reconcile.silver_tables(spark, lake, list(written))]
    for res in results:
        check = res.check
        echo(f"  silver {res.table:<21} bronze {check.bronze:>9,}  -> silver {check.silver:>9,}  superseded "
             f"{check.superseded:>7,}  quarantined {check.quarantined:>6,}  flagged {check.flagged:>5,}"
             f"{'' if check.ok else '  MISMATCH'}")
    reconcile.raise_on_mismatch([r.check for r in results], "silver")
    return results
