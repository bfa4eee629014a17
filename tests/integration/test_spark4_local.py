"""The Spark 4 line's own environment for running here (.venv-spark4: pyspark 4.0.1, delta-spark 4.0.1,
mlflow-skinny 3.0.1, pyproject's `spark4` extra) runs bronze, the stage that streams files into tables, and then
`maintain`, through Spark Connect, as the README's ECOM_SPARK_REMOTE says: each a process of its own that starts a
local Spark Connect server and talks to it only through Connect (ECOM_SPARK_REMOTE=local[2]; pyspark's own way
to start one), with Spark 4's defaults (ANSI mode on).

The whole pipeline on the Spark 4 line, through Connect and on a job cluster, with every table compared with
the 3.5 line's and the models' pins checked, is the Databricks twin's (tests/twins/test_databricks_twin.py): its
serverless job runs every task as a Spark Connect client of a Spark 4.0 server. Running all of it here again
took three minutes of the suite's budget and found nothing the twin does not; what only this environment has
is the local session's own way into Connect (session.get_spark with ECOM_SPARK_REMOTE): bronze's streams, whose
batches run in the server's Python workers, and maintain's Delta SQL go through it."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from ecom_lakehouse.session import DELTA_FOR_SPARK

SPARK4 = Path(__file__).resolve().parents[2] / ".venv-spark4" / "bin"


@pytest.fixture(scope="module")
def spark4_lake(tmp_path_factory) -> Path:
    if not (SPARK4 / "ecom-lakehouse").exists():
        pytest.skip(f"{SPARK4.parent} is missing: `make install` builds the Spark 4 line's environment")
    from ecom_lakehouse.generator import GeneratorOptions, generate

    raw = tmp_path_factory.mktemp("spark4-raw")
    generate(raw, GeneratorOptions(scale=0.004, seed=11))  # the twins' data
    root = tmp_path_factory.mktemp("spark4-lake")
    # The 3.5 line's session settings (conftest), its own warehouse.
    # PYSPARK_PYTHON names this suite's 3.5 interpreter (the in-process session sets it); the Connect server
    # runs bronze's batches in Python workers, which must be the Spark 4 line's.
    env = {**{k: v for k, v in os.environ.items() if k != "PYSPARK_PYTHON"},
           "ECOM_WAREHOUSE_DIR": str(tmp_path_factory.mktemp("spark4-warehouse")), "ECOM_SPARK_REMOTE": "local[2]"}
    output = ""
    for command in (["bronze", "--raw", str(raw)], ["maintain"]):
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


def test_bronze_went_through_connect_and_was_written_by_spark_4_and_delta_4(spark4_lake):
    root, output = spark4_lake
    delta4, _ = DELTA_FOR_SPARK["4.0"]
    assert {_engine(root / "bronze" / table) for table in _tables(root, "bronze")} == {
        f"Apache-Spark/4.0.1 Delta-Lake/{delta4}"}
    # Bronze's batches ran where Connect runs foreachBatch: in a Python worker of the server's, which
    # announces the Connect URL it serves the batch's session from (pyspark's foreach_batch_worker.py).
    assert "Streaming ForeachBatch worker is starting with url sc://" in output
    # maintain's OPTIMIZE went through Delta's SQL: every table it compacted has that commit
    compacted = [t for t in _tables(root, "bronze") if '"operation":"OPTIMIZE"' in
                 "".join(f.read_text() for f in (root / "bronze" / t / "_delta_log").glob("*.json"))]
    assert compacted and "maintain" in output, output[-2000:]
