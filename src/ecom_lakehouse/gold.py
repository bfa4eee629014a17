"""Gold: feature and insight tables built from silver, by pure DataFrame functions.

Revenue counts only order items whose order was neither cancelled nor returned ("valid"
sales); cost is the sold inventory unit's cost. "As of" is the latest order-item timestamp
in the data, not the wall clock, so results do not drift with the day you run them.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import time
from collections.abc import Callable

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from ecom_lakehouse import lineage
from ecom_lakehouse.config import Lakehouse
from ecom_lakehouse.schemas import VERDICT_PARTITIONING, VERDICT_SCHEMA
from ecom_lakehouse.session import side_by_side

INVALID_STATUSES = ("Cancelled", "Returned")
RESTOCK_COVER_DAYS = 60  # alert when unsold stock covers fewer days of sales than this
RESTOCK_CRITICAL_DAYS = 14
RESTOCK_MIN_RECENT_UNITS = 2  # ... and at least this many units sold in the last 90 days
AGE_BANDS = [(0, 17, "<18"), (18, 24, "18-24"), (25, 34, "25-34"), (35, 44, "35-44"),
             (45, 54, "45-54"), (55, 64, "55-64"), (65, 200, "65+")]


def _round(c, digits=2):
    return F.round(c, digits)


def _ratio(numerator, denominator):
    """numerator / denominator, 0.0 where the denominator is 0 (no purchase, no order)."""
    return F.when(denominator > 0, numerator / denominator).otherwise(0.0)


def sales_lines(order_items: DataFrame, products: DataFrame, inventory: DataFrame) -> DataFrame:
    """Order items with product attributes, unit cost and a `valid` (revenue-counting) flag."""
    p = products.select(F.col("id").alias("product_id"), "category", "department", "brand",
                        F.col("cost").alias("product_cost"), "retail_price")
    inv = inventory.select(F.col("id").alias("inventory_item_id"), F.col("cost").alias("unit_cost"))
    return (order_items.join(p, "product_id", "left").join(inv, "inventory_item_id", "left")
            .withColumn("cost", F.coalesce("unit_cost", "product_cost"))
            .withColumn("valid", ~F.col("status").isin(*INVALID_STATUSES))
            .withColumn("returned", F.col("status") == "Returned")
            .drop("unit_cost", "product_cost"))


def as_of_date(lines: DataFrame):
    return lines.agg(F.max("created_at")).first()[0]


def _performance_metrics():
    revenue = F.sum(F.when(F.col("valid"), F.col("sale_price")).otherwise(0.0))
    cost = F.sum(F.when(F.col("valid"), F.col("cost")).otherwise(0.0))
    shipped_items = F.count(F.when(F.col("status") != "Cancelled", True))
    return [
        _round(revenue).alias("revenue"), _round(cost).alias("cost"),
        _round(revenue - cost).alias("gross_margin"),
        _round(F.when(revenue > 0, (revenue - cost) / revenue * 100)).alias("gross_margin_pct"),
        F.count(F.when(F.col("valid"), True)).alias("units"),
        _round(F.count(F.when(F.col("returned"), True)) / F.greatest(shipped_items, F.lit(1)), 4).alias("return_rate"),
    ]


def category_performance(lines: DataFrame) -> DataFrame:
    return lines.groupBy("department", "category").agg(*_performance_metrics()).orderBy(F.desc("revenue"))


def category_performance_monthly(lines: DataFrame) -> DataFrame:
    month = F.date_trunc("month", "created_at").cast("date").alias("month")
    return lines.groupBy(month, "department", "category").agg(*_performance_metrics()).orderBy("month", "department", "category")


def product_performance(lines: DataFrame, events: DataFrame) -> DataFrame:
    views = (events.where(F.col("event_type") == "product")
             .select(F.regexp_extract("uri", r"^/product/(\d+)$", 1).cast("long").alias("product_id"))
             .groupBy("product_id").agg(F.count("*").alias("product_views")))
    perf = lines.groupBy("product_id", "department", "category", "brand").agg(*_performance_metrics())
    return (perf.join(views, "product_id", "left").fillna(0, ["product_views"])
            .withColumn("views_per_unit", _round(F.col("product_views") / F.greatest("units", F.lit(1)))))


def customer_features(users: DataFrame, lines: DataFrame, as_of) -> DataFrame:
    """One row per user: RFM over valid orders plus profile attributes (no personal data)."""
    ts = F.lit(as_of).cast("timestamp")
    valid = lines.where("valid")
    per_user = valid.groupBy("user_id").agg(
        F.countDistinct("order_id").alias("frequency"),
        _round(F.sum("sale_price")).alias("monetary"),
        F.max("created_at").alias("last_order_at"),
        F.countDistinct("category").alias("category_diversity"),
        F.count("*").alias("items"),
    )
    orders_all = lines.groupBy("user_id").agg(
        F.countDistinct("order_id").alias("orders_placed"),
        F.countDistinct(F.when(F.col("returned"), F.col("order_id"))).alias("orders_returned"),
    )
    band = F.lit(None).cast("string")
    for lo, hi, label in reversed(AGE_BANDS):
        band = F.when(F.col("age").between(lo, hi), label).otherwise(band)
    return (users.select(F.col("id").alias("user_id"), "gender", "country", "traffic_source", "age",
                         F.col("created_at").alias("signed_up_at"))
            .join(per_user, "user_id", "left").join(orders_all, "user_id", "left")
            .fillna(0, ["frequency", "monetary", "category_diversity", "items", "orders_placed", "orders_returned"])
            .withColumn("recency_days", F.datediff(ts, "last_order_at"))
            .withColumn("tenure_days", F.datediff(ts, "signed_up_at"))
            .withColumn("avg_basket", _round(_ratio(F.col("monetary"), F.col("frequency"))))
            .withColumn("return_rate", _round(_ratio(F.col("orders_returned"), F.col("orders_placed")), 4))
            .withColumn("age_band", band)
            .withColumn("is_buyer", F.col("frequency") > 0)
            .drop("signed_up_at"))


def inventory_restock_alerts(inventory: DataFrame, products: DataFrame, as_of) -> DataFrame:
    """Days of cover = unsold units on hand / daily sales velocity, where velocity is the
    faster of the last-30-day and last-90-day rates. Alert when cover < RESTOCK_COVER_DAYS
    and at least RESTOCK_MIN_RECENT_UNITS sold in 90 days; 'critical' under 14 days."""
    ts = F.lit(as_of).cast("timestamp")
    age = F.datediff(ts, "sold_at")
    stock = inventory.groupBy("product_id").agg(
        F.count(F.when(F.col("sold_at").isNull(), True)).alias("units_on_hand"),
        F.count(F.when(F.col("sold_at").isNotNull() & (age <= 30), True)).alias("sold_last_30d"),
        F.count(F.when(F.col("sold_at").isNotNull() & (age <= 90), True)).alias("sold_last_90d"),
    )
    velocity = F.greatest(F.col("sold_last_30d") / 30.0, F.col("sold_last_90d") / 90.0)
    p = products.select(F.col("id").alias("product_id"), "name", "brand", "department", "category", "distribution_center_id")
    alerts = (stock.withColumn("daily_velocity", _round(velocity, 4))
              .withColumn("days_of_cover", _round(F.col("units_on_hand") / velocity, 1))
              .where((F.col("sold_last_90d") >= RESTOCK_MIN_RECENT_UNITS) & (F.col("days_of_cover") < RESTOCK_COVER_DAYS))
              .withColumn("severity", F.when(F.col("days_of_cover") < RESTOCK_CRITICAL_DAYS, "critical").otherwise("warning"))
              .join(p, "product_id", "left"))
    return alerts.withColumn("rank", F.row_number().over(
        Window.orderBy("days_of_cover", F.desc("daily_velocity"), "product_id")))


def funnel(events: DataFrame) -> DataFrame:
    """Sessions -> product view -> cart -> purchase, by traffic source, browser and visitor: `anonymous` (a
    session without a user_id) or `known`, so the two funnels can be read side by side."""
    sessions = events.groupBy("session_id").agg(
        F.first("traffic_source", ignorenulls=True).alias("traffic_source"),
        F.first("browser", ignorenulls=True).alias("browser"),
        F.when(F.max(F.col("user_id").isNull().cast("int")) == 1, "anonymous").otherwise("known").alias("visitor"),
        F.max((F.col("event_type") == "product").cast("int")).alias("viewed"),
        F.max((F.col("event_type") == "cart").cast("int")).alias("carted"),
        F.max((F.col("event_type") == "purchase").cast("int")).alias("purchased"),
    )
    agg = sessions.groupBy("traffic_source", "browser", "visitor").agg(
        F.count("*").alias("sessions"),
        F.sum("viewed").alias("product_view_sessions"), F.sum("carted").alias("cart_sessions"),
        F.sum("purchased").alias("purchase_sessions"),
    )
    return (agg.withColumn("view_rate", _round(F.col("product_view_sessions") / F.col("sessions"), 4))
            .withColumn("cart_rate", _round(F.col("cart_sessions") / F.col("sessions"), 4))
            .withColumn("conversion_rate", _round(F.col("purchase_sessions") / F.col("sessions"), 4))
            .orderBy("traffic_source", "browser", "visitor"))


def sales_daily(lines: DataFrame) -> DataFrame:
    day = F.to_date("created_at").alias("date")
    return (lines.groupBy(day).agg(
        F.countDistinct(F.when(F.col("valid"), F.col("order_id"))).alias("orders"),
        *_performance_metrics(),
        F.countDistinct(F.when(F.col("status") == "Cancelled", F.col("order_id"))).alias("cancelled_orders"),
        F.countDistinct(F.when(F.col("returned"), F.col("order_id"))).alias("returned_orders"),
    ).orderBy("date"))


KPI_PERIODS = {"month": 1, "quarter": 3}  # calendar periods of the headline numbers, in months


def kpi_periods(lines: DataFrame, as_of) -> DataFrame:
    """The headline numbers per calendar month and quarter: revenue, cost, gross margin, units and return rate
    as in category_performance, the buyers (users with a valid order item) and their valid orders.
    `complete` says the period ended by the latest order item (`as_of`), so a header compares whole periods."""
    def per(period: str, months: int) -> DataFrame:
        start = F.date_trunc(period, "created_at").cast("date")
        return (lines.groupBy(start.alias("period_start")).agg(
            *_performance_metrics(),
            F.countDistinct(F.when(F.col("valid"), F.col("user_id"))).alias("buyers"),
            F.countDistinct(F.when(F.col("valid"), F.col("order_id"))).alias("orders"))
            .withColumn("period", F.lit(period))
            .withColumn("period_end", F.add_months("period_start", months)))  # exclusive
    periods = [per(period, months) for period, months in KPI_PERIODS.items()]
    both = periods[0].unionByName(periods[1])
    return (both.withColumn("orders_per_buyer", _round(_ratio(F.col("orders"), F.col("buyers")), 4))
            .withColumn("complete", F.col("period_end").cast("timestamp") <= F.lit(as_of))
            .select("period", "period_start", "period_end", "complete", "revenue", "cost", "gross_margin",
                    "gross_margin_pct", "units", "buyers", "orders", "orders_per_buyer", "return_rate")
            .orderBy("period", "period_start"))


# The sales lines (order items with their product and cost) and the as-of date taken from them.
SALES_INPUTS = ("order_items", "products", "inventory_items")
# The silver tables each output is built from: an output is rebuilt only when one of them changed, so
# new events alone rebuild product_performance and funnel, and leave customer_features (and with it the
# segmentation, which reads it) as they are.
OUTPUT_INPUTS = {
    "customer_features": ("users", *SALES_INPUTS),
    "category_performance": SALES_INPUTS,
    "category_performance_monthly": SALES_INPUTS,
    "product_performance": (*SALES_INPUTS, "events"),
    "inventory_restock_alerts": SALES_INPUTS,
    "funnel": ("events",),
    "sales_daily": SALES_INPUTS,
    "kpi_periods": SALES_INPUTS,
}
OUTPUTS = tuple(OUTPUT_INPUTS)
INPUTS = tuple(dict.fromkeys(t for inputs in OUTPUT_INPUTS.values() for t in inputs))


def _outputs(s: dict[str, DataFrame], lines: DataFrame, as_of) -> dict[str, Callable[[], DataFrame]]:
    """Each output's DataFrame, built on demand from the silver tables `s` and the sales lines."""
    return {
        "customer_features": lambda: customer_features(s["users"], lines, as_of),
        "category_performance": lambda: category_performance(lines),
        "category_performance_monthly": lambda: category_performance_monthly(lines),
        "product_performance": lambda: product_performance(lines, s["events"]),
        "inventory_restock_alerts": lambda: inventory_restock_alerts(s["inventory_items"], s["products"], as_of),
        "funnel": lambda: funnel(s["events"]),
        "sales_daily": lambda: sales_daily(lines),
        "kpi_periods": lambda: kpi_periods(lines, as_of),
    }


