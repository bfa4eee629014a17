"""The ML stages on shops with very little data: a new shop, a first day of deliveries, a narrow
extract. Each small world is written as silver tables (parsed by silver's own value parser) and
gold customer features (gold's own function) into one lakehouse, one world after another; then
`segment` and `recommend` run as the CLI runs them. Whatever the world, both finish, write their
verdicts, and serve every user what the catalogue leaves them, and a model is champion only while
it is the one published."""
from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass, field

import pytest
from pyspark.sql import functions as F

from ecom_lakehouse import gold
from ecom_lakehouse.config import Lakehouse
from ecom_lakehouse.ml import baselines, checks, recommend, segmentation, tracking
from ecom_lakehouse.schemas import RAW_COLUMNS, parse_value

DAY = 86_400
START = 1_700_000_000  # 2023-11-14
STATUSES = ("Complete", "Shipped", "Processing", "Cancelled", "Returned")


@dataclass
class World:
    """Rows of a shop: users (id, gender, age), products (id, department, brand, price) and
    purchases (user, product, status, seconds since START)."""
    users: list[tuple[int, str, int]]
    products: list[tuple[int, str, str, float]]
    purchases: list[tuple[int, int, str, int]] = field(default_factory=list)

    def expected_served(self) -> dict[int, int]:
        """Products each user must be served: k, or fewer when their gender's catalogue (Men's
        department for M, the rest for F) less what they validly bought has fewer."""
        catalogue = {g: {p for p, dept, *_ in self.products if (dept == "Men") == (g == "M")} for g in "MF"}
        bought = {}
        for user, product, status, _ in self.purchases:
            if status not in ("Cancelled", "Returned"):
                bought.setdefault(user, set()).add(product)
        return {u: min(baselines.K, len(catalogue[g] - bought.get(u, set()))) for u, g, _ in self.users}


def _users(n: int, rng: random.Random) -> list[tuple[int, str, int]]:
    return [(u, rng.choice("MF"), rng.randint(12, 70)) for u in range(1, n + 1)]


def _products(n: int, rng: random.Random) -> list[tuple[int, str, str, float]]:
    return [(p, rng.choice(("Men", "Women")), f"brand{rng.randint(1, 3)}", round(rng.uniform(5, 200), 2))
            for p in range(1, n + 1)]


def random_world(seed: int) -> World:
    """1 to 30 users, 1 to 8 products, 0 to a few purchases per user, at times spread over a year
    or all at one moment."""
    rng = random.Random(seed)
    users, products = _users(rng.randint(1, 30), rng), _products(rng.randint(1, 8), rng)
    one_moment = rng.random() < 0.3
    purchases = [(rng.choice(users)[0], rng.choice(products)[0], rng.choice(STATUSES),
                  0 if one_moment else rng.randint(0, 365 * DAY))
                 for _ in range(rng.choice((0, 1, 2, rng.randint(3, 3 * len(users)))))]
    return World(users, products, purchases)


_rng = random.Random(0)
EDGE_WORLDS = {
    # the shop: two buyers with the same history, several non-buyers
    "two alike buyers": World(_users(6, _rng), _products(4, _rng), [(1, 1, "Complete", 0), (1, 2, "Complete", DAY),
                                                                    (2, 1, "Complete", 0), (2, 2, "Complete", DAY)]),
    "no purchases": World(_users(5, _rng), _products(3, _rng)),
    "only cancelled or returned": World(_users(4, _rng), _products(3, _rng),
                                        [(1, 1, "Cancelled", 0), (2, 2, "Returned", DAY)]),
    "one buyer": World(_users(5, _rng), _products(5, _rng), [(1, p, "Complete", p * DAY) for p in range(1, 6)]),
    "one product": World(_users(6, _rng), [(1, "Women", "brand1", 20.0)],
                         [(u, 1, "Complete", u * DAY) for u in range(1, 7)]),
    "everything bought": World([(u, "F", 30) for u in range(1, 5)], [(1, "Women", "brand1", 9.0), (2, "Women", "brand2", 9.0)],
                               [(u, p, "Complete", (u + p) * DAY) for u in range(1, 5) for p in (1, 2)]),
}
WORLDS = {**EDGE_WORLDS, **{f"random {seed}": random_world(seed) for seed in range(3)}}


