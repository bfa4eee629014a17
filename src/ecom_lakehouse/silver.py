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

import time
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from ecom_lakehouse import lineage, reconcile
from ecom_lakehouse.config import Lakehouse
from ecom_lakehouse.schemas import (BATCH_ID, INGESTED_AT, KEYS, QUARANTINE_SCHEMA, RAW_COLUMNS, SOURCE_FILE, STREAM_ID, TABLES,
                                    parse_value)

FLAGS = "dq_flags"
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
        mismatch = F.when(s == status, ~((shipped == F.lit(sh)) & (delivered == F.lit(de)) & (returned == F.lit(re)))).otherwise(mismatch)
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


def split_orphans(df: DataFrame, table: str, parents: dict[str, DataFrame]) -> tuple[DataFrame, DataFrame]:
    """(rows whose foreign keys resolve or are NULL, quarantine rows for the others)."""
    reason = F.lit(None).cast("string")
    checked = df
    for column, parent in FOREIGN_KEYS.get(table, []):
        keys = parents[parent].select(F.col(KEYS[parent]).alias(f"_pk_{column}"), F.lit(True).alias(f"_ok_{column}"))
        checked = checked.join(keys, checked[column] == keys[f"_pk_{column}"], "left")
        missing = F.col(column).isNotNull() & F.col(f"_ok_{column}").isNull()
        reason = F.when(missing, F.concat_ws("; ", reason, F.lit(f"orphan {column}: no such {parent}"))).otherwise(reason)
        checked = checked.drop(f"_pk_{column}")
    checked = checked.withColumn("_reason", reason).drop(*[c for c in checked.columns if c.startswith("_ok_")])
    valid = checked.where(F.col("_reason").isNull()).drop("_reason")
    bad = checked.where(F.col("_reason").isNotNull())
    quarantine = bad.select(
        F.lit(table).alias("source_table"), F.col(SOURCE_FILE).alias("source_file"),
        # Data columns only: the file and ingestion are columns of their own, and a rerun writes the same record.
        F.to_json(F.struct(*[c for c in df.columns if c not in PII_COLUMNS + (SOURCE_FILE, INGESTED_AT, BATCH_ID)]))
        .alias("record"),
        F.col("_reason").alias("reason"), F.col(INGESTED_AT), F.col(BATCH_ID), F.lit(None).cast("string").alias(STREAM_ID))
    return valid, quarantine


# --- the stage entry point -------------------------------------------------------------

@dataclass
class SilverResult:
    check: reconcile.TableCheck
    flagged: int
    seconds: float

    @property
    def table(self) -> str:
        return self.check.table


def merge_latest(spark: SparkSession, target, df: DataFrame, key: str) -> None:
    """Upsert by key; the newer ingestion wins; keys gone from the source are removed so
    silver is exactly the current valid state of bronze."""
    if not target.exists(spark):
        target.overwrite(df)
        return
    changed = f"s.{INGESTED_AT} > t.{INGESTED_AT} OR NOT (s.{FLAGS} <=> t.{FLAGS})"
    (target.delta(spark).alias("t")
     .merge(df.alias("s"), f"t.{key} = s.{key}")
     .whenMatchedUpdateAll(condition=changed)
     .whenNotMatchedInsertAll()
     .whenNotMatchedBySourceDelete()
     .execute())


def _lineage(spark: SparkSession, lake: Lakehouse, table: str) -> str:
    """The bronze tables a silver table is built from: itself and its FK parents."""
    sources = {table} | {parent for _, parent in FOREIGN_KEYS.get(table, [])}
    return lineage.of(spark, [lake.table("bronze", t) for t in sources])


def run(spark: SparkSession, lake: Lakehouse, echo=print) -> list[SilverResult]:
    results, current = [], {}
    quarantine_table = lake.quarantine("silver")
    quarantine_table.ensure(spark, QUARANTINE_SCHEMA)
    for table in ORDER:
        started = time.time()
        target = lake.table("silver", table)
        built_from = _lineage(spark, lake, table)
        if lineage.is_current(spark, [target], built_from):
            # Nothing it depends on changed since the last build: skip the MERGE.
            current[table] = target.read(spark)
            echo(f"  silver {table:<21} unchanged (built from {built_from}): skipped")
            continue
        bronze = lake.table("bronze", table).read(spark)
        conformed = conform(latest_per_key(typed(bronze, table), KEYS[table]), table).persist()
        try:
            valid, quarantine = split_orphans(conformed, table, current)
            # Quarantine first, table second: the table's commit records its lineage, so a run
            # killed in between rebuilds both next time; replaceWhere keeps other tables' rows.
            quarantine_table.replace_where(quarantine, f"source_table = '{table}'")
            with lineage.recorded(spark, built_from):
                merge_latest(spark, target, valid, KEYS[table])
        finally:
            conformed.unpersist()
        current[table] = target.read(spark)
        check = reconcile.silver_table(spark, lake, table)  # read back from the Delta tables
        res = SilverResult(check, current[table].where(F.size(FLAGS) > 0).count(), time.time() - started)
        echo(f"  silver {table:<21} bronze {check.bronze:>9,}  -> silver {check.silver:>9,}  superseded "
             f"{check.superseded:>7,}  quarantined {check.quarantined:>6,}  flagged {res.flagged:>5,}  "
             f"{res.seconds:5.1f}s{'' if check.ok else '  MISMATCH'}")
        results.append(res)
    reconcile.raise_on_mismatch([r.check for r in results], "silver")
    return results
