"""Product recommendations with Spark MLlib ALS (implicit feedback), evaluated honestly.

* Interactions: valid purchases (orders neither cancelled nor returned). Session events are
  left out on purpose: a buyer's own product and cart events come minutes before the purchase,
  so using them next to a split that ignores sessions would leak the answer.
* A global time split: train before a cut-off, test after; hyper-parameters are chosen on a
  validation slice cut from the training period only. Test labels are the products a user
  buys that they had not bought before: every recommender filters out what was bought, so a
  repurchase could never be hit (its share is reported apart).
* Exact, unsampled metrics over the whole catalogue (RankingEvaluator's precision@10,
  recall@10, NDCG@10 and MAP, computed for every list in one pass; plus hit rate@10) for ALS and
  the baselines in `baselines.BASELINES`.
  Users with no training history ("cold") get the fallback, reported apart.
* Two checks with consequences (`checks`): leakage on faithful data stops publication; the
  default strategy serves unless another is promoted (decide_serving), ALS only when it beats every
  servable baseline. Every strategy is scored on the list it would serve, all lists in one frame
  (topped_up_lists, evaluation_frames). Data too thin to train
  and score on (no purchase before the test period, no test user with a history) fits nothing: the
  verdict is TOO_LITTLE_DATA and every user gets the fallback.
* On generated taste data the generator's truth is scored too, as the reference list ORACLE: the ceiling.
* `served_recommendations` gives every user 10 products with the strategy that chose each one and the user's
  A/B arm; with `--control-serves nothing`, the control arm gets none. Every serving's lists, shown or not,
  are appended to `ab_exposures`, which the `measure` stage reads (ab.py).
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pyspark.ml.recommendation import ALS, ALSModel
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from ecom_lakehouse import files, lineage
from ecom_lakehouse.config import Lakehouse
from ecom_lakehouse.ml import ModelCheckFailed, ab, checks, save_model, stats, tracking, write_verdicts
from ecom_lakehouse.ml.baselines import (
    BASELINES,
    CHANCE,
    DEFAULT_STRATEGY,
    FALLBACK,
    SERVABLE_BASELINES,
    K,
    age_band,
    popularity_by_gender_age,
    product_gender,
    top_k_unbought,
)
from ecom_lakehouse.ml.checks import FAITHFUL, Check
from ecom_lakehouse.schemas import STRATEGY_VERDICT_SCHEMA, parse_value
from ecom_lakehouse.session import cores, side_by_side

TEST_FRACTION = 0.2
# First the point the taste benchmark chose at scales 0.1 and 1 (docs/machine-learning.md): used as is when the
# validation slice is too small to rank the points.
GRID = [dict(rank=r, regParam=0.1, alpha=a) for r, a in ((24, 20.0), (24, 1.0), (8, 20.0), (8, 1.0))]
MIN_VALIDATION_USERS = 100
# The first grid point must beat chance on validation at this level for the others to be fitted.
SIGNAL_ALPHA = 0.05
MAX_ITER = 10
# Grid points fitted, and models scored, side by side: a scale-1 fit's jobs are small enough to leave
# 2 cores half idle (the 4-point grid took 23.5 s two at a time, 29 s one at a time, same scores).
AT_ONCE = 2
STRATEGIES = ("als", *BASELINES)  # what the recommender compares
SERVABLE = ("als", *SERVABLE_BASELINES)  # chance is the reference, never served
PROMOTE_ALPHA = 0.05  # family-wise, over the strategies tested against the default (Holm)
DEFAULT, PROMOTED, NOT_PROMOTED, REFERENCE = "DEFAULT", "PROMOTED", "NOT_PROMOTED", "REFERENCE"
# On generated taste data, the generator's truth as a list (oracle_lists): the ceiling, scored as a reference.
ORACLE = "oracle"


# --- data -----------------------------------------------------------------------------

def purchases(order_items: DataFrame, users: DataFrame) -> DataFrame:
    return (ab.purchases(order_items).join(people(users), "user_id")
            .select("user_id", "product_id", "gender", "age_band", "created_at"))


def people(users: DataFrame) -> DataFrame:
    """(user_id, gender, age_band): what the recommenders know about a user."""
    return users.select(F.col("id").alias("user_id"), "gender", age_band(F.col("age")).alias("age_band"))


def from_export(spark: SparkSession, raw: str) -> tuple[DataFrame, DataFrame]:
    """(purchases, products) read straight from a raw thelook export folder, without building the
    lakehouse: for benchmarks and tests of the recommender."""
    def csv(table: str) -> DataFrame:
        return spark.read.option("header", True).csv(f"{raw}/{table}.csv")

    def typed(name: str, kind: str = "id"):
        return parse_value(name, kind).alias(name)  # silver's parsing, so both read the export alike

    typed_items = csv("order_items").select(typed("user_id"), typed("product_id"), "status",
                                            typed("created_at", "timestamp"))
    events = purchases(typed_items, csv("users").select(typed("id"), "gender", typed("age", "int")))
    return events, csv("products").select(typed("id"), "brand", "department", "category")


def cutoff_at(events: DataFrame, quantile: float):
    """The time at `quantile` of the events; NULL (nothing before or after it) when there are none."""
    seconds = events.select(F.unix_timestamp("created_at").alias("t")).approxQuantile("t", [quantile], 0.0001)
    return F.lit(int(seconds[0]) if seconds else None).cast("timestamp")


def time_split(events: DataFrame, cutoff) -> tuple[DataFrame, DataFrame]:
    return events.where(F.col("created_at") < cutoff), events.where(F.col("created_at") >= cutoff)


def new_purchases(later: DataFrame, earlier: DataFrame) -> DataFrame:
    """Purchases in `later` of products the user had not bought in `earlier`."""
    return later.join(earlier.select("user_id", "product_id").distinct(), ["user_id", "product_id"], "left_anti")


def weights(train: DataFrame) -> DataFrame:
    return train.groupBy("user_id", "product_id").agg(F.count("*").cast("float").alias("weight"))


# --- ALS (returns user_id, product_id, rank 1..K, score like the baselines) ---------------

def fit_als(train: DataFrame, params: dict, seed: int = 7) -> ALSModel:
    """params: rank, regParam, alpha (a GRID point).

    Factors are unconstrained: non-negative factors halved the hit rate on taste data
    (benchmarks/als_vs_implicit.py). The factor blocks follow the cores: ALS's fixed 10 blocks made
    2 cores switch between 10 small tasks per step (a scale-1 fit took 7.1 s with 10 blocks, 3.7 s
    with 2), and leave a larger cluster's other cores idle. The seed then fixes the model for a given
    number of cores (each block draws its own initial factors)."""
    blocks = cores(train.sparkSession)
    als = ALS(userCol="user_id", itemCol="product_id", ratingCol="weight", implicitPrefs=True, maxIter=MAX_ITER,
              seed=seed, coldStartStrategy="drop", nonnegative=False, numUserBlocks=blocks, numItemBlocks=blocks,
              **params)
    return als.fit(weights(train).select(F.col("user_id").cast("int"), F.col("product_id").cast("int"), "weight"))


def als_recommendations(model: ALSModel, users: DataFrame, bought: DataFrame, k: int = K) -> DataFrame:
    # Ask for more than k so that k remain after removing what the user already bought.
    raw = model.recommendForUserSubset(users.select(F.col("user_id").cast("int")).distinct(), k + 20)
    candidates = raw.select("user_id", F.explode("recommendations").alias("r")).select(
        F.col("user_id").cast("long"), F.col("r.product_id").cast("long").alias("product_id"), F.col("r.rating").alias("score"))
    return top_k_unbought(candidates, bought, k)


# --- evaluation ---------------------------------------------------------------------------

def evaluation_frames(lists: DataFrame, labels: DataFrame, names) -> DataFrame:
    """Per named list (`lists` has a `list` column) and labelled user: prediction (the list's ranked product ids),
    label (products newly bought) and hit. Every list in one frame: the labels are grouped once, and the lists'
    small jobs run as one (on small data their number, not their rows, is what takes the time)."""
    predicted = lists.groupBy("list", "user_id").agg(
        F.transform(F.array_sort(F.collect_list(F.struct("rank", "product_id"))), lambda x: x["product_id"].cast("double"))
        .alias("prediction"))
    label = labels.groupBy("user_id").agg(F.collect_set(F.col("product_id").cast("double")).alias("label"))
    return (label.crossJoin(_names(labels.sparkSession, names)).join(predicted, ["list", "user_id"], "left")
            .withColumn("prediction", F.coalesce("prediction", F.array().cast("array<double>")))
            .withColumn("hit", (F.size(F.array_intersect("prediction", "label")) > 0).cast("int")))


def evaluation_frame(recs: DataFrame, labels: DataFrame) -> DataFrame:
    """Per labelled user: prediction (ranked product ids), label (products newly bought) and hit."""
    return evaluation_frames(recs.withColumn("list", F.lit("")), labels, [""]).drop("list")


def _names(spark: SparkSession, names) -> DataFrame:
    return F.broadcast(spark.createDataFrame([(name,) for name in names], "list string"))


RANKING_METRICS = ("precision@10", "recall@10", "ndcg@10", "map")


def _total(values):
    return F.aggregate(values, F.lit(0.0), lambda acc, x: acc + x)


def ranking_metrics_by_list(frame: DataFrame, k: int = K) -> dict[str, dict[str, float]]:
    """Per list of evaluation_frames' `frame`: precision@k, recall@k, NDCG@k and MAP as MLlib's RankingEvaluator
    defines them (RankingMetrics: binary relevance, MAP over the whole prediction, 0 for a row without labels),
    plus hits, users and hit rate@k, exact over the frame.

    One aggregation for every list: the evaluator takes a frame at a time and a pass per metric, four passes
    for each of seven lists, and on small data their number, not their rows, was most of recommend's time.
    tests/unit/test_ml_rules.py holds these equal to the evaluator's on random frames."""
    labels = F.size("label").cast("double")
    every = F.transform("prediction", lambda p: F.array_contains("label", p).cast("double"))  # 1.0 at each hit
    at_k = F.slice(every, 1, k)
    # precision at each position of a hit, summed: the average precision's numerator
    precision_sum = _total(F.transform(every, lambda hit, i: hit * _total(F.slice(every, 1, i + 1)) / (i + 1)))
    dcg = _total(F.transform(at_k, lambda hit, i: hit / F.log2(i + 2)))
    ideal = _total(F.transform(F.sequence(F.lit(0), F.least(F.size("label"), F.lit(k)) - 1), lambda i: 1 / F.log2(i + 2)))
    has_labels = labels > 0
    per_row = frame.select(
        "list", "hit",
        F.when(has_labels, _total(at_k) / k).otherwise(0.0).alias("precision@10"),
        F.when(has_labels, _total(at_k) / labels).otherwise(0.0).alias("recall@10"),
        F.when(has_labels, dcg / ideal).otherwise(0.0).alias("ndcg@10"),
        F.when(has_labels, precision_sum / labels).otherwise(0.0).alias("map"))
    rows = per_row.groupBy("list").agg(F.sum("hit").alias("hits"), F.count("*").alias("users"),
                                       *[F.avg(F.col(f"`{name}`")).alias(name) for name in RANKING_METRICS]).collect()
    out = {}
    for row in rows:
        metrics = {name: float(row[name]) for name in RANKING_METRICS}
        metrics["hits"], metrics["users"] = float(row["hits"]), float(row["users"])
        metrics["hit_rate@10"] = metrics["hits"] / metrics["users"]
        out[row["list"]] = metrics
    return out


def no_users_metrics() -> dict[str, float]:
    """A list scored on no users: no rate to give."""
    return {**{name: math.nan for name in RANKING_METRICS}, "hits": 0.0, "users": 0.0, "hit_rate@10": math.nan}


def ranking_metrics(frame: DataFrame, k: int = K) -> dict[str, float]:
    """ranking_metrics_by_list for evaluation_frame's single list; NaN rates over no users."""
    return ranking_metrics_by_list(frame.withColumn("list", F.lit("")), k).get("", no_users_metrics())


def catalogue_coverage(recs: DataFrame, n_products: int) -> float:
    return recs.select("product_id").distinct().count() / n_products


def cross_category_rate(recs: DataFrame, train: DataFrame, products: DataFrame) -> float:
    """Share of recommendations in a category the user never bought in training."""
    cat = products.select(F.col("id").alias("product_id"), "category")
    seen = train.join(cat, "product_id").select("user_id", "category").distinct().withColumn("seen", F.lit(1))
    tagged = recs.join(cat, "product_id").join(seen, ["user_id", "category"], "left")
    return float(tagged.agg(F.avg(F.col("seen").isNull().cast("int"))).first()[0] or 0.0)


def in_gender_shares(frame: DataFrame, users: DataFrame, products: DataFrame) -> dict[str, float]:
    """Per list of evaluation_frames' `frame`, the share of the products it recommended to the scored users that
    come from the user's own gender's catalogue. thelook's purchases never leave it (FACTS.md), so every
    recommendation outside it is a hit given away: the likely reason for a model below chance."""
    recommended = frame.select("list", "user_id", F.explode(F.col("prediction").cast("array<bigint>")).alias("product_id"))
    catalogue = product_gender(products).withColumnRenamed("gender", "catalogue")
    shares = (recommended.join(users.select("user_id", "gender"), "user_id").join(catalogue, "product_id")
              .groupBy("list").agg(F.avg((F.col("gender") == F.col("catalogue")).cast("double")).alias("share")))
    return {r["list"]: r["share"] for r in shares.collect()}


@dataclass
class Evaluation:
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)  # model -> metric -> value
    cold: dict[str, float] = field(default_factory=dict)  # the fallback on users without history
    best_params: dict = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    served: str = "als"  # the strategy serving users with history
    data_mode: str = FAITHFUL  # named by the run, or what the taste_signal check found
    repurchase_share: float | None = None  # of test purchases: products the user had bought before (unhittable)
    coverage: float | None = None  # of ALS's recommendations: None when no model was fitted
    cross_category: float | None = None
    chance_hits: float | None = None  # warm users' hits expected from ten random unbought products in their gender
    verdicts: list[StrategyVerdict] = field(default_factory=list)  # the verdict table: one row per strategy

    def check(self, name: str) -> Check | None:
        return next((c for c in self.checks if c.check == name), None)


