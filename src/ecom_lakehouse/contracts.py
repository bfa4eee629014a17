"""What each gold and ML output promises its readers, declared in one place and checked after every stage
that writes it (stages.run_stage), on every platform: a key (no two rows share it), columns that are
never null, and foreign keys (every value is in the table it points to). Like a dbt model contract:
a broken promise stops the run (exit 1) naming the table and what broke, before anyone reads it.
"""
from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from ecom_lakehouse.config import Lakehouse


class ContractBroken(Exception):
    """An output breaks its declared contract; the message names the table and each broken promise."""


@dataclass(frozen=True)
class Contract:
    key: tuple[str, ...]
    not_null: tuple[str, ...] = ()
    references: tuple[tuple[str, str, str, str], ...] = ()  # (column, layer, table, column it points to)


USERS = ("silver", "users", "id")
PRODUCTS = ("silver", "products", "id")
CONTRACTS: dict[str, Contract] = {
    "customer_features": Contract(("user_id",), ("is_buyer", "frequency", "monetary"), (("user_id", *USERS),)),
    "category_performance": Contract(("department", "category"), ("revenue", "units")),
    "category_performance_monthly": Contract(("month", "department", "category"), ("revenue", "units")),
    "product_performance": Contract(("product_id",), ("revenue", "units"), (("product_id", *PRODUCTS),)),
    "inventory_restock_alerts": Contract(("product_id",), ("days_of_cover", "severity"), (("product_id", *PRODUCTS),)),
    "funnel": Contract(("traffic_source", "browser", "visitor"), ("sessions",)),
    "sales_daily": Contract(("date",), ("orders", "revenue")),
    "kpi_periods": Contract(("period", "period_start"), ("period_end", "complete", "revenue", "buyers", "orders")),
    "customer_segments": Contract(("user_id",), ("segment_id", "segment"),
                                  (("user_id", "gold", "customer_features", "user_id"),)),
    "segment_summary": Contract(("segment_id",), ("segment", "users")),
    "served_recommendations": Contract(("user_id", "rank"), ("product_id", "strategy", "arm"),
                                       (("user_id", *USERS), ("product_id", *PRODUCTS))),
    "ab_exposures": Contract(("serving", "user_id", "rank"), ("experiment", "run_id", "served_at", "arm", "product_id",
                                                            "shown")),
    "ab_looks": Contract(("experiment", "measured_at"), ("treatment_users", "control_users", "verdict")),
    "recommender_evaluation": Contract(("model", "metric", "data_mode", "users")),
    "model_verdicts": Contract(("model", "data_mode", "check"), ("verdict",)),
    "strategy_verdicts": Contract(("data_mode", "strategy"), ("users", "hits", "verdict", "served", "why")),
}
STAGE_OUTPUTS = {
    "segment": ("customer_segments", "segment_summary", "model_verdicts"),
    "recommend": ("served_recommendations", "ab_exposures", "recommender_evaluation", "strategy_verdicts",
                  "model_verdicts"),
    "measure": ("ab_looks",),
}


def broken_promises(spark: SparkSession, lake: Lakehouse, name: str) -> list[str]:
    """What `name` (a gold table) breaks of its contract, read back from the table; [] when it keeps it
    (or does not exist: a stage that published nothing is judged by its own checks)."""
    contract, table = CONTRACTS[name], lake.table("gold", name)
    if not table.exists(spark):
        return []
    df = table.read(spark)
    # one pass: the most rows any key has, and the nulls of each not-null column (key columns included)
    columns = tuple(dict.fromkeys((*contract.key, *contract.not_null)))
    nulls = [f"_nulls_{i}" for i in range(len(columns))]
    row = (df.groupBy(*contract.key)
           .agg(F.count(F.lit(1)).alias("_rows"),
                *[F.sum(F.col(c).isNull().cast("long")).alias(n) for c, n in zip(columns, nulls, strict=True)])
           .agg(F.max("_rows").alias("_rows"), *[F.sum(n).alias(n) for n in nulls]).first())
    broken = []
    if (row["_rows"] or 0) > 1:
        broken.append(f"key ({', '.join(contract.key)}) is not unique: {row['_rows']} rows share one")
    broken += [f"{c} is null in {row[n]:,} rows" for c, n in zip(columns, nulls, strict=True) if row[n]]
    for column, layer, parent, parent_column in contract.references:
        # distinct names on both sides: the parent may be read through the same plan as the child
        child = df.select(F.col(column).alias("_child")).where(F.col("_child").isNotNull()).distinct()
        keys = lake.table(layer, parent).read(spark).select(F.col(parent_column).alias("_parent")).distinct()
        orphans = child.join(keys, child["_child"] == keys["_parent"], "left_anti").count()
        if orphans:
            broken.append(f"{column}: {orphans:,} values not in {layer} {parent}.{parent_column}")
    return broken


def check_outputs(spark: SparkSession, lake: Lakehouse, names) -> None:
    broken = {name: promises for name in names if (promises := broken_promises(spark, lake, name))}
    if broken:
        raise ContractBroken("output contract broken: " + "; ".join(
            f"gold {name}: {', '.join(promises)}" for name, promises in broken.items()))
