"""Unit tests of the pure transformations on a few hand-made rows."""
import datetime as dt

import pytest
from pyspark.sql import Row
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from ecom_lakehouse import gold, reconcile, silver
from ecom_lakehouse.schemas import parse_problem, parse_value
from ecom_lakehouse.session import conf_within

T = dt.datetime


def test_parse_value_reads_both_real_timestamp_forms_and_rejects_locale_forms(spark):
    df = spark.createDataFrame([("2024-06-23 23:41:55.000000 UTC",), ("2024-06-23 23:41:55 UTC",),
                                ("22/04/2021 12.16.45",), ("",)], "t string")
    out = df.select(parse_value("t", "timestamp").alias("t"), parse_problem("t", "timestamp").alias("p"))
    assertDataFrameEqual(out, [Row(t=T(2024, 6, 23, 23, 41, 55), p=None), Row(t=T(2024, 6, 23, 23, 41, 55), p=None),
                               Row(t=None, p="unparseable timestamp in t: '22/04/2021 12.16.45'"), Row(t=None, p=None)])


def test_parse_value_timestamps_are_utc_whatever_the_session_zone_and_only_in_the_export_form(spark):
    df = spark.createDataFrame([("2024-06-23 23:41:55.5 UTC",), ("2024-6-23 23:41:55 UTC",), ("2024-06-23 23:41:55",)],
                               "t string")
    zone = spark.conf.get("spark.sql.session.timeZone")
    spark.conf.set("spark.sql.session.timeZone", "America/New_York")
    try:
        micros = [r.us for r in df.select(F.unix_micros(parse_value("t", "timestamp")).alias("us")).collect()]
    finally:
        spark.conf.set("spark.sql.session.timeZone", zone)
    utc = dt.datetime(2024, 6, 23, 23, 41, 55, 500000, tzinfo=dt.timezone.utc)
    # a Spark cast alone would accept the last two (a one-digit month; no zone, read in the session's)
    assert micros == [int(utc.timestamp() * 1_000_000), None, None]


def test_parse_value_numbers_accept_both_integer_forms_and_reject_decimal_commas(spark):
    df = spark.createDataFrame([("60", "0.0199999995529651"), ("9.0", "13,92499997"), ("9.5", "")], "i string, d string")
    out = df.select(parse_value("i", "int").alias("i"), parse_value("d", "double").alias("d"),
                    parse_problem("d", "double").alias("p"))
    assertDataFrameEqual(out, [Row(i=60, d=0.0199999995529651, p=None),
                               Row(i=9, d=None, p="unparseable double in d: '13,92499997'"),
                               Row(i=None, d=None, p=None)])


def test_latest_per_key_keeps_the_newest_ingestion(spark):
    df = spark.createDataFrame([
        (1, "old", T(2024, 1, 1), 0, "a.csv"), (1, "new", T(2024, 2, 1), 1, "b.csv"), (2, "only", T(2024, 1, 1), 0, "a.csv"),
    ], "id long, v string, _ingested_at timestamp, _batch_id long, _source_file string")
    assertDataFrameEqual(silver.latest_per_key(df, "id").select("id", "v"), [Row(id=1, v="new"), Row(id=2, v="only")])


def test_keys_are_counted_as_silver_types_them_and_a_missing_key_is_one(spark):
    bronze = spark.createDataFrame([("9",), ("9.0",), ("10",), (None,), (None,)], "id string")
    assertDataFrameEqual(reconcile.rows_and_keys(bronze, "users"), [Row(rows=5, keys=3)])
    assertDataFrameEqual(reconcile.rows_and_keys(bronze.limit(0), "users"), [Row(rows=0, keys=0)])


def test_normalise_places(spark):
    df = spark.createDataFrame([("null", "España"), ("Madrid", "Spain"), (None, "Brasil")], "city string, country string")
    assertDataFrameEqual(silver.normalise_places(df), [Row(city=None, country="Spain"), Row(city="Madrid", country="Spain"),
                                                       Row(city=None, country="Brasil")])


