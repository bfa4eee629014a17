"""The segments' next-period check (ml/next_period.py) on hand-made buyers and scores."""
from __future__ import annotations

import datetime as dt

import pytest
from pyspark.sql import functions as F

from ecom_lakehouse.ml import next_period
from ecom_lakehouse.ml.next_period import GROUPINGS, Scores

CUT = dt.datetime(2025, 6, 1)


def _buyers(spark, rows):
    """rows: (user_id, ordered_again, segments, rfm_rule); base_rate is one group."""
    return spark.createDataFrame(rows, "user_id long, ordered_again double, segments string, rfm_rule string") \
        .withColumn("base_rate", F.lit("all"))


def test_a_grouping_that_tells_who_orders_again_scores_0_and_one_that_only_names_each_buyer_gains_nothing(spark):
    """Cross-fitted: each half is predicted from the other's group rates. Groups that separate the outcome in both
    halves predict it exactly; a group per buyer has no rate in the other half, which then predicts by its base
    rate, so it scores what the base rate scores: fitting noise buys nothing."""
    rows = [(u, float(u % 3 == 0), "buys" if u % 3 == 0 else "does not", f"buyer {u}") for u in range(1, 301)]
    errors = next_period.cross_fitted_errors(_buyers(spark, rows))
    scores = next_period.scores_of(errors)
    assert scores.buyers == 300 and scores.ordered_again == 100
    assert scores.brier["segments"] == 0.0
    assert scores.brier["rfm_rule"] == pytest.approx(scores.brier["base_rate"], abs=1e-12)
    assert scores.groups == {"segments": 2, "rfm_rule": 300, "base_rate": 1}
    # the base rate's error by hand: each buyer predicted by the other half's share of buyers ordering again
    halves = {r["user_id"]: r["half"] for r in errors.select("user_id", "half").collect()}
    share = {h: sum(1 for u, again, *_ in rows if halves[u] == h and again) / sum(1 for u in halves if halves[u] == h)
             for h in (0, 1)}
    by_hand = sum((again - share[1 - halves[u]]) ** 2 for u, again, *_ in rows) / len(rows)
    assert scores.brier["base_rate"] == pytest.approx(by_hand, abs=1e-12)
    assert scores.difference == pytest.approx(-by_hand, abs=1e-12) and scores.half_width > 0


def _scores(difference: float, half_width: float, buyers: int = 1000, again: int = 120) -> Scores:
    return Scores(buyers, again, dict(zip(GROUPINGS, (0.10, 0.10 - difference, 0.105), strict=True)),
                  dict(zip(GROUPINGS, (3, 4, 1), strict=True)), difference, half_width)


@pytest.mark.parametrize(("difference", "half_width", "expected"), [
    (-0.002, 0.001, "PASS"),  # the interval below 0: the segments predict better
    (0.002, 0.001, "FAIL"),  # above 0: the RFM rule does
    (0.0005, 0.001, "INCONCLUSIVE"),  # across 0
])
def test_the_verdict_reads_the_paired_differences_interval(difference, half_width, expected):
    check = next_period.verdict(_scores(difference, half_width), CUT)
    assert (check.check, check.verdict) == ("predicts_next_period", expected)
    assert (check.interval_low, check.interval_high) == pytest.approx((difference - half_width, difference + half_width))
    assert "1,000 buyers before 2025-06-01" in check.detail and "segments 0.10000 (3 groups)" in check.detail
    assert ("target with the RFM rule" in check.consequence) == (expected == "FAIL")


@pytest.mark.parametrize(("buyers", "again"), [(99, 20), (500, 0), (500, 500)])
def test_too_few_buyers_or_an_outcome_everyone_shares_is_too_little_data(buyers, again):
    check = next_period.verdict(_scores(-0.01, 0.001, buyers, again), CUT)
    assert check.verdict == "TOO_LITTLE_DATA" and check.consequence == "not scored", check.detail
