"""The A/B hold-out: does showing the served recommendations make users buy what they show?

* **Arms.** Each user's arm comes from a stable hash of the user id (Spark's xxhash64 with a salt): the
  same on every run, platform and Spark line, so a user stays in one arm for the whole experiment, and a
  larger control share keeps every user the smaller share held. A new salt starts a new experiment.
* **What each arm gets.** Treatment gets the served strategy's lists. Control gets the default strategy's
  (`--control-serves default`, so the experiment measures the promoted strategy against the default) or
  nothing (`nothing`: the lists treatment would have got are still recorded, not shown, so control's
  outcome is measured on the same kind of list).
* **Exposures.** `recommend` appends every user's list of each serving to gold `ab_exposures`, with its
  arm, whether it was shown and when it was served.
* **Outcome.** A user hits when, after a serving and before the next one, they buy a product of the list
  that serving recorded for them. Users, not servings, are the units (arms are assigned by user).
* **The test.** `measure` appends one look to gold `ab_looks` after every run: each arm's users and hits,
  the difference of the hit rates and the mixture sequential probability ratio test (stats.msprt) with
  its always-valid p-value and confidence sequence. Those stay valid however often they are read, so a
  daily run may look every day without raising the false-positive rate; simulated in tests/unit/test_ab.py
  and `make bench-ab`. A control share far from the configured one (a sample ratio mismatch) is reported
  instead of any difference: it means the assignment or its record is broken.
* Every user of an arm counts, whether an app showed them the list or not (intention to treat).
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

import numpy as np
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from ecom_lakehouse import lineage
from ecom_lakehouse.config import Lakehouse
from ecom_lakehouse.gold import INVALID_STATUSES
from ecom_lakehouse.ml import stats

SALT = "ecom_lakehouse.ab.1"  # a new salt: a new experiment, new arms
BUCKETS = 10_000
CONTROL_SHARE = 0.1
CONTROL_SERVES = ("default", "nothing")
TREATMENT, CONTROL = "treatment", "control"
# The mixing prior's spread: the size of hit-rate difference the test is tuned to find soonest. A list of ten
# products hits a few users in a hundred over a day to a few weeks; a difference worth acting on is of the
# order of a percentage point.
MIXING_SD = 0.01
ALPHA = 0.05
# A sample ratio mismatch (control's share of the exposed users far from the configured one) means the assignment
# or the recording is broken, and no difference between the arms can be trusted. 0.001, as is usual for this check.
SRM_ALPHA = 0.001
UPLIFT, HARM, NO_DIFFERENCE_YET, NO_DATA = "UPLIFT", "HARM", "NO_DIFFERENCE_YET", "NO_DATA"
SAMPLE_RATIO_MISMATCH = "SAMPLE_RATIO_MISMATCH"


def arm_of(user_id: Column, control_share: float) -> Column:
    """CONTROL for the users whose salted hash falls in the first `control_share` of the buckets."""
    bucket = F.pmod(F.xxhash64(F.lit(SALT), user_id), F.lit(BUCKETS))
    return F.when(bucket < round(control_share * BUCKETS), F.lit(CONTROL)).otherwise(F.lit(TREATMENT))


def experiment_name(control_share: float, control_serves: str) -> str:
    return f"{SALT}: control {control_share:g} gets {control_serves}"


def arms(treatment_lists: DataFrame, control_lists: DataFrame | None, control_share: float) -> DataFrame:
    """Every user's list with its arm and whether it is shown: (user_id, rank, product_id, strategy, arm, shown).
    `treatment_lists` has a list for every user; `control_lists` is what control is shown, or None: control is
    shown nothing, and treatment's list is kept for it unshown."""
    armed = treatment_lists.withColumn("arm", arm_of(F.col("user_id"), control_share))
    if control_lists is None:
        return armed.withColumn("shown", F.col("arm") == TREATMENT)
    control = (control_lists.withColumn("arm", arm_of(F.col("user_id"), control_share))
               .where(F.col("arm") == CONTROL))
    return armed.where(F.col("arm") == TREATMENT).unionByName(control).withColumn("shown", F.lit(True))


def purchases(order_items: DataFrame) -> DataFrame:
    """(user_id, product_id, created_at) of the order lines that count as purchases (as recommend counts them)."""
    return order_items.where(~F.col("status").isin(*INVALID_STATUSES)).select("user_id", "product_id", "created_at")