def test_order_flags(spark):
    df = spark.createDataFrame([
        (1, "Complete", T(2024, 1, 2), T(2024, 1, 1), T(2024, 1, 3), None, 5.0),  # shipped before created
        (2, "Shipped", T(2024, 1, 1), None, None, None, 0.5),  # shipped without a ship date; cheap
        (3, "Returned", T(2024, 1, 1), T(2024, 1, 2), T(2024, 1, 3), T(2024, 1, 4), 10.0),  # clean
    ], "id long, status string, created_at timestamp, shipped_at timestamp, delivered_at timestamp, "
       "returned_at timestamp, sale_price double")
    out = silver.order_flags(df, with_price=True).select("id", "dq_flags")
    assertDataFrameEqual(out, [Row(id=1, dq_flags=["shipped_before_created"]),
                               Row(id=2, dq_flags=["status_timestamp_mismatch", "sale_price_under_1"]),
                               Row(id=3, dq_flags=[])])


def test_orphans_are_unknown_keys_but_not_nulls_and_quarantine_with_their_data_only(spark):
    users = spark.createDataFrame([(1,)], "id long")
    events = spark.createDataFrame([(10, 1, "f"), (11, None, "f"), (12, 99, "f")],
                                   "id long, user_id long, _source_file string").selectExpr(
        "*", "current_timestamp() as _ingested_at", "0L as _batch_id")
    checked = silver.with_orphan_reason(events, "events", {"users": users})
    assertDataFrameEqual(checked.where(F.col(silver.ORPHAN_REASON).isNull()).select("id"), [Row(id=10), Row(id=11)])
    bad = silver.as_quarantine(checked.where(F.col(silver.ORPHAN_REASON).isNotNull()), "events")
    assertDataFrameEqual(bad.select("source_table", "source_file", "record", "reason"), [
        Row(source_table="events", source_file="f", record='{"id":12,"user_id":99}',
            reason="orphan user_id: no such users")])  # the record holds data only: reruns write the same row


def test_orphan_candidates_are_every_delivery_with_an_unknown_key_even_when_a_later_one_resolves(spark):
    """Silver skips its quarantine write when there are no candidates, so they must include every row
    that could be a key's latest orphan: all deliveries, typed from bronze's strings; NULL keys are none."""
    users = spark.createDataFrame([(1,)], "id long")
    bronze_events = spark.createDataFrame([("10", "1"), ("11", None), ("12", "99"), ("12", "1"), ("13", "99.0")],
                                          "id string, user_id string")
    candidates = silver.orphan_candidates(bronze_events, "events", {"users": users})
    assertDataFrameEqual(candidates.select("id", "user_id"), [Row(id=12, user_id=99), Row(id=13, user_id=99)])
    assert silver.orphan_candidates(bronze_events.where("user_id = '1'"), "events", {"users": users}).isEmpty()


def test_rows_without_a_foreign_key_spread_over_the_join_partitions(spark):
    """Anonymous events carry a NULL user_id (46% of thelook's): joined on it as is, every one of them
    hashes to the same partition, and at scale 10 that one cached partition ran out of the 1 GB heap."""
    users = spark.createDataFrame([(1,)], "id long")
    events = spark.createDataFrame([(i, None) for i in range(400)], "id long, user_id long")
    # a shuffle join into 4 partitions, as at scale (no broadcast of the parent, no AQE coalescing)
    with conf_within(spark, "spark.sql.autoBroadcastJoinThreshold", "-1"), \
            conf_within(spark, "spark.sql.adaptive.enabled", "false"), \
            conf_within(spark, "spark.sql.shuffle.partitions", "4"):
        checked = silver.with_orphan_reason(events, "events", {"users": users})
        largest = checked.groupBy(F.spark_partition_id()).count().agg(F.max("count")).first()[0]
    assert largest <= 200, f"{largest} of 400 NULL-key rows in one partition"
    assert checked.where(F.col(silver.ORPHAN_REASON).isNotNull()).count() == 0


