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
import uuid
from dataclasses import dataclass

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


def _commit_files(spark: SparkSession, path: str) -> tuple[bool, bool]:
    """(whether `path` has a `_delta_log` folder, whether that log holds a commit)."""
    log = files.list_status(spark, f"{path.rstrip('/')}/_delta_log")
    committed = any(s.name.endswith((".json", ".checkpoint.parquet")) and not s.name.startswith(".") for s in log)
    return bool(log), committed


def _drop_uncommitted_log(spark: SparkSession, path: str) -> None:
    """A process killed during a table's first commit leaves `_delta_log` holding only temporary files;
    Delta then takes the table for existing and fails to load it, on every rerun. Without a commit there
    is no table, so the folder is removed and the creation starts over."""
    has_log, committed = _commit_files(spark, path)
    if has_log and not committed:
        files.delete(spark, f"{path.rstrip('/')}/_delta_log")


def column_definitions(schema) -> str:
    """A StructType as the column list of CREATE TABLE."""
    return ", ".join(f"`{f.name}` {f.dataType.simpleString()}{'' if f.nullable else ' NOT NULL'}" for f in schema.fields)


@dataclass(frozen=True)
class Table:
    layer: str
    name: str
    path: str | None = None  # path-addressed (local, EMR)
    full_name: str | None = None  # catalog-addressed (Databricks Unity Catalog)

    def __str__(self) -> str:
        return self.full_name or self.path or self.name

    @property
    def sql_name(self) -> str:
        """How Delta's SQL names the table: its catalog name, or delta.`<path>`. Table operations go
        through Delta's SQL (MERGE INTO, DESCRIBE HISTORY, OPTIMIZE, VACUUM), which runs alike on classic
        compute and over Spark Connect; Delta's Python DeltaTable needs Delta Connect's server plugin there."""
        if self.full_name:
            return ".".join(f"`{part}`" for part in self.full_name.split("."))
        return "delta.`{}`".format(self.path.replace("`", "``"))

    def exists(self, spark: SparkSession) -> bool:
        if self.full_name:
            return spark.catalog.tableExists(self.full_name)
        return _commit_files(spark, self.path)[1]

    def read(self, spark: SparkSession) -> DataFrame:
        if self.full_name:
            return spark.read.table(self.full_name)
        return spark.read.format("delta").load(self.path)

    def history(self, spark: SparkSession, limit: int | None = None) -> DataFrame:
        """Delta's commit history, newest first (`limit`: only the newest commits)."""
        return spark.sql(f"DESCRIBE HISTORY {self.sql_name}" + (f" LIMIT {int(limit)}" if limit else ""))

    def detail(self, spark: SparkSession):
        """DESCRIBE DETAIL's one row: format, location, numFiles, sizeInBytes, properties, ..."""
        return spark.sql(f"DESCRIBE DETAIL {self.sql_name}").first()

    def version(self, spark: SparkSession) -> int | None:
        if not self.exists(spark):
            return None
        return self.history(spark, 1).select("version").first()[0]

    def ensure(self, spark: SparkSession, schema, partition_by: tuple[str, ...] = ()) -> None:
        """Create the (empty) table, partitioned by `partition_by`, if missing, so concurrent writers never
        race to create it."""
        if self.path:
            _drop_uncommitted_log(spark, self.path)
        partitioning = f" PARTITIONED BY ({', '.join(f'`{c}`' for c in partition_by)})" if partition_by else ""
        spark.sql(f"CREATE TABLE IF NOT EXISTS {self.sql_name} ({column_definitions(schema)}) USING DELTA{partitioning}")

    def delete(self, spark: SparkSession, condition: str | None = None) -> None:
        """Delete the rows matching the SQL `condition` (every row without one)."""
        spark.sql(f"DELETE FROM {self.sql_name}" + (f" WHERE {condition}" if condition else ""))

    def merge(self, source: DataFrame, on: str, *clauses: str) -> None:
        """MERGE INTO this table (alias `t`) the rows of `source` (alias `s`), matched `on`, with the
        WHEN clauses in order. The source is a temporary view of a name of its own: tables are merged
        side by side in one session."""
        view = f"merge_source_{uuid.uuid4().hex}"
        source.createOrReplaceTempView(view)
        try:
            source.sparkSession.sql(f"MERGE INTO {self.sql_name} t USING {view} s ON {on} {' '.join(clauses)}")
        finally:
            source.sparkSession.catalog.dropTempView(view)

    def optimize(self, spark: SparkSession):
        """OPTIMIZE (bin-packing compaction); its metrics row (numFilesAdded, numFilesRemoved, ...)."""
        return spark.sql(f"OPTIMIZE {self.sql_name}").select("metrics.*").first()

    def vacuum(self, spark: SparkSession, retain_hours: int) -> None:
        spark.sql(f"VACUUM {self.sql_name} RETAIN {int(retain_hours)} HOURS")

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
        writer = df.write.format("delta")
        if self.exists(df.sparkSession):
            self.save(writer.mode("overwrite").option("replaceWhere", predicate))
        else:  # an append: a writer that created the table since the check keeps its rows (an overwrite replaced them)
            self.save(writer.mode("append").partitionBy(*partition_by))


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
