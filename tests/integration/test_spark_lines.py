"""The same code on the Spark 4 line: Databricks Runtime 17.3 LTS runs Spark 4.0 with Delta 4.0 and
MLflow 3. The whole pipeline runs on the suite's small data in .venv-spark4 (pyspark 4.0.1, delta-spark
4.0.1, mlflow-skinny 3.0.1: pyproject's `spark4` extra), as a process of its own with Spark 4's defaults
(ANSI mode on), and every table it leaves must equal what the Spark 3.5 line left from the same files."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from pyspark.testing import assertDataFrameEqual

from ecom_lakehouse.session import DELTA_FOR_SPARK

SPARK4 = Path(__file__).resolve().parents[2] / ".venv-spark4" / "bin"
LAYERS = ("bronze", "silver", "gold")
# What differs between any two runs, on one line or two: when and in which stream a row arrived, and
# which MLflow run or moment decided it.
RUN_VARYING = {"_ingested_at", "_stream_id", "stream_id", "ingested_at", "run_id", "decided_at"}


@pytest.fixture(scope="module")
def spark4_lake(small_raw, tmp_path_factory) -> Path:
    if not (SPARK4 / "ecom-lakehouse").exists():
        pytest.skip(f"{SPARK4.parent} is missing: `make install` builds the Spark 4 line's environment")
    raw, _ = small_raw
    root = tmp_path_factory.mktemp("spark4-lake")
    # The same session settings as the 3.5 line's in-process session (conftest), its own warehouse.
    env = {**os.environ, "ECOM_WAREHOUSE_DIR": str(tmp_path_factory.mktemp("spark4-warehouse"))}
    done = subprocess.run([str(SPARK4 / "ecom-lakehouse"), "run", "--raw", str(raw), "--lakehouse", str(root)],
                          env=env, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return root


def _engine(table: Path) -> str:
    """The engine that wrote a Delta table's first commit, as Delta records it (commitInfo.engineInfo)."""
    first = (table / "_delta_log" / f"{0:020d}.json").read_text().splitlines()
    return next(json.loads(line)["commitInfo"]["engineInfo"] for line in first if "commitInfo" in line)


def _tables(root: Path, layer: str) -> list[str]:
    return sorted(p.name for p in (root / layer).iterdir() if (p / "_delta_log").is_dir())


def test_the_spark4_run_was_written_by_spark_4_and_delta_4(spark4_lake, pipeline):
    lake, _ = pipeline
    delta4, _ = DELTA_FOR_SPARK["4.0"]
    assert _engine(spark4_lake / "silver" / "orders") == f"Apache-Spark/4.0.1 Delta-Lake/{delta4}"
    assert _engine(Path(lake.root) / "silver" / "orders").startswith("Apache-Spark/3.5.")


@pytest.mark.parametrize("layer", LAYERS)
def test_every_table_of_the_spark4_line_equals_the_spark35_lines(spark, pipeline, spark4_lake, layer):
    """Row for row, with doubles equal to 1e-9 relative (sums in another order differ in the last bits)."""
    lake, _ = pipeline
    spark35_root = Path(lake.root)
    assert _tables(spark4_lake, layer) == _tables(spark35_root, layer)
    for table in _tables(spark35_root, layer):
        line35 = spark.read.format("delta").load(str(spark35_root / layer / table))
        line4 = spark.read.format("delta").load(str(spark4_lake / layer / table))
        assert line4.schema == line35.schema, table
        compared = [c for c in line35.columns if c not in RUN_VARYING]
        assertDataFrameEqual(line4.select(compared), line35.select(compared), rtol=1e-9)
    spark.catalog.clearCache()  # the session serves the rest of the suite