def _lines(spark):
    return spark.createDataFrame([
        (1, 1, 1, "Complete", 100.0, 40.0, "Men", "Jeans", T(2024, 1, 5)),
        (2, 2, 1, "Returned", 50.0, 20.0, "Men", "Jeans", T(2024, 1, 6)),
        (3, 3, 2, "Cancelled", 30.0, 10.0, "Women", "Dresses", T(2024, 1, 7)),
        (4, 4, 2, "Shipped", 80.0, 60.0, "Women", "Dresses", T(2024, 1, 8)),
    ], "id long, order_id long, user_id long, status string, sale_price double, cost double, department string, "
       "category string, created_at timestamp").selectExpr(
        "*", "status not in ('Cancelled', 'Returned') as valid", "status = 'Returned' as returned")


def test_category_performance_counts_only_valid_orders(spark):
    out = gold.category_performance(_lines(spark))
    assertDataFrameEqual(out, [
        Row(department="Men", category="Jeans", revenue=100.0, cost=40.0, gross_margin=60.0, gross_margin_pct=60.0,
            units=1, return_rate=0.5),
        Row(department="Women", category="Dresses", revenue=80.0, cost=60.0, gross_margin=20.0, gross_margin_pct=25.0,
            units=1, return_rate=0.0),
    ])


def test_kpi_periods_count_valid_sales_buyers_and_returns_per_month_and_quarter_and_flag_partial_ones(spark):
    lines = spark.createDataFrame([
        (1, 10, 100.0, 40.0, "Complete", T(2024, 1, 5)), (1, 11, 50.0, 20.0, "Shipped", T(2024, 1, 20)),
        (2, 12, 30.0, 10.0, "Returned", T(2024, 1, 21)), (3, 13, 20.0, 5.0, "Cancelled", T(2024, 1, 22)),
        (2, 14, 60.0, 30.0, "Complete", T(2024, 2, 29, 23)),
        (1, 15, 10.0, 5.0, "Complete", T(2024, 4, 10)),  # the latest order item: April is not over
    ], "user_id long, order_id long, sale_price double, cost double, status string, created_at timestamp").selectExpr(
        "*", "status not in ('Cancelled', 'Returned') as valid", "status = 'Returned' as returned")
    out = gold.kpi_periods(lines, T(2024, 4, 10)).select(
        "period", "period_start", "complete", "revenue", "gross_margin_pct", "units", "buyers", "orders",
        "orders_per_buyer", "return_rate")
    D = dt.date
    assertDataFrameEqual(out, [
        # January: user 2's only item came back and user 3's order was cancelled, so one buyer; 1 of 3 shipped returned
        Row(period="month", period_start=D(2024, 1, 1), complete=True, revenue=150.0, gross_margin_pct=60.0, units=2,
            buyers=1, orders=2, orders_per_buyer=2.0, return_rate=0.3333),
        Row(period="month", period_start=D(2024, 2, 1), complete=True, revenue=60.0, gross_margin_pct=50.0, units=1,
            buyers=1, orders=1, orders_per_buyer=1.0, return_rate=0.0),
        Row(period="month", period_start=D(2024, 4, 1), complete=False, revenue=10.0, gross_margin_pct=50.0, units=1,
            buyers=1, orders=1, orders_per_buyer=1.0, return_rate=0.0),
        Row(period="quarter", period_start=D(2024, 1, 1), complete=True, revenue=210.0, gross_margin_pct=57.14, units=3,
            buyers=2, orders=3, orders_per_buyer=1.5, return_rate=0.25),
        Row(period="quarter", period_start=D(2024, 4, 1), complete=False, revenue=10.0, gross_margin_pct=50.0, units=1,
            buyers=1, orders=1, orders_per_buyer=1.0, return_rate=0.0),
    ])