@dataclass
class EvaluationSplit:
    """The global time split: test after the cut-off; a validation slice cut from the training
    period only (for hyper-parameters). Labels are new purchases; warm/cold = labelled test users
    with/without training history."""
    train: DataFrame
    test: DataFrame
    fit: DataFrame
    validation: DataFrame
    warm: DataFrame
    cold: DataFrame

    def unpersist(self) -> None:
        for part in (self.train, self.test, self.validation, self.warm, self.cold):
            part.unpersist()


def evaluation_split(events: DataFrame) -> EvaluationSplit:
    """Labels are kept in memory: every model's score joins them, and each derives from anti-joins."""
    train, test = (df.persist() for df in time_split(events, cutoff_at(events, 1 - TEST_FRACTION)))
    fit_part, val = time_split(train, cutoff_at(train, 1 - TEST_FRACTION))
    labels = new_purchases(test, train)
    history = train.select("user_id").distinct()
    return EvaluationSplit(train, test, fit_part,
                           validation=new_purchases(val, fit_part).join(fit_part.select("user_id").distinct(), "user_id",
                                                                        "left_semi").persist(),
                           warm=labels.join(history, "user_id", "left_semi").persist(),
                           cold=labels.join(history, "user_id", "left_anti").persist())


def missing_evidence(events: DataFrame, split: EvaluationSplit) -> str | None:
    """Why `events` cannot train and score a recommender (None when they can): it takes a test-period
    buyer who bought something new and had bought before."""
    if not split.warm.isEmpty():
        return None
    purchases = events.count()
    if purchases == 0:
        return "no valid purchase (order neither cancelled nor returned) to learn from"
    if split.train.isEmpty():
        return f"none of the {purchases} valid purchase(s) came before the test period: nothing to train on"
    return (f"no buyer of the test period (the last {TEST_FRACTION:.0%} of {purchases} valid purchases) bought a new "
            "product after buying before it: no user to score a model on")


