"""The ML stages on shops with very little data: a new shop, a first day of deliveries, a narrow
extract. Each small world is written as silver tables (parsed by silver's own value parser) and
gold customer features (gold's own function) into one lakehouse, one world after another; then
`segment` and `recommend` run as the CLI runs them. Whatever the world, both finish, write their
verdicts, and serve every user what the catalogue leaves them, and a model is champion only while
it is the one published."""
from __future__ import annotations

import datetime as dt
import html
import os
import random
from dataclasses import dataclass, field

import pytest
from pyspark.sql import functions as F

from ecom_lakehouse import gold
from ecom_lakehouse.config import Lakehouse
from ecom_lakehouse.ml import baselines, checks, recommend, segmentation, tracking
from ecom_lakehouse.report import write_report
from ecom_lakehouse.schemas import RAW_COLUMNS, parse_value
from ecom_lakehouse.summary import _print_ml

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

    def served_bounds(self) -> dict[int, tuple[int, int]]:
        """How many products each user must be served: at least what the fallback gives, k or fewer
        when their gender's catalogue (Men's department for M, the rest for F) less what they validly
        bought has fewer; at most k of all products they have not bought (a strategy learnt from
        purchases may reach across genders)."""
        everything = {p for p, *_ in self.products}
        catalogue = {g: {p for p, dept, *_ in self.products if (dept == "Men") == (g == "M")} for g in "MF"}
        bought = self.bought()
        return {u: (min(baselines.K, len(catalogue[g] - bought.get(u, set()))),
                    min(baselines.K, len(everything - bought.get(u, set())))) for u, g, _ in self.users}

    def bought(self) -> dict[int, set[int]]:
        """Products each user bought in an order neither cancelled nor returned."""
        bought = {}
        for user, product, status, _ in self.purchases:
            if status not in ("Cancelled", "Returned"):
                bought.setdefault(user, set()).add(product)
        return bought


def _users(n: int, rng: random.Random) -> list[tuple[int, str, int]]:
    return [(u, rng.choice("MF"), rng.randint(12, 70)) for u in range(1, n + 1)]


def _products(n: int, rng: random.Random) -> list[tuple[int, str, str, float]]:
    return [(p, rng.choice(("Men", "Women")), f"brand{rng.randint(1, 3)}", round(rng.uniform(5, 200), 2))
            for p in range(1, n + 1)]


def random_world(seed: int) -> World:
    """1 to 30 users, 1 to 8 products, up to three purchases per user, at times spread over a year
    or all at one moment."""
    rng = random.Random(seed)
    users, products = _users(rng.randint(1, 30), rng), _products(rng.randint(1, 8), rng)
    one_moment = rng.random() < 0.2
    purchases = []
    for _ in range(rng.randint(1, 3 * len(users))):  # no purchase at all: an edge world
        user, gender, _age = rng.choice(users)
        # as in thelook, a user buys from their gender's catalogue (FACTS.md), the leakage check's null
        catalogue = [p for p, dept, *_ in products if (dept == "Men") == (gender == "M")]
        if catalogue:
            purchases.append((user, rng.choice(catalogue), rng.choice(STATUSES), 0 if one_moment else rng.randint(0, 365 * DAY)))
    return World(users, products, purchases)


_rng = random.Random(0)
EDGE_WORLDS = {
    # the shop: two buyers with the same history, several non-buyers (ALS fitted, scored on one user)
    "two alike buyers": World([(1, "F", 30), (2, "F", 31), *_users(6, _rng)[2:]],
                              [(1, "Women", "brand1", 10.0), (2, "Women", "brand2", 12.0), *_products(4, _rng)[2:]],
                              [(1, 1, "Complete", 0), (1, 2, "Complete", DAY), (2, 1, "Complete", 0), (2, 2, "Complete", DAY)]),
    "no valid purchase": World(_users(4, _rng), _products(3, _rng), [(1, 1, "Cancelled", 0), (2, 2, "Returned", DAY)]),
    # one product, and every user has bought it, half on each of two days: nothing left to recommend to
    # anyone, no test-period buyer with a history, two buyer profiles
    "one product, all bought": World([(u, "F", 20 + u) for u in range(1, 7)], [(1, "Women", "brand1", 20.0)],
                                     [(u, 1, "Complete", (u > 3) * DAY) for u in range(1, 7)]),
}
# One random shop besides the edge ones in `make test`: each world costs a run of both stages (20 to
# 35 s here). Any seed must pass: THIN_WORLD_SEEDS="0 1 2 ..." tries more.
SEEDS = [int(seed) for seed in os.environ.get("THIN_WORLD_SEEDS", "2").split()]
# The random shop first: it publishes segments, so the edge worlds after it show the champion taken away.
WORLDS = {**{f"random {seed}": random_world(seed) for seed in SEEDS}, **EDGE_WORLDS}


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
    inventory = _typed(spark, "inventory_items", [])
    for name, frame in (("users", users), ("products", products), ("order_items", items), ("inventory_items", inventory)):
        lake.table("silver", name).overwrite(frame)
    lines = gold.sales_lines(items, products, inventory)
    as_of = dt.datetime.fromtimestamp(START + 366 * DAY, dt.timezone.utc).replace(tzinfo=None)
    lake.table("gold", "customer_features").overwrite(gold.customer_features(users, lines, as_of))


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    """A lakehouse whose MLflow registry holds an ALS model as champion, as a shop that once had the
    data for one would: a world that cannot serve ALS must take the alias away."""
    import mlflow

    lake = Lakehouse(root=str(tmp_path_factory.mktemp("thin")))
    store = f"file:{lake.root}/mlruns"
    client, name = mlflow.MlflowClient(store, store), tracking.REGISTERED_MODELS["als"]
    client.create_registered_model(name)
    version = client.create_model_version(name, source=f"{lake.root}/models/als")
    client.set_registered_model_alias(name, tracking.CHAMPION, version.version)
    assert _champion(lake, "als") is not None
    return lake