# Spark 4 turns ANSI mode on by default (Databricks Runtime 17.3 LTS and serverless with it): a cast that
# overflows or a division by zero then raises instead of giving NULL. Each rule must give the same rows
# either way; the results are collected inside the setting, since Spark evaluates lazily.
ANSI_MODES = pytest.mark.parametrize("ansi", ["true", "false"], ids=["ansi", "legacy"])


@ANSI_MODES
def test_out_of_range_numbers_are_unparseable_not_wrapped_or_fatal(spark, ansi):
    df = spark.createDataFrame([("1e30", "99999999999", "7")], "id string, age string, ok string")
    with conf_within(spark, "spark.sql.ansi.enabled", ansi):
        out = df.select(parse_value("id", "id").alias("id"), parse_problem("id", "id").alias("id_problem"),
                        parse_value("age", "int").alias("age"), parse_problem("age", "int").alias("age_problem"),
                        parse_value("ok", "int").alias("ok")).collect()
    assert out == [Row(id=None, id_problem="unparseable id in id: '1e30'", age=None,
                       age_problem="unparseable int in age: '99999999999'", ok=7)]


@ANSI_MODES
def test_restock_rule(spark, ansi):
    as_of = T(2024, 4, 1)
    inv = spark.createDataFrame([
        # product 1: 3 sold in the last 30 days, 1 on hand -> cover 10 days: critical
        (1, T(2024, 3, 20)), (1, T(2024, 3, 25)), (1, T(2024, 3, 30)), (1, None),
        # product 2: 2 sold 80 days ago, 5 on hand -> cover 225 days: no alert
        (2, T(2024, 1, 12)), (2, T(2024, 1, 12)), (2, None), (2, None), (2, None), (2, None), (2, None),
        # product 3: nothing sold in 90 days, 2 on hand -> no velocity to divide by: no alert
        (3, T(2023, 1, 1)), (3, None), (3, None),
    ], "product_id long, sold_at timestamp")
    products = spark.createDataFrame(
        [(1, "a", "b", "Men", "Jeans", 1), (2, "c", "d", "Men", "Socks", 1), (3, "e", "f", "Men", "Swim", 1)],
        "id long, name string, brand string, department string, category string, distribution_center_id long")
    with conf_within(spark, "spark.sql.ansi.enabled", ansi):
        out = (gold.inventory_restock_alerts(inv, products, as_of)
               .select("product_id", "units_on_hand", "days_of_cover", "severity", "rank").collect())
    assertDataFrameEqual(out, [Row(product_id=1, units_on_hand=1, days_of_cover=10.0, severity="critical", rank=1)])


def test_funnel_counts_anonymous_and_known_sessions_side_by_side(spark):
    events = spark.createDataFrame([
        ("s1", 1, "product", "Email", "Chrome"), ("s1", 1, "cart", "Email", "Chrome"), ("s1", 1, "purchase", "Email", "Chrome"),
        ("s2", None, "product", "Email", "Chrome"), ("s2", None, "cancel", "Email", "Chrome"),
        ("s3", None, "product", "Email", "Chrome"), ("s3", None, "cart", "Email", "Chrome"),
        ("s4", 2, "product", "Email", "Chrome"),
    ], "session_id string, user_id long, event_type string, traffic_source string, browser string")
    out = gold.funnel(events).select("visitor", "sessions", "product_view_sessions", "cart_sessions", "purchase_sessions",
                                     "cart_rate", "conversion_rate")
    assertDataFrameEqual(out, [
        Row(visitor="anonymous", sessions=2, product_view_sessions=2, cart_sessions=1, purchase_sessions=0,
            cart_rate=0.5, conversion_rate=0.0),
        Row(visitor="known", sessions=2, product_view_sessions=2, cart_sessions=1, purchase_sessions=1,
            cart_rate=0.5, conversion_rate=0.5),
    ])