def hits_by_arm(exposures: DataFrame, purchases: DataFrame) -> DataFrame:
    """(arm, users, hits): the experiment's users of each arm, and those who bought a product of a list recorded
    for them after its serving and before the next serving (purchases: user_id, product_id, created_at)."""
    servings = exposures.select("served_at").distinct()  # one row per serving run
    windows = F.broadcast(servings.withColumn("until", F.lead("served_at").over(Window.orderBy("served_at"))))
    lists = exposures.select("user_id", "arm", "product_id", "served_at").join(windows, "served_at")
    bought = purchases.select("user_id", "product_id", "created_at")
    hit_users = (lists.join(bought, ["user_id", "product_id"])
                 .where((F.col("created_at") >= F.col("served_at"))
                        & (F.col("until").isNull() | (F.col("created_at") < F.col("until"))))
                 .select("user_id").distinct().withColumn("hit", F.lit(1)))
    return (lists.select("arm", "user_id").distinct().join(hit_users, "user_id", "left")
            .groupBy("arm").agg(F.count("*").alias("users"), F.coalesce(F.sum("hit"), F.lit(0)).alias("hits")))


@dataclass
class Look:
    """One reading of the experiment: what gold ab_looks holds per row (LOOK_SCHEMA)."""
    experiment: str
    measured_at: datetime
    servings: int
    control_share: float  # as configured
    sample_ratio_p: float | None  # two-sided: control's share of the users is the configured one
    treatment_users: int
    treatment_hits: int
    control_users: int
    control_hits: int
    difference: float | None  # treatment's hit rate minus control's
    look_p: float | None  # this look's 1 / Lambda
    always_valid_p: float | None  # the running minimum over the experiment's looks
    interval_low: float | None  # the confidence sequence: the running intersection of the looks' intervals
    interval_high: float | None
    verdict: str
    detail: str

    def rate(self, arm: str) -> tuple[int, int, float, float]:
        """(hits, users, and the exact 95% interval of the rate) of one arm."""
        hits, users = getattr(self, f"{arm}_hits"), getattr(self, f"{arm}_users")
        return (hits, users, *stats.clopper_pearson(hits, users)) if users else (hits, users, float("nan"), float("nan"))


LOOK_SCHEMA = ("experiment string, measured_at timestamp, servings int, control_share double, sample_ratio_p double, "
               "treatment_users long, treatment_hits long, "
               "control_users long, control_hits long, difference double, look_p double, always_valid_p double, "
               "interval_low double, interval_high double, verdict string, detail string")


def look_of(experiment: str, measured_at: datetime, servings: int, control_share: float,
            counts: dict[str, tuple[int, int]], earlier: list[tuple[float, float, float]], mixing_sd: float = MIXING_SD,
            alpha: float = ALPHA) -> Look:
    """This look, from each arm's (users, hits) and the experiment's earlier looks' (look_p, interval_low,
    interval_high)."""
    (n_t, x_t), (n_c, x_c) = counts.get(TREATMENT, (0, 0)), counts.get(CONTROL, (0, 0))
    users = n_t + n_c
    spread = math.sqrt(users * control_share * (1 - control_share))
    ratio_p = 2 * stats.normal_upper_tail(abs(n_c - users * control_share) / spread) if users else None
    head = (experiment, measured_at, servings, control_share, ratio_p, n_t, x_t, n_c, x_c)
    if not n_t or not n_c:
        empty = TREATMENT if not n_t else CONTROL
        return Look(*head, None, None, None, None, None, NO_DATA, f"no user in the {empty} arm yet")
    difference = x_t / n_t - x_c / n_c
    look_p, low, high = stats.msprt(difference, stats.difference_variance(x_t, n_t, x_c, n_c), mixing_sd, alpha)
    p = min([look_p, *(e[0] for e in earlier)])
    low, high = max([low, *(e[1] for e in earlier)]), min([high, *(e[2] for e in earlier)])
    detail = (f"treatment {x_t:,} of {n_t:,} users hit, control {x_c:,} of {n_c:,}: difference {difference:+.2%}, "
              f"always-valid p = {p:.3g} over {len(earlier) + 1} look(s), {1 - alpha:.0%} confidence sequence "
              f"[{low:+.2%}, {high:+.2%}]")
    if ratio_p is not None and ratio_p < SRM_ALPHA:
        verdict = SAMPLE_RATIO_MISMATCH
        detail = (f"control holds {n_c / users:.2%} of {users:,} users where {control_share:.0%} are assigned "
                  f"(p = {ratio_p:.2g}): the assignment or its record is broken, the difference is not to be trusted; "
                  + detail)
    else:
        verdict = NO_DIFFERENCE_YET if p >= alpha else UPLIFT if difference > 0 else HARM
    return Look(*head, difference, look_p, p, low, high, verdict, detail)


