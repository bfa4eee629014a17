"""What the run prints for people: the bronze reconciliation and the key findings.

Only small, already-aggregated gold tables (or aggregates of them) reach the driver.
"""
from __future__ import annotations

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from ecom_lakehouse.config import Lakehouse
from ecom_lakehouse.gold import RESTOCK_COVER_DAYS
from ecom_lakehouse.ml.checks import TOO_LITTLE_DATA

LOCALE_HINT_SHARE = 0.5


def print_reconciliation(results, echo=print) -> bool:
    """Per new file: records counted in the file = rows read back from bronze + its quarantine.
    True when all hold."""
    checks = [c for r in results for c in r.checks]
    if not checks:
        echo("  reconciliation: no new files (nothing to ingest; reruns add nothing)")
        return True
    echo("  reconciliation (records in the file, counted apart = bronze + quarantined, read back from Delta):")
    for c in checks:
        echo(f"    {c.table:<21} {c.in_file:>9,} = {c.in_bronze:>9,} + {c.quarantined:>7,}  "
             f"{'ok' if c.ok else 'MISMATCH'}  {c.source_file}")
        if c.in_file and c.quarantined / c.in_file > LOCALE_HINT_SHARE:
            echo(f"    ! {c.quarantined / c.in_file:.0%} of {c.source_file} was quarantined: if it was re-saved "
                 "with a locale (decimal commas, DD/MM/YYYY times), re-export it in the BigQuery CSV format; "
                 "reasons are in bronze/_quarantine")
    return all(c.ok for c in checks)


def _fmt_money(x) -> str:
    return f"${x:,.0f}"


def print_summary(spark: SparkSession, lake: Lakehouse, echo=print) -> None:
    gold = lambda name: lake.table("gold", name).read(spark)  # noqa: E731
    cat = gold("category_performance")
    totals = cat.agg(F.sum("revenue").alias("revenue"), F.sum("cost").alias("cost"), F.sum("units").alias("units")).first()
    revenue, cost = totals["revenue"] or 0.0, totals["cost"] or 0.0
    echo("")
    echo("== Summary " + "=" * 60)
    echo(f"Revenue {_fmt_money(revenue)} from {totals['units']:,} units (orders not cancelled or returned); "
         f"gross margin {((revenue - cost) / revenue * 100 if revenue else 0):.1f}%")
    echo("Top categories by revenue:")
    for r in cat.orderBy(F.desc("revenue")).limit(5).collect():
        echo(f"  {r['department']:<6} {r['category']:<30} {_fmt_money(r['revenue']):>12}  margin {r['gross_margin_pct']:5.1f}%  "
             f"returns {r['return_rate']:.1%}")
    margin = cat.orderBy(F.desc("gross_margin_pct")).first(), cat.orderBy("gross_margin_pct").first()
    echo(f"Margin ranges from {margin[1]['gross_margin_pct']:.1f}% ({margin[1]['department']} {margin[1]['category']}) "
         f"to {margin[0]['gross_margin_pct']:.1f}% ({margin[0]['department']} {margin[0]['category']})")
    customers = gold("customer_features").agg(
        F.count("*").alias("users"), F.sum(F.col("is_buyer").cast("int")).alias("buyers"),
        F.avg(F.when(F.col("is_buyer"), F.col("frequency"))).alias("orders_per_buyer"),
        F.avg(F.when(F.col("is_buyer"), (F.col("frequency") == 1).cast("int"))).alias("one_order_share"),
    ).first()
    echo(f"Customers: {customers['buyers']:,} of {customers['users']:,} users bought; "
         f"{customers['orders_per_buyer'] or 0:.2f} valid orders per buyer, "
         f"{(customers['one_order_share'] or 0):.0%} with exactly one")
    alerts = gold("inventory_restock_alerts")
    n_alerts = alerts.count()
    echo(f"Restock alerts: {n_alerts:,} products with under {RESTOCK_COVER_DAYS} days of cover")
    for r in alerts.orderBy("rank").limit(5).collect():
        echo(f"  #{r['rank']:<3} product {r['product_id']:<6} {r['category'] or '':<28} on hand {r['units_on_hand']:>3}  "
             f"sold 30d/90d {r['sold_last_30d']}/{r['sold_last_90d']}  cover {r['days_of_cover']} days ({r['severity']})")
    steps = ("sessions", "product_view_sessions", "cart_sessions", "purchase_sessions")
    by_visitor = {r["visitor"]: r for r in gold("funnel").groupBy("visitor").agg(  # two rows
        *[F.sum(c).alias(c) for c in steps]).collect()}
    total = sum(r["sessions"] for r in by_visitor.values())
    if total:
        echo(f"Funnel: {total:,} sessions, {by_visitor.get('anonymous', {'sessions': 0})['sessions'] / total:.0%} anonymous; "
             + "; ".join(f"{visitor}: product view {r['product_view_sessions'] / r['sessions']:.0%} -> cart "
                         f"{r['cart_sessions'] / r['sessions']:.0%} -> purchase {r['purchase_sessions'] / r['sessions']:.0%}"
                         for visitor, r in sorted(by_visitor.items())))
    _print_ml(spark, lake, echo)
    echo("=" * 71)