def _typed(spark, table: str, rows: list[dict]):
    """A silver table from raw strings, parsed by silver's value parser (unset columns NULL)."""
    columns = RAW_COLUMNS[table]
    raw = spark.createDataFrame([tuple(r.get(c) for c, _ in columns) for r in rows],
                                ", ".join(f"`{c}` string" for c, _ in columns))
    return raw.select(*[parse_value(c, kind).alias(c) for c, kind in columns])


def _timestamp(seconds: int) -> str:
    return dt.datetime.fromtimestamp(START + seconds, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def write_world(spark, lake: Lakehouse, world: World) -> None:
    users = _typed(spark, "users", [dict(id=str(u), gender=g, age=str(a), country="Spain", traffic_source="Search",
                                         created_at=_timestamp(-DAY)) for u, g, a in world.users])
    products = _typed(spark, "products", [dict(id=str(p), department=d, brand=b, category="Tops", retail_price=str(price),
                                               cost=str(price / 2)) for p, d, b, price in world.products])
    items = _typed(spark, "order_items", [dict(id=str(i), order_id=str(i), user_id=str(u), product_id=str(p),
                                               status=s, created_at=_timestamp(t), sale_price="10.0")
                                          for i, (u, p, s, t) in enumerate(world.purchases, 1)])
    for name, frame in (("users", users), ("products", products), ("order_items", items)):
        lake.table("silver", name).overwrite(frame)
    lines = gold.sales_lines(items, products, _typed(spark, "inventory_items", []))
    as_of = dt.datetime.fromtimestamp(START + 366 * DAY, dt.timezone.utc).replace(tzinfo=None)
    lake.table("gold", "customer_features").overwrite(gold.customer_features(users, lines, as_of))


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    return Lakehouse(root=str(tmp_path_factory.mktemp("thin")))


def _champion(lake: Lakehouse, key: str):
    import mlflow
    from mlflow.exceptions import MlflowException

    store = f"file:{lake.root}/mlruns"
    try:
        return mlflow.MlflowClient(store, store).get_model_version_by_alias(tracking.MODELS[key], tracking.CHAMPION)
    except MlflowException:
        return None


@pytest.mark.parametrize("name", WORLDS)
def test_segment_and_recommend_finish_on_a_small_world(spark, lake, name, mlflow_environment):
    world = WORLDS[name]
    write_world(spark, lake, world)
    segmentation.run(spark, lake, echo=lambda *_: None)
    recommend.run(spark, lake, echo=lambda *_: None)

    verdicts = {(r["model"], r["check"]): r for r in lake.table("gold", "model_verdicts").read(spark).collect()}
    [segment_verdict] = [v for (model, _), v in verdicts.items() if model == "segmentation"]
    als = {check: v for (model, check), v in verdicts.items() if model == "als"}
    assert als, "recommend wrote no verdict"
    served = lake.table("gold", "served_recommendations").read(spark)
    per_user = {r["user_id"]: r["n"] for r in served.groupBy("user_id").agg(F.countDistinct("product_id").alias("n"))
                .collect()}
    expected = world.expected_served()
    assert {u: per_user.get(u, 0) for u in expected} == expected
    strategies = {r["strategy"] for r in served.select("strategy").distinct().collect()}
    if any(v["verdict"] == checks.TOO_LITTLE_DATA for v in als.values()):
        assert set(als) == {"enough_data"} and strategies <= {baselines.FALLBACK}
        assert als["enough_data"]["detail"] and baselines.FALLBACK in als["enough_data"]["consequence"]
        assert _champion(lake, "als") is None, "an older ALS model is still champion while the default serves"
    segments = lake.table("gold", "customer_segments").read(spark)
    assert segments.select("user_id").distinct().count() == len(world.users)
    published = segment_verdict["verdict"] == "PASS"
    assert (_champion(lake, "segmentation") is not None) == published
    if name in ("no purchases", "only cancelled or returned"):
        assert segment_verdict["verdict"] == checks.TOO_LITTLE_DATA and als["enough_data"]["verdict"] == checks.TOO_LITTLE_DATA

