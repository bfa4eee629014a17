"""Spark MLlib models on the gold tables."""
from __future__ import annotations

import json
import time

from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from ecom_lakehouse.config import Lakehouse
from ecom_lakehouse.errors import is_write_conflict
from ecom_lakehouse.schemas import VERDICT_PARTITIONING, VERDICT_SCHEMA

WRITE_ATTEMPTS = 3


class ModelCheckFailed(Exception):
    """A check whose failure stops publication failed; the message says which and why."""


def save_model(spark: SparkSession, model, path: str, source: dict) -> None:
    """MLlib's writer, plus a `training_source` record (tables, Delta versions, parameters)."""
    model.write().overwrite().save(path)
    spark.createDataFrame([(json.dumps(source),)], "training_source string").coalesce(1).write.mode("overwrite").json(
        f"{path}/training_source")


def write_verdicts(spark: SparkSession, lake: Lakehouse, checks, model: str, data_mode: str, built_from: str,
                   run_id: str) -> None:
    """Replace `model`'s verdicts for `data_mode` in gold model_verdicts (one row per check)."""
    rows = [(model, data_mode, c.check, c.verdict, float(c.statistic), float(c.interval_low), float(c.interval_high),
             float(c.p_value), c.detail, c.consequence, built_from, run_id) for c in checks]
    decided = StructType(VERDICT_SCHEMA.fields[:-1])
    verdicts = spark.createDataFrame(rows, decided).withColumn("decided_at", F.current_timestamp())
    # segment and recommend run in parallel on Databricks: gold creates the table before them, one
    # partition per model keeps their writes apart, and a write that still meets the other one's commit
    # (or, run outside the job, its creation of the table) is retried, as Delta's optimistic concurrency expects.
    for attempt in range(WRITE_ATTEMPTS):
        try:
            lake.table("gold", "model_verdicts").replace_where(
                verdicts, f"model = '{model}' AND data_mode = '{data_mode}'", partition_by=VERDICT_PARTITIONING)
            return
        except Exception as err:  # noqa: BLE001 - a lost race is retried; anything else is re-raised
            if attempt == WRITE_ATTEMPTS - 1 or not is_write_conflict(err):
                raise
            time.sleep(1 + attempt)