def _print_ml(spark: SparkSession, lake: Lakehouse, echo) -> None:
    segments = lake.table("gold", "segment_summary")
    if segments.exists(spark):
        echo("Segments (share of users -> share of revenue; buyers' segments, then non-buyers):")
        for r in segments.read(spark).orderBy(F.desc("share_of_revenue"), "segment_id").collect():  # <= 7 rows
            habits = (f"avg {r['avg_orders']:.2f} orders, ${r['avg_spend']:,.0f}, last order {r['avg_recency_days']:.0f} "
                      f"days ago; {r['share_repeat']:.0%} repeat, {r['share_recent']:.0%} within a year"
                      if r["avg_orders"] is not None else "no valid order")
            echo(f"  {r['segment']:<32} {r['users']:>7,} users {r['share_of_users']:6.1%} -> {r['share_of_revenue']:6.1%}  "
                 f"{habits}")
    strategies = lake.table("gold", "strategy_verdicts")
    if strategies.exists(spark):
        rows = strategies.read(spark).collect()  # one row per strategy and data mode
        for mode in sorted({r["data_mode"] for r in rows}):
            echo(f"Recommender verdicts, {mode} data (each strategy's served lists of 10 on the warm test users; "
                 "chance: ten random unbought products in the user's gender):")
            for line in verdict_lines([r.asDict() for r in rows if r["data_mode"] == mode]):
                echo("  " + line)
    verdicts = lake.table("gold", "model_verdicts")
    if verdicts.exists(spark):
        echo("Model checks:")
        for r in verdicts.read(spark).orderBy("model", "data_mode", "check").collect():  # a few rows
            why = f" ({r['detail']})" if r["verdict"] == TOO_LITTLE_DATA else ""
            echo(f"  {r['model']:<12} {r['data_mode']:<9} {r['check']:<20} {r['verdict']:<15} {r['consequence'] or ''}{why}")
    served = lake.table("gold", "served_recommendations")
    if served.exists(spark):
        by = served.read(spark).groupBy("strategy").agg(F.countDistinct("user_id").alias("users"),
                                                         F.count("*").alias("rows")).collect()  # <= 2 rows
        echo("Served recommendations: " + ", ".join(f"{r['strategy']} {r['rows']:,} for {r['users']:,} users"
                                                    for r in sorted(by, key=lambda r: -r["rows"])))
    looks = lake.table("gold", "ab_looks")
    if looks.exists(spark):
        latest = looks.read(spark).orderBy(F.desc("measured_at")).first()  # one row
        if latest is not None:
            echo(f"A/B hold-out ({latest['experiment']}): {latest['verdict']}: {latest['detail']}")


def verdict_lines(rows: list[dict]) -> list[str]:
    """The verdict table as text: a header, then one line per strategy (rows of gold strategy_verdicts)."""
    lines = [f"{'strategy':<25} {'hits of users':>15} {'hit rate [95% interval]':>25} {'chance':>6} {'ratio':>6} "
             f"{'in-gender':>9} {'vs chance':<17} {'adj. p':>7} {'verdict':<12} served  why"]
    for r in rows:
        rate = (f"{r['hit_rate']:.2%} [{r['hit_rate_low']:.2%}, {r['hit_rate_high']:.2%}]" if r["hit_rate"] is not None
                else "no users")
        ratio = f"{r['ratio_to_chance']:.2f}x" if r["ratio_to_chance"] is not None else "-"
        in_gender = f"{r['in_gender_share']:.0%}" if r["in_gender_share"] is not None else "-"
        adjusted = f"{r['adjusted_p']:.2g}" if r["adjusted_p"] is not None else "-"
        lines.append(f"{r['strategy']:<25} {r['hits']:>5,} of {r['users']:<6,} {rate:>25} {r['chance_hits']:6.1f} "
                     f"{ratio:>6} {in_gender:>9} {r['versus_chance']:<17} {adjusted:>7} {r['verdict']:<12} "
                     f"{'yes' if r['served'] else 'no':<6}  {r['why']}")
    return lines
