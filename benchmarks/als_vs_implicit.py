"""Spark MLlib ALS against the `implicit` library on the same interactions.

For each scale and data mode: generate the raw CSVs, build the recommender's interactions (valid
purchases), cut the same global time split and validation slice, let each library pick its own
rank/factors and alpha from the same grid by validation NDCG@10, then time the final fit on the
training period and the top-10 for every warm test user, and score both with the same metric
code (recommend.ranking_metrics: RankingEvaluator's metrics, exact over the whole catalogue, bought items filtered). An
exact paired interval (McNemar, as the recommender's own check) says whether the two hit rates differ beyond noise.

`implicit` is a single-machine library: its adapter collects the training interactions to the
driver, which is the point of the comparison (how far one machine goes), not how the pipeline runs.

    python benchmarks/als_vs_implicit.py --scales 0.1 1
"""
from __future__ import annotations

import os

# implicit runs its own threads over the factor solves; a second BLAS thread pool only fights it.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import raw_data  # noqa: E402
from implicit.cpu.als import AlternatingLeastSquares  # noqa: E402
from pyspark.sql import DataFrame, SparkSession  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402
from scipy.sparse import csr_matrix  # noqa: E402


class ImplicitRecommender:
    """`implicit`'s ALS behind the recommender's fit(train, params) / recommend(model, users, bought).

    Spark's grid names map one to one (rank -> factors, regParam -> regularization, alpha -> alpha);
    both libraries use the Hu-Koren-Volinsky confidence 1 + alpha * weight, but Spark multiplies
    regParam by each user's or item's interaction count and implicit does not, so the same number is
    not the same model: that is why each library picks its own grid point on the validation slice."""

    def __init__(self, spark: SparkSession, n_users: int, n_items: int, catalogue: np.ndarray, max_iter: int):
        self.spark, self.shape, self.catalogue, self.max_iter = spark, (n_users, n_items), catalogue, max_iter
        self.to_driver_seconds = 0.0

    def fit(self, train: DataFrame, params: dict):
        from ecom_lakehouse.ml.recommend import weights

        started = time.time()
        cells = weights(train).toPandas()
        matrix = csr_matrix((cells["weight"].to_numpy(np.float32), (cells["user_id"], cells["product_id"])),
                            shape=self.shape)
        self.to_driver_seconds = time.time() - started
        model = AlternatingLeastSquares(factors=params["rank"], regularization=params["regParam"], alpha=params["alpha"],
                                        iterations=self.max_iter, random_state=7, num_threads=0)
        model.fit(matrix, show_progress=False)
        return model, matrix

    def recommend(self, fitted, users: DataFrame, bought: DataFrame) -> DataFrame:
        # `bought` is the matrix the model was fitted on: filter_already_liked_items removes it.
        from ecom_lakehouse.ml.recommend import K

        model, matrix = fitted
        ids = np.array(sorted(r[0] for r in users.select("user_id").distinct().collect()), dtype=np.int64)
        items, scores = model.recommend(ids, matrix[ids], N=K, filter_already_liked_items=True, items=self.catalogue)
        rows = [(int(u), int(p), rank, float(s)) for u, ps, ss in zip(ids, items, scores, strict=True)
                for rank, (p, s) in enumerate(zip(ps, ss, strict=True), start=1) if p >= 0]
        return self.spark.createDataFrame(rows, "user_id long, product_id long, rank int, score double")


@dataclass
class Measured:
    params: dict
    tune_seconds: float
    fit_seconds: float
    recommend_seconds: float
    metrics: dict
    frame: DataFrame


def measure(split, fit, recommend, grid) -> Measured:
    from ecom_lakehouse.ml import recommend as reco

    started = time.time()
    params = reco.choose_params(split, grid, fit=fit, recommend=recommend, echo=lambda *_: None)
    tuned = time.time()
    model = fit(split.train, params)
    fitted = time.time()
    recs = recommend(model, split.warm, split.train).persist()
    recs.count()
    done = time.time()
    frame = reco.evaluation_frame(recs, split.warm).persist()
    return Measured(params, tuned - started, fitted - tuned, done - fitted, reco.ranking_metrics(frame), frame)


