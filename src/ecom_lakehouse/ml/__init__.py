"""Spark MLlib models on the gold tables."""
from __future__ import annotations

import json

from pyspark.sql import SparkSession


def save_model(spark: SparkSession, model, path: str, source: dict) -> None:
    """MLlib's writer, plus a `training_source` record (tables, Delta versions, parameters)."""
    model.write().overwrite().save(path)
    spark.createDataFrame([(json.dumps(source),)], "training_source string").coalesce(1).write.mode("overwrite").json(
        f"{path}/training_source")
