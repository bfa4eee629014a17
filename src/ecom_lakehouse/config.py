"""The one place that maps logical table names to storage, per environment.

* ``local``: Delta tables at ``<lakehouse>/<layer>/<table>`` on this machine's disk.
* ``emr``: the same layout under an S3 prefix (``--lakehouse s3://bucket``); with ``--schema`` and
  ``--gold-schema`` the silver and gold tables are also registered, by location, in those Glue Data
  Catalog databases (Athena reads them there).
* ``databricks``: Unity Catalog tables ``<catalog>.<schema>.<layer>_<table>`` for bronze and
  silver (personal data stops here), ``<catalog>.<gold schema>.<table>`` for gold, so analysts can
  be granted the gold schema alone; raw files, checkpoints and models live under a volume path
  (``--lakehouse /Volumes/c/s/v``).

Job code only ever asks for ``lake.table("silver", "orders")``; nothing else knows
where a table lives.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession

from ecom_lakehouse import files

ENVIRONMENTS = ("local", "databricks", "emr")
LAYERS = ("bronze", "silver", "gold")
QUARANTINE = "_quarantine"
DEFAULTS = {"raw": "data/raw", "lakehouse": "lakehouse"}


def _absolute(path: str) -> str:
    return path if "://" in path else os.path.abspath(path)


class ConfigError(ValueError):
    """A configuration the user has to fix (the message says how)."""


def delta_api_name(full_name: str) -> str:
    """The name to give DeltaTable.forName and DeltaTableBuilder.tableName.

    Open-source Delta 3.3 does not parse three-part names there (ParseException at the second dot),
    Databricks does. When the catalog is Spark's own session catalog (a twin of Unity Catalog on
    open-source Spark) the catalog part is dropped; every other name is passed as it is."""
    parts = full_name.split(".")
    return ".".join(parts[1:]) if len(parts) == 3 and parts[0] == "spark_catalog" else full_name


def _drop_uncommitted_log(spark: SparkSession, path: str) -> None:
    """A process killed during a table's first commit leaves `_delta_log` holding only temporary files;
    Delta's createIfNotExists then takes the table for existing and fails to load it, on every rerun.
    Without a commit there is no table, so the folder is removed and the creation starts over."""
    log, fs = files.hadoop_fs(spark, f"{path.rstrip('/')}/_delta_log")
    if not fs.exists(log):
        return
    names = [s.getPath().getName() for s in fs.listStatus(log)]
    if not any(n.endswith((".json", ".checkpoint.parquet")) and not n.startswith(".") for n in names):
        fs.delete(log, True)


@dataclass(frozen=True)
class Table:
    layer: str
    name: str
    path: str | None = None  # path-addressed (local, EMR)
    full_name: str | None = None  # catalog-addressed (Databricks Unity Catalog)

    def __str__(self) -> str:
        return self.full_name or self.path or self.name

    def exists(self, spark: SparkSession) -> bool:
        if self.full_name:
            return spark.catalog.tableExists(self.full_name)
        return DeltaTable.isDeltaTable(spark, self.path)

    def read(self, spark: SparkSession) -> DataFrame:
        if self.full_name:
            return spark.read.table(self.full_name)
        return spark.read.format("delta").load(self.path)

    def delta(self, spark: SparkSession) -> DeltaTable:
        if self.full_name:
            return DeltaTable.forName(spark, delta_api_name(self.full_name))
        return DeltaTable.forPath(spark, self.path)

    def version(self, spark: SparkSession) -> int | None:
        if not self.exists(spark):
            return None
        return self.delta(spark).history(1).select("version").first()[0]

    def ensure(self, spark: SparkSession, schema) -> None:
        """Create the (empty) table if missing, so concurrent writers never race to create it."""
        if self.path:
            _drop_uncommitted_log(spark, self.path)
        builder = DeltaTable.createIfNotExists(spark).addColumns(schema)
        builder = builder.tableName(delta_api_name(self.full_name)) if self.full_name else builder.location(self.path)
        builder.execute()

    def save(self, writer) -> None:
        """Finish a DataFrameWriter against this table (path or catalog name)."""
        if self.full_name:
            writer.saveAsTable(self.full_name)
        else:
            writer.save(self.path)

    def overwrite(self, df: DataFrame, user_metadata: str | None = None) -> None:
        """Atomic replace: readers see the old version until the new one commits. `user_metadata`
        goes into this commit only (see `lineage.recorded` for a session's commits)."""
        writer = df.write.format("delta").mode("overwrite").option("overwriteSchema", "true")
        self.save(writer.option("userMetadata", user_metadata) if user_metadata else writer)

    def replace_where(self, df: DataFrame, predicate: str, partition_by: tuple[str, ...] = ()) -> None:
        """Atomically replace the rows matching `predicate` with `df`; creates the table (partitioned
        by `partition_by`) if missing."""
        writer = df.write.format("delta").mode("overwrite")
        if self.exists(df.sparkSession):
            self.save(writer.option("replaceWhere", predicate))
        else:
            self.save(writer.partitionBy(*partition_by))


@dataclass(frozen=True)
class Lakehouse:
    env: str = "local"
    raw: str = DEFAULTS["raw"]
    root: str = DEFAULTS["lakehouse"]
    catalog: str | None = None
    schema: str | None = None
    gold_schema: str | None = None  # Databricks: defaults to <schema>_gold; EMR: the Glue database of gold
    experiment: str | None = None  # Databricks: the MLflow experiment the bundle declares (a workspace path)
    registered_model: str | None = None  # Databricks: the model the bundle declares for this (one) ML stage

    def __post_init__(self):
        if self.env not in ENVIRONMENTS:
            raise ConfigError(f"unknown --env {self.env!r}: use one of {', '.join(ENVIRONMENTS)}")
        if self.env == "databricks" and not (self.catalog and self.schema):
            raise ConfigError("--env databricks needs --catalog and --schema (Unity Catalog names)")
        if self.env == "databricks" and not self.gold_schema:
            object.__setattr__(self, "gold_schema", f"{self.schema}_gold")
        if self.env == "emr" and not self.root.startswith("s3"):
            raise ConfigError(f"--env emr needs --lakehouse s3://bucket[/prefix], got {self.root!r}")
        if self.env == "local":  # Delta wants absolute locations; relative means "from here"
            object.__setattr__(self, "root", _absolute(self.root))
            object.__setattr__(self, "raw", _absolute(self.raw))

    @property
    def on_local_disk(self) -> bool:
        """The one answer to "can plain file I/O reach the lakehouse?": a local path, not s3://, dbfs: or a
        Databricks volume (those are reached through Spark's file systems)."""
        return self.env != "databricks" and "://" not in self.root and not self.root.startswith("dbfs:")

    def _under_root(self, *parts: str) -> str:
        return "/".join([self.root.rstrip("/"), *parts])

    def table(self, layer: str, name: str) -> Table:
        if layer not in LAYERS:
            raise ValueError(f"unknown layer {layer!r}")
        if self.env == "databricks":
            if layer == "gold":
                return Table(layer, name, full_name=f"{self.catalog}.{self.gold_schema}.{name}")
            return Table(layer, name, full_name=f"{self.catalog}.{self.schema}.{layer}_{name.lstrip('_')}")
        return Table(layer, name, path=self._under_root(layer, name))

    def quarantine(self, layer: str) -> Table:
        return self.table(layer, QUARANTINE)

    def existing_tables(self, spark: SparkSession, layer: str) -> list[Table]:
        """Every Delta table of a layer that exists now (quarantine and file logs included)."""
        if self.env == "databricks":
            schema = self.gold_schema if layer == "gold" else self.schema
            prefix = "" if layer == "gold" else f"{layer}_"
            names = [t.name for t in spark.catalog.listTables(f"{self.catalog}.{schema}") if t.name.startswith(prefix)]
            return [Table(layer, n[len(prefix):], full_name=f"{self.catalog}.{schema}.{n}") for n in sorted(names)]
        return [t for t in (self.table(layer, n) for n in files.subfolders(spark, self._under_root(layer)))
                if t.exists(spark)]

    def catalog_database(self, layer: str) -> str | None:
        """EMR: the Glue database a layer's tables are registered in (None: not registered).
        Bronze never is; tables whose names start with `_` (quarantine, file log) neither."""
        if self.env != "emr" or not (self.schema and self.gold_schema):
            return None
        return {"silver": self.schema, "gold": self.gold_schema}.get(layer)

    def register_tables(self, spark: SparkSession, layer: str) -> list[str]:
        """Register the layer's tables by location (EMR + Glue), so SQL engines find them by name."""
        database = self.catalog_database(layer)
        if not database:
            return []
        registered = []
        for table in self.existing_tables(spark, layer):
            if table.name.startswith("_"):
                continue
            name = f"{database}.{table.name}"
            spark.sql(f"CREATE TABLE IF NOT EXISTS {name} USING DELTA LOCATION '{table.path}'")
            registered.append(name)
        return registered

    def checkpoint(self, layer: str, name: str) -> str:
        return self._under_root("checkpoints", layer, name)

    def model_name(self, name: str) -> str:
        """Registered-model name: on Databricks the one the bundle declares and passes (`--registered-model`:
        the CLI prefixes it in dev, so it cannot be rebuilt here), else Unity Catalog's three-part name."""
        if self.registered_model:
            return self.registered_model
        return f"{self.catalog}.{self.schema}.{name}" if self.env == "databricks" else name

    def model_path(self, name: str) -> str:
        return self._under_root("models", name)

    def reports_path(self) -> str:
        return self._under_root("reports")