def choose_params(split: EvaluationSplit, grid, fit=fit_als, recommend=als_recommendations, echo=print,
                  products: DataFrame | None = None, fitted: dict | None = None) -> dict:
    """The grid point with the best validation NDCG@10 (CrossValidator cannot rank with ALS).

    `fit(train, params)` returns a model, `recommend(model, users, bought)` its top-K frame, so
    any recommender can be tuned on the same slice. The first point is used without fitting the
    others where the slice cannot rank them: with fewer than MIN_VALIDATION_USERS labelled users,
    whose scores rest on a handful of hits; and, given the catalogue (`products`), where the first
    point hits validation users no more often than a random pick from their gender's catalogue
    (p >= SIGNAL_ALPHA, the leakage check's exact test): the other points' scores would then differ
    by noise (on faithful data every point scores at chance, FACTS.md)."""
    users = split.validation.select("user_id").distinct().count()
    if users == 0 or (len(grid) > 1 and users < MIN_VALIDATION_USERS):
        echo(f"  recommend validation: {users} labelled users (< {MIN_VALIDATION_USERS}) cannot rank {len(grid)} "
             f"grid point(s): using the first, {grid[0]}")
        return grid[0]

    def validation_metrics(params: dict) -> dict[str, float]:
        model = fit(split.fit, params)
        if fitted is not None:  # the caller's to reuse, by repr(params)
            fitted[repr(params)] = model
        frame = evaluation_frame(recommend(model, split.validation, split.fit), split.validation)
        return ranking_metrics(frame)

    def scored(params: dict, metrics: dict[str, float]) -> tuple[dict, dict[str, float]]:
        echo(f"  recommend validation rank={params['rank']:<3} regParam={params['regParam']:<5} "
             f"alpha={params['alpha']:<5} NDCG@10 {metrics['ndcg@10']:.4f}, {int(metrics['hits']):,} of "
             f"{int(metrics['users']):,} users hit")
        return params, metrics

    points, rest = [], grid
    if products is not None and len(grid) > 1:
        first = validation_metrics(grid[0])
        points.append(scored(grid[0], first))
        groups = checks.chance_groups(split.validation, split.fit, products)
        p_value = stats.upper_tail(groups, int(first["hits"]))
        if p_value >= SIGNAL_ALPHA:
            echo(f"  recommend validation: the first point hits no more often than chance (expected "
                 f"{stats.expected(groups):.1f} hits, p = {p_value:.2g}): nothing for the other "
                 f"{len(grid) - 1} points to be ranked by, using the first, {grid[0]}")
            return grid[0]
        rest = grid[1:]
    rest_metrics = side_by_side(split.fit.sparkSession, validation_metrics, rest, AT_ONCE)
    points += [scored(params, metrics) for params, metrics in zip(rest, rest_metrics, strict=True)]
    return max(points, key=lambda point: point[1]["ndcg@10"])[0]  # on a tie, the earliest point




