"""What the Databricks runtime does for each task's Python process: attach to the job cluster's driver.

On a job cluster the driver JVM outlives every task, and a task's `SparkSession.builder.getOrCreate()`
returns the cluster's SparkContext and session. Open-source PySpark, given the running JVM's gateway
(PYSPARK_GATEWAY_PORT and PYSPARK_GATEWAY_SECRET, its own way of handing a Python process a JVM), would
construct a second SparkContext there, which Spark refuses (one per JVM). This makes it take the running
one, as the runtime does, and gives the task a Spark session of its own over it, as the runtime gives
each task (tasks that run side by side, segment and recommend, share no session settings). Python
imports this module at start-up when its folder is on PYTHONPATH; the Databricks twin puts it there for
task processes only, and nothing in the package knows of it.

It also plays one rule of the workspace's MLflow: an experiment is created only in a folder that exists
("RESOURCE_DOES_NOT_EXIST: Parent directory /Users/<user>/databricks_automl does not exist", from
`mlflow.set_experiment` on Databricks: databricks-demos/dbdemos#155). The twin names the folders its
workspace has in DATABRICKS_TWIN_WORKSPACE_FOLDERS.
"""
import json
import os

if "DATABRICKS_TWIN_WORKSPACE_FOLDERS" in os.environ:
    from mlflow.store.tracking import file_store

    class WorkspaceRefused(RuntimeError):
        """Not an MlflowException: mlflow 2.21's set_experiment swallows those from create_experiment and
        goes on with no experiment id, which a file store reads as its Default experiment; on Databricks
        set_experiment fails with the workspace's message, and so it does here."""

    _folders = set(json.loads(os.environ["DATABRICKS_TWIN_WORKSPACE_FOLDERS"]))
    _create_experiment = file_store.FileStore.create_experiment

    def _in_an_existing_folder(self, name, artifact_location=None, tags=None):
        parent = name.rpartition("/")[0]
        if parent not in _folders:
            raise WorkspaceRefused(f"RESOURCE_DOES_NOT_EXIST: Parent directory {parent} does not exist.")
        return _create_experiment(self, name, artifact_location, tags)

    file_store.FileStore.create_experiment = _in_an_existing_folder

if "PYSPARK_GATEWAY_PORT" in os.environ:
    from pyspark import context

    def _attach(self, jconf):
        return self._jvm.JavaSparkContext.fromSparkContext(self._jvm.org.apache.spark.SparkContext.getOrCreate(jconf))

    context.SparkContext._initialize_context = _attach

    from pyspark.sql import session

    _session_init = session.SparkSession.__init__

    def _own_session(self, sparkContext, jsparkSession=None, options={}):
        if jsparkSession is None:  # PySpark would take the JVM's default session, the driver's
            default = sparkContext._jvm.SparkSession.getDefaultSession()
            if default.isDefined():
                jsparkSession = default.get().newSession()
        _session_init(self, sparkContext, jsparkSession, options)

    session.SparkSession.__init__ = _own_session
