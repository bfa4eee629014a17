"""Do the customer segments predict the next period better than a plain RFM rule? The check `predicts_next_period`.

The last HOLDOUT_DAYS of orders are cut off; customer features are built as of the cut with gold's own
`customer_features`, and the buyers before the cut are grouped three ways:

    segments    the stage's segmentation (its pipeline and its k, fitted on the data before the cut; one
                "all buyers" group when the stage published one segment)
    rfm_rule    recent (recency at most the buyers' median) x repeat (more than one order): four groups
    base_rate   one group

Each grouping predicts whether a buyer places a valid order in the hold-out period by the rate of the buyer's
group, estimated on the other half of the buyers (halves by a hash of user_id), both ways, so a grouping with
more groups gains nothing from fitting noise. The verdict reads the paired difference of the Brier scores,
segments - RFM rule, per buyer, with its 95% normal interval: PASS when the segments predict better (the interval
below 0), FAIL when the RFM rule does (above 0), INCONCLUSIVE otherwise. It does not stop publication: segments
describe the customer base, and the verdict says which grouping to target the next period with. Only per-group
aggregates reach the driver.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from ecom_lakehouse import gold
from ecom_lakehouse.ml.checks import Check, too_little_data
from ecom_lakehouse.ml.stats import normal_upper_tail

HOLDOUT_DAYS = 180
# Fewer buyers before the cut, and the halves' group rates are too noisy to compare groupings with.
MIN_BUYERS = 100
GROUPINGS = ("segments", "rfm_rule", "base_rate")
CHECK = "predicts_next_period"


def rfm_rule(median_recency: float) -> Column:
    """recent/lapsed (recency at most the median) x repeat/one-time (more than one order)."""
    return F.concat(F.when(F.col("recency_days") <= median_recency, F.lit("recent")).otherwise(F.lit("lapsed")),
                    F.when(F.col("frequency") > 1, F.lit(" repeat")).otherwise(F.lit(" one-time")))


def groupings(buyers: DataFrame, segment_of: DataFrame, ordered_after: DataFrame, median_recency: float) -> DataFrame:
    """One row per buyer before the cut (user_id, recency_days, frequency): whether they ordered again
    (ordered_after: user_id of the hold-out's buyers) and their group in each of GROUPINGS (segment_of: user_id,
    segment)."""
    again = ordered_after.select("user_id").distinct().withColumn("ordered_again", F.lit(1.0))
    return (buyers.join(segment_of.select("user_id", F.col("segment").cast("string").alias("segments")), "user_id")
            .join(again, "user_id", "left").fillna(0.0, ["ordered_again"])
            .select("user_id", "ordered_again", "segments", rfm_rule(median_recency).alias("rfm_rule"),
                    F.lit("all").alias("base_rate")))


def cross_fitted_errors(buyers: DataFrame) -> DataFrame:
    """buyers: user_id, ordered_again (0/1) and one group column per grouping. Adds, per grouping, the squared
    error of predicting ordered_again by the group's rate in the other half of the buyers (a group the other
    half lacks: that half's base rate)."""
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


@dataclass(frozen=True)
class Scores:
    """Each grouping's Brier score on held-out halves, and the paired difference segments - RFM rule."""
    buyers: int
    ordered_again: int
    brier: dict[str, float]
    groups: dict[str, int]
    difference: float
    half_width: float  # of the difference's 95% interval


def scores_of(errors: DataFrame) -> Scores:
    """cross_fitted_errors' rows, aggregated in one job."""
    difference = F.col("segments_error") - F.col("rfm_rule_error")
    row = errors.agg(F.count("*").alias("buyers"), F.sum("ordered_again").alias("again"),
                     *[F.avg(f"{g}_error").alias(g) for g in GROUPINGS],
                     *[F.countDistinct(g).alias(f"{g}_groups") for g in GROUPINGS],
                     F.avg(difference).alias("difference"), F.stddev(difference).alias("difference_sd")).first()
    n = int(row["buyers"])
    return Scores(n, int(row["again"] or 0), {g: float(row[g] or 0.0) for g in GROUPINGS},
                  {g: int(row[f"{g}_groups"]) for g in GROUPINGS}, float(row["difference"] or 0.0),
                  1.96 * float(row["difference_sd"] or 0.0) / math.sqrt(n) if n else 0.0)


def verdict(scores: Scores, cut, holdout_days: int = HOLDOUT_DAYS) -> Check:
    if scores.buyers < MIN_BUYERS or scores.ordered_again in (0, scores.buyers):
        return Check("segmentation", CHECK, "TOO_LITTLE_DATA", 0.0, 0.0, 0.0, 1.0,
                     f"{scores.buyers} buyer(s) before {cut:%Y-%m-%d}, {scores.ordered_again} of whom ordered in the "
                     f"{holdout_days} days after: at least {MIN_BUYERS}, some ordering again and some not, are needed "
                     "to compare groupings", "not scored")
    low, high = scores.difference - scores.half_width, scores.difference + scores.half_width
    sd = scores.half_width / 1.96
    p_value = min(1.0, 2 * normal_upper_tail(abs(scores.difference) / sd)) if sd > 0 else 1.0
    outcome, consequence = (
        ("PASS", "the segments are the better targeting rule for the next period") if high < 0 else
        ("FAIL", "the RFM rule predicts the next period better: the segments describe the customer base, "
                 "target with the RFM rule") if low > 0 else
        ("INCONCLUSIVE", "neither grouping predicts the next period better"))
    detail = (f"{scores.buyers:,} buyers before {cut:%Y-%m-%d}, {scores.ordered_again:,} of them "
              f"({scores.ordered_again / scores.buyers:.1%}) ordered in the {holdout_days} days after; Brier score on "
              f"held-out halves: segments {scores.brier['segments']:.5f} ({scores.groups['segments']} groups), RFM rule "
              f"{scores.brier['rfm_rule']:.5f} ({scores.groups['rfm_rule']}), base rate {scores.brier['base_rate']:.5f}; "
              f"segments - RFM rule {scores.difference:+.5f}, 95% interval [{low:+.5f}, {high:+.5f}]")
    return Check("segmentation", CHECK, outcome, scores.difference, low, high, p_value, detail, consequence)


def check(users: DataFrame, lines: DataFrame, fit_segments, holdout_days: int = HOLDOUT_DAYS) -> tuple[Check, Scores | None]:
    """The check on silver users and gold's sales lines. fit_segments(buyers before the cut) -> (user_id, segment):
    the stage's segmentation, fitted on them."""
    as_of = gold.as_of_date(lines)
    if as_of is None:
        return too_little_data("segmentation", "no order to cut a hold-out period from", "not scored"), None
    cut = as_of - timedelta(days=holdout_days)
    before = gold.customer_features(users, lines.where(F.col("created_at") < F.lit(cut)), cut).where("is_buyer").persist()
    median = before.approxQuantile("recency_days", [0.5], 0.001)
    if not median:
        before.unpersist()
        return verdict(Scores(0, 0, dict.fromkeys(GROUPINGS, 0.0), dict.fromkeys(GROUPINGS, 0), 0.0, 0.0), cut,
                       holdout_days), None
    ordered_after = lines.where(F.col("valid") & (F.col("created_at") >= F.lit(cut)))
    scores = scores_of(cross_fitted_errors(groupings(before, fit_segments(before), ordered_after, median[0])))
    before.unpersist()
    return verdict(scores, cut, holdout_days), scores