@dataclass
class StrategyVerdict:
    """One row of the verdict table: how a strategy's served lists did on the warm test users, against chance
    and against the default, and whether it serves."""
    strategy: str
    users: int
    hits: int
    validation_hits: int | None  # on the validation slice, where promotion is first earned; None: not scored
    chance_hits: float  # expected from ten random unbought products in each user's gender
    chance_p: float  # two-sided exact test of hits against chance
    versus_chance: str  # ABOVE_CHANCE, AT_CHANCE or WORSE_THAN_CHANCE
    in_gender_share: float
    p_value: float | None  # one-sided paired test on test users: beats the default (ALS: beats every baseline)
    adjusted_p: float | None  # Holm over the strategies tested
    verdict: str  # DEFAULT, PROMOTED, NOT_PROMOTED or REFERENCE
    served: bool
    why: str

    @property
    def interval(self) -> tuple[float, float]:
        return stats.clopper_pearson(self.hits, self.users)


def versus_chance(groups: list[tuple[int, float]], hits: int) -> tuple[float, str]:
    """The two-sided exact test of a strategy's hits against chance, and what it says at BELOW_CHANCE_ALPHA."""
    below, above, p_value = stats.two_sided_chance(groups, hits)
    if below < checks.BELOW_CHANCE_ALPHA / 2:
        return p_value, checks.WORSE_THAN_CHANCE
    return p_value, "ABOVE_CHANCE" if above < checks.BELOW_CHANCE_ALPHA / 2 else "AT_CHANCE"


def decide_serving(validation_hits: dict[str, int], discordant: dict[tuple[str, str], tuple[int, int]],
                   chance: dict[str, tuple[float, str]], default: str = DEFAULT_STRATEGY,
                   leak_failed: bool = False) -> tuple[str, dict[str, tuple[float | None, float | None, str, str]]]:
    """Which strategy serves users with history, and per strategy (p, adjusted p, verdict, why).

    The default serves unless another strategy is promoted. A strategy is tested only if it hit more validation
    users than the default (the win is earned before the test period is looked at); on the test period it must
    then beat the default in the one-sided exact paired (McNemar) test, and ALS every servable baseline (an
    intersection-union test: its p-value is the largest of its comparisons'), at PROMOTE_ALPHA after Holm's
    correction across the strategies tested. A strategy worse than chance is never promoted, nor ALS when the
    leakage check failed. Of the promoted, ALS serves (it beat them all), else the one best on validation, the
    simplest on a tie. `discordant[(a, b)]` is (users hit by a only, by b only)."""
    candidates = [s for s in SERVABLE if s != default]
    tested = [s for s in candidates if validation_hits.get(s, 0) > validation_hits.get(default, 0)]

    def p_value(strategy: str) -> float:
        rivals = [b for b in SERVABLE if b != "als"] if strategy == "als" else [default]
        return max(stats.mcnemar_greater(*discordant[(strategy, rival)]) for rival in rivals)

    raw = {s: p_value(s) for s in tested}
    adjusted = stats.holm(raw)
    promoted = [s for s in tested if adjusted[s] < PROMOTE_ALPHA and chance[s][1] != checks.WORSE_THAN_CHANCE
                and not (s == "als" and leak_failed)]
    served = "als" if "als" in promoted else max(
        promoted, key=lambda s: (validation_hits[s], -SERVABLE.index(s)), default=default)
    decided: dict[str, tuple[float | None, float | None, str, str]] = {}
    for s in STRATEGIES:
        against = "every servable baseline" if s == "als" else "the default"
        if s == CHANCE:
            decided[s] = (None, None, REFERENCE, "the chance level, never served")
        elif s == default:
            decided[s] = (None, None, DEFAULT, "the default: serves unless another strategy is promoted"
                          if s == served else f"the default, displaced by {served}")
        elif s not in tested:
            decided[s] = (None, None, NOT_PROMOTED, f"hit {validation_hits.get(s, 0)} validation users, the default "
                                                    f"{validation_hits.get(default, 0)}: no win to test")
        elif s not in promoted:
            why = (f"{chance[s][1].lower().replace('_', ' ')}" if chance[s][1] == checks.WORSE_THAN_CHANCE else
                   "the leakage check failed" if s == "als" and leak_failed else
                   f"its win on validation did not hold on test against {against} (Holm-adjusted p = "
                   f"{adjusted[s]:.2g} >= {PROMOTE_ALPHA:g})")
            decided[s] = (raw[s], adjusted[s], NOT_PROMOTED, why)
        else:
            decided[s] = (raw[s], adjusted[s], PROMOTED,
                          f"won on validation, beat {against} on test (Holm-adjusted p = {adjusted[s]:.2g})"
                          + ("" if s == served else f"; {served} serves instead"))
    return served, decided


