"""MLflow for the ML stages: the same calls on every platform, one run per `segment` and `recommend`.

Where runs and models go, decided here only:
* MLFLOW_TRACKING_URI / MLFLOW_REGISTRY_URI, when set, win (a server of your own, or the Databricks
  twin test's file store).
* Databricks: the workspace's tracking server, the experiment the bundle declares (`--experiment`: the
  workspace has no parent folder for one we would make up), models registered in Unity Catalog under
  the three-part names the bundle declares (`--registered-model`: dev mode prefixes them).
* Anywhere else: an embedded file store, no server: `<lakehouse>/mlruns` when the lakehouse is on this
  machine's disk. On S3 (EMR) a file store cannot be written in place, so the run works on a copy of
  `<lakehouse>/mlruns` on the driver's disk, fetched when the run starts (the experiment is found
  again, model versions go on counting) and published back when it ends; artifacts (the models) go
  straight to `<lakehouse>/models/mlflow` (boto3 on S3), so every artifact URI still resolves after
  the cluster is gone. Two runs publishing at the same moment can lose one run's record: EMR runs the
  ML steps one after the other.

A model gets the alias `champion` only when it passed its checks; a failed one is still logged and
registered, so it can be inspected, but nothing points to it. A run that publishes no model (its
default serves instead) takes the alias away from the older one.
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession

from ecom_lakehouse import files
from ecom_lakehouse.config import Lakehouse
from ecom_lakehouse.session import SPARK_LINE

CHAMPION = "champion"
EXPERIMENT = "ecom_lakehouse"  # off Databricks
REGISTERED_MODELS = {"segmentation": "customer_segmentation", "als": "product_recommender_als"}


def _configure(spark: SparkSession, lake: Lakehouse) -> Path | None:
    """Sets tracking and registry URIs and the experiment; returns the driver's copy of a store to
    publish when the run ends, or None."""
    import mlflow

    root, store = lake.root.rstrip("/"), None
    if os.environ.get("MLFLOW_TRACKING_URI"):
        pass
    elif lake.env == "databricks":
        mlflow.set_tracking_uri("databricks")
        mlflow.set_registry_uri("databricks-uc")
    elif lake.on_local_disk:
        mlflow.set_tracking_uri(Path(os.path.abspath(f"{root}/mlruns")).as_uri())
    else:
        store = Path(tempfile.mkdtemp(prefix="mlruns-"))
        files.download_folder(spark, f"{root}/mlruns", store)
        mlflow.set_tracking_uri(store.as_uri())
    if os.environ.get("MLFLOW_REGISTRY_URI"):
        mlflow.set_registry_uri(os.environ["MLFLOW_REGISTRY_URI"])
    name = lake.experiment if lake.env == "databricks" else EXPERIMENT
    if store and mlflow.get_experiment_by_name(name) is None:
        mlflow.create_experiment(name, artifact_location=f"{root}/models/mlflow")
    mlflow.set_experiment(name)
    return store


def metric_name(*parts: str) -> str:
    """MLflow metric names allow letters, digits, _ - . / and spaces: 'hit_rate@10' -> 'hit_rate_at_10'."""
    return re.sub(r"[^\w\-./ ]", "_", ".".join(parts).replace("@", "_at_"))


# Spark SQL type -> MLflow column type, for the columns our models read and write.
MLFLOW_TYPES = {"bigint": "long", "int": "integer", "double": "double", "float": "float", "string": "string",
                "boolean": "boolean", "timestamp": "datetime", "date": "datetime"}


def signature_of(inputs: DataFrame, outputs: DataFrame):
    """The model signature, named and typed from the DataFrames' schemas (nothing computed). Unity
    Catalog registers no model without one; MLflow's own inference needs scipy, which mlflow-skinny
    lacks, and then logs an untyped `Any` in silence."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    def schema(df: DataFrame) -> Schema:
        return Schema([ColSpec(MLFLOW_TYPES[f.dataType.simpleString()], f.name, required=not f.nullable)
                       for f in df.schema.fields])

    return ModelSignature(inputs=schema(inputs), outputs=schema(outputs))


