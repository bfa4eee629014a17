"""One Spark session for the whole suite; small generated data shared by integration tests."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED = Path(os.environ.get("ECOM_SHARED", Path(__file__).resolve().parents[2] / "shared"))
THELOOK = SHARED / "thelook"


@pytest.fixture(scope="session")
def spark(tmp_path_factory):
    os.environ.setdefault("ECOM_WAREHOUSE_DIR", str(tmp_path_factory.mktemp("warehouse")))
    os.environ.setdefault("ECOM_SHUFFLE_PARTITIONS", "2")  # 2 cores, tiny data
    # One JVM serves every test: 1g (Spark's default) ran out of execution memory late in the suite, and 2g
    # spent its time collecting garbage once the Spark 4 comparison and the ALS publish path joined it.
    os.environ.setdefault("ECOM_DRIVER_MEMORY", "3g")
    from ecom_lakehouse.session import get_spark

    session = get_spark("local", app_name="ecom_lakehouse_tests")
    yield session
    session.stop()


@pytest.fixture(autouse=True, scope="module")
def _release_cached_data():
    """Drop what a module's tests cached (DataFrames, and RDDs such as ALS's factors) so that
    storage memory does not pile up in the one JVM."""
    yield
    from pyspark.sql import SparkSession

    session = SparkSession.getActiveSession()
    if session is not None:
        session.catalog.clearCache()
        for rdd in session.sparkContext._jsc.getPersistentRDDs().values():
            rdd.unpersist()


def shared_path(*parts: str) -> Path:
    path = THELOOK.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"reference data {path} is absent (it lives in ../shared beside the repo)")
    return path


@pytest.fixture(scope="session")
def small_raw(tmp_path_factory):
    """scale-0.01 faithful data: 1,000 users, ~24k events."""
    from ecom_lakehouse.generator import GeneratorOptions, generate

    out = tmp_path_factory.mktemp("raw")
    counts = generate(out, GeneratorOptions(scale=0.01, seed=7))
    return out, counts


@pytest.fixture(scope="session")
def pipeline(spark, small_raw, tmp_path_factory):
    """The whole pipeline run once through the CLI on the small data."""
    from ecom_lakehouse.cli import main
    from ecom_lakehouse.config import Lakehouse

    raw, counts = small_raw
    root = tmp_path_factory.mktemp("lakehouse")
    code = main(["run", "--raw", str(raw), "--lakehouse", str(root)])
    assert code == 0
    return Lakehouse(raw=str(raw), root=str(root)), counts


@pytest.fixture
def private_lake(pipeline, tmp_path):
    """A private copy of the pipeline's lakehouse (or of some of its folders), for a test that changes
    tables: the shared one stays as the pipeline left it, so no test depends on which ran before it."""
    import shutil

    from ecom_lakehouse.config import Lakehouse

    def copy(*parts: str) -> Lakehouse:
        lake, _ = pipeline
        private = Lakehouse(raw=lake.raw, root=str(tmp_path / "private-lake"))
        for part in parts or ("",):
            shutil.copytree(Path(lake.root, part), Path(private.root, part))
        return private
    return copy


@pytest.fixture
def mlflow_environment():
    """mlflow.set_tracking_uri writes MLFLOW_TRACKING_URI into the environment: put it back after a test."""
    saved = {key: os.environ.get(key) for key in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def built_wheel(tmp_path_factory) -> Path:
    """The wheel as `databricks bundle deploy` builds it, once per session, copied out of dist/."""
    import shutil

    from tests.bundle_resolution import build_wheel

    wheel = build_wheel()
    return Path(shutil.copy(wheel, tmp_path_factory.mktemp("wheel") / wheel.name))
