"""The Databricks twin: every task of the job, run the way Databricks runs it on a job cluster and on serverless.

What is the same as on Databricks: the wheel the bundle's own artifact build command makes (what
`bundle deploy` uploads), installed into an environment holding only what the task's compute provides:
DBR 16.4 LTS (pyspark 3.5.2 and the runtime's usual libraries: `make install` builds `.venv-dbr`) for dev,
DBR 17.3 LTS (Spark 4.0.0, MLflow 3: `.venv-dbr17`, Delta 4.0's Scala 2.13 jars) for prod, deployed with
`--var spark_version=17.3.x-scala2.13` as a team trying the new line on one target would, and serverless
environment version 4 (Python 3.12, Databricks Connect 17.2.3, MLflow 2.22: `.venv-serverless4`) for a second developer
whose dev target says `compute: ${var.serverless}`; each task of resources/ecom_lakehouse.job.yml as its own
Python process through the console script, with the task's exact parameters and the job's parameter values
substituted, all taken from the bundle as the Databricks CLI resolves it (tests/bundle_resolution.py:
variables, then the target mode's presets, which prefix the schemas and the experiment in dev, then resource
references), for three deployments on one workspace: dev by two users, and prod by its service principal,
from CI, with grants to it and to the two groups;
the compute each deployment names, up before the first task and down after the last: for a job cluster, a
driver JVM on the runtime it names, to which every task's Python attaches
(tests/databricks_runtime/sitecustomize.py does what the runtime does there), so tasks share its Spark
context, Delta's cached logs and its warm JIT as they do on a job cluster, each task with a Spark
session of its own; for serverless, a Spark Connect server that each task's Python reaches only through
Spark Connect, as serverless Python does (no SparkContext, no JVM of its own); tasks run in the job's
dependency order, side by side where it allows (segment and recommend, both after gold);
Delta configured from outside the package, as the platform does; tables in a catalog that outlives
each process, addressed as `<catalog>.<schema>.<table>`; raw files, checkpoints, models and the report in a folder playing the
volume, delivered under the names `databricks upload-raw` gives them. `bundle deploy` is played with the
workspace's rules (`_deploy`): a grant to a principal the workspace does not have fails, and MLflow
creates no experiment whose parent folder is missing (tests/databricks_runtime/sitecustomize.py), so a
task given a path or an experiment the deployment did not create fails here as it would there.

What differs, each in one named place: the catalog is Spark's session catalog on a local Derby
metastore (`spark_catalog`), one per compute (Derby opens a database in one JVM only), where Unity Catalog
is one per workspace; bronze reads with Spark's file source instead of Auto Loader
(ECOM_RAW_STREAM=files, bronze.raw_line_stream), which exists only on Databricks; the job clusters' Python
is this machine's 3.11, not the runtimes' 3.12 (serverless's is 3.12.1 where the environment has 3.12.3: on
3.11.7, Databricks Connect's ast.parse of the caller's source failed with CPython's "AST constructor recursion
depth mismatch", fixed in later 3.11 releases); serverless is served by open-source Spark 4.0.0's Connect
server on 2 local cores, not by Databricks' engine, and its volume is the twin's folder, which MLflow is told is
one (tests/databricks_runtime/sitecustomize.py); grants, retries, the job scheduler and autoscaling are not
played; the catalog is named `spark_catalog` through `--var catalog=…` and `/Volumes` is a folder of the
test's (`_local`); each compute's driver JVM starts with the local session's JIT options
(session.SHORT_RUN_JIT_OPTIONS), which change how long compiling takes, not what any code computes.
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from ecom_lakehouse.analyst_views import views
from ecom_lakehouse.ops.databricks_ops import delivery_name
from ecom_lakehouse.schemas import TABLES
from ecom_lakehouse.session import DELTA_FOR_SPARK, SHORT_RUN_JIT_OPTIONS, _local_delta_jars
from tests.bundle_resolution import grants, job_parameters, resolve

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Runtime:
    """A Databricks Runtime as the twin plays it: what a deployment names it by (a job cluster's
    `spark_version`, or a serverless environment's version), the environment `make install` builds with what
    that runtime gives a task's Python (its Spark and usual libraries, nothing of ours), and its Spark line,
    whose Delta jars the compute loads (session.DELTA_FOR_SPARK). A serverless task's Python is a Spark
    Connect client: `server` is the runtime whose Spark serves its session."""
    name: str
    venv: Path
    spark_line: str
    pyspark: str
    server: Runtime | None = None

    @property
    def bin(self) -> Path:
        return self.venv / "bin"


# Spark versions from databricks/FACTS.md's runtime table (16.4 LTS: 3.5.2; 17.3 LTS: 4.0.0).
RUNTIMES = (Runtime("16.4.x-scala2.12", ROOT / ".venv-dbr", "3.5", "3.5.2"),
            Runtime("17.3.x-scala2.13", ROOT / ".venv-dbr17", "4.0", "4.0.0"))
# Serverless environment version 4 (its release notes: Python 3.12, Databricks Connect 17.2.3, whose pyspark
# reports 4.0.0): the client in .venv-serverless4, served by a Spark Connect server of 17.3 LTS's Spark 4.0.0.
SERVERLESS = {"4": Runtime("serverless environment 4", ROOT / ".venv-serverless4", "4.0", "4.0.0", server=RUNTIMES[1])}
CATALOG = "spark_catalog"
# A developer, and prod's service principal with the two groups an admin made for prod (docs/databricks.md, "Deploy
# to Databricks"). A service principal's user name is its application id, a UUID: the CLI tells one
# from a user by that alone (libs/iamutil/service_principal.go, IsServicePrincipalName).
USER, SERVICE_PRINCIPAL = "alice.smith@example.com", "6a1b2c3d-0000-4000-8000-00000000e5a1"
SERVERLESS_USER = "bob.jones@example.com"
GROUPS = ("lakehouse-engineers", "merchandising-analysts")
# `databricks bundle deploy -t dev --var catalog=spark_catalog --var node_type=local --var warehouse_id=…` by the user;
# `databricks bundle deploy -t prod --var ...` by the service principal, from CI; and dev by a second
# developer whose copy of databricks.yml has `compute: ${var.serverless}` in the dev target.
WORKSPACE_VARS = {"catalog": CATALOG, "node_type": "local", "warehouse_id": "twin-warehouse"}
DEPLOYMENTS = {
    "dev": resolve("dev", USER, WORKSPACE_VARS),
    "prod": resolve("prod", SERVICE_PRINCIPAL, {**WORKSPACE_VARS, "service_principal": SERVICE_PRINCIPAL,
                                                "engineers_group": GROUPS[0], "analysts_group": GROUPS[1],
                                                "spark_version": RUNTIMES[1].name}),
    "dev-serverless": resolve("dev", SERVERLESS_USER, WORKSPACE_VARS, target_variables={"compute": "${var.serverless}"}),
}


def runtime_of(config: dict) -> Runtime:
    """The runtime a deployment's compute asks for: its job cluster's, or its serverless environment's;
    one the twin cannot play fails here."""
    job = config["resources"]["jobs"]["ecom_lakehouse_pipeline"]
    if "environments" in job:
        [environment] = job["environments"]
        version = environment["spec"]["environment_version"]
        assert version in SERVERLESS, f"the twin plays no serverless environment {version}: {sorted(SERVERLESS)}"
        return SERVERLESS[version]
    [cluster] = job["job_clusters"]
    version = cluster["new_cluster"]["spark_version"]
    played = [runtime for runtime in RUNTIMES if runtime.name == version]
    assert played, f"the twin plays no runtime {version}: {[r.name for r in RUNTIMES]}"
    return played[0]
# What the workspace has before the deployments: its principals and their home folders (every user and
# service principal has /Users/<name>; /Users itself is protected, mlflow/mlflow-export-import#24).
PRINCIPALS = {USER, SERVERLESS_USER, SERVICE_PRINCIPAL, *GROUPS}
WORKSPACE_FOLDERS = [f"/Users/{USER}", f"/Users/{SERVERLESS_USER}", f"/Users/{SERVICE_PRINCIPAL}"]

pytestmark = pytest.mark.twin


def _compute_args(cluster: Path, runtime: Runtime) -> list[str]:
    """spark-submit's arguments for the driver of the compute that runs `runtime`'s Spark: Delta configured
    from outside the package, as the platform does, and the catalog the compute's tasks share."""
    jars = _local_delta_jars(*DELTA_FOR_SPARK[runtime.spark_line])
    if not jars:
        pytest.skip("Delta jars are not in ~/.m2: run `make install`")
    conf = {
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        "spark.sql.catalogImplementation": "hive",
        "spark.sql.warehouse.dir": str(cluster / "warehouse"),
        "spark.hadoop.javax.jdo.option.ConnectionURL": f"jdbc:derby:;databaseName={cluster / 'metastore_db'};create=true",
        "spark.sql.shuffle.partitions": "2",  # tiny data on 2 cores, as in the local session
        "spark.databricks.delta.snapshotPartitions": "2",
        "spark.ui.enabled": "false",
        # One JVM serves every task of the job, as a job cluster's driver does (with far more than
        # Spark's default 1 GB).
        "spark.driver.memory": "2g",
        # Not a platform setting: this driver, like a local session, lives a few minutes on small data, where
        # the JIT's compiling is most of its CPU. It changes how long compiling takes, not what code computes.
        "spark.driver.extraJavaOptions": SHORT_RUN_JIT_OPTIONS,
    }
    args = ["--master", "local[2]", "--jars", ",".join(jars)]
    for key, value in conf.items():
        args += ["--conf", f"{key}={value}"]
    return args


def _runtime_env(work: Path, runtime: Runtime) -> dict[str, str]:
    """The environment of the runtime's Python, before it is given its compute."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYSPARK", "SPARK_", "ECOM_"))}
    env.update(PYSPARK_PYTHON=str(runtime.bin / "python"),
               ECOM_RAW_STREAM="files", DATABRICKS_TWIN_WORKSPACE_FOLDERS=json.dumps(WORKSPACE_FOLDERS),
               # plays the workspace tracking server and Unity Catalog's model registry
               MLFLOW_TRACKING_URI=(work / "mlruns").as_uri(), MLFLOW_REGISTRY_URI=(work / "mlruns").as_uri())
    return env


def _run(cmd: list[str], env, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=900)


ATTACH = ROOT / "tests" / "databricks_runtime"
CLUSTER_DRIVER = textwrap.dedent("""
    import json, os, sys
    from pyspark.sql import SparkSession
    spark = SparkSession.builder.getOrCreate()
    gateway = spark.sparkContext._gateway.gateway_parameters
    with open(sys.argv[1] + ".tmp", "w") as out:
        json.dump({"port": gateway.port, "secret": gateway.auth_token}, out)
    os.replace(sys.argv[1] + ".tmp", sys.argv[1])  # whole, or not there at all
    sys.stdin.read()  # until the test closes it: the job is over and its cluster terminates
""")


@contextmanager
def _compute(cluster: Path, runtime: Runtime, env):
    """The compute a deployment's tasks run on, up from before the first task to after the last: a job
    cluster, or serverless. Yields the environment of a task process."""
    with (_serverless(cluster, runtime, env) if runtime.server else _job_cluster(cluster, runtime, env)) as task_env:
        yield task_env


@contextmanager
def _job_cluster(cluster: Path, runtime: Runtime, env):
    """The job cluster's driver JVM. A task's environment: the runtime's, plus the way to the running driver."""
    # PySpark splits these arguments as a shell would (shlex.split in pyspark/java_gateway.py): quote them alike
    env = {**env, "PYSPARK_SUBMIT_ARGS": shlex.join([*_compute_args(cluster, runtime), "pyspark-shell"])}
    gateway_file, log = cluster / "cluster-gateway.json", (cluster / "cluster.log").open("w")
    driver = subprocess.Popen([str(runtime.bin / "python"), "-c", CLUSTER_DRIVER, str(gateway_file)], env=env,
                              cwd=cluster, stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT, text=True)
    try:
        for _ in range(600):
            if gateway_file.exists() or driver.poll() is not None:
                break
            time.sleep(0.1)
        assert gateway_file.exists(), f"the cluster's driver did not start:\n{(cluster / 'cluster.log').read_text()[-3000:]}"
        gateway = json.loads(gateway_file.read_text())
        yield {**env, "PYSPARK_GATEWAY_PORT": str(gateway["port"]), "PYSPARK_GATEWAY_SECRET": gateway["secret"],
               "PYTHONPATH": str(ATTACH)}
    finally:
        driver.stdin.close()
        driver.wait(timeout=120)
        log.close()


@contextmanager
def _serverless(cluster: Path, runtime: Runtime, env):
    """Serverless compute as a task's Python meets it: a Spark Connect server (Spark's own,
    org.apache.spark.sql.connect.service.SparkConnectServer, which sbin/start-connect-server.sh starts) of the
    serving runtime's Spark, whose Python workers (bronze's foreachBatch) run the task environment's Python, where
    the environment's dependencies are installed. A task's environment names the server in SPARK_REMOTE, which
    makes PySpark's SparkSession.builder a Spark Connect client (pyspark/sql/session.py)."""
    from tests.aws_twin import free_port

    port, log = free_port(), (cluster / "serverless.log").open("w")
    # The serving runtime's Spark: its pyspark package is a Spark distribution (left to itself, spark-submit
    # would look for one beside PYSPARK_PYTHON, the client's, whose pyspark is Databricks Connect's)
    [spark_home] = runtime.server.venv.glob("lib/python3*/site-packages/pyspark")
    server = subprocess.Popen([str(runtime.server.bin / "spark-submit"), "--class",
                               "org.apache.spark.sql.connect.service.SparkConnectServer", *_compute_args(cluster, runtime.server),
                               "--conf", f"spark.connect.grpc.binding.port={port}"],
                              env={**env, "SPARK_HOME": str(spark_home)}, cwd=cluster, stdout=log, stderr=subprocess.STDOUT)
    try:
        for _ in range(1200):
            if "Spark Connect server started" in (cluster / "serverless.log").read_text() or server.poll() is not None:
                break
            time.sleep(0.1)
        assert server.poll() is None, f"the Connect server did not start:\n{(cluster / 'serverless.log').read_text()[-3000:]}"
        # Serverless sets DATABRICKS_RUNTIME_VERSION to "client.<environment version>…" (how MLflow tells serverless
        # apart: mlflow/utils/databricks_utils.py, is_in_databricks_serverless_runtime); /Volumes is the twin's folder.
        yield {**env, "SPARK_REMOTE": f"sc://localhost:{port}", "PYTHONPATH": str(ATTACH),
               "DATABRICKS_RUNTIME_VERSION": f"client.{runtime.name.split()[-1]}.0",
               "DATABRICKS_TWIN_VOLUMES": _local(cluster.parent, "/Volumes/").rstrip("/")}
    finally:
        server.terminate()
        server.wait(timeout=120)
        log.close()


def _local(work: Path, value: str) -> str:
    """A workspace path as the twin has it: /Volumes/... is a folder under `work`."""
    return str(work) + value if value.startswith("/Volumes/") else value


def _task_command(task: dict, values: dict[str, str], runtime: Runtime) -> list[str]:
    params = task["python_wheel_task"]["parameters"]
    for name, value in values.items():
        params = [p.replace(f"{{{{job.parameters.{name}}}}}", value) for p in params]
    assert not [p for p in params if "{{" in p], params
    return [str(runtime.bin / task["python_wheel_task"]["entry_point"]), *params]


@pytest.fixture(scope="module")
def twin_raw(tmp_path_factory):
    """scale-0.004 faithful data: 400 users, enough buyers for every model."""
    from ecom_lakehouse.generator import GeneratorOptions, generate

    out = tmp_path_factory.mktemp("twin-raw")
    return out, generate(out, GeneratorOptions(scale=0.004, seed=11))


@dataclass
class Deployed:
    """A deployment, deployed and its job run once, on the twin's workspace."""
    target: str
    config: dict
    runtime: Runtime
    work: Path
    env: dict
    volume: Path
    values: dict[str, str]  # the job's parameters, /Volumes paths mapped to the twin's folder
    outputs: dict[str, subprocess.CompletedProcess]

    @property
    def job(self) -> dict:
        return self.config["resources"]["jobs"]["ecom_lakehouse_pipeline"]

    def schema(self, key: str) -> str:
        return self.config["resources"]["schemas"][key]["name"]

    @property
    def experiment(self) -> str:
        return self.config["resources"]["experiments"]["ecom_lakehouse"]["name"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, twin_raw, built_wheel) -> dict[str, Deployed]:
    """The workspace on which every deployment is deployed and its job run, one after the other, each
    on compute of its own with the runtime it names, up until the module's tests are done."""
    work = tmp_path_factory.mktemp("dbr-twin")
    deployed = {}
    with ExitStack() as clusters:
        for target, config in DEPLOYMENTS.items():
            runtime = runtime_of(config)
            if not (runtime.bin / "python").exists():
                if runtime.server:  # `make install` builds it only where a Python 3.12 is: the `twin` fixture skips it
                    continue
                pytest.skip(f"{runtime.venv} is missing: `make install` builds the Databricks runtime twin environments")
            cluster = work / f"compute-{target}"
            cluster.mkdir()
            runtime_env = _runtime_env(work, runtime)
            # A job cluster installs a task library over the runtime; serverless pip-installs the environment's
            # dependencies. The wheel declares none, so both install it alone.
            installed = _run([str(runtime.bin / "pip"), "install", "-q", "--force-reinstall", str(built_wheel)],
                             runtime_env, work)
            assert installed.returncode == 0, installed.stderr
            env = clusters.enter_context(_compute(cluster, runtime, runtime_env))
            deployed[target] = _run_job(target, runtime, work, env, twin_raw)
        yield deployed


@pytest.fixture(scope="module", params=sorted(DEPLOYMENTS))
def twin(workspace, request) -> Deployed:
    """Each deployment's run, for what every deployment must leave behind."""
    if request.param not in workspace:
        pytest.skip(f"{request.param} did not run: {SERVERLESS['4'].venv} needs a Python 3.12 (`make install`)")
    return workspace[request.param]


@pytest.fixture(scope="module")
def dev_twin(workspace) -> Deployed:
    """The dev deployment's run, for how tasks behave (reruns, failures, sessions)."""
    return workspace["dev"]


def _unknown_principals(config: dict) -> set[str]:
    """Grantees the workspace does not have. Unity Catalog refuses a grant to a principal it cannot find,
    and the deploy with it (the platform's error code PRINCIPAL_DOES_NOT_EXIST, in the ErrorCode list of
    mlflow/protos/databricks.proto, which mirrors Databricks' REST errors)."""
    return {p for granted in grants(config).values() for p in granted} - PRINCIPALS


def _deploy(config: dict, runtime: Runtime, work: Path, env) -> None:
    """What `bundle deploy` creates from the resolved resources, under the workspace's rules: no grant
    to an unknown principal, the experiment created by MLflow, which refuses a missing parent folder, and
    the registered models created in the registry."""
    unknown = _unknown_principals(config)
    assert not unknown, f"Could not find principal(s) {sorted(unknown)}: the deployment fails"
    resources = config["resources"]
    for volume in resources["volumes"].values():
        Path(_local(work, volume["volume_path"])).mkdir(parents=True, exist_ok=True)
    schemas = [f"{s['catalog_name']}.{s['name']}" for s in resources["schemas"].values()]
    experiments = [e["name"] for e in resources["experiments"].values()]
    models = [f"{m['catalog_name']}.{m['schema_name']}.{m['name']}" for m in resources["registered_models"].values()]
    deploy = _run([str(runtime.bin / "python"), "-c", textwrap.dedent(f"""
        import mlflow
        from pyspark.sql import SparkSession
        spark = SparkSession.builder.getOrCreate()
        for schema in {schemas!r}:
            spark.sql(f"CREATE SCHEMA IF NOT EXISTS {{schema}}")
        for name in {experiments!r}:
            if mlflow.get_experiment_by_name(name) is None:
                mlflow.create_experiment(name)
        for name in {models!r}:  # the registry stand-in: the models exist before any task registers a version
            mlflow.MlflowClient().create_registered_model(name)
    """)], env, work)
    assert deploy.returncode == 0, deploy.stderr[-2000:]


def _run_job(target: str, runtime: Runtime, work: Path, env, twin_raw) -> Deployed:
    config = DEPLOYMENTS[target]
    _deploy(config, runtime, work, env)
    values = {name: _local(work, value) for name, value in job_parameters(config).items()}
    volume = Path(_local(work, config["resources"]["volumes"]["lakehouse"]["volume_path"]))
    raw, _ = twin_raw
    for table in TABLES:  # as `databricks upload-raw --volume <the volume's path>` delivers them
        delivered = volume / "raw" / delivery_name(table, raw / f"{table}.csv")
        delivered.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(raw / f"{table}.csv", delivered)
    outputs = _run_tasks(config["resources"]["jobs"]["ecom_lakehouse_pipeline"]["tasks"], values, env, work, target, runtime)
    return Deployed(target, config, runtime, work, env, volume, values, outputs)


def _run_tasks(tasks: list[dict], values, env, work, target: str, runtime: Runtime) -> dict[str, subprocess.CompletedProcess]:
    """As the job runs them: a task once every task it depends on has succeeded, side by side with
    the others that are ready then (segment and recommend)."""
    outputs, pending = {}, list(tasks)
    while pending:
        ready = [t for t in pending if all(d["task_key"] in outputs for d in t.get("depends_on", []))]
        assert ready, f"tasks wait on tasks that never run: {[t['task_key'] for t in pending]}"
        started = time.time()
        with ThreadPoolExecutor(len(ready)) as pool:
            runs = list(pool.map(lambda task: _run(_task_command(task, values, runtime), env, work), ready))
        print(f"[databricks twin, {target}] {' + '.join(t['task_key'] for t in ready)}: {time.time() - started:.0f}s", flush=True)
        for task, done in zip(ready, runs, strict=True):
            outputs[task["task_key"]] = done
            assert done.returncode == 0, f"task {task['task_key']} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        pending = [t for t in pending if t["task_key"] not in outputs]
    return outputs


def _inspect(twin: Deployed, names: list[str], of_table: str = "count()") -> dict:
    """`spark.table(n).<of_table>` for each existing table n (row counts by default), read through the
    catalog by a process of the runtime's own."""
    done = _run([str(twin.runtime.bin / "python"), "-c", textwrap.dedent(f"""
        import json
        from pyspark.sql import SparkSession
        spark = SparkSession.builder.getOrCreate()
        print(json.dumps({{n: spark.table(n).{of_table} for n in {names!r} if spark.catalog.tableExists(n)}}))
    """)], twin.env, twin.work)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_runtime_environment_has_only_the_runtime_and_our_wheel(twin):
    work, env = twin.work, twin.env
    done = _run([str(twin.runtime.bin / "python"), "-c",
                 "import pyspark, ecom_lakehouse, importlib.metadata as m; "
                 "required = [r for r in m.requires('ecom_lakehouse') or [] if 'extra ==' not in r]; "
                 "print(pyspark.__version__, m.version('ecom_lakehouse'), len(required))"], env, work)
    assert done.stdout.split() == [twin.runtime.pyspark, "0.1.0", "0"]


def test_each_job_ran_on_the_runtime_its_compute_names(twin):
    """Delta records the engine that made each commit (commitInfo.engineInfo): the job's tables were
    written by the Spark and Delta of the runtime the deployment's compute asks for (serverless: the one
    serving its client)."""
    table = f"{CATALOG}.{twin.schema('lakehouse')}.silver_orders"
    done = _run([str(twin.runtime.bin / "python"), "-c", textwrap.dedent(f"""
        from pyspark.sql import SparkSession
        spark = SparkSession.builder.getOrCreate()
        print(sorted({{r[0] for r in spark.sql("DESCRIBE HISTORY {table}").select("engineInfo").collect()}}))
    """)], twin.env, twin.work)
    assert done.returncode == 0, done.stderr[-2000:]
    delta_version, _ = DELTA_FOR_SPARK[twin.runtime.spark_line]
    engine = twin.runtime.server or twin.runtime
    assert done.stdout.strip().splitlines()[-1] == str([f"Apache-Spark/{engine.pyspark} Delta-Lake/{delta_version}"])


def test_each_task_process_gets_a_session_of_its_own_over_the_one_context(dev_twin):
    """Segment and recommend run side by side and both set session settings (lineage.recorded's
    commit metadata): as on Databricks, what one task sets must not reach the other."""
    work, env = dev_twin.work, dev_twin.env
    probe = ("from pyspark.sql import SparkSession\nspark = SparkSession.builder.getOrCreate()\n"
             "print(spark.sparkContext.applicationId, spark.conf.get('ecom.twin.probe', 'unset'))\n"
             "spark.conf.set('ecom.twin.probe', 'set')\n")
    first, second = (_run([str(dev_twin.runtime.bin / "python"), "-c", probe], env, work) for _ in range(2))
    assert first.returncode == 0 and second.returncode == 0, first.stderr[-2000:] + second.stderr[-2000:]
    (first_app, first_seen), (second_app, second_seen) = (p.stdout.split()[-2:] for p in (first, second))
    assert first_app == second_app  # the same job cluster's context
    assert (first_seen, second_seen) == ("unset", "unset")


def test_the_deploy_fails_on_a_grant_to_a_principal_the_workspace_lacks():
    """Dev grants nothing; prod's grantees are whatever the deployer names, and a workspace without them
    refuses the deploy, as the twin's deploy step does."""
    assert _unknown_principals(DEPLOYMENTS["dev"]) == set() and not grants(DEPLOYMENTS["dev"])
    assert {SERVICE_PRINCIPAL, *GROUPS} == {p for granted in grants(DEPLOYMENTS["prod"]).values() for p in granted}
    prod = resolve("prod", "ci@example.com", {**WORKSPACE_VARS, "service_principal": "sp-1",
                                               "engineers_group": "eng", "analysts_group": "analysts"})
    assert _unknown_principals(prod) == {"sp-1", "eng", "analysts"}


def test_the_workspace_refuses_an_experiment_in_a_missing_folder(twin):
    """The rule the twin plays for MLflow: the experiment the bundle declares exists in its deployer's
    home folder; the one earlier code made up (/Shared/ecom_lakehouse/<schema>) has no parent folder and
    is refused as the workspace refuses it."""
    probe = _run([str(twin.runtime.bin / "python"), "-c", textwrap.dedent(f"""
        import mlflow
        print(mlflow.get_experiment_by_name({twin.experiment!r}) is not None)
        mlflow.set_experiment("/Shared/ecom_lakehouse/{twin.schema('lakehouse')}")
    """)], twin.env, twin.work)
    assert probe.stdout.split()[:1] == ["True"], probe.stderr[-2000:]
    assert probe.returncode != 0 and "Parent directory /Shared/ecom_lakehouse does not exist" in probe.stderr


def test_every_task_leaves_its_tables_in_the_catalog(twin, twin_raw):
    outputs = twin.outputs
    schema, gold_schema = twin.schema("lakehouse"), twin.schema("gold")
    _, counts = twin_raw
    from ecom_lakehouse.gold import OUTPUTS
    bronze = [f"{CATALOG}.{schema}.bronze_{t}" for t in TABLES]
    silver = [f"{CATALOG}.{schema}.silver_{t}" for t in TABLES]
    gold = [f"{CATALOG}.{gold_schema}.{t}" for t in (*OUTPUTS, "customer_segments", "segment_summary",
                                                    "served_recommendations", "recommender_evaluation", "strategy_verdicts",
                                                    "model_verdicts", "ab_exposures", "ab_looks")]
    quarantines = [f"{CATALOG}.{schema}.bronze_quarantine", f"{CATALOG}.{schema}.silver_quarantine",
                   f"{CATALOG}.{schema}.bronze_ingested_files"]
    found = _inspect(twin, bronze + silver + gold + quarantines)
    assert {t: found[f"{CATALOG}.{schema}.bronze_{t}"] for t in TABLES} == counts
    assert found[f"{CATALOG}.{schema}.bronze_quarantine"] == 0 and found[f"{CATALOG}.{schema}.bronze_ingested_files"] == 7
    assert found[f"{CATALOG}.{schema}.silver_orders"] > 0
    assert set(gold) <= set(found), set(gold) - set(found)
    # every gold table has rows (restock alerts may rightly be empty on tiny data)
    assert all(found[n] > 0 for n in gold if not n.endswith("inventory_restock_alerts")), {n: found[n] for n in gold}
    # personal data stops at silver: no column of a gold table, read through the catalog, holds it
    from ecom_lakehouse.silver import PII_COLUMNS
    columns = _inspect(twin, gold + [f"{CATALOG}.{schema}.silver_users"], "columns")
    assert set(PII_COLUMNS) <= set(columns.pop(f"{CATALOG}.{schema}.silver_users"))  # the check can see them
    assert not {name: set(PII_COLUMNS) & set(cols) for name, cols in columns.items() if set(PII_COLUMNS) & set(cols)}
    assert "reconciliation" in outputs["bronze"].stdout and "MISMATCH" not in outputs["bronze"].stdout


# What differs between any two runs of the job: when and in which stream a row arrived, when its file was
# delivered, and which MLflow run or moment decided, served or measured it. Each job reads its files from its own volume: a row's
# file is compared by its name.
RUN_VARYING = {"_ingested_at", "_stream_id", "stream_id", "ingested_at", "modified_ms", "run_id", "decided_at", "served_at",
               "measured_at"}
FILE_PATHS = {"_source_file", "source_file"}


def _table_locations(twin: Deployed) -> dict[str, str]:
    """Every table the job left in its two schemas, by its name in the schema, and where Delta keeps it
    (DESCRIBE DETAIL through the deployment's own compute)."""
    schemas = [twin.schema("lakehouse"), twin.schema("gold")]
    done = _run([str(twin.runtime.bin / "python"), "-c", textwrap.dedent(f"""
        import json
        from pyspark.sql import SparkSession
        spark = SparkSession.builder.getOrCreate()
        names = [f"{CATALOG}.{{s}}.{{t.tableName}}" for s in {schemas!r}
                 for t in spark.sql(f"SHOW TABLES IN {CATALOG}.{{s}}").collect()]
        print(json.dumps({{n.split(".")[-1]: spark.sql(f"DESCRIBE DETAIL {{n}}").first().location for n in names}}))
    """)], twin.env, twin.work)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_dashboards_datasets_run_on_the_catalog_and_give_every_widget_its_columns(dev_twin):
    """The deployed dashboard's file, each dataset's query run as Databricks SQL runs it for the dashboard: its
    tables resolved in dataset_catalog.dataset_schema (the bundle's dashboard resource). Each widget's fields
    are columns of its dataset's result, and a dataset finds rows where its gold table has them."""
    dashboard = dev_twin.config["resources"]["dashboards"]["shop_overview"]
    serialized = json.loads((ROOT / "resources" / dashboard["file_path"]).read_text(encoding="utf-8"))
    queries = {d["name"]: "".join(d["queryLines"]) for d in serialized["datasets"]}
    done = _run([str(dev_twin.runtime.bin / "python"), "-c", textwrap.dedent(f"""
        import json
        from pyspark.sql import SparkSession
        spark = SparkSession.builder.getOrCreate()
        spark.sql("USE {dashboard['dataset_catalog']}.{dashboard['dataset_schema']}")
        results = {{name: spark.sql(sql) for name, sql in {queries!r}.items()}}
        print(json.dumps({{name: [df.columns, df.count()] for name, df in results.items()}}))
    """)], dev_twin.env, dev_twin.work)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    for item in serialized["pages"][0]["layout"]:
        for query in item["widget"].get("queries", []):
            columns, _ = results[query["query"]["datasetName"]]
            assert {f["name"] for f in query["query"]["fields"]} <= set(columns), item["widget"]["name"]
    gold = f"{CATALOG}.{dashboard['dataset_schema']}"
    rows = _inspect(dev_twin, [f"{gold}.{views()[name].table}" for name in queries])
    assert {name: count > 0 for name, (_, count) in results.items()} == {
        name: rows.get(f"{gold}.{views()[name].table}", 0) > 0 for name in queries}


def test_every_table_is_the_same_on_each_spark_line_and_compute(workspace, spark):
    """The same files through the same job on 16.4 LTS (Spark 3.5, a job cluster), 17.3 LTS (Spark 4.0, a
    job cluster) and serverless environment 4 (Spark 4.0 through Spark Connect) leave the same tables, row
    for row, doubles equal to 1e-9 relative (sums in another order differ in the last bits); read back from
    where each compute's catalog says they are."""
    from pyspark.sql import functions as F
    from pyspark.testing import assertDataFrameEqual

    from ecom_lakehouse.gold import OUTPUTS

    def compared(table):
        return table.select([F.element_at(F.split(c, "/"), -1).alias(c) if c in FILE_PATHS else c
                             for c in table.columns if c not in RUN_VARYING])

    reference = _table_locations(workspace["dev"])
    # the check reads every table of each layer
    assert {f"{layer}_{t}" for layer in ("bronze", "silver") for t in TABLES} | set(OUTPUTS) <= set(reference)
    for target in [t for t in ("prod", "dev-serverless") if t in workspace]:
        other = _table_locations(workspace[target])
        assert sorted(other) == sorted(reference), target
        for name, location in reference.items():
            expected, actual = spark.read.format("delta").load(location), spark.read.format("delta").load(other[name])
            assert actual.schema == expected.schema, (target, name)
            assertDataFrameEqual(compared(actual), compared(expected), rtol=1e-9)
    spark.catalog.clearCache()


def test_checkpoints_models_and_report_live_in_the_volume(twin):
    volume = twin.volume
    assert all((volume / "checkpoints" / "bronze" / t / "commits").is_dir() for t in TABLES)
    assert (volume / "models" / "segmentation").is_dir()  # ALS's is there only when ALS serves: see below
    assert (volume / "reports" / "report.html").stat().st_size > 10_000


def test_published_models_are_registered_under_three_part_names_as_champion(twin):
    """Segmentation is published; ALS only if it beat its best baseline (on faithful data it does
    not, and then it is neither saved to the volume nor registered). Versions go to the models the
    deployment created (prefixed in dev), not to names the tasks make up."""
    registered = {name: "{catalog_name}.{schema_name}.{name}".format(**twin.config["resources"]["registered_models"][key])
                  for key, name in (("segmentation", "customer_segmentation"), ("recommender", "product_recommender_als"))}
    done = _run([str(twin.runtime.bin / "python"), "-c", textwrap.dedent(f"""
        import json, mlflow
        client = mlflow.MlflowClient()
        out = {{}}
        for name, full in {registered!r}.items():
            versions = client.search_model_versions(f"name='{{full}}'")
            out[name] = [sorted(str(v.version) for v in versions),
                         sorted(client.get_registered_model(full).aliases) if versions else []]
            # Unity Catalog registers only models with a signature: every logged version has one, with named inputs
            signatures = [mlflow.models.get_model_info(f"models:/{{full}}/{{v.version}}").signature for v in versions]
            out[name + ".inputs"] = [[c.get("name") for c in signature.inputs.to_dict()] for signature in signatures]
        experiment = mlflow.get_experiment_by_name({twin.experiment!r})
        [run] = client.search_runs([experiment.experiment_id], "tags.stage = 'recommend'")
        out["recommend"] = [run.data.params["served"], run.data.tags["check.leakage"]]
        from pathlib import Path
        from urllib.parse import urlparse
        logged = Path(urlparse(experiment.artifact_location).path).rglob("requirements.txt")
        out["pins"] = sorted({{line for p in logged for line in p.read_text().split() if "pyspark" in line}})
        print(json.dumps(out))
    """)], twin.env, twin.work)
    assert done.returncode == 0, done.stderr[-2000:]
    models = json.loads(done.stdout.strip().splitlines()[-1])
    assert models["customer_segmentation"] == [["1"], ["champion"]]
    assert models["customer_segmentation.inputs"] == [["user_id", "recency_days", "frequency", "monetary", "avg_basket"]]
    assert all(names and None not in names for names in models["product_recommender_als.inputs"])
    served, leakage = models["recommend"]
    assert leakage in ("PASS", "INCONCLUSIVE")
    als_served = served == "als"
    assert models["product_recommender_als"] == ([["1"], ["champion"]] if als_served else [[], []])
    # Each logged model requires the Spark line it was trained on (MLflow warns at load on a mismatch)
    assert models["pins"] == [f"pyspark~={twin.runtime.spark_line}.0"]
    assert (twin.volume / "models" / "als").is_dir() == als_served


def test_serverless_tasks_reach_spark_only_through_spark_connect(workspace):
    """A serverless task's Python has no JVM: its session is a Spark Connect client's, and bronze's batch
    function ran in a Python worker of the serving side, which announces the Connect URL it serves the batch's
    session from (pyspark/sql/connect/streaming/worker/foreach_batch_worker.py)."""
    if "dev-serverless" not in workspace:
        pytest.skip(f"the serverless job did not run: {SERVERLESS['4'].venv} needs a Python 3.12 (`make install`)")
    serverless = workspace["dev-serverless"]
    probe = _run([str(serverless.runtime.bin / "python"), "-c", "from pyspark.sql import SparkSession\n"
                  "print(type(SparkSession.builder.getOrCreate()).__module__)"], serverless.env, serverless.work)
    assert probe.stdout.split()[-1:] == ["pyspark.sql.connect.session"], probe.stderr[-2000:]
    server_log = (serverless.work / "compute-dev-serverless" / "serverless.log").read_text()
    assert "Streaming ForeachBatch worker is starting with url sc://" in server_log


def test_a_rerun_of_bronze_adds_nothing_and_a_failing_task_fails(dev_twin):
    work, env, volume, values = dev_twin.work, dev_twin.env, dev_twin.volume, dev_twin.values
    bronze = next(t for t in dev_twin.job["tasks"] if t["task_key"] == "bronze")
    rerun = _run(_task_command(bronze, values, dev_twin.runtime), env, work)
    assert rerun.returncode == 0 and "no new files" in rerun.stdout
    bad = volume / "raw" / "orders" / "orders-broken.csv"
    bad.write_text("order_id,nickname\n1,x\n")
    try:
        failed = _run(_task_command(bronze, values, dev_twin.runtime), env, work)
    finally:
        bad.unlink()
    # The wheel task launcher ignores return values: the process itself must exit non-zero.
    assert failed.returncode == 2 and "orders-broken.csv: header does not match orders" in failed.stderr
    assert "Traceback" not in failed.stderr


def test_a_rerun_of_gold_and_segment_on_unchanged_inputs_is_skipped(dev_twin):
    """Gold records its lineage per write (Delta's `userMetadata` write option) in catalog tables as
    well as in path tables; `maintain`'s OPTIMIZE/VACUUM since the first run change no lineage."""
    from ecom_lakehouse.gold import OUTPUTS
    work, env, values = dev_twin.work, dev_twin.env, dev_twin.values
    tasks = {t["task_key"]: t for t in dev_twin.job["tasks"]}
    gold = _run(_task_command(tasks["gold"], values, dev_twin.runtime), env, work)
    assert gold.returncode == 0, gold.stderr[-2000:]
    assert f"unchanged since their inputs, skipped: {', '.join(OUTPUTS)}" in gold.stdout, gold.stdout
    segment = _run(_task_command(tasks["segment"], values, dev_twin.runtime), env, work)
    assert segment.returncode == 0 and "segments unchanged" in segment.stdout, segment.stdout
