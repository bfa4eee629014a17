"""The recommender's checks, each a test with a verdict that changes what happens.

* `taste_signal` (the data, before any model is fitted, when there is enough to score one): is each buyer's
  basket what thelook's generator makes, items drawn uniformly from the catalogue of the buyer's gender
  (FACTS.md: no signal beyond gender), or do a buyer's items cluster in categories? Same-category pairs
  within each buyer's training-period purchases are counted against their exact mean and variance under
  uniform draws (stats.same_group_pair_moments), summed over buyers (independent), and read as a normal
  z-score:
    SIGNAL        more same-category pairs than uniform draws give at p < TASTE_ALPHA: the data is 'taste'.
    NO_SIGNAL     not so: the data is 'faithful', as thelook documents its own.
    INCONCLUSIVE  under MIN_EXPECTED_PAIRS expected pairs (too few repeat buyers to tell): taken as faithful.
  The verdict sets the data mode unless the run names one (`--data-mode`), and so which leakage check runs.
* `leakage`, on faithful data: the thelook data has no signal beyond gender, so ALS may not
  hit more often than a random pick from the user's gender's catalogue. The chance of a random
  hit is computed exactly for each user from their candidate pool (the gender's catalogue less
  what they bought) and their hittable labels; ALS's hit count is tested against the
  Poisson-binomial distribution of chance hits.
    FAIL          ALS hits more often than chance at p < LEAK_ALPHA: leakage. Nothing is published.
    WORSE_THAN_CHANCE  ALS hits less often than chance at p < BELOW_CHANCE_ALPHA (the lower tail):
                  something is wrong with the model (recommending outside the user's gender, for
                  one), not with the data. Publication goes on; ALS is not served.
    PASS          the exact 95% upper bound of ALS hits / chance hits is under MEANINGFUL_LIFT.
    INCONCLUSIVE  neither: the data is too small to rule a meaningful lift out (the detail says
                  how many users would).
* `leakage`, on taste data: ALS may beat chance there, but not the same ALS one period earlier. Its test hit
  rate is compared with its hit rate on the validation slice (fitted the same way on the part of the training
  period before it), by Katz's test of the log rate ratio against LEAK_RATIO:
    FAIL          the test rate is over LEAK_RATIO times the validation rate at p < LEAK_ALPHA: test
                  purchases reached training. Nothing is published.
    PASS          the 95% upper bound of the ratio is under LEAK_RATIO.
    INCONCLUSIVE  neither, or no validation user to compare with.
* `beats_every_baseline` (both data modes): whether ALS earned its place in recommend.decide_serving (it won
  on validation, and on test beat every servable baseline in exact paired tests, Holm-corrected across the
  strategies tested). PASS serves ALS; FAIL says a baseline is clearly better; INCONCLUSIVE neither.

Before any of them, `enough_data` (every ML stage): a shop with no purchase to learn from, or no
user to score a model on, gets TOO_LITTLE_DATA instead of a statistical verdict. No model is fitted
and the stage publishes its default; unlike INCONCLUSIVE, there was nothing to test.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from ecom_lakehouse.ml import stats
from ecom_lakehouse.ml.baselines import K, product_gender

LEAK_ALPHA = 0.001
# The lower tail has its own level: a false alarm there only keeps ALS from serving and asks for a look,
# where a false leak alarm stops publication.
BELOW_CHANCE_ALPHA = 0.01
WORSE_THAN_CHANCE = "WORSE_THAN_CHANCE"
MEANINGFUL_LIFT = 3.0
LEAKS_TO_DETECT = (3.0, 10.0)  # power is reported for leaks this many times chance
RULE_OUT_CONFIDENCE = 0.9  # how sure "enough users to rule a meaningful lift out" is
TOO_LITTLE_DATA = "TOO_LITTLE_DATA"
FAITHFUL, TASTE = "faithful", "taste"  # the data modes
AUTO = "auto"  # the run names no data mode: the taste_signal check decides
DATA_MODES = (AUTO, FAITHFUL, TASTE)
TASTE_ALPHA = 0.001
MIN_EXPECTED_PAIRS = 10.0  # the z-score's normal reading wants this many expected same-category pairs
SIGNAL, NO_SIGNAL = "SIGNAL", "NO_SIGNAL"
# On taste data, ALS's test hit rate within this many times its validation rate is not leakage (the test model
# learns from a longer history). Measured at scale 0.05 (docs/machine-learning.md): 1.09x clean, 2.77x leaked.
LEAK_RATIO = 1.5


@dataclass
class Check:
    model: str
    check: str
    verdict: str  # PASS, FAIL, INCONCLUSIVE or TOO_LITTLE_DATA
    statistic: float
    interval_low: float
    interval_high: float
    p_value: float
    detail: str
    consequence: str = ""


def too_little_data(model: str, why: str, consequence: str) -> Check:
    """The verdict of a stage that had nothing to fit or test a model on."""
    return Check(model, "enough_data", TOO_LITTLE_DATA, 0.0, 0.0, 0.0, 1.0, why, consequence)


def chance_of_a_hit(pool: int, hittable: int, k: int = K) -> float:
    """P(k distinct products drawn uniformly from `pool` include one of `hittable` of them)."""
    if hittable <= 0 or pool <= 0:
        return 0.0
    miss = 1.0
    for i in range(min(k, pool)):
        miss *= max(0, pool - hittable - i) / (pool - i)
    return 1.0 - miss


def chance_groups(labels: DataFrame, history: DataFrame, products: DataFrame, k: int = K) -> list[tuple[int, float]]:
    """(users, chance of a random hit) per distinct (pool size, hittable labels): few rows at any scale."""
    catalogue = product_gender(products)
    people = labels.select("user_id", "gender").distinct()
    sizes = catalogue.groupBy("gender").agg(F.count("*").alias("catalogue"))

    def in_own_catalogue(pairs: DataFrame, name: str) -> DataFrame:
        return (pairs.select("user_id", "product_id").distinct().join(people, "user_id").join(catalogue, ["product_id", "gender"])
                .groupBy("user_id").agg(F.count("*").alias(name)))

    per_user = (people.join(sizes, "gender").join(in_own_catalogue(history, "bought"), "user_id", "left")
                .join(in_own_catalogue(labels, "hittable"), "user_id", "left")
                .select((F.col("catalogue") - F.coalesce("bought", F.lit(0))).alias("pool"),
                        F.coalesce("hittable", F.lit(0)).alias("hittable")))
    return [(r["count"], chance_of_a_hit(r["pool"], r["hittable"], k))
            for r in per_user.groupBy("pool", "hittable").count().collect()]


@functools.lru_cache
def expected_hits_needed(lift: float = MEANINGFUL_LIFT, confidence: float = RULE_OUT_CONFIDENCE) -> float:
    """Chance hits (to 0.1) a run must expect so that a model at chance rules `lift` out with probability
    `confidence`, not merely in the median case. Its hits X are then about Poisson(expected); `lift` is
    ruled out when the exact 95% upper bound of X / expected is under it, that is for X up to some x_max."""
    expected = 0.1
    while True:
        chance = [(10 ** 6, expected / 10 ** 6)]  # many users, each unlikely to be hit: Poisson
        x_max = -1
        while stats.rate_ratio_interval(chance, x_max + 1)[1] < lift:
            x_max += 1
        if sum(math.exp(-expected) * expected ** x / math.factorial(x) for x in range(x_max + 1)) >= confidence:
            return expected
        expected = round(expected + 0.1, 1)


def leakage_check(groups: list[tuple[int, float]], observed_hits: int) -> Check:
    users = sum(n for n, _ in groups)
    expected = stats.expected(groups)
    if expected == 0:
        return Check("als", "leakage", "INCONCLUSIVE", 0.0, 0.0, 0.0, 1.0,
                     "no warm test user has a product a random pick could hit: nothing to test")
    p_value = stats.upper_tail(groups, observed_hits)
    p_below = stats.poisson_binomial_cdf(groups, observed_hits)  # as few hits or fewer
    low, high = stats.rate_ratio_interval(groups, observed_hits)
    powers = ", ".join(f"{stats.power(groups, LEAK_ALPHA, lift):.0%} for a {lift:g}x leak" for lift in LEAKS_TO_DETECT)
    critical = stats.critical_count(groups, LEAK_ALPHA)
    measured = (f"ALS hit {observed_hits} of {users:,} warm test users, chance expects {expected:.2f}: "
                f"{observed_hits / expected:.2f}x chance, exact 95% interval [{low:.2f}x, {high:.2f}x], "
                f"p = {p_value:.2g} (as many hits or more), {p_below:.2g} (as few or fewer); FAIL from {critical} hits "
                f"(margin {observed_hits - critical:+d}); power at p < {LEAK_ALPHA:g}: {powers}")
    if p_value < LEAK_ALPHA:
        verdict, why = "FAIL", ("this data has no signal beyond gender, so hitting more often than chance is leakage "
                                "(test purchases reaching training)")
    elif p_below < BELOW_CHANCE_ALPHA:
        return Check("als", "leakage", WORSE_THAN_CHANCE, observed_hits / expected, low, high, p_below,
                     f"{measured}; fewer hits than chance at p < {BELOW_CHANCE_ALPHA:g}: a random pick from the user's "
                     f"gender's catalogue does better, so look at the model (does it recommend outside the user's "
                     f"gender?); ALS is not served")
    elif high < MEANINGFUL_LIFT:
        verdict, why = "PASS", f"a lift of {MEANINGFUL_LIFT:g}x chance or more is ruled out"
    else:
        needed = expected_hits_needed()
        verdict, why = "INCONCLUSIVE", (f"too little data to rule out a {MEANINGFUL_LIFT:g}x lift: doing so "
                                        f"{RULE_OUT_CONFIDENCE:.0%} of the time needs about {needed:g} expected chance "
                                        f"hits, about {users * needed / expected:,.0f} warm test users at this data's "
                                        f"rates")
    return Check("als", "leakage", verdict, observed_hits / expected, low, high, p_value, f"{measured}; {why}")


def promotion_check(promoted: bool, adjusted_p: float | None, why: str, discordant: dict[tuple[str, str], tuple[int, int]],
                    users: int, served: str) -> Check:
    """ALS's promotion (recommend.decide_serving) as a model check, measured against the baseline it is least
    clearly better than: PASS when promoted; FAIL when that baseline is clearly better (the 95% interval of the
    hit-rate difference below 0); INCONCLUSIVE otherwise."""
    rivals = [b for a, b in discordant if a == "als"]
    closest = max(rivals, key=lambda b: stats.mcnemar_greater(*discordant[("als", b)]))
    only_als, only_rival = discordant[("als", closest)]
    difference, low, high, _ = stats.mcnemar_exact(only_als, only_rival, users)
    p_value = adjusted_p if adjusted_p is not None else stats.mcnemar_greater(only_als, only_rival)
    measured = (f"ALS against {closest}, its closest rival: hit-rate difference {difference:+.4f}, exact 95% interval "
                f"[{low:+.4f}, {high:+.4f}] ({only_als} users hit by ALS only, {only_rival} by {closest} only)")
    verdict = "PASS" if promoted else "FAIL" if high < 0 else "INCONCLUSIVE"
    return Check("als", "beats_every_baseline", verdict, difference, low, high, p_value, f"{measured}; {why}",
                 f"serving {served}" + ("" if served == "als" else " instead of als"))


def category_pairs_by_user(history: DataFrame, products: DataFrame) -> DataFrame:
    """(user_id, gender, items, same_category_pairs): each buyer's purchases in `history` and how many pairs of
    them share a product category."""
    categories = products.select(F.col("id").alias("product_id"), "category")
    per_category = history.join(categories, "product_id").groupBy("user_id", "gender", "category").count()
    return per_category.groupBy("user_id", "gender").agg(
        F.sum("count").alias("items"), F.sum(F.col("count") * (F.col("count") - 1) / 2).alias("same_category_pairs"))


def catalogue_category_shares(products: DataFrame) -> dict[str, list[float]]:
    """gender -> the category shares of its catalogue (a few dozen rows reach the driver)."""
    counts = (product_gender(products).join(products.select(F.col("id").alias("product_id"), "category"), "product_id")
              .groupBy("gender", "category").count().collect())
    totals: dict[str, int] = {}
    for r in counts:
        totals[r["gender"]] = totals.get(r["gender"], 0) + r["count"]
    shares: dict[str, list[float]] = {}
    for r in counts:
        shares.setdefault(r["gender"], []).append(r["count"] / totals[r["gender"]])
    return shares


def taste_signal(history: DataFrame, products: DataFrame) -> Check:
    """The `taste_signal` check on `history` (the training period's purchases: user_id, product_id, gender)."""
    by_size = (category_pairs_by_user(history, products).where("items >= 2").groupBy("gender", "items")
               .agg(F.count("*").alias("buyers"), F.sum("same_category_pairs").alias("pairs")).collect())
    return taste_signal_of([(r["gender"], int(r["items"]), int(r["buyers"]), int(r["pairs"])) for r in by_size],
                           catalogue_category_shares(products))


def taste_signal_of(by_size: list[tuple[str, int, int, int]], shares: dict[str, list[float]]) -> Check:
    """The `taste_signal` verdict from (gender, items, buyers, same-category pairs) per gender and basket size
    and each gender's catalogue category shares."""
    known = [(gender, items, buyers, pairs) for gender, items, buyers, pairs in by_size if gender in shares]
    observed, buyers = sum(pairs for *_, pairs in known), sum(b for _, _, b, _ in known)
    mean = variance = 0.0
    for gender, items, count, _ in known:
        m, v = stats.same_group_pair_moments(items, shares[gender])
        mean, variance = mean + count * m, variance + count * v
    if mean < MIN_EXPECTED_PAIRS or variance <= 0:
        return Check("als", "taste_signal", "INCONCLUSIVE", observed / mean if mean else 0.0, 0.0, 0.0, 1.0,
                     f"{buyers:,} buyers with two or more training-period purchases give {mean:.1f} expected "
                     f"same-category pairs, under the {MIN_EXPECTED_PAIRS:g} a test needs: too few to tell",
                     "taken as faithful data, as thelook documents its own")
    sd = math.sqrt(variance)
    z = (observed - mean) / sd
    p_value = stats.normal_upper_tail(z)
    verdict, mode = (SIGNAL, TASTE) if p_value < TASTE_ALPHA else (NO_SIGNAL, FAITHFUL)
    detail = (f"{observed:,} pairs of a buyer's training-period purchases share a category, {mean:,.1f} expected if "
              f"each were drawn uniformly from the buyer's gender's catalogue ({buyers:,} buyers): "
              f"{observed / mean:.2f}x, z = {z:.1f}, p = {p_value:.2g} (one-sided)")
    return Check("als", "taste_signal", verdict, observed / mean, (observed - 1.96 * sd) / mean,
                 (observed + 1.96 * sd) / mean, p_value, detail, f"{mode} data")


def mode_of(signal: Check) -> str:
    """The data mode a `taste_signal` verdict gives."""
    return TASTE if signal.verdict == SIGNAL else FAITHFUL


def leakage_against_validation(hits: int, users: int, validation_hits: int, validation_users: int) -> Check:
    """The `leakage` check of taste data (module docstring)."""
    if users == 0 or validation_users == 0:
        return Check("als", "leakage", "INCONCLUSIVE", 0.0, 0.0, 0.0, 1.0,
                     "no validation user to compare ALS's test hit rate with: nothing to test")
    ratio, low, high, p_value = stats.rate_ratio_test(hits, users, validation_hits, validation_users, LEAK_RATIO)
    measured = (f"ALS hit {hits} of {users:,} warm test users and {validation_hits} of {validation_users:,} validation "
                f"users: {ratio:.2f}x its validation rate, 95% interval [{low:.2f}x, {high:.2f}x], "
                f"p = {p_value:.2g} that it exceeds {LEAK_RATIO:g}x")
    if p_value < LEAK_ALPHA:
        verdict, why = "FAIL", (f"a model at over {LEAK_RATIO:g}x its own earlier rate has seen the test period: "
                                "leakage (test purchases reaching training)")
    elif high < LEAK_RATIO:
        verdict, why = "PASS", f"a test rate of {LEAK_RATIO:g}x the validation rate or more is ruled out"
    else:
        verdict, why = "INCONCLUSIVE", f"too few hits to rule a {LEAK_RATIO:g}x jump out"
    return Check("als", "leakage", verdict, ratio, low, high, p_value, f"{measured}; {why}")