def hits_by_user(frame: DataFrame, names) -> DataFrame:
    """One row per user of evaluation_frames' `frame`, one `hit` column per list, named by it."""
    return frame.groupBy("user_id").pivot("list", list(names)).agg(F.first("hit"))


def hits_of(frame: DataFrame, names) -> dict[str, int]:
    """Each list's hit users, in one job."""
    hits = {r["list"]: int(r["hits"] or 0) for r in frame.groupBy("list").agg(F.sum("hit").alias("hits")).collect()}
    return {name: hits.get(name, 0) for name in names}


def discordant_pairs(frame: DataFrame, names) -> dict[tuple[str, str], tuple[int, int]]:
    """(users hit by a only, by b only) for every ordered pair of the lists `names` of evaluation_frames' `frame`
    (each list has a row for every labelled user), in one job."""
    pairs = [(a, b) for a in names for b in names if a < b]
    row = hits_by_user(frame, names).agg(
        *[F.sum(((F.col(a) == 1) & (F.col(b) == 0)).cast("int")).alias(f"{a}|{b}") for a, b in pairs],
        *[F.sum(((F.col(a) == 0) & (F.col(b) == 1)).cast("int")).alias(f"{b}|{a}") for a, b in pairs]).first()
    counts = {}
    for a, b in pairs:
        only_a, only_b = int(row[f"{a}|{b}"] or 0), int(row[f"{b}|{a}"] or 0)
        counts[(a, b)], counts[(b, a)] = (only_a, only_b), (only_b, only_a)
    return counts


def strategy_lists(history: DataFrame, users: DataFrame, products: DataFrame, als: DataFrame,
                   fallback: DataFrame, references: dict[str, DataFrame] | None = None) -> DataFrame:
    """What each strategy would serve `users` from `history` (ALS's own list and the fallback's given): its own
    list, topped up by the fallback to K products, as served_recommendations does; one `list` per strategy, and
    one per reference list given (the oracle)."""
    own = {"als": als, **{name: recommend(history, users, products) for name, recommend in BASELINES.items()},
           **(references or {})}
    return topped_up_lists(own, fallback)


def truth_from(spark: SparkSession, raw: str, k: int = 6 * K) -> tuple[DataFrame, DataFrame] | None:
    """Generated taste data's truth, as oracle_lists takes it, or None where `raw` holds none (real exports):
    each user's taste group, read from the files the generator wrote beside the tables, and each group's `k`
    likeliest products (a buyer has bought fewer)."""
    from ecom_lakehouse.generator import TRUTH_FOLDER, taste_group_tops

    recorded_at = f"{raw}/{TRUTH_FOLDER}/taste.json"
    recorded = files.first_line(spark, recorded_at) if files.exists(spark, recorded_at) else None
    if not recorded:
        return None
    user_taste = spark.read.csv(f"{raw}/{TRUTH_FOLDER}/user_taste.csv", header=True,
                                schema="user_id long, gender string, taste_group int")
    return user_taste, spark.createDataFrame(taste_group_tops(json.loads(recorded)["strength"], k))


def oracle_lists(truth: tuple[DataFrame, DataFrame], users: DataFrame, bought: DataFrame, k: int = K) -> DataFrame:
    """The generator's truth as recommendations: for each of `users`, the likeliest products of their taste group
    that they have not bought. truth = (user_id, gender, taste_group), (gender, taste_group, product_id,
    probability), as truth_from reads them. No strategy can expect more hits: the ceiling."""
    user_taste, group_top = truth
    candidates = (users.select("user_id").distinct().join(user_taste, "user_id")
                  .join(F.broadcast(group_top), ["gender", "taste_group"])
                  .select("user_id", "product_id", F.col("probability").alias("score")))
    return top_k_unbought(candidates, bought, k)


def validation_hits(split: EvaluationSplit, products: DataFrame, params: dict,
                    fitted: dict[str, ALSModel]) -> tuple[dict[str, int], int]:
    """Each strategy's hit users on the validation slice, and the slice's labelled users; ALS with `params`, fitted on
    the part of the training period before it (the model choose_params fitted, where it did)."""
    users = split.validation.select("user_id", "gender", "age_band").distinct()
    if split.validation.isEmpty():  # then the part before it may hold no purchase to fit on either
        return {name: 0 for name in STRATEGIES}, 0
    als = fitted.get(repr(params)) or fit_als(split.fit, params)
    fallback = popularity_by_gender_age(split.fit, users, products).persist()  # every strategy's lists read it
    lists = strategy_lists(split.fit, users, products, als_recommendations(als, users, split.fit), fallback)
    hits = hits_of(evaluation_frames(lists, split.validation, STRATEGIES), STRATEGIES)
    fallback.unpersist()
    return hits, users.count()


