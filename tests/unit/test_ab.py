"""The A/B hold-out on hand-made rows and in simulation: stable arms, the outcome windows, the mixture
sequential test's arithmetic, and its false-positive rate and power when it is read after every look."""
import math
from datetime import datetime

import numpy as np
import pytest
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from ecom_lakehouse.ml import ab, stats

DAY = [datetime(2026, 1, d) for d in range(1, 8)]


def test_arms_are_stable_sized_as_configured_and_nested(spark):
    users = spark.range(20_000).withColumnRenamed("id", "user_id")
    arms = {share: users.select("user_id", ab.arm_of(F.col("user_id"), share).alias("arm")) for share in (0.1, 0.2)}
    control = {share: {r["user_id"] for r in df.where(F.col("arm") == ab.CONTROL).collect()}
               for share, df in arms.items()}
    # Bin(20,000, 0.1): mean 2,000, sd 42; 5 sd either way
    assert 1_790 < len(control[0.1]) < 2_210 and 3_720 < len(control[0.2]) < 4_280
    assert control[0.1] < control[0.2]  # a larger control keeps every user the smaller one held
    again = {r["user_id"] for r in arms[0.1].where(F.col("arm") == ab.CONTROL).collect()}
    assert again == control[0.1]
    # the salt decides, not the id's low bits: ids 0..9,999 are not simply the first buckets
    assert control[0.1] != set(range(2_000))


def test_control_is_shown_the_default_or_nothing_and_keeps_its_list_either_way(spark):
    users = spark.range(2_000).withColumnRenamed("id", "user_id")
    promoted = users.select("user_id", F.lit(1).alias("rank"), F.lit(7).cast("long").alias("product_id"),
                            F.lit("item_knn").alias("strategy"))
    default = promoted.withColumn("product_id", F.lit(8).cast("long")).withColumn("strategy", F.lit("popularity"))
    shown_default = ab.arms(promoted, default, 0.1)
    nothing = ab.arms(promoted, None, 0.1)
    by = {name: {(r["arm"], r["product_id"], r["shown"]): r["n"]
                 for r in df.groupBy("arm", "product_id", "shown").agg(F.count("*").alias("n")).collect()}
          for name, df in (("default", shown_default), ("nothing", nothing))}
    control = sum(n for (arm, _, _), n in by["default"].items() if arm == ab.CONTROL)
    assert set(by["default"]) == {(ab.TREATMENT, 7, True), (ab.CONTROL, 8, True)}
    assert set(by["nothing"]) == {(ab.TREATMENT, 7, True), (ab.CONTROL, 7, False)}  # recorded, not shown
    assert by["nothing"][(ab.CONTROL, 7, False)] == control
    assert shown_default.count() == nothing.count() == 2_000  # every user has one list


def test_a_hit_is_a_listed_product_bought_after_its_serving_and_before_the_next(spark):
    exposures = spark.createDataFrame([
        # user, arm, product, served_at
        (1, ab.TREATMENT, 10, DAY[0]), (1, ab.TREATMENT, 20, DAY[2]),  # list changes at the second serving
        (2, ab.TREATMENT, 10, DAY[0]), (2, ab.TREATMENT, 10, DAY[2]),
        (3, ab.CONTROL, 10, DAY[0]), (3, ab.CONTROL, 10, DAY[2]),
        (4, ab.CONTROL, 30, DAY[0]), (4, ab.CONTROL, 30, DAY[2]),
    ], "user_id long, arm string, product_id long, served_at timestamp")
    purchases = spark.createDataFrame([
        (1, 10, datetime(2026, 1, 4)),  # product 10 was no longer on user 1's list: no hit
        (2, 10, datetime(2025, 12, 31)),  # before the first serving: no hit
        (2, 10, datetime(2026, 1, 2)), (2, 10, datetime(2026, 1, 5)),  # twice: one user, one hit
        (3, 10, datetime(2026, 1, 2, 12)),  # a hit in the first window
        (4, 99, datetime(2026, 1, 4)),  # not on the list
    ], "user_id long, product_id long, created_at timestamp")
    assertDataFrameEqual(ab.hits_by_arm(exposures, purchases),
                         spark.createDataFrame([(ab.TREATMENT, 2, 1), (ab.CONTROL, 2, 1)], "arm string, users long, hits long"))


