"""Customer segmentation: log-RFM features, StandardScaler(withMean, withStd), KMeans.

k is chosen in K_RANGE by silhouette (ClusteringEvaluator), with the WSSSE elbow recorded
beside it. KMeans has no restarts, so each k is fitted with several seeds and the lowest
cost kept; a k whose assignments disagree across seeds (adjusted Rand index under
MIN_STABILITY) is never published. Segments are named from their centroids in original
units by the rule in `name_segment`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.clustering import KMeans
from pyspark.ml.evaluation import ClusteringEvaluator
from pyspark.ml.feature import SQLTransformer, StandardScaler, VectorAssembler
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from ecom_lakehouse import lineage
from ecom_lakehouse.config import Lakehouse
from ecom_lakehouse.ml import save_model, tracking

K_RANGE = range(2, 7)
SEEDS = (1, 2, 3)
MIN_STABILITY = 0.8
FEATURES = ["log_recency", "log_frequency", "log_monetary", "log_avg_basket", "category_diversity"]


def buyers(features: DataFrame) -> DataFrame:
    return features.where("is_buyer").select("user_id", "recency_days", "frequency", "monetary", "avg_basket",
                                             "category_diversity")


def build_pipeline(k: int, seed: int) -> Pipeline:
    logs = SQLTransformer(statement=(
        "SELECT *, log1p(recency_days) AS log_recency, log1p(frequency) AS log_frequency, "
        "log1p(monetary) AS log_monetary, log1p(avg_basket) AS log_avg_basket FROM __THIS__"))
    return Pipeline(stages=[
        logs,
        VectorAssembler(inputCols=FEATURES, outputCol="raw_features"),
        StandardScaler(inputCol="raw_features", outputCol="features", withMean=True, withStd=True),
        KMeans(k=k, seed=seed, featuresCol="features", predictionCol="segment_id", maxIter=40),
    ])


def adjusted_rand_index(contingency: list[list[int]]) -> float:
    """ARI from a contingency table (rows: clustering A, columns: clustering B)."""
    comb2 = lambda n: n * (n - 1) / 2  # noqa: E731
    n = sum(sum(r) for r in contingency)
    index = sum(comb2(c) for r in contingency for c in r)
    rows = sum(comb2(sum(r)) for r in contingency)
    cols = sum(comb2(sum(c)) for c in zip(*contingency))
    expected = rows * cols / comb2(n) if n > 1 else 0.0
    maximum = (rows + cols) / 2
    return 1.0 if maximum == expected else (index - expected) / (maximum - expected)


def contingency(a: DataFrame, b: DataFrame, k: int) -> list[list[int]]:
    """k x k counts of (assignment in a, assignment in b): a tiny aggregate."""
    joined = a.select("user_id", F.col("segment_id").alias("a")).join(
        b.select("user_id", F.col("segment_id").alias("b")), "user_id")
    table = [[0] * k for _ in range(k)]
    for r in joined.groupBy("a", "b").count().collect():
        table[r["a"]][r["b"]] = r["count"]
    return table


@dataclass
class KResult:
    k: int
    wssse: float
    silhouette: float
    stability_ari: float
    model: PipelineModel


def fit_k(data: DataFrame, k: int) -> KResult:
    fits = []
    for seed in SEEDS:
        model = build_pipeline(k, seed).fit(data)
        fits.append((model.stages[-1].summary.trainingCost, model))
    fits.sort(key=lambda f: f[0])
    best_cost, best = fits[0]
    assigned = [m.transform(data).select("user_id", "segment_id").persist() for _, m in fits]
    ari = min(adjusted_rand_index(contingency(assigned[0], other, k)) for other in assigned[1:])
    silhouette = ClusteringEvaluator(featuresCol="features", predictionCol="segment_id").evaluate(best.transform(data))
    for a in assigned:
        a.unpersist()
    return KResult(k, best_cost, silhouette, ari, best)


def choose_k(results: list[KResult]) -> KResult:
    stable = [r for r in results if r.stability_ari >= MIN_STABILITY]
    if not stable:
        raise RuntimeError("no k in {}..{} gives stable clusters across seeds (ARI < {}); not publishing segments"
                           .format(K_RANGE.start, K_RANGE.stop - 1, MIN_STABILITY))
    return max(stable, key=lambda r: r.silhouette)


def name_segment(avg_orders: float, avg_spend: float, avg_recency: float, overall_spend: float) -> str:
    """The naming rule, from a segment's centroid in original units."""
    habit = "repeat" if avg_orders >= 1.5 else "one-time"
    value = "high-value" if avg_spend >= 1.5 * overall_spend else "low-value" if avg_spend <= 0.67 * overall_spend else "mid-value"
    recency = "lapsed" if avg_recency > 365 else "recent"
    return f"{habit} {value}, {recency}"