def evaluate(events: DataFrame, products: DataFrame, data_mode: str = checks.AUTO, grid=GRID, echo=print,
             plant_leak: bool = False, default: str = DEFAULT_STRATEGY,
             truth: tuple[DataFrame, DataFrame] | None = None) -> Evaluation:
    """Tell faithful data from taste data (unless `data_mode` names it), choose hyper-parameters on a validation
    slice of the training period, score every strategy's served lists on the test period, test each against
    chance, run the checks and decide what serves (decide_serving).

    plant_leak: the negative control. ALS is trained on the test period too, as a leaky pipeline
    would be; the leakage check must then say FAIL, in either data mode.
    truth: generated data's true tastes (oracle_lists): scored as the reference ORACLE, the ceiling."""
    result = Evaluation()
    split = evaluation_split(events)
    missing = missing_evidence(events, split)
    if missing:  # nothing to test: no data mode to tell either
        split.unpersist()
        result.served = FALLBACK
        result.data_mode = checks.FAITHFUL if data_mode == checks.AUTO else data_mode
        result.checks.append(checks.too_little_data("als", missing, f"no model fitted; serving {FALLBACK} to every user"))
        return result
    signal = checks.taste_signal(split.train, products)
    result.checks.append(signal)
    result.data_mode = checks.mode_of(signal) if data_mode == checks.AUTO else data_mode
    if data_mode != checks.AUTO and data_mode != checks.mode_of(signal):
        signal.consequence = f"{data_mode} data, as the run says, against this verdict"
    train, warm = split.train, split.warm
    pairs = split.test.select("user_id", "product_id").distinct()
    result.repurchase_share = 1 - split.warm.unionByName(split.cold).select("user_id", "product_id").distinct().count() / \
        max(1, pairs.count())
    fitted: dict[str, ALSModel] = {}
    result.best_params = choose_params(split, grid, echo=echo, products=products, fitted=fitted)
    on_validation, validation_users = validation_hits(split, products, result.best_params, fitted)
    model = fit_als(train.unionByName(split.test) if plant_leak else train, result.best_params)
    warm_users = warm.select("user_id", "gender", "age_band").distinct()
    own_als = als_recommendations(model, warm_users, train).persist()  # read by coverage and cross-category too
    fallback = popularity_by_gender_age(train, warm_users, products).persist()  # every strategy's lists read it
    references = {ORACLE: oracle_lists(truth, warm_users, train)} if truth else {}
    names = (*STRATEGIES, *references)
    scored = evaluation_frames(strategy_lists(train, warm_users, products, own_als, fallback, references), warm,
                               names).persist()
    by_list = ranking_metrics_by_list(scored)  # computes the lists, once
    result.metrics = {name: by_list.get(name, no_users_metrics()) for name in names}
    hits = {name: int(metrics["hits"]) for name, metrics in result.metrics.items()}
    cold_users = split.cold.select("user_id", "gender", "age_band").distinct()
    result.cold = ranking_metrics(evaluation_frame(popularity_by_gender_age(train, cold_users, products), split.cold))
    shares = in_gender_shares(scored, warm_users, products)
    for name, metrics in result.metrics.items():
        metrics["in_gender_share"] = shares.get(name, math.nan)  # NaN: it recommended nothing
    groups = checks.chance_groups(warm, train, products)
    result.chance_hits = stats.expected(groups)
    users = int(result.metrics["als"]["users"])
    if result.data_mode == FAITHFUL:
        result.checks.append(checks.leakage_check(groups, hits["als"]))
    else:
        result.checks.append(checks.leakage_against_validation(hits["als"], users, on_validation["als"], validation_users))
    leak = result.check("leakage")
    chance = {name: versus_chance(groups, hits[name]) for name in names}
    discordant = discordant_pairs(scored, SERVABLE)
    result.served, decided = decide_serving(on_validation, discordant, chance, default,
                                            leak_failed=leak is not None and leak.verdict == "FAIL")
    _, adjusted, verdict, why = decided["als"]
    result.checks.append(checks.promotion_check(verdict == PROMOTED, adjusted, why, discordant, users, result.served))
    if truth:
        decided[ORACLE] = (None, None, REFERENCE, "the generator's true tastes: the most any strategy can expect; "
                                                  "never served")
    result.verdicts = []
    for name in names:
        p_value, adjusted_p, verdict, why = decided[name]
        chance_p, against_chance = chance[name]
        result.verdicts.append(StrategyVerdict(
            name, users, hits[name], on_validation.get(name), result.chance_hits, chance_p, against_chance,
            result.metrics[name]["in_gender_share"], p_value, adjusted_p, verdict, name == result.served, why))
    result.coverage = catalogue_coverage(own_als, products.count())
    result.cross_category = cross_category_rate(own_als, train, products)
    for frame in (scored, own_als, fallback):
        frame.unpersist()
    split.unpersist()
    return result


def evaluation_rows(result: Evaluation, data_mode: str) -> list[tuple]:
    rows = [(m, metric, data_mode, "warm", value) for m, ms in result.metrics.items() for metric, value in ms.items()]
    rows += [(FALLBACK, metric, data_mode, "cold", value) for metric, value in result.cold.items()]
    rows += [(model, metric, data_mode, users, value) for model, metric, users, value in (
        ("als", "catalogue_coverage", "warm", result.coverage), ("als", "cross_category_rate", "warm", result.cross_category),
        ("chance", "hits", "warm", result.chance_hits),
        ("all", "repurchase_share_of_test_purchases", "all", result.repurchase_share)) if value is not None]
    return rows


# --- what is served --------------------------------------------------------------------------

