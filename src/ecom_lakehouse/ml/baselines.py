"""Recommenders without learning, the bar ALS has to clear, and the fallback for everyone else.

Each takes (history, users, products): purchases (user_id, product_id, gender, age_band), the
users to recommend for (user_id, gender, age_band) and the catalogue (silver products), and
returns the top K unbought products per user (user_id, product_id, rank, score).
"""
from __future__ import annotations

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

K = 10
# Candidates kept per group before the bought-item filter: a buyer has at most a few dozen items.
SPARE = 20


def age_band(age: Column) -> Column:
    """Ten-year bands (10, 20, ... 70); -1 when the age is unknown."""
    return F.coalesce((F.floor(age / 10) * 10).cast("int"), F.lit(-1))


def product_gender(products: DataFrame) -> DataFrame:
    """(product_id, gender): Men's department is M, everything else F, as the store sells them."""
    return products.select(F.col("id").alias("product_id"),
                           F.when(F.col("department") == "Men", "M").otherwise("F").alias("gender"))


def top_k_unbought(candidates: DataFrame, bought: DataFrame, k: int = K) -> DataFrame:
    fresh = candidates.join(bought.select("user_id", "product_id").distinct(), ["user_id", "product_id"], "left_anti")
    w = Window.partitionBy("user_id").orderBy(F.desc("score"), "product_id")
    return fresh.withColumn("rank", F.row_number().over(w)).where(F.col("rank") <= k)


def _per_group_top(scored: DataFrame, keys: list[str], k: int) -> DataFrame:
    w = Window.partitionBy(*keys).orderBy(F.desc("score"), "product_id") if keys else \
        Window.orderBy(F.desc("score"), "product_id")
    return scored.withColumn("_r", F.row_number().over(w)).where(F.col("_r") <= k + SPARE).drop("_r")


def popularity(keys: list[str]):
    """Most bought products, overall or within `keys` (e.g. gender)."""
    def recommend(history: DataFrame, users: DataFrame, products: DataFrame, k: int = K) -> DataFrame:
        counts = history.groupBy(*keys, "product_id").agg(F.count("*").cast("double").alias("score"))
        top = F.broadcast(_per_group_top(counts, keys, k))  # (groups x (k + SPARE)) rows
        people = users.select("user_id", *keys).distinct()
        candidates = people.join(top, keys) if keys else people.crossJoin(top)
        return top_k_unbought(candidates.select("user_id", "product_id", "score"), history, k)
    return recommend


def popularity_by_gender_age(history: DataFrame, users: DataFrame, products: DataFrame, k: int = K) -> DataFrame:
    """The fallback for users without history: what their gender and age band buy most, then what
    their gender buys, then the rest of the gender's catalogue, so everyone gets k products even
    before anyone has bought anything."""
    catalogue = product_gender(products)
    bands = users.select("gender", "age_band").distinct()
    in_band = history.groupBy("gender", "age_band", "product_id").agg(F.count("*").alias("band_count"))
    in_gender = history.groupBy("gender", "product_id").agg(F.count("*").alias("gender_count"))
    scored = (bands.join(catalogue, "gender").join(in_band, ["gender", "age_band", "product_id"], "left")
              .join(in_gender, ["gender", "product_id"], "left")
              .select("gender", "age_band", "product_id",
                      (F.coalesce("band_count", F.lit(0)) * 1e6 + F.coalesce("gender_count", F.lit(0))).cast("double")
                      .alias("score")))
    top = F.broadcast(_per_group_top(scored, ["gender", "age_band"], k))
    candidates = users.select("user_id", "gender", "age_band").distinct().join(top, ["gender", "age_band"])
    return top_k_unbought(candidates.select("user_id", "product_id", "score"), history, k)


