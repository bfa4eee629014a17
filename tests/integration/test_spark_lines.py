"""The same code on the Spark 4 line, through Spark Connect: Databricks Runtime 17.3 LTS runs Spark 4.0 with
Delta 4.0 and MLflow 3, and its standard access mode and serverless compute run a job's Python as a Spark
Connect client. The whole pipeline runs on the suite's small data in .venv-spark4 (pyspark 4.0.1, delta-spark
4.0.1, mlflow-skinny 3.0.1: pyproject's `spark4` extra), as a process of its own that starts a local Spark
Connect server and talks to it only through Connect (ECOM_SPARK_REMOTE=local[2]; pyspark's own way to start
one), with Spark 4's defaults (ANSI mode on); every table it leaves must equal what the Spark 3.5 line left
from the same files on classic compute. Spark 4 on classic compute is the Databricks twin's 17.3 LTS job."""
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
    # PYSPARK_PYTHON names this suite's 3.5 interpreter (the in-process session sets it); the Connect server
    # runs bronze's batches in Python workers, which must be the Spark 4 line's.
    env = {**{k: v for k, v in os.environ.items() if k != "PYSPARK_PYTHON"},
           "ECOM_WAREHOUSE_DIR": str(tmp_path_factory.mktemp("spark4-warehouse")), "ECOM_SPARK_REMOTE": "local[2]"}
    output = ""
    for command in (["run", "--raw", str(raw)], ["maintain"]):  # every stage: the pipeline, then its upkeep
        done = subprocess.run([str(SPARK4 / "ecom-lakehouse"), *command, "--lakehouse", str(root)],
                              env=env, capture_output=True, text=True, timeout=1800)
        assert done.returncode == 0, f"{command[0]}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        output += done.stdout + done.stderr
    return root, output


def _engine(table: Path) -> str:
    """The engine that wrote a Delta table's first commit, as Delta records it (commitInfo.engineInfo)."""
    first = (table / "_delta_log" / f"{0:020d}.json").read_text().splitlines()
    return next(json.loads(line)["commitInfo"]["engineInfo"] for line in first if "commitInfo" in line)


def _tables(root: Path, layer: str) -> list[str]:
    return sorted(p.name for p in (root / layer).iterdir() if (p / "_delta_log").is_dir())


def test_the_spark4_run_went_through_connect_and_was_written_by_spark_4_and_delta_4(spark4_lake, pipeline):
    lake, _ = pipeline
    root, output = spark4_lake
    delta4, _ = DELTA_FOR_SPARK["4.0"]
    assert _engine(root / "silver" / "orders") == f"Apache-Spark/4.0.1 Delta-Lake/{delta4}"
    assert _engine(Path(lake.root) / "silver" / "orders").startswith("Apache-Spark/3.5.")
    # Bronze's batches ran where Connect runs foreachBatch: in a Python worker of the server's, which
    # announces the Connect URL it serves the batch's session from (pyspark's foreach_batch_worker.py).
    assert "Streaming ForeachBatch worker is starting with url sc://" in output
    # The models logged on this line name it as their requirement (MLflow warns at load on a mismatch).
    pins = {line for p in (root / "mlruns").rglob("requirements.txt") for line in p.read_text().split() if "pyspark" in line}
    assert pins == {"pyspark~=4.0.0"}, pins
    # maintain's OPTIMIZE went through Delta's SQL: every table it compacted has that commit
    compacted = [t for layer in LAYERS for t in _tables(root, layer) if '"operation":"OPTIMIZE"' in
                 "".join(f.read_text() for f in (root / layer / t / "_delta_log").glob("*.json"))]
    assert compacted and "maintain" in output, output[-2000:]


@pytest.mark.parametrize("layer", LAYERS)
def test_every_table_of_the_spark4_line_equals_the_spark35_lines(spark, pipeline, spark4_lake, layer):
    """Row for row, with doubles equal to 1e-9 relative (sums in another order differ in the last bits)."""
    lake, _ = pipeline
    spark4_lake, _ = spark4_lake
    spark35_root = Path(lake.root)
    assert _tables(spark4_lake, layer) == _tables(spark35_root, layer)
    for table in _tables(spark35_root, layer):
        line35 = spark.read.format("delta").load(str(spark35_root / layer / table))
        line4 = spark.read.format("delta").load(str(spark4_lake / layer / table))
        assert line4.schema == line35.schema, table
        compared = [c for c in line35.columns if c not in RUN_VARYING]
        assertDataFrameEqual(line4.select(compared), line35.select(compared), rtol=1e-9)
    spark.catalog.clearCache()  # the session serves the rest of the suite