def segment_summary(assigned: DataFrame) -> DataFrame:
    """Per segment: share of customers and revenue, average orders, spend and recency."""
    totals = assigned.agg(F.count("*").alias("n"), F.sum("monetary").alias("revenue"))
    per = assigned.groupBy("segment_id").agg(
        F.count("*").alias("customers"), F.sum("monetary").alias("revenue"),
        F.avg("frequency").alias("avg_orders"), F.avg("monetary").alias("avg_spend"),
        F.avg("recency_days").alias("avg_recency_days"))
    return (per.crossJoin(totals.select(F.col("n").alias("_n"), F.col("revenue").alias("_rev")))
            .select("segment_id", "customers",
                    F.round(F.col("customers") / F.col("_n"), 4).alias("share_of_customers"),
                    F.round(F.col("revenue") / F.col("_rev"), 4).alias("share_of_revenue"),
                    F.round("avg_orders", 2).alias("avg_orders"), F.round("avg_spend", 2).alias("avg_spend"),
                    F.round("avg_recency_days", 1).alias("avg_recency_days")))


def with_names(spark: SparkSession, summary: DataFrame) -> DataFrame:
    """Attach names to the k summary rows (k <= 6 rows reach the driver)."""
    rows = summary.collect()
    overall = sum(r["avg_spend"] * r["customers"] for r in rows) / sum(r["customers"] for r in rows)
    names = [name_segment(r["avg_orders"], r["avg_spend"], r["avg_recency_days"], overall) for r in rows]
    # two centroids can earn the same words: number them so names stay unique
    unique = [f"{n} #{names[:i].count(n) + 1}" if names.count(n) > 1 else n for i, n in enumerate(names)]
    named = spark.createDataFrame([(r["segment_id"], n) for r, n in zip(rows, unique)], "segment_id int, segment string")
    return summary.join(named, "segment_id").orderBy(F.desc("share_of_revenue"))


def run(spark: SparkSession, lake: Lakehouse, echo=print) -> dict:
    started = time.time()
    source = lake.table("gold", "customer_features")
    version = source.version(spark)
    outputs = [lake.table("gold", n) for n in ("segment_summary", "customer_segments", "segmentation_model_selection")]
    built_from = lineage.of(spark, [source], f"k={K_RANGE.start}..{K_RANGE.stop - 1},seeds={SEEDS}")
    if lineage.is_current(spark, outputs, built_from):
        echo(f"  segments unchanged (built from {built_from}): skipped")
        return {}
    data = buyers(source.read(spark)).persist()
    results = []
    for k in K_RANGE:
        k_started = time.time()
        r = fit_k(data, k)
        results.append(r)
        echo(f"  segment k={k}  ({time.time() - k_started:4.1f}s)  silhouette {r.silhouette:.3f}  WSSSE {r.wssse:,.0f}  stability (min ARI across seeds) {r.stability_ari:.3f}")
    chosen = choose_k(results)
    echo(f"  chosen k={chosen.k}: best silhouette among k with stable assignments (ARI >= {MIN_STABILITY})")
    assigned = chosen.model.transform(data).select("user_id", "segment_id", "frequency", "monetary", "recency_days")
    summary = with_names(spark, segment_summary(assigned))
    selection = spark.createDataFrame([(r.k, float(r.wssse), float(r.silhouette), float(r.stability_ari), r.k == chosen.k)
                                       for r in results],
                                      "k int, wssse double, silhouette double, stability_ari double, chosen boolean")
    with lineage.recorded(spark, built_from):
        lake.table("gold", "segment_summary").overwrite(summary)
        names = lake.table("gold", "segment_summary").read(spark).select("segment_id", "segment")
        lake.table("gold", "customer_segments").overwrite(assigned.select("user_id", "segment_id").join(names, "segment_id"))
        lake.table("gold", "segmentation_model_selection").overwrite(selection)
    save_model(spark, chosen.model, lake.model_path("segmentation"),
               {"table": str(source), "delta_version": version, "k": chosen.k})
    with tracking.ml_run(spark, lake, "segment") as run:
        run.log(params={"k_range": f"{K_RANGE.start}..{K_RANGE.stop - 1}", "seeds": SEEDS, "chosen_k": chosen.k,
                        "min_stability_ari": MIN_STABILITY, "features": FEATURES},
                metrics={**{f"k{r.k}.{m}": getattr(r, m) for r in results for m in ("silhouette", "wssse", "stability_ari")},
                         "silhouette": chosen.silhouette, "stability_ari": chosen.stability_ari},
                tags={"training_table": str(source), "training_table.delta_version": version})
        model_version = run.log_model(chosen.model, "segmentation", data, ["segment_id"],
                                      champion=chosen.stability_ari >= MIN_STABILITY)
    data.unpersist()
    echo(f"  segments written; model saved to {lake.model_path('segmentation')} (trained on {source} v{version}) and "
         f"registered as {lake.model_name(tracking.MODELS['segmentation'])} v{model_version} "
         f"(MLflow run {run.info.run_id}) in {time.time() - started:.1f}s")
    return {"k": chosen.k, "silhouette": chosen.silhouette}
