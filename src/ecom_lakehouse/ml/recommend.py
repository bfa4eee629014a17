"""Product recommendations with Spark MLlib ALS (implicit feedback), evaluated honestly.

* Interactions: valid purchases (orders neither cancelled nor returned). Session events are
  left out on purpose: a buyer's own product and cart events come minutes before the purchase,
  so using them next to a split that ignores sessions would leak the answer.
* A global time split: train before a cut-off, test after; hyper-parameters are chosen on a
  validation slice cut from the training period only.
* Exact, unsampled metrics over the whole catalogue (RankingEvaluator: precision@10,
  recall@10, NDCG@10, MAP; plus hit rate@10), items already bought filtered out, for ALS and
  three baselines: random within gender, global popularity, popularity within gender.
  Users with no training history ("cold") get the gender popularity baseline, reported apart.
* The honesty check: on faithful data (products uniform within gender) ALS must not beat
  random-within-gender beyond noise (a bootstrap interval on per-user hits): if it does, that
  is leakage and the run says so. On --taste data ALS must clearly beat popularity.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from pyspark.ml.evaluation import RankingEvaluator
from pyspark.ml.recommendation import ALS, ALSModel
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from ecom_lakehouse import lineage
from ecom_lakehouse.config import Lakehouse
from ecom_lakehouse.gold import INVALID_STATUSES
from ecom_lakehouse.ml import save_model, tracking
from ecom_lakehouse.schemas import parse_value

K = 10
TEST_FRACTION = 0.2
GRID = [dict(rank=r, regParam=0.1, alpha=a) for r in (8, 24) for a in (1.0, 20.0)]
BOOTSTRAP_REPS = 200
MAX_ITER = 10
MODELS = ("als", "random_within_gender", "popularity_global", "popularity_within_gender")


# --- data -----------------------------------------------------------------------------

def purchases(order_items: DataFrame, users: DataFrame) -> DataFrame:
    return (order_items.where(~F.col("status").isin(*INVALID_STATUSES))
            .join(users.select(F.col("id").alias("user_id"), "gender"), "user_id")
            .select("user_id", "product_id", "gender", "created_at"))


def from_export(spark: SparkSession, raw: str) -> tuple[DataFrame, DataFrame]:
    """(purchases, products) read straight from a raw thelook export folder, without building the
    lakehouse: for benchmarks and tests of the recommender."""
    def csv(table: str) -> DataFrame:
        return spark.read.option("header", True).csv(f"{raw}/{table}.csv")

    def typed(name: str, kind: str = "id"):
        return parse_value(name, kind).alias(name)  # silver's parsing, so both read the export alike

    typed_items = csv("order_items").select(typed("user_id"), typed("product_id"), "status",
                                            typed("created_at", "timestamp"))
    events = purchases(typed_items, csv("users").select(typed("id"), "gender"))
    return events, csv("products").select(typed("id"), "department", "category")


def cutoff_at(events: DataFrame, quantile: float):
    seconds = events.select(F.unix_timestamp("created_at").alias("t")).approxQuantile("t", [quantile], 0.0001)[0]
    return F.lit(int(seconds)).cast("timestamp")


def time_split(events: DataFrame, cutoff) -> tuple[DataFrame, DataFrame]:
    return events.where(F.col("created_at") < cutoff), events.where(F.col("created_at") >= cutoff)


def weights(train: DataFrame) -> DataFrame:
    return train.groupBy("user_id", "product_id").agg(F.count("*").cast("float").alias("weight"))


# --- recommenders (each returns user_id, product_id, rank 1..K, score) ----------------------

def _top_k_unbought(candidates: DataFrame, bought: DataFrame, k: int = K) -> DataFrame:
    fresh = candidates.join(bought.select("user_id", "product_id").distinct(), ["user_id", "product_id"], "left_anti")
    w = Window.partitionBy("user_id").orderBy(F.desc("score"), "product_id")
    return fresh.withColumn("rank", F.row_number().over(w)).where(F.col("rank") <= k)


def fit_als(train: DataFrame, params: dict, seed: int = 7) -> ALSModel:
    """params: rank, regParam, alpha (a GRID point).

    Factors are unconstrained: non-negative factors halved the hit rate on taste data
    (benchmarks/als_vs_implicit.py)."""
    als = ALS(userCol="user_id", itemCol="product_id", ratingCol="weight", implicitPrefs=True, maxIter=MAX_ITER,
              seed=seed, coldStartStrategy="drop", nonnegative=False, **params)
    return als.fit(weights(train).select(F.col("user_id").cast("int"), F.col("product_id").cast("int"), "weight"))


def als_recommendations(model: ALSModel, users: DataFrame, bought: DataFrame, k: int = K) -> DataFrame:
    # Ask for more than k so that k remain after removing what the user already bought.
    raw = model.recommendForUserSubset(users.select(F.col("user_id").cast("int")).distinct(), k + 20)
    candidates = raw.select("user_id", F.explode("recommendations").alias("r")).select(
        F.col("user_id").cast("long"), F.col("r.product_id").cast("long").alias("product_id"), F.col("r.rating").alias("score"))
    return _top_k_unbought(candidates, bought, k)


def popularity_recommendations(train: DataFrame, users: DataFrame, bought: DataFrame, by_gender: bool,
                               k: int = K) -> DataFrame:
    keys = ["gender"] if by_gender else []
    counts = train.groupBy(*keys, "product_id").agg(F.count("*").cast("double").alias("score"))
    top = counts.withColumn("_r", F.row_number().over(Window.partitionBy(*keys).orderBy(F.desc("score"), "product_id")))
    top = top.where(F.col("_r") <= k + 20).drop("_r")  # enough to survive the bought-item filter
    people = users.select("user_id", "gender").distinct()
    candidates = people.join(F.broadcast(top), keys) if keys else people.crossJoin(F.broadcast(top))
    return _top_k_unbought(candidates.select("user_id", "product_id", "score"), bought, k)


def random_recommendations(products: DataFrame, users: DataFrame, bought: DataFrame, seed: int = 7,
                           k: int = K) -> DataFrame:
    """Products drawn uniformly from the user's gender's catalogue."""
    catalogue = (products.select(F.when(F.col("department") == "Men", "M").otherwise("F").alias("gender"), "id")
                 .groupBy("gender").agg(F.collect_list("id").alias("ids")))  # 2 rows
    draws = (users.select("user_id", "gender").distinct().join(F.broadcast(catalogue), "gender")
             .select("user_id", "ids", F.explode(F.sequence(F.lit(1), F.lit(k + 20))).alias("draw"))
             .withColumn("product_id", F.element_at("ids", (F.floor(F.rand(seed) * F.size("ids")) + 1).cast("int")))
             .withColumn("score", F.rand(seed + 1)))
    candidates = draws.groupBy("user_id", "product_id").agg(F.max("score").alias("score"))
    return _top_k_unbought(candidates, bought, k)


# --- evaluation ---------------------------------------------------------------------------

def evaluation_frame(recs: DataFrame, test: DataFrame) -> DataFrame:
    """Per test user: prediction (ranked product ids) and label (products bought in test)."""
    predicted = recs.groupBy("user_id").agg(
        F.transform(F.array_sort(F.collect_list(F.struct("rank", "product_id"))), lambda x: x["product_id"].cast("double"))
        .alias("prediction"))
    labels = test.groupBy("user_id").agg(F.collect_set(F.col("product_id").cast("double")).alias("label"))
    return (labels.join(predicted, "user_id", "left")
            .withColumn("prediction", F.coalesce("prediction", F.array().cast("array<double>")))
            .withColumn("hit", (F.size(F.array_intersect("prediction", "label")) > 0).cast("int")))


def ranking_metrics(frame: DataFrame, k: int = K) -> dict[str, float]:
    out = {}
    for name, metric in (("precision@10", "precisionAtK"), ("recall@10", "recallAtK"), ("ndcg@10", "ndcgAtK"),
                         ("map", "meanAveragePrecision")):
        ev = RankingEvaluator(predictionCol="prediction", labelCol="label", metricName=metric, k=k)
        out[name] = float(ev.evaluate(frame))
    out["hit_rate@10"] = float(frame.agg(F.avg("hit")).first()[0] or 0.0)
    out["users"] = float(frame.count())
    return out


def poisson_bootstrap_difference(a: DataFrame, b: DataFrame, reps: int = BOOTSTRAP_REPS, seed: int = 11):
    """Mean per-user hit difference (a - b) with a 95% Poisson-bootstrap interval.

    Each user gets a Poisson(1) weight per replicate (inverse CDF of a uniform); only the
    `reps` replicate means come back to the driver."""
    diff = a.select("user_id", F.col("hit").alias("ha")).join(b.select("user_id", F.col("hit").alias("hb")), "user_id") \
        .select("user_id", (F.col("ha") - F.col("hb")).alias("d"))
    cdf = [0.36788, 0.73576, 0.91970, 0.98101, 0.99634, 0.99941, 0.99992]
    u = F.rand(seed)
    weight = sum((u > c).cast("int") for c in cdf)
    reps_df = diff.select("d", F.explode(F.sequence(F.lit(1), F.lit(reps))).alias("rep")).withColumn("w", weight)
    means = [r[0] for r in reps_df.groupBy("rep").agg((F.sum(F.col("w") * F.col("d")) / F.sum("w")).alias("m"))
             .select("m").collect() if r[0] is not None]
    means.sort()
    point = diff.agg(F.avg("d")).first()[0] or 0.0
    lo, hi = means[int(0.025 * (len(means) - 1))], means[int(0.975 * (len(means) - 1))]
    return float(point), float(lo), float(hi)


def catalogue_coverage(recs: DataFrame, n_products: int) -> float:
    return recs.select("product_id").distinct().count() / n_products


def cross_category_rate(recs: DataFrame, train: DataFrame, products: DataFrame) -> float:
    """Share of recommendations in a category the user never bought in training."""
    cat = products.select(F.col("id").alias("product_id"), "category")
    seen = train.join(cat, "product_id").select("user_id", "category").distinct().withColumn("seen", F.lit(1))
    tagged = recs.join(cat, "product_id").join(seen, ["user_id", "category"], "left")
    return float(tagged.agg(F.avg(F.col("seen").isNull().cast("int"))).first()[0] or 0.0)


@dataclass
class Evaluation:
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)  # model -> metric -> value
    cold: dict[str, float] = field(default_factory=dict)
    best_params: dict = field(default_factory=dict)
    lift_vs_random: tuple = (0.0, 0.0, 0.0)
    lift_vs_popularity: tuple = (0.0, 0.0, 0.0)
    coverage: float = 0.0
    cross_category: float = 0.0

    def verdict(self, data_mode: str) -> tuple[bool, str]:
        point, lo, hi = self.lift_vs_random
        p_point, p_lo, p_hi = self.lift_vs_popularity
        if data_mode == "faithful":
            if lo > 0:
                return False, (f"ALS beats random-within-gender on faithful data beyond noise (hit-rate lift {point:+.4f}, "
                               f"95% CI [{lo:+.4f}, {hi:+.4f}]): this data has no signal beyond gender, so that is leakage")
            return True, (f"as expected on faithful data: ALS does not beat random-within-gender beyond noise "
                          f"(hit-rate lift {point:+.4f}, 95% CI [{lo:+.4f}, {hi:+.4f}])")
        if p_lo > 0:
            return True, (f"on taste data ALS beats popularity-within-gender: hit-rate margin {p_point:+.4f} "
                          f"(95% CI [{p_lo:+.4f}, {p_hi:+.4f}])")
        return False, (f"on taste data ALS does not clearly beat popularity-within-gender (margin {p_point:+.4f}, "
                       f"95% CI [{p_lo:+.4f}, {p_hi:+.4f}])")


@dataclass
class EvaluationSplit:
    """The global time split: test after the cut-off; a validation slice cut from the training
    period only (for hyper-parameters); warm/cold = test users with/without training history."""
    train: DataFrame
    test: DataFrame
    fit: DataFrame
    validation: DataFrame
    warm: DataFrame
    cold: DataFrame

    def unpersist(self) -> None:
        self.train.unpersist()
        self.test.unpersist()


def evaluation_split(events: DataFrame) -> EvaluationSplit:
    train, test = (df.persist() for df in time_split(events, cutoff_at(events, 1 - TEST_FRACTION)))
    fit_part, val = time_split(train, cutoff_at(train, 1 - TEST_FRACTION))
    history = train.select("user_id").distinct()
    return EvaluationSplit(train, test, fit_part,
                           validation=val.join(fit_part.select("user_id").distinct(), "user_id", "left_semi"),
                           warm=test.join(history, "user_id", "left_semi"),
                           cold=test.join(history, "user_id", "left_anti"))


def choose_params(split: EvaluationSplit, grid, fit=fit_als, recommend=als_recommendations, echo=print) -> dict:
    """The grid point with the best validation NDCG@10 (CrossValidator cannot rank with ALS).

    `fit(train, params)` returns a model, `recommend(model, users, bought)` its top-K frame, so
    any recommender can be tuned on the same slice."""
    best = None
    for params in grid:
        model = fit(split.fit, params)
        frame = evaluation_frame(recommend(model, split.validation, split.fit), split.validation)
        score = ranking_metrics(frame)["ndcg@10"]
        echo(f"  recommend validation rank={params['rank']:<3} regParam={params['regParam']:<5} alpha={params['alpha']:<5} "
             f"NDCG@10 {score:.4f}")
        if best is None or score > best[0]:
            best = (score, params)
    return best[1]


def evaluate(events: DataFrame, products: DataFrame, grid=GRID, echo=print) -> Evaluation:
    """Choose hyper-parameters on a validation slice of the training period, then score every
    model on the test period."""
    result = Evaluation()
    split = evaluation_split(events)
    train, warm, cold = split.train, split.warm, split.cold
    result.best_params = choose_params(split, grid, echo=echo)
    model = fit_als(train, result.best_params)
    recs = {
        "als": als_recommendations(model, warm, train),
        "random_within_gender": random_recommendations(products, warm, train),
        "popularity_global": popularity_recommendations(train, warm, train, by_gender=False),
        "popularity_within_gender": popularity_recommendations(train, warm, train, by_gender=True),
    }
    frames = {name: evaluation_frame(r, warm).persist() for name, r in recs.items()}
    for name, frame in frames.items():
        result.metrics[name] = ranking_metrics(frame)
    result.cold = ranking_metrics(evaluation_frame(popularity_recommendations(train, cold, train, by_gender=True), cold))
    result.lift_vs_random = poisson_bootstrap_difference(frames["als"], frames["random_within_gender"])
    result.lift_vs_popularity = poisson_bootstrap_difference(frames["als"], frames["popularity_within_gender"])
    result.coverage = catalogue_coverage(recs["als"], products.count())
    result.cross_category = cross_category_rate(recs["als"], train, products)
    for frame in frames.values():
        frame.unpersist()
    split.unpersist()
    return result


def evaluation_rows(result: Evaluation, data_mode: str) -> list[tuple]:
    rows = [(m, metric, data_mode, "warm", value) for m, ms in result.metrics.items() for metric, value in ms.items()]
    rows += [("popularity_within_gender", metric, data_mode, "cold", value) for metric, value in result.cold.items()]
    rows += [("als", "catalogue_coverage", data_mode, "warm", result.coverage),
             ("als", "cross_category_rate", data_mode, "warm", result.cross_category)]
    for name, (point, lo, hi) in (("hit_rate_lift_vs_random_within_gender", result.lift_vs_random),
                                  ("hit_rate_lift_vs_popularity_within_gender", result.lift_vs_popularity)):
        rows += [("als", name, data_mode, "warm", point), ("als", name + "_ci_low", data_mode, "warm", lo),
                 ("als", name + "_ci_high", data_mode, "warm", hi)]
    return rows


def run(spark: SparkSession, lake: Lakehouse, data_mode: str = "faithful", grid=GRID, echo=print) -> Evaluation:
    started = time.time()
    items, users = lake.table("silver", "order_items"), lake.table("silver", "users")
    built_from = lineage.of(spark, [items, users, lake.table("silver", "products")], f"mode={data_mode},grid={grid}")
    recs_table = lake.table("gold", "product_recommendations")
    if lineage.is_current(spark, [recs_table], built_from):
        echo(f"  recommendations unchanged (built from {built_from}): skipped")
        return None
    products = lake.table("silver", "products").read(spark)
    events = purchases(items.read(spark), users.read(spark)).persist()
    result = evaluate(events, products, grid, echo)
    ok, verdict = result.verdict(data_mode)
    table = spark.createDataFrame(evaluation_rows(result, data_mode),
                                  "model string, metric string, data_mode string, users string, value double")
    target = lake.table("gold", "recommender_evaluation")
    # The published recommendations: a model fitted on all history, top 10 unbought per buyer.
    final = fit_als(events, result.best_params)
    with lineage.recorded(spark, built_from):
        if target.exists(spark):  # keep the other data mode's rows: both are reported side by side
            target.save(table.write.format("delta").mode("overwrite").option("replaceWhere", f"data_mode = '{data_mode}'"))
        else:
            target.overwrite(table)
        recs_table.overwrite(als_recommendations(final, events.select("user_id").distinct(), events).select(
            "user_id", "product_id", "rank", F.round("score", 5).alias("score")))
    path = lake.model_path("als")
    # Tag keys by logical name: MLflow refuses keys that are not file-name safe (an s3:// location is not).
    sources = {f"{t.layer}.{t.name}": t for t in (items, users, lake.table("silver", "products"))}
    save_model(spark, final, path, {"tables": [str(items), str(users)],
                                    "delta_versions": [items.version(spark), users.version(spark)],
                                    "params": result.best_params, "data_mode": data_mode})
    with tracking.ml_run(spark, lake, "recommend") as run:
        run.log(params={"grid": grid, "data_mode": data_mode, **{f"best.{k}": v for k, v in result.best_params.items()}},
                metrics={f"{users_}.{model}.{metric}": value
                         for model, metric, _, users_, value in evaluation_rows(result, data_mode)},
                tags={"honesty_check": "PASS" if ok else "FAIL", "honesty_check.detail": verdict,
                      **{f"training_table.{name}": str(t) for name, t in sources.items()},
                      **{f"training_table.{name}.delta_version": t.version(spark) for name, t in sources.items()}})
        model_version = run.log_model(final, "als", events.select("user_id", "product_id"), ["prediction"], champion=ok)
    events.unpersist()
    echo(f"  {'model':<26} {'hit@10':>8} {'prec@10':>8} {'recall@10':>9} {'NDCG@10':>8} {'MAP':>8}  users")
    for name in MODELS:
        m = result.metrics[name]
        echo(f"  {name:<26} {m['hit_rate@10']:8.4f} {m['precision@10']:8.4f} {m['recall@10']:9.4f} {m['ndcg@10']:8.4f} "
             f"{m['map']:8.4f}  {int(m['users']):,}")
    c = result.cold
    echo(f"  {'cold users: pop. w/ gender':<26} {c['hit_rate@10']:8.4f} {c['precision@10']:8.4f} {c['recall@10']:9.4f} "
         f"{c['ndcg@10']:8.4f} {c['map']:8.4f}  {int(c['users']):,}")
    echo(f"  ALS catalogue coverage {result.coverage:.1%}, cross-category rate {result.cross_category:.1%}, "
         f"params {result.best_params}")
    echo(f"  honesty check ({data_mode} data): {'PASS' if ok else 'FAIL'}: {verdict}")
    echo(f"  model saved to {path}, registered as {lake.model_name(tracking.MODELS['als'])} v{model_version}"
         f"{' (champion)' if ok else ' (not champion: the check failed)'}, MLflow run {run.info.run_id}, "
         f"in {time.time() - started:.1f}s")
    return result