def run(spark: SparkSession, lake: Lakehouse, echo=print) -> Look | None:
    """The `measure` stage: one look at the latest experiment, appended to gold ab_looks; skipped when neither
    the exposures nor the purchases changed since the last look."""
    started = time.time()
    exposures_table, items, looks = (lake.table(*t) for t in (("gold", "ab_exposures"), ("silver", "order_items"),
                                                              ("gold", "ab_looks")))
    built_from = lineage.of(spark, [exposures_table, items])
    if lineage.is_current(spark, [looks], built_from):
        echo(f"  A/B hold-out unchanged (built from {built_from}): skipped")
        return None
    exposures = exposures_table.read(spark)
    latest = exposures.orderBy(F.desc("served_at")).select("experiment", "control_share").first()  # one row
    if latest is None:
        echo("  A/B hold-out: nothing served yet")
        return None
    experiment = latest["experiment"]
    exposures = exposures.where(F.col("experiment") == experiment)
    servings = exposures.select("served_at").distinct().count()
    counts = {r["arm"]: (r["users"], r["hits"])
              for r in hits_by_arm(exposures, purchases(items.read(spark))).collect()}  # two rows
    earlier = [] if not looks.exists(spark) else [
        tuple(r) for r in looks.read(spark).where((F.col("experiment") == experiment) & F.col("look_p").isNotNull())
        .select("look_p", "interval_low", "interval_high").collect()]  # one row per earlier look
    look = look_of(experiment, datetime.now(UTC).replace(tzinfo=None), servings, latest["control_share"], counts, earlier)
    with lineage.recorded(spark, built_from):
        looks.save(spark.createDataFrame([tuple(asdict(look).values())], LOOK_SCHEMA)
                   .write.format("delta").mode("append"))
    echo(f"  A/B hold-out ({experiment}; {servings} serving(s)): {look.verdict}: {look.detail}, "
         f"in {time.time() - started:.1f}s")
    return look


def peeking_z_look(counts: dict[str, tuple[int, int]], earlier) -> Look:
    """What the always-valid test replaces, for the simulations to compare with: a fixed-horizon two-sided
    two-proportion z-test at ALPHA, read at every look as if it were the last."""
    (n_t, x_t), (n_c, x_c) = counts[TREATMENT], counts[CONTROL]
    difference = x_t / n_t - x_c / n_c
    z = difference / math.sqrt(stats.difference_variance(x_t, n_t, x_c, n_c))
    rejected = 2 * stats.normal_upper_tail(abs(z)) < ALPHA
    return Look("peeking z-test", datetime(2026, 1, 1), 1, CONTROL_SHARE, None, n_t, x_t, n_c, x_c, difference, None,
                None, None, None, UPLIFT if rejected else NO_DIFFERENCE_YET, "")


def simulated_first_rejection(rng: np.random.Generator, users_per_look: int, looks: int, base_rate: float,
                              uplift: float, control_share: float = CONTROL_SHARE, test=None) -> int | None:
    """The look at which an experiment first reports a difference, or None: new users arrive before each look,
    control's hit with `base_rate`, treatment's with base_rate + uplift; `test(counts, earlier)` reads each look
    (look_of by default, the stage's own)."""
    test = test or (lambda counts, earlier: look_of("simulated", datetime(2026, 1, 1), 1, control_share, counts, earlier))
    totals = {TREATMENT: [0, 0], CONTROL: [0, 0]}
    earlier: list[tuple[float, float, float]] = []
    for index in range(looks):
        control = int(rng.binomial(users_per_look, control_share))
        for arm, users, rate in ((CONTROL, control, base_rate), (TREATMENT, users_per_look - control, base_rate + uplift)):
            totals[arm][0] += users
            totals[arm][1] += int(rng.binomial(users, rate))
        look = test({arm: (n, x) for arm, (n, x) in totals.items()}, earlier)
        if look.verdict in (UPLIFT, HARM):
            return index
        if look.look_p is not None:
            earlier.append((look.look_p, look.interval_low, look.interval_high))
    return None