def test_the_mixture_test_against_its_formula_and_its_running_minimum():
    difference, variance, tau = 0.02, 0.0001, 0.01
    look_p, low, high = stats.msprt(difference, variance, tau)
    by_hand = math.sqrt(variance / (variance + tau ** 2)) * math.exp(
        tau ** 2 * difference ** 2 / (2 * variance * (variance + tau ** 2)))
    assert look_p == pytest.approx(1 / by_hand)
    # the interval's ends are where 1 / Lambda crosses alpha
    for end in (low, high):
        assert stats.msprt(difference - end, variance, tau)[0] == pytest.approx(0.05, rel=1e-9)
    assert stats.msprt(0.0, variance, tau)[0] == 1.0  # no difference: no evidence
    first = ab.look_of("e", DAY[0], 1, 0.1, {ab.TREATMENT: (4_500, 450), ab.CONTROL: (500, 25)}, [])
    assert first.verdict == ab.UPLIFT and first.always_valid_p == first.look_p < 0.05
    # a later look with less evidence keeps the earlier minimum and the intersected interval
    later = ab.look_of("e", DAY[1], 2, 0.1, {ab.TREATMENT: (9_000, 700), ab.CONTROL: (1_000, 50)},
                       [(first.look_p, first.interval_low, first.interval_high)])
    assert later.look_p > first.look_p and later.always_valid_p == first.look_p and later.verdict == ab.UPLIFT
    assert later.interval_low >= first.interval_low and later.interval_high <= first.interval_high
    assert ab.look_of("e", DAY[0], 1, 0.1, {ab.TREATMENT: (10, 1)}, []).verdict == ab.NO_DATA
    assert ab.look_of("e", DAY[0], 1, 0.1, {ab.TREATMENT: (900, 0), ab.CONTROL: (100, 0)}, []).verdict == ab.NO_DIFFERENCE_YET


def _rejections(seeds, uplift, test=None, users=1_000, looks=10, base_rate=0.05):
    return sum(ab.simulated_first_rejection(np.random.default_rng(seed), users, looks, base_rate, uplift, test=test)
               is not None for seed in seeds)


def test_read_after_every_look_the_test_keeps_its_false_positive_rate():
    """1,000 experiments without a difference, ten looks of 1,000 new users each (control 10%, 5% hit rate):
    the always-valid test reports a difference in at most 5% of them (plus 3 binomial sd); a z-test read at every
    look, the fault, reports one far more often."""
    seeds = range(1_000)
    assert _rejections(seeds, 0.0) <= 50 + 3 * math.sqrt(1_000 * 0.05 * 0.95)
    assert _rejections(seeds, 0.0, test=ab.peeking_z_look) > 100


def test_the_test_finds_a_planted_uplift_at_its_stated_power():
    """A 5-point uplift on a 5% base rate (ten looks of 1,000 users, control 10%): found in at least 80% of 200
    experiments (196 of 200 when measured)."""
    found = [ab.simulated_first_rejection(np.random.default_rng(seed), 1_000, 10, 0.05, 0.05) for seed in range(200)]
    assert sum(f is not None for f in found) >= 160


def test_a_control_share_far_from_the_configured_one_is_reported_instead_of_a_difference():
    """A broken assignment or record (control 5% of the users where 10% are assigned) must not be read as uplift:
    the same counts with the share as configured are."""
    broken = ab.look_of("e", DAY[0], 1, 0.1, {ab.TREATMENT: (9_500, 950), ab.CONTROL: (500, 25)}, [])
    assert broken.verdict == ab.SAMPLE_RATIO_MISMATCH and broken.sample_ratio_p < 1e-50
    assert "not to be trusted" in broken.detail
    fine = ab.look_of("e", DAY[0], 1, 0.05, {ab.TREATMENT: (9_500, 950), ab.CONTROL: (500, 25)}, [])
    assert fine.verdict == ab.UPLIFT and fine.sample_ratio_p == pytest.approx(1.0)
    # at the edge: 1,000 of 10,000 expected in control at 10%, sd 30; 3 sd off (p 0.0027) is chance, 3.5 sd (0.00047) not
    def verdict(control: int) -> str:
        return ab.look_of("e", DAY[0], 1, 0.1, {ab.TREATMENT: (10_000 - control, 0), ab.CONTROL: (control, 0)}, []).verdict
    assert verdict(1_090) == verdict(910) == ab.NO_DIFFERENCE_YET
    assert verdict(1_105) == verdict(895) == ab.SAMPLE_RATIO_MISMATCH
