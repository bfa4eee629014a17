"""Customer segmentation: log-RFM features, StandardScaler(withMean, withStd), KMeans.

Features: recency, frequency and average basket (logs). Total spend is left out because it is frequency
x basket (it correlates 0.91 with basket), and category diversity because it follows frequency (0.71):
redundant features would weigh the same thing twice.

k is chosen by silhouette (ClusteringEvaluator) in 2..K_MAX, below the number of distinct feature
vectors (k groups of k points are forced by the data, not found in it: every seed agrees and the
silhouette is 0), with the WSSSE elbow recorded beside it. Each k is fitted on every buyer (the model
published) and on bootstrap resamples of the buyers, each with a seed of its own; a k whose resample
fits assign the buyers differently from the full fit (adjusted Rand index under MIN_STABILITY) is never
published. Resamples measure what seeds alone cannot: whether the segments are in the data or only in
this sample of it. With fewer than three distinct buyer profiles (verdict TOO_LITTLE_DATA), or no stable k (FAIL), no model
is fitted or published: the buyers form one "all buyers" segment, and the verdict says why. Segments are
named from the share of their members meeting each condition (`name_segment`); non-buyers are a row of
their own (segment_id -1).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.clustering import KMeans
from pyspark.ml.evaluation import ClusteringEvaluator
from pyspark.ml.feature import SQLTransformer, StandardScaler, VectorAssembler
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from ecom_lakehouse import gold, lineage
from ecom_lakehouse.config import Lakehouse
from ecom_lakehouse.ml import next_period, save_model, tracking, write_verdicts
from ecom_lakehouse.ml.checks import Check, too_little_data

K_MAX = 6
SEED = 1  # the fit on every buyer, the one published
RESAMPLES = (2, 3)  # the seeds of the bootstrap resamples (and of their fits)
MIN_STABILITY = 0.8
FEATURES = ["log_recency", "log_frequency", "log_avg_basket"]
RAW_FEATURES = ["recency_days", "frequency", "avg_basket"]
RECENT_DAYS = 365
MOST = 0.75  # a word applies to a segment when at least this share of its members meet it
NON_BUYERS, NON_BUYERS_ID, ALL_BUYERS = "non-buyers", -1, "all buyers"


def buyers(features: DataFrame) -> DataFrame:
    return features.where("is_buyer").select("user_id", "recency_days", "frequency", "monetary", "avg_basket")


def feature_pipeline() -> Pipeline:
    """Logs, assembled and standardised: fitted once, then every k and seed clusters its output."""
    logs = SQLTransformer(statement=(
        "SELECT *, log1p(recency_days) AS log_recency, log1p(frequency) AS log_frequency, "
        "log1p(avg_basket) AS log_avg_basket FROM __THIS__"))
    return Pipeline(stages=[
        logs,
        VectorAssembler(inputCols=FEATURES, outputCol="raw_features"),
        StandardScaler(inputCol="raw_features", outputCol="features", withMean=True, withStd=True),
    ])


def kmeans(k: int, seed: int) -> KMeans:
    return KMeans(k=k, seed=seed, featuresCol="features", predictionCol="segment_id", maxIter=40)


def adjusted_rand_index(contingency: list[list[int]]) -> float:
    """ARI from a contingency table (rows: clustering A, columns: clustering B)."""
    comb2 = lambda n: n * (n - 1) / 2  # noqa: E731
    n = sum(sum(r) for r in contingency)
    index = sum(comb2(c) for r in contingency for c in r)
    rows = sum(comb2(sum(r)) for r in contingency)
    cols = sum(comb2(sum(c)) for c in zip(*contingency, strict=True))
    expected = rows * cols / comb2(n) if n > 1 else 0.0
    maximum = (rows + cols) / 2
    return 1.0 if maximum == expected else (index - expected) / (maximum - expected)


def fit_contingencies(assigned: DataFrame, k: int) -> list[list[list[int]]]:
    """`assigned`: one column of cluster ids per fit. For each column after the first, the k x k
    counts of (cluster in the first, cluster in it), all from one aggregate (at most k ** columns
    rows reach the driver, whatever the data)."""
    seeds = assigned.columns
    tables = [[[0] * k for _ in range(k)] for _ in seeds[1:]]
    for r in assigned.groupBy(*seeds).count().collect():
        for table, other in zip(tables, seeds[1:], strict=True):
            table[r[seeds[0]]][r[other]] += r["count"]
    return tables


@dataclass
class KResult:
    k: int
    wssse: float
    silhouette: float
    stability_ari: float
    model: PipelineModel


def fit_k(scaled: DataFrame, k: int, features: PipelineModel) -> KResult | None:
    """k clusters fitted on every buyer of the (cached) scaled features, as one model with the fitted feature
    stages in front, and its stability: the lowest ARI between its assignment of every buyer and that of a fit on a
    bootstrap resample (0 when a resample holds fewer than k distinct buyers). None when the full fit found fewer than k non-empty
    clusters (too few distinct points around)."""
    model = kmeans(k, SEED).fit(scaled)
    if min(model.summary.clusterSizes, default=0) == 0 or model.summary.k < k:
        return None
    assigned = model.transform(scaled.select("features")).withColumnRenamed("segment_id", "s0")
    for i, seed in enumerate(RESAMPLES, start=1):
        resample = scaled.sample(withReplacement=True, fraction=1.0, seed=seed)
        # KMeans needs k distinct points (MLlib 3.5 fails on fewer); a resample without them cannot hold k clusters
        if resample.select(*RAW_FEATURES).distinct().limit(k).count() < k:
            ari = 0.0
            break
        assigned = kmeans(k, seed).fit(resample).transform(assigned).withColumnRenamed("segment_id", f"s{i}")
    else:
        ari = min(adjusted_rand_index(table) for table in fit_contingencies(assigned.drop("features"), k))
    silhouette = ClusteringEvaluator(featuresCol="features", predictionCol="segment_id").evaluate(model.transform(scaled))
    return KResult(k, model.summary.trainingCost, silhouette, ari, PipelineModel(stages=[*features.stages, model]))


def choose_k(results: list[KResult]) -> KResult | None:
    stable = [r for r in results if r.stability_ari >= MIN_STABILITY]
    return max(stable, key=lambda r: r.silhouette) if stable else None


def name_segment(share_repeat: float, share_high_spend: float, share_recent: float) -> str:
    """The naming rule, from the share of members who ordered more than once, spent more than the
    median buyer and ordered within RECENT_DAYS: a word applies when MOST of them meet it."""
    def word(share: float, yes: str, no: str, mixed: str) -> str:
        return yes if share >= MOST else no if share <= 1 - MOST else mixed

    return (f"{word(share_repeat, 'repeat', 'one-time', 'mixed repeat')} "
            f"{word(share_high_spend, 'high-value', 'low-value', 'mid-value')}, "
            f"{word(share_recent, 'recent', 'lapsed', 'mixed recency')}")


def segment_summary(assigned: DataFrame, median_spend: float, non_buyers: int) -> DataFrame:
    """Per segment: buyers and their shares of users, buyers and revenue, averages, and the shares
    of members meeting each naming condition; non-buyers as one more row."""
    per = assigned.groupBy("segment_id").agg(
        F.count("*").alias("users"), F.sum("monetary").alias("revenue"),
        F.avg("frequency").alias("avg_orders"), F.avg("monetary").alias("avg_spend"),
        F.avg("recency_days").alias("avg_recency_days"),
        F.avg((F.col("frequency") > 1).cast("double")).alias("share_repeat"),
        F.avg((F.col("monetary") > median_spend).cast("double")).alias("share_high_spend"),
        F.avg((F.col("recency_days") <= RECENT_DAYS).cast("double")).alias("share_recent"))
    spark = assigned.sparkSession
    rows = per.unionByName(spark.createDataFrame(
        [(NON_BUYERS_ID, non_buyers, 0.0)], "segment_id int, users long, revenue double"), allowMissingColumns=True)
    totals = rows.agg(F.sum("users").alias("_all"), F.sum(F.when(F.col("segment_id") != NON_BUYERS_ID, F.col("users")))
                      .alias("_buyers"), F.sum("revenue").alias("_revenue"))
    return (rows.where((F.col("segment_id") != NON_BUYERS_ID) | (F.col("users") > 0)).crossJoin(totals)
            .select("segment_id", "users",
                    F.round(F.col("users") / F.col("_all"), 4).alias("share_of_users"),
                    F.when(F.col("segment_id") != NON_BUYERS_ID, F.round(F.col("users") / F.col("_buyers"), 4))
                    .alias("share_of_buyers"),
                    F.round(F.coalesce(F.try_divide("revenue", "_revenue"), F.lit(0.0)), 4).alias("share_of_revenue"),
                    *[F.round(c, d).alias(c) for c, d in (("avg_orders", 2), ("avg_spend", 2), ("avg_recency_days", 1),
                                                          ("share_repeat", 3), ("share_high_spend", 3), ("share_recent", 3))]))


def with_names(summary: DataFrame, single: bool) -> DataFrame:
    """Attach names to the summary rows (at most K_MAX + 1 rows reach the driver)."""
    rows = summary.collect()

    def name(r) -> str:
        if r["segment_id"] == NON_BUYERS_ID:
            return NON_BUYERS
        return ALL_BUYERS if single else name_segment(r["share_repeat"], r["share_high_spend"], r["share_recent"])

    names = [name(r) for r in rows]
    # two segments can earn the same words: number them so names stay unique
    unique = [f"{n} #{names[:i].count(n) + 1}" if names.count(n) > 1 else n for i, n in enumerate(names)]
    named = summary.sparkSession.createDataFrame([(r["segment_id"], n) for r, n in zip(rows, unique, strict=True)],
                                                 "segment_id int, segment string")
    return summary.join(named, "segment_id").orderBy(F.desc("share_of_revenue"), "segment_id")


@dataclass
class Segmentation:
    summary: DataFrame
    memberships: DataFrame  # every user: user_id, segment_id, segment
    results: list[KResult] = field(default_factory=list)
    chosen: KResult | None = None
    check: Check | None = None


def stability_check(results: list[KResult], chosen: KResult | None, distinct: int) -> Check:
    if distinct == 0:
        return too_little_data("segmentation", "no buyer with a valid order: nothing to cluster",
                               f"no model fitted; every user is in '{NON_BUYERS}'")
    if distinct < 3:
        return too_little_data("segmentation", f"{distinct} distinct buyer profile(s) (recency, frequency, basket): "
                               "k segments need more than k", f"no model fitted; published one '{ALL_BUYERS}' segment")
    if chosen is None:
        best = max((r.stability_ari for r in results), default=0.0)
        return Check("segmentation", "resample_stability", "FAIL", best, best, best, 1.0,
                     f"no k in 2..{min(K_MAX, distinct - 1)} gives the same clusters on {len(RESAMPLES)} bootstrap "
                     f"resamples of the buyers (best min ARI {best:.3f} < {MIN_STABILITY})",
                     f"published one '{ALL_BUYERS}' segment")
    return Check("segmentation", "resample_stability", "PASS", chosen.stability_ari, chosen.stability_ari,
                 chosen.stability_ari, 1.0, f"k={chosen.k}: min ARI across bootstrap resamples {chosen.stability_ari:.3f} >= "
                 f"{MIN_STABILITY}, silhouette {chosen.silhouette:.3f}", f"published {chosen.k} segments")


def fit_each_k(data: DataFrame, ks: range, echo=print) -> list[KResult]:
    """fit_k for every k in ks, on features prepared once and cached for all of them."""
    if not ks:
        return []
    prepared = feature_pipeline().fit(data)
    scaled = prepared.transform(data).persist()
    results = []
    for k in ks:
        k_started = time.time()
        r = fit_k(scaled, k, prepared)
        if r is None:
            echo(f"  segment k={k}: fewer than {k} non-empty clusters, skipped")
            continue
        results.append(r)
        echo(f"  segment k={k}  ({time.time() - k_started:4.1f}s)  silhouette {r.silhouette:.3f}  WSSSE {r.wssse:,.0f}  "
             f"stability (min ARI across resamples) {r.stability_ari:.3f}")
    scaled.unpersist()
    return results


def segment(features: DataFrame, echo=print) -> Segmentation:
    """Segments for the buyers in gold customer_features (data persisted by the caller)."""
    data = buyers(features)  # a projection of the caller's cached rows: caching it again left it cached
    distinct = data.select(*RAW_FEATURES).distinct().limit(K_MAX + 1).count()
    results = fit_each_k(data, range(2, min(K_MAX, distinct - 1) + 1), echo)
    chosen = choose_k(results)
    assigned = (chosen.model.transform(data) if chosen else data.withColumn("segment_id", F.lit(0))).select(
        "user_id", F.col("segment_id").cast("int"), "frequency", "monetary", "recency_days")
    median = data.approxQuantile("monetary", [0.5], 0.001)
    non_buyers = features.where(~F.col("is_buyer")).select("user_id")
    summary = with_names(segment_summary(assigned, median[0] if median else 0.0, non_buyers.count()), chosen is None)
    names = F.broadcast(summary.select("segment_id", "segment"))
    memberships = (assigned.select("user_id", "segment_id")
                   .unionByName(non_buyers.withColumn("segment_id", F.lit(NON_BUYERS_ID))).join(names, "segment_id")
                   .select("user_id", "segment_id", "segment"))
    return Segmentation(summary, memberships, results, chosen, stability_check(results, chosen, distinct))


def refitted(k: int | None):
    """The stage's segmentation of other buyers (customer_features rows): its feature pipeline and k, fitted on
    them; one group when the stage published one segment. For next_period.check."""
    def fit(features: DataFrame) -> DataFrame:
        data = buyers(features)
        if not k:
            return data.select("user_id", F.lit(0).alias("segment"))
        # KMeans's start samples each partition in its row order; these rows come out of an aggregation, whose order
        # differs between Spark lines, so the fit sees them in one order everywhere (the stage's own fit reads a
        # Delta table's file, in the same order on every line). One row per buyer: one partition holds them.
        data = data.repartition(1).sortWithinPartitions("user_id")
        scaled = feature_pipeline().fit(data).transform(data)
        return kmeans(k, SEED).fit(scaled).transform(scaled).select("user_id", F.col("segment_id").alias("segment"))
    return fit


def run(spark: SparkSession, lake: Lakehouse, echo=print) -> dict:
    started = time.time()
    source = lake.table("gold", "customer_features")
    version = source.version(spark)
    # the next-period check cuts its own features from the order lines
    silver = {n: lake.table("silver", n) for n in ("users", "order_items", "products", "inventory_items")}
    outputs = [lake.table("gold", n) for n in ("segment_summary", "customer_segments", "segmentation_model_selection")]
    built_from = lineage.of(spark, [source, *silver.values()], f"k=2..{K_MAX},seed={SEED},resamples={RESAMPLES},"
                                                                f"features={','.join(FEATURES)},"
                                                                f"holdout_days={next_period.HOLDOUT_DAYS}")
    if lineage.is_current(spark, outputs, built_from):
        echo(f"  segments unchanged (built from {built_from}): skipped")
        return {}
    features = source.read(spark).persist()
    result = segment(features, echo)
    chosen, check = result.chosen, result.check
    echo(f"  check {check.check}: {check.verdict}: {check.detail} -> {check.consequence}")
    lines = gold.sales_lines(*(silver[n].read(spark) for n in ("order_items", "products", "inventory_items")))
    ahead, scores = next_period.check(silver["users"].read(spark), lines, refitted(chosen.k if chosen else None))
    echo(f"  check {ahead.check}: {ahead.verdict}: {ahead.detail} -> {ahead.consequence}")
    selection = spark.createDataFrame([(r.k, float(r.wssse), float(r.silhouette), float(r.stability_ari),
                                        chosen is not None and r.k == chosen.k) for r in result.results],
                                      "k int, wssse double, silhouette double, stability_ari double, chosen boolean")
    with tracking.ml_run(spark, lake, "segment") as run:
        run.log(params={"k_range": f"2..{K_MAX}", "seed": SEED, "resamples": RESAMPLES, "chosen_k": chosen.k if chosen else 1,
                        "min_stability_ari": MIN_STABILITY, "features": FEATURES},
                metrics={**{f"k{r.k}.{m}": getattr(r, m) for r in result.results
                            for m in ("silhouette", "wssse", "stability_ari")},
                         **({"silhouette": chosen.silhouette, "stability_ari": chosen.stability_ari} if chosen else {}),
                         **({f"next_period.brier.{g}": b for g, b in scores.brier.items()} if scores else {})},
                tags={"training_table": str(source), "training_table.delta_version": version,
                      **{f"check.{c.check}": c.verdict for c in (check, ahead)},
                      **{f"check.{c.check}.detail": c.detail for c in (check, ahead)}})
        # The model first: the tables below record the run's lineage, after which a rerun skips the stage, so a
        # registry that fails here must leave the stage undone.
        if chosen:
            save_model(spark, chosen.model, lake.model_path("segmentation"),
                       {"table": str(source), "delta_version": version, "k": chosen.k})
            model_version = run.log_model(chosen.model, "segmentation", buyers(features), ["segment_id"], champion=True)
        else:
            run.retire("segmentation")
        with lineage.recorded(spark, built_from):
            write_verdicts(spark, lake, [check, ahead], "segmentation", "all", built_from, run.info.run_id)
            lake.table("gold", "segment_summary").overwrite(result.summary)
            lake.table("gold", "customer_segments").overwrite(result.memberships)
            lake.table("gold", "segmentation_model_selection").overwrite(selection)
    features.unpersist()
    echo("  segments written; " + (
        f"model saved to {lake.model_path('segmentation')} (trained on {source} v{version}) and registered as "
        f"{lake.model_name(tracking.REGISTERED_MODELS['segmentation'])} v{model_version}" if chosen else "no model (one segment)")
        + f" (MLflow run {run.info.run_id}) in {time.time() - started:.1f}s")
    return {"k": chosen.k if chosen else 1, "silhouette": chosen.silhouette if chosen else None}