def _champion(lake: Lakehouse, key: str):
    import mlflow
    from mlflow.exceptions import MlflowException

    store = f"file:{lake.root}/mlruns"
    try:
        return mlflow.MlflowClient(store, store).get_model_version_by_alias(tracking.REGISTERED_MODELS[key], tracking.CHAMPION)
    except MlflowException:
        return None


@pytest.mark.parametrize("name", WORLDS)
def test_segment_and_recommend_finish_on_a_small_world(spark, lake, name, mlflow_environment, tmp_path):
    world = WORLDS[name]
    write_world(spark, lake, world)
    segmentation.run(spark, lake, echo=lambda *_: None)
    recommend.run(spark, lake, echo=lambda *_: None)

    verdicts = {(r["model"], r["check"]): r for r in lake.table("gold", "model_verdicts").read(spark).collect()}
    segment_checks = {check: v for (model, check), v in verdicts.items() if model == "segmentation"}
    ahead = segment_checks.pop("predicts_next_period")
    assert ahead["verdict"] == checks.TOO_LITTLE_DATA, ahead["detail"]  # a few dozen buyers at most: nothing to compare
    [segment_verdict] = segment_checks.values()
    als = {check: v for (model, check), v in verdicts.items() if model == "als"}
    assert als, "recommend wrote no verdict"
    served = lake.table("gold", "served_recommendations").read(spark)
    per_user = {r["user_id"]: (r["n"], set(r["products"])) for r in served.groupBy("user_id").agg(
        F.count("*").alias("n"), F.collect_set("product_id").alias("products")).collect()}
    bought = world.bought()
    for user, (low, high) in world.served_bounds().items():
        n, products = per_user.get(user, (0, set()))
        assert low <= n <= high and len(products) == n, (user, n, low, high)
        assert not products & bought.get(user, set()), f"user {user} is served a product they bought"
    strategies = {r["strategy"] for r in served.select("strategy").distinct().collect()}
    if any(v["verdict"] == checks.TOO_LITTLE_DATA for v in als.values()):
        assert set(als) == {"enough_data"} and strategies <= {baselines.FALLBACK}
        assert als["enough_data"]["detail"] and baselines.FALLBACK in als["enough_data"]["consequence"]
    if "als" not in strategies:
        assert _champion(lake, "als") is None, "an older ALS model is still champion while it serves nobody"
    segments = lake.table("gold", "customer_segments").read(spark)
    assert segments.select("user_id").distinct().count() == len(world.users)
    published = segment_verdict["verdict"] == "PASS"
    assert (_champion(lake, "segmentation") is not None) == published
    if name == "no valid purchase":
        assert segment_verdict["verdict"] == checks.TOO_LITTLE_DATA and als["enough_data"]["verdict"] == checks.TOO_LITTLE_DATA
        # what people read says why no model was fitted
        printed = []
        _print_ml(spark, lake, printed.append)
        why = als["enough_data"]["detail"]
        assert any(checks.TOO_LITTLE_DATA in line and why in line for line in printed), printed
        page = write_report(spark, lake, str(tmp_path), echo=lambda *_: None).read_text()
        assert html.escape(why) in page and html.escape(segment_verdict["detail"]) in page



def test_a_segment_run_whose_model_registration_fails_is_redone_by_the_next_run(spark, mlflow_environment, tmp_path,
                                                                               monkeypatch):
    """The model is published before the tables that record the run's lineage: a registry that fails
    leaves the stage undone, so the next run fits and registers again instead of skipping."""
    lake = Lakehouse(root=str(tmp_path / "lake"))
    # three kinds of buyer, far apart: one old order, three mid-year orders, six recent ones
    kinds = {0: (1, 0), 1: (3, 150), 2: (6, 300)}
    purchases = [(u, 1 + n % 2, "Complete", (start + u + 5 * n) * DAY)
                 for u in range(1, 31) for orders, start in [kinds[u % 3]] for n in range(orders)]
    write_world(spark, lake, World([(u, "F", 30) for u in range(1, 31)], [(1, "Women", "brand1", 10.0),
                                                                          (2, "Women", "brand2", 12.0)], purchases))

    def unavailable(*_args, **_kwargs):
        raise RuntimeError("model registry unavailable")

    with monkeypatch.context() as patched:
        patched.setattr(tracking.Run, "log_model", unavailable)
        with pytest.raises(RuntimeError, match="registry unavailable"):
            segmentation.run(spark, lake, echo=lambda *_: None)
    printed = []
    segmentation.run(spark, lake, echo=printed.append)
    assert not any("unchanged" in line for line in printed), printed
    verdict = lake.table("gold", "model_verdicts").read(spark).where("check = 'resample_stability'").first()
    assert verdict["verdict"] == "PASS" and _champion(lake, "segmentation") is not None