def topped_up_lists(own: dict[str, DataFrame | None], fallback: DataFrame, k: int = K) -> DataFrame:
    """For each named list, k products per user: its own products first (`own[name]`: user_id, product_id, rank), then
    the fallback's for whatever is left (users it has nothing for get only the fallback; with None, everyone does).
    Each row names its list and the strategy that chose it: (list, user_id, rank, product_id, strategy)."""
    ranked = fallback.crossJoin(_names(fallback.sparkSession, own)).select(
        "list", "user_id", "product_id", "rank", F.lit(1).alias("_tier"), F.lit(FALLBACK).alias("strategy"))
    for name, primary in own.items():
        if primary is not None:
            ranked = ranked.unionByName(primary.select(F.lit(name).alias("list"), "user_id", "product_id", "rank",
                                                       F.lit(0).alias("_tier"), F.lit(name).alias("strategy")))
    first = Window.partitionBy("list", "user_id", "product_id").orderBy("_tier", "rank")
    order = Window.partitionBy("list", "user_id").orderBy("_tier", "rank", "product_id")
    return (ranked.withColumn("_n", F.row_number().over(first)).where("_n = 1")
            .withColumn("rank", F.row_number().over(order)).where(F.col("rank") <= k)
            .select("list", "user_id", "rank", "product_id", "strategy"))


def topped_up(primary: DataFrame | None, fallback: DataFrame, strategy: str, k: int = K) -> DataFrame:
    """k products per user, `primary`'s then the fallback's (topped_up_lists): (user_id, rank, product_id, strategy)."""
    return topped_up_lists({strategy: primary}, fallback, k).drop("list")


def exposures(armed: DataFrame, experiment: str, control_share: float, served_at: datetime, run_id: str,
              serving: str) -> DataFrame:
    """gold ab_exposures' rows of one serving: every user's list with its arm (ab.arms), whether it is shown, the
    experiment and its control share, when and by which run it was served, and the serving's key (what it was
    built from)."""
    return armed.select(F.lit(experiment).alias("experiment"), F.lit(control_share).cast("double").alias("control_share"),
                        F.lit(serving).alias("serving"), F.lit(run_id).alias("run_id"),
                        F.lit(served_at).cast("timestamp").alias("served_at"), "user_id", "arm", "rank", "product_id",
                        "strategy", "shown")


def served_recommendations(exposed: DataFrame, model_version: str | None) -> DataFrame:
    """What is served: the shown lists of one serving's exposures, with the version of the model that chose each
    row and the run that decided it."""
    return exposed.where("shown").select(
        "user_id", "rank", "product_id", "strategy", "arm",
        F.when(F.col("strategy") == "als", F.lit(model_version)).cast("string").alias("model_version"), "run_id")


def verdict_rows(result: Evaluation, data_mode: str, run_id: str | None) -> list[dict]:
    """The verdict table's rows as gold strategy_verdicts has them (STRATEGY_VERDICT_SCHEMA), one per strategy."""
    rows = [(data_mode, v.strategy, v.users, v.hits, v.hits / v.users if v.users else None, *v.interval,
             v.validation_hits, v.chance_hits, v.hits / v.chance_hits if v.chance_hits else None, v.chance_p,
             v.versus_chance, None if math.isnan(v.in_gender_share) else v.in_gender_share, v.p_value, v.adjusted_p,
             v.verdict, v.served, v.why, run_id) for v in result.verdicts]
    return [dict(zip(STRATEGY_VERDICT_SCHEMA.fieldNames(), row, strict=True)) for row in rows]


def verdict_table(spark: SparkSession, result: Evaluation, data_mode: str, run_id: str) -> DataFrame:
    """gold strategy_verdicts' rows for this run: a handful, built on the driver."""
    rows = verdict_rows(result, data_mode, run_id)
    return spark.createDataFrame([tuple(r.values()) for r in rows], STRATEGY_VERDICT_SCHEMA)