class Run:
    def __init__(self, lake: Lakehouse, run):
        self.lake, self.info = lake, run.info

    def log(self, params: dict | None = None, metrics: dict | None = None, tags: dict | None = None) -> None:
        import mlflow

        if params:
            mlflow.log_params({k: str(v)[:6000] for k, v in params.items()})
        if metrics:
            mlflow.log_metrics({metric_name(k): float(v) for k, v in metrics.items() if v is not None})
        if tags:
            mlflow.set_tags({k: str(v)[:5000] for k, v in tags.items()})

    def log_table(self, name: str, table: dict[str, list[dict]]) -> None:
        """A small table as a JSON artifact of the run (one object per row), where the run's page shows it."""
        import mlflow

        mlflow.log_dict(table, name)

    def log_model(self, model, key: str, sample: DataFrame, output_columns: list[str], champion: bool) -> str:
        """Logs and registers a Spark model with its signature; returns the version."""
        import mlflow

        name = self.lake.model_name(REGISTERED_MODELS[key])
        signature = signature_of(sample, model.transform(sample.limit(0)).select(*output_columns))
        # On Databricks the model passes through a folder in the volume, not the DBFS root, which standard and
        # serverless compute, and workspaces with the DBFS root disabled, do not offer.
        staging = f"{self.lake.root.rstrip('/')}/tmp/mlflow" if self.lake.env == "databricks" else None
        info = mlflow.spark.log_model(model, artifact_path=key, signature=signature, dfs_tmpdir=staging,
                                      # the Spark line it was trained on (3.5: 16.4 LTS, EMR 7; 4.0: 17.3 LTS), stated:
                                      # MLflow's own inference of requirements is slow
                                      pip_requirements=[f"pyspark~={SPARK_LINE}.0"])
        # Registered apart: where the artifact store is not local (S3), the Spark flavour saves straight
        # to it and its ModelInfo carries no registered version (found by the EMR twin).
        version = str(mlflow.register_model(info.model_uri, name).version)
        client = mlflow.MlflowClient()
        if champion:
            client.set_registered_model_alias(name, CHAMPION, version)
        mlflow.set_tags({f"{key}.registered_model": name, f"{key}.version": version, f"{key}.champion": champion})
        return version

    def retire(self, key: str) -> None:
        """No model of `key` is published by this run: the alias `champion` may not keep pointing
        to an older one, which no longer serves."""
        import mlflow
        from mlflow.exceptions import MlflowException

        name, client = self.lake.model_name(REGISTERED_MODELS[key]), mlflow.MlflowClient()
        try:
            client.get_model_version_by_alias(name, CHAMPION)
        except MlflowException:  # no such model, or no champion: nothing to retire
            return
        client.delete_registered_model_alias(name, CHAMPION)
        mlflow.set_tags({f"{key}.champion": False, f"{key}.champion_retired": name})


@contextmanager
def ml_run(spark: SparkSession, lake: Lakehouse, stage: str):
    """One MLflow run for one ML stage."""
    import mlflow

    # mlflow.set_tracking_uri also writes MLFLOW_TRACKING_URI into the environment, where _configure
    # would take it for the user's choice on the next run in this process (another lakehouse's store).
    user_uris = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    store = None
    try:
        store = _configure(spark, lake)
        with mlflow.start_run(run_name=stage) as active:
            mlflow.set_tags({"stage": stage, "env": lake.env, "lakehouse": lake.root})
            yield Run(lake, active)
    finally:
        for key, value in user_uris.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if store:  # a failed run's record matters most: it is published too
            try:
                files.upload_folder(spark, store, f"{lake.root.rstrip('/')}/mlruns")
            finally:
                shutil.rmtree(store, ignore_errors=True)