def compare(spark: SparkSession, raw: Path) -> dict:
    from ecom_lakehouse.ml import recommend as reco
    from ecom_lakehouse.ml import stats
    from ecom_lakehouse.ml.baselines import BASELINES

    events, products = reco.from_export(spark, str(raw))
    events.persist()
    split = reco.evaluation_split(events)
    catalogue = np.array(sorted(r[0] for r in products.select("id").collect()), dtype=np.int32)  # ids only
    n_users = events.agg({"user_id": "max"}).first()[0] + 1
    implicit = ImplicitRecommender(spark, n_users, int(catalogue.max()) + 1, catalogue, reco.MAX_ITER)
    out = {"spark_als": measure(split, reco.fit_als, reco.als_recommendations, reco.GRID),
           "implicit_als": measure(split, implicit.fit, implicit.recommend, reco.GRID)}
    out["implicit_als"].fit_seconds -= implicit.to_driver_seconds
    out["to_driver_seconds"] = implicit.to_driver_seconds
    warm_users = split.warm.select("user_id", "gender", "age_band").distinct()
    popular = BASELINES["popularity_within_gender"](split.train, warm_users, products)
    out["popularity_within_gender"] = reco.ranking_metrics(reco.evaluation_frame(popular, split.warm))
    # the same paired exact test the recommender's serving rule uses: users hit by one library only
    both = out["implicit_als"].frame.withColumn("list", F.lit("implicit_als")).unionByName(
        out["spark_als"].frame.withColumn("list", F.lit("spark_als")))
    only_implicit, only_spark = reco.discordant_pairs(both, ["implicit_als", "spark_als"])[("implicit_als", "spark_als")]
    users = int(out["spark_als"].metrics["users"])  # both frames hold every warm test user
    difference, low, high, _ = stats.mcnemar_exact(only_implicit, only_spark, users)
    out["implicit_minus_spark"] = (difference, low, high)
    out["train_interactions"] = split.train.count()
    for m in (out["spark_als"], out["implicit_als"]):
        m.frame.unpersist()
    split.unpersist()
    events.unpersist()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scales", type=float, nargs="+", default=[0.1, 1.0], help="generator scales to measure")
    parser.add_argument("--modes", nargs="+", default=["faithful", "taste"], choices=["faithful", "taste"],
                        help="faithful data (no signal beyond gender) and/or --taste data (planted taste groups)")
    parser.add_argument("--seed", type=int, default=42, help="generator seed")
    args = parser.parse_args()

    from ecom_lakehouse.session import get_spark

    spark = get_spark("local", "ecom_lakehouse_als_vs_implicit")
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for scale in args.scales:
            for mode in args.modes:
                raw = raw_data.generated(Path(work) / f"{scale}-{mode}", scale, args.seed, taste=mode == "taste")
                result = compare(spark, raw)
                rows.append((scale, mode, result))
                diff, lo, hi = result["implicit_minus_spark"]
                print(f"scale {scale} {mode}: {result['train_interactions']:,} training interactions; "
                      f"implicit - Spark hit@10 {diff:+.4f} (95% CI [{lo:+.4f}, {hi:+.4f}]); "
                      f"implicit's data to driver {result['to_driver_seconds']:.1f}s", flush=True)
    print(f"\nseed {args.seed}; {spark.sparkContext.defaultParallelism} cores; seconds; warm test users; "
          "metrics hit rate@10 / NDCG@10 / MAP\n")
    from ecom_lakehouse.ml.recommend import GRID

    print(f"| scale | data | library | chosen rank, alpha | tuning ({len(GRID)} fits) | final fit | top-10 for test users "
          "| hit@10 / NDCG@10 / MAP | implicit − Spark hit@10 (95% CI) |")
    print("|---:|---|---|---|---:|---:|---:|---|---|")
    for scale, mode, result in rows:
        diff = "{:+.4f} [{:+.4f}, {:+.4f}]".format(*result["implicit_minus_spark"])
        for library in ("spark_als", "implicit_als"):
            m = result[library]
            metrics = f"{m.metrics['hit_rate@10']:.4f} / {m.metrics['ndcg@10']:.4f} / {m.metrics['map']:.4f}"
            print(f"| {scale:g} | {mode} | {library.replace('_', ' ')} | {m.params['rank']}, {m.params['alpha']:g} "
                  f"| {m.tune_seconds:.1f} | {m.fit_seconds:.1f} | {m.recommend_seconds:.1f} | {metrics} "
                  f"| {diff if library == 'implicit_als' else ''} |")
        p = result["popularity_within_gender"]
        print(f"| {scale:g} | {mode} | popularity within gender (reference) | | | | "
              f"| {p['hit_rate@10']:.4f} / {p['ndcg@10']:.4f} / {p['map']:.4f} | |")
    spark.stop()


if __name__ == "__main__":
    main()