def random_within_gender(history: DataFrame, users: DataFrame, products: DataFrame, k: int = K,
                         seed: int = 7) -> DataFrame:
    """Products drawn uniformly from the user's gender's catalogue: the chance level."""
    catalogue = product_gender(products).groupBy("gender").agg(F.collect_list("product_id").alias("ids"))  # 2 rows
    draws = (users.select("user_id", "gender").distinct().join(F.broadcast(catalogue), "gender")
             .select("user_id", "ids", F.explode(F.sequence(F.lit(1), F.lit(k + SPARE))).alias("draw"))
             .withColumn("product_id", F.element_at("ids", (F.floor(F.rand(seed) * F.size("ids")) + 1).cast("int")))
             .withColumn("score", F.rand(seed + 1)))
    candidates = draws.groupBy("user_id", "product_id").agg(F.max("score").alias("score"))
    return top_k_unbought(candidates, history, k)


def item_knn(history: DataFrame, users: DataFrame, products: DataFrame, k: int = K) -> DataFrame:
    """Item neighbourhood: products bought by the same people as the user's products, scored by
    cosine similarity of their buyer sets, summed over the user's products."""
    pairs = history.select("user_id", "product_id").distinct()
    buyers = pairs.groupBy("product_id").agg(F.count("*").alias("n"))
    co = (pairs.alias("a").join(pairs.alias("b"), "user_id").where(F.col("a.product_id") != F.col("b.product_id"))
          .groupBy(F.col("a.product_id").alias("i"), F.col("b.product_id").alias("j")).agg(F.count("*").alias("both")))
    similarity = (co.join(buyers.select(F.col("product_id").alias("i"), F.col("n").alias("ni")), "i")
                  .join(buyers.select(F.col("product_id").alias("j"), F.col("n").alias("nj")), "j")
                  .select("i", "j", (F.col("both") / F.sqrt(F.col("ni") * F.col("nj"))).alias("similarity")))
    mine = pairs.join(users.select("user_id").distinct(), "user_id").select("user_id", F.col("product_id").alias("i"))
    candidates = (mine.join(similarity, "i").groupBy("user_id", F.col("j").alias("product_id"))
                  .agg(F.sum("similarity").alias("score")))
    return top_k_unbought(candidates, history, k)


def brand_repeat(history: DataFrame, users: DataFrame, products: DataFrame, k: int = K) -> DataFrame:
    """Unbought products of the brands the user bought, most-bought brand first, then by the
    product's popularity: a rule with no learning."""
    brand = products.select(F.col("id").alias("product_id"), "brand").where(F.col("brand").isNotNull())
    mine = (history.join(users.select("user_id").distinct(), "user_id").join(brand, "product_id")
            .groupBy("user_id", "brand").agg(F.count("*").alias("times")))
    sold = history.groupBy("product_id").agg(F.count("*").alias("sold"))
    # Only each brand's best sellers can make a top k: big brands would otherwise multiply the rows.
    catalogue = _per_group_top(brand.join(sold, "product_id", "left")
                               .select("brand", "product_id", F.coalesce("sold", F.lit(0)).alias("score")), ["brand"], k)
    candidates = mine.join(catalogue, "brand").select(
        "user_id", "product_id", (F.col("times") * 1e6 + F.col("score")).cast("double").alias("score"))
    return top_k_unbought(candidates, history, k)


# Baselines under the same evaluation as ALS; random_within_gender is the chance level, never served.
# Listed simplest first: on a tie the simplest one serves.
BASELINES = {
    "random_within_gender": random_within_gender,
    "popularity_within_gender": popularity(["gender"]),
    "popularity_global": popularity([]),
    "brand_repeat": brand_repeat,
    "item_knn": item_knn,
}
CHANCE = "random_within_gender"
FALLBACK = "popularity_by_gender_age"
# What serves users with history unless another strategy earns its place (`recommend --default-strategy`).
DEFAULT_STRATEGY = "popularity_within_gender"
SERVABLE_BASELINES = tuple(name for name in BASELINES if name != CHANCE)