def run(spark: SparkSession, lake: Lakehouse, data_mode: str = checks.AUTO, grid=GRID, echo=print,
        default: str = DEFAULT_STRATEGY, control_share: float = ab.CONTROL_SHARE,
        control_serves: str = ab.CONTROL_SERVES[0]) -> Evaluation | None:
    """data_mode: the run's word for what the data is, or AUTO for the taste_signal check's (evaluate);
    control_share and control_serves: the A/B hold-out's (ml/ab.py)."""
    started = time.time()
    served_at = datetime.now(UTC).replace(tzinfo=None)  # timestamps are UTC throughout (the session's time zone)
    items, users, catalogue = (lake.table("silver", n) for n in ("order_items", "users", "products"))
    built_from = lineage.of(spark, [items, users, catalogue], f"mode={data_mode},grid={grid},default={default},"
                                                               f"{ab.experiment_name(control_share, control_serves)}")
    served_table = lake.table("gold", "served_recommendations")
    if lineage.is_current(spark, [served_table], built_from):
        echo(f"  recommendations unchanged (built from {built_from}): skipped")
        return None
    products, user_rows = catalogue.read(spark), users.read(spark)
    everyone = people(user_rows)
    events = purchases(items.read(spark), user_rows).persist()
    # generated taste data keeps its truth beside the tables: then the oracle is scored as the ceiling
    result = evaluate(events, products, data_mode, grid, echo, default=default, truth=truth_from(spark, lake.raw))
    data_mode = result.data_mode  # the rows below are this mode's
    leak = result.check("leakage")
    refused = leak is not None and leak.verdict == "FAIL"
    if leak is not None:
        leak.consequence = ("nothing published: recommendations and model kept as they were" if refused else
                            f"publication allowed, serving {result.served}" if leak.verdict == checks.WORSE_THAN_CHANCE
                            else "publication allowed")
    sources = {f"{t.layer}.{t.name}": t for t in (items, users, catalogue)}
    with tracking.ml_run(spark, lake, "recommend") as run:
        run.log_table(f"strategy_verdicts.{data_mode}.json", {"strategies": verdict_rows(result, data_mode, None)})
        run.log(params={"grid": grid, "data_mode": data_mode, "served": result.served, "default_strategy": default,
                        "ab.control_share": control_share, "ab.control_serves": control_serves,
                        **{f"best.{k}": v for k, v in result.best_params.items()}},
                metrics={**{f"{users_}.{model}.{metric}": value
                            for model, metric, _, users_, value in evaluation_rows(result, data_mode)},
                         **{f"check.{c.check}.{part}": getattr(c, part) for c in result.checks
                            for part in ("statistic", "interval_low", "interval_high", "p_value")}},
                tags={**{f"check.{c.check}": c.verdict for c in result.checks},
                      **{f"check.{c.check}.detail": c.detail for c in result.checks},
                      **{f"training_table.{name}": str(t) for name, t in sources.items()},
                      **{f"training_table.{name}.delta_version": t.version(spark) for name, t in sources.items()}})
        with lineage.recorded(spark, built_from):
            write_verdicts(spark, lake, result.checks, "als", data_mode, built_from, run.info.run_id)
            target = lake.table("gold", "recommender_evaluation")
            table = spark.createDataFrame(evaluation_rows(result, data_mode),
                                          "model string, metric string, data_mode string, users string, value double")
            target.replace_where(table, f"data_mode = '{data_mode}'")  # the other mode's rows stay beside
            lake.table("gold", "strategy_verdicts").replace_where(verdict_table(spark, result, data_mode, run.info.run_id),
                                                                  f"data_mode = '{data_mode}'")
        if refused:
            raise ModelCheckFailed(f"recommend: leakage check FAILED on {data_mode} data, recommendations not "
                                   f"published and the previous model kept: {leak.detail}")
        model_version = None
        serving_als = result.served == "als"
        buyers = events.select("user_id", "gender", "age_band").distinct()
        if serving_als:  # the served model: fitted on all history, registered as champion
            final = fit_als(events, result.best_params)
            primary = als_recommendations(final, buyers, events)
            save_model(spark, final, lake.model_path("als"),
                       {"tables": [str(items), str(users)], "params": result.best_params, "data_mode": data_mode,
                        "delta_versions": [items.version(spark), users.version(spark)]})
            model_version = run.log_model(final, "als", events.select("user_id", "product_id"), ["prediction"],
                                          champion=True)
        else:  # a baseline serves, or the fallback alone when there was too little data to test anything
            primary = None if result.served == FALLBACK else BASELINES[result.served](events, buyers, products)
            run.retire("als")  # an earlier ALS model no longer serves
        fallback = popularity_by_gender_age(events, everyone, products)
        # Control is shown the default strategy's lists, or nothing; where treatment serves the default or only
        # the fallback (too little data), control's lists are treatment's: an A/A experiment.
        treatment_lists = topped_up(primary, fallback, result.served)
        control_lists = (None if control_serves == "nothing" else treatment_lists if result.served in (default, FALLBACK)
                         else topped_up(BASELINES[default](events, buyers, products), fallback, default))
        # A serving is keyed by what it was built from: a run that stopped between recording and serving is
        # replaced by its rerun, instead of leaving a serving nobody saw.
        serving = hashlib.sha256(built_from.encode()).hexdigest()[:16]
        this_serving = exposures(ab.arms(treatment_lists, control_lists, control_share),
                                 ab.experiment_name(control_share, control_serves), control_share, served_at,
                                 run.info.run_id, serving)
        exposures_table = lake.table("gold", "ab_exposures")
        with lineage.recorded(spark, built_from):
            exposures_table.replace_where(this_serving, f"serving = '{serving}'")
            # served from what was recorded: the lists are computed once, and what users see is what is measured
            served_table.overwrite(served_recommendations(
                exposures_table.read(spark).where(F.col("run_id") == run.info.run_id), model_version))
    events.unpersist()
    _print(result, data_mode, echo)
    if serving_als:
        outcome = (f"for users with history, {FALLBACK} for the rest; ALS model saved to {lake.model_path('als')}, "
                   f"registered as {lake.model_name(tracking.REGISTERED_MODELS['als'])} v{model_version} (champion)")
    elif result.served == FALLBACK:
        outcome = "to every user; no model fitted (too little data)"
    else:
        outcome = (f"for users with history, {FALLBACK} for the rest; no ALS model published (it was not promoted: see the "
                   "verdict table)")
    echo(f"  served: {result.served} {outcome}"
         + f"; MLflow run {run.info.run_id}, in {time.time() - started:.1f}s")
    return result


def _print(result: Evaluation, data_mode: str, echo) -> None:
    if result.metrics:
        echo(f"  {'model':<26} {'hit@10':>8} {'prec@10':>8} {'recall@10':>9} {'NDCG@10':>8} {'MAP':>8} {'in-gender':>9}  users")
        rows = [(name, result.metrics[name]) for name in STRATEGIES] + [(f"cold users: {FALLBACK}", result.cold)]
        for name, m in rows:
            in_gender = f"{m['in_gender_share']:9.1%}" if "in_gender_share" in m else f"{'':9}"
            echo(f"  {name:<26} {m['hit_rate@10']:8.4f} {m['precision@10']:8.4f} {m['recall@10']:9.4f} "
                 f"{m['ndcg@10']:8.4f} {m['map']:8.4f} {in_gender}  {int(m['users']):,}")
        echo(f"  ALS catalogue coverage {result.coverage:.1%}, cross-category rate {result.cross_category:.1%}, "
             f"params {result.best_params}; repurchases (unhittable, left out of the labels) "
             f"{result.repurchase_share:.1%} of test purchases")
    for c in result.checks:
        echo(f"  check {c.check} ({data_mode} data): {c.verdict}: {c.detail}" + (f" -> {c.consequence}" if c.consequence else ""))
