"""What the Databricks runtime does for each task's Python process: attach to the job cluster's driver.

On a job cluster the driver JVM outlives every task, and a task's `SparkSession.builder.getOrCreate()`
returns the cluster's SparkContext and session. Open-source PySpark, given the running JVM's gateway
(PYSPARK_GATEWAY_PORT and PYSPARK_GATEWAY_SECRET, its own way of handing a Python process a JVM), would
construct a second SparkContext there, which Spark refuses (one per JVM). This makes it take the running
one, as the runtime does, and gives the task a Spark session of its own over it, as the runtime gives
each task (tasks that run side by side, segment and recommend, share no session settings). Python
imports this module at start-up when its folder is on PYTHONPATH; the Databricks twin puts it there for
task processes only, and nothing in the package knows of it.

On serverless it plays the volume's FUSE mount for MLflow (`_volume_folder_is_a_volume`).
It also plays one rule of the workspace's MLflow: an experiment is created only in a folder that exists
("RESOURCE_DOES_NOT_EXIST: Parent directory /Users/<user>/databricks_automl does not exist", from
`mlflow.set_experiment` on Databricks: databricks-demos/dbdemos#155). The twin names the folders its
workspace has in DATABRICKS_TWIN_WORKSPACE_FOLDERS.
"""
import importlib.abc
import importlib.util
import json
import os
import sys


class WorkspaceRefused(RuntimeError):
    """Not an MlflowException: mlflow 2.21's set_experiment swallows those from create_experiment and
    goes on with no experiment id, which a file store reads as its Default experiment; on Databricks
    set_experiment fails with the workspace's message, and so it does here."""


def _refuse_missing_parent_folders(file_store) -> None:
    folders = set(json.loads(os.environ["DATABRICKS_TWIN_WORKSPACE_FOLDERS"]))
    create_experiment = file_store.FileStore.create_experiment

    def in_an_existing_folder(self, name, artifact_location=None, tags=None):
        parent = name.rpartition("/")[0]
        if parent not in folders:
            raise WorkspaceRefused(f"RESOURCE_DOES_NOT_EXIST: Parent directory {parent} does not exist.")
        return create_experiment(self, name, artifact_location, tags)

    file_store.FileStore.create_experiment = in_an_existing_folder


class _PatchAfterImport(importlib.abc.MetaPathFinder):
    """Applies `patch` to module `name` when something first imports it: importing MLflow in every task
    process up front would cost each 2.5 s, and only the ML tasks use it."""

    def __init__(self, name, patch):
        self.name, self.patch = name, patch

    def find_spec(self, fullname, path, target=None):
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        load = spec.loader.exec_module

        def exec_module(module):
            load(module)
            self.patch(module)

        spec.loader.exec_module = exec_module
        return spec


def _volume_folder_is_a_volume(spark_flavor) -> None:
    """The twin's folder standing for /Volumes is what MLflow takes for a Unity Catalog volume path. On
    serverless, MLflow saves a Spark model through a staging folder that must be a volume ("UC volume path
    must be provided to save, log or load SparkML models in Databricks shared or serverless clusters",
    mlflow/spark/__init__.py), which it then reads through the volume's FUSE mount, as plain files."""
    volumes = os.environ["DATABRICKS_TWIN_VOLUMES"]
    is_volume = spark_flavor._is_uc_volume_uri
    spark_flavor._is_uc_volume_uri = lambda url: is_volume(url) or str(url).startswith(volumes + "/")


if "DATABRICKS_TWIN_WORKSPACE_FOLDERS" in os.environ:
    sys.meta_path.insert(0, _PatchAfterImport("mlflow.store.tracking.file_store", _refuse_missing_parent_folders))
if "DATABRICKS_TWIN_VOLUMES" in os.environ:
    sys.meta_path.insert(0, _PatchAfterImport("mlflow.spark", _volume_folder_is_a_volume))

if "PYSPARK_GATEWAY_PORT" in os.environ:
    from pyspark import context

    def _attach(self, jconf):
        return self._jvm.JavaSparkContext.fromSparkContext(self._jvm.org.apache.spark.SparkContext.getOrCreate(jconf))

    context.SparkContext._initialize_context = _attach

    from pyspark.sql import session

    _session_init = session.SparkSession.__init__

    def _own_session(self, sparkContext, jsparkSession=None, options=None):
        if jsparkSession is None:  # PySpark would take the JVM's default session, the driver's
            # Spark 4 names the JVM's session class itself (org.apache.spark.sql.classic.SparkSession)
            session_class = getattr(session.SparkSession, "_get_j_spark_session_class", lambda jvm: jvm.SparkSession)
            default = session_class(sparkContext._jvm).getDefaultSession()
            if default.isDefined():
                jsparkSession = default.get().newSession()
        _session_init(self, sparkContext, jsparkSession, options or {})

    session.SparkSession.__init__ = _own_session
