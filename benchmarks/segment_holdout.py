"""Do the customer segments predict next-period behaviour better than a plain RFM rule?

Reads a built lakehouse's silver tables (`make run` first), cuts the last --holdout-days off the orders,
builds customer features as of the cut with gold's own `customer_features`, segments the buyers as the
`segment` stage does (bootstrap-stable k by silhouette), and scores three groupings of those buyers on
whether each places a valid order in the hold-out period:

    segments    the stage's K-means segments (one "all buyers" segment when no k is stable)
    RFM rule    recent (recency at most the buyers' median) x repeat (more than one order): four groups
    base rate   one group

Each grouping's order rates are estimated on one half of the buyers (by a hash of user_id) and scored on
the other, both ways, so a grouping with more groups gains nothing from fitting noise. Printed: each
grouping's Brier score, its skill against the base rate, and the paired difference segments - RFM rule
with a 95% interval (negative: the segments predict better). Only per-group aggregates reach the driver.

    .venv/bin/python benchmarks/segment_holdout.py [--lakehouse lakehouse] [--holdout-days 180]
"""
from __future__ import annotations

import argparse
import math
import time
from datetime import timedelta

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

GROUPINGS = ("segments", "rfm_rule", "base_rate")


def cross_fitted_errors(buyers: DataFrame) -> DataFrame:
    """buyers: user_id, ordered_again (0/1) and one group column per grouping. Adds, per grouping, the squared
    error of predicting ordered_again by the group's rate in the other half of the buyers."""
    halves = buyers.withColumn("half", F.pmod(F.xxhash64("user_id"), F.lit(2)))

    def from_other_half(frame: DataFrame) -> DataFrame:  # rates of one half, keyed for the other
        return frame.withColumn("half", 1 - F.col("half"))

    out = halves.join(from_other_half(halves.groupBy("half").agg(F.avg("ordered_again").alias("other_base"))), "half")
    for grouping in GROUPINGS:
        rates = from_other_half(halves.groupBy("half", grouping).agg(F.avg("ordered_again").alias("other_rate")))
        out = (out.join(rates, ["half", grouping], "left")
               .withColumn(f"{grouping}_error", (F.col("ordered_again") - F.coalesce("other_rate", "other_base")) ** 2)
               .drop("other_rate"))
    return out.drop("other_base")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lakehouse", default="lakehouse", help="a lakehouse `make run` built (default %(default)s)")
    parser.add_argument("--holdout-days", type=int, default=180, help="the period predicted (default %(default)s)")
    args = parser.parse_args()

    from ecom_lakehouse import gold
    from ecom_lakehouse.config import Lakehouse
    from ecom_lakehouse.ml import segmentation
    from ecom_lakehouse.session import get_spark

    spark = get_spark("local", "ecom_lakehouse_segment_holdout")
    lake = Lakehouse(raw="data/raw", root=args.lakehouse)
    silver = {n: lake.table("silver", n).read(spark) for n in ("users", "order_items", "products", "inventory_items")}
    started = time.time()
    lines = gold.sales_lines(silver["order_items"], silver["products"], silver["inventory_items"]).persist()
    cut = gold.as_of_date(lines) - timedelta(days=args.holdout_days)
    before = gold.customer_features(silver["users"], lines.where(F.col("created_at") < F.lit(cut)), cut).persist()
    result = segmentation.segment(before, echo=lambda *_: None)
    again = (lines.where(F.col("valid") & (F.col("created_at") >= F.lit(cut))).select("user_id").distinct()
             .withColumn("ordered_again", F.lit(1.0)))
    features = before.where("is_buyer")
    median_recency = features.approxQuantile("recency_days", [0.5], 0.001)[0]
    rfm = F.concat(F.when(F.col("recency_days") <= median_recency, F.lit("recent")).otherwise(F.lit("lapsed")),
                   F.when(F.col("frequency") > 1, F.lit(" repeat")).otherwise(F.lit(" one-time")))
    buyers = (features.join(result.memberships.select("user_id", F.col("segment").alias("segments")), "user_id")
              .join(again, "user_id", "left").fillna(0.0, ["ordered_again"])
              .select("user_id", "ordered_again", "segments", rfm.alias("rfm_rule"), F.lit("all").alias("base_rate")))
    errors = cross_fitted_errors(buyers)
    difference = F.col("segments_error") - F.col("rfm_rule_error")
    row = errors.agg(F.count("*").alias("buyers"), F.avg("ordered_again").alias("rate"),
                     *[F.avg(f"{g}_error").alias(g) for g in GROUPINGS],
                     *[F.countDistinct(g).alias(f"{g}_groups") for g in GROUPINGS],
                     F.avg(difference).alias("difference"), F.stddev(difference).alias("difference_sd")).first()
    half = 1.96 * row["difference_sd"] / math.sqrt(row["buyers"])
    print(f"\n{row['buyers']:,} buyers before {cut:%Y-%m-%d}; {row['rate']:.1%} ordered again in the {args.holdout_days} "
          f"days after; segments: {result.check.verdict} ({result.check.detail}); {time.time() - started:.0f}s\n")
    print("| grouping | groups | Brier score (held-out half) | skill vs base rate |\n|---|---:|---:|---:|")
    for g in GROUPINGS:
        print(f"| {g.replace('_', ' ')} | {row[f'{g}_groups']} | {row[g]:.5f} | {1 - row[g] / row['base_rate']:+.2%} |")
    print(f"\nsegments - RFM rule, Brier per buyer: {row['difference']:+.5f}, 95% interval "
          f"[{row['difference'] - half:+.5f}, {row['difference'] + half:+.5f}] (negative: the segments predict better)")
    spark.stop()


if __name__ == "__main__":
    main()