def definition(output: DataFrame) -> str:
    """An output's columns and types, as a short fingerprint in its lineage: a table that a release with
    other columns wrote is rebuilt even though its inputs did not change (its readers expect these)."""
    return "columns:" + hashlib.sha256(output.schema.simpleString().encode()).hexdigest()[:12]


def run(spark: SparkSession, lake: Lakehouse, echo=print) -> dict[str, int]:
    # segment and recommend, which wait for gold and then run side by side, both write model_verdicts: two
    # writers that find it missing race to create it, and where a table's location comes from its name (a
    # Hive metastore's warehouse), the later one finds the other's files before its commit and fails.
    lake.table("gold", "model_verdicts").ensure(spark, VERDICT_SCHEMA, VERDICT_PARTITIONING)
    silver = {t: lake.table("silver", t) for t in INPUTS}
    version = {t: lineage.data_version(spark, table) for t, table in silver.items()}
    s = {t: table.read(spark) for t, table in silver.items()}
    lines = sales_lines(s["order_items"], s["products"], s["inventory_items"])
    # planned, not run: the as-of date only fills a literal
    planned = {name: definition(build()) for name, build in _outputs(s, lines, dt.datetime(1970, 1, 1)).items()}
    built_from = {name: lineage.label({silver[t]: version[t] for t in inputs}, planned[name])
                  for name, inputs in OUTPUT_INPUTS.items()}
    stale = [name for name in OUTPUTS if not lineage.is_current(spark, [lake.table("gold", name)], built_from[name])]
    current = [name for name in OUTPUTS if name not in stale]
    if current:
        echo(f"  gold   unchanged since their inputs, skipped: {', '.join(current)}")
    if not stale:
        return {}
    uses_sales = any(set(SALES_INPUTS) <= set(OUTPUT_INPUTS[name]) for name in stale)
    if uses_sales:
        lines.persist()
    as_of = as_of_date(lines) if uses_sales else None
    builders = _outputs(s, lines, as_of)

    def build(name: str) -> tuple[int, float]:
        started = time.time()
        target = lake.table("gold", name)
        target.overwrite(builders[name](), user_metadata=built_from[name])
        return target.read(spark).count(), time.time() - started

    counts = {}
    # The tables side by side: at small scales each is a few short jobs and a commit, leaving cores idle.
    for name, (rows, seconds) in zip(stale, side_by_side(spark, build, stale), strict=True):
        counts[name] = rows
        echo(f"  gold   {name:<29} rows {rows:>9,}  {seconds:5.1f}s")
    if uses_sales:
        lines.unpersist()
        echo(f"  (as of {as_of:%Y-%m-%d %H:%M} UTC, the latest order item in the data)")
    return counts
