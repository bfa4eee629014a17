"""The Databricks asset bundle, validated offline; its tasks and the package cannot drift apart."""
import glob
import json
import os
import re
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest
import tomllib
import yaml

from ecom_lakehouse.cli import main
from ecom_lakehouse.stages import SCHEDULED
from tests.bundle_resolution import BundleError, grants, job_parameters, merged_bundle, resolve
from tests.conftest import SHARED

ROOT = Path(__file__).resolve().parents[2]


def bundle_schema() -> dict:
    if shutil.which("databricks"):
        out = subprocess.run(["databricks", "bundle", "schema"], capture_output=True, text=True, check=True)
        return json.loads(out.stdout)
    if os.environ.get("DATABRICKS_BUNDLE_SCHEMA"):
        return json.loads(Path(os.environ["DATABRICKS_BUNDLE_SCHEMA"]).read_text())
    path = SHARED / "databricks_bundle_jsonschema.json"
    if not path.exists():
        pytest.skip("no bundle JSON schema: no `databricks` CLI, DATABRICKS_BUNDLE_SCHEMA unset, and ../shared absent")
    return json.loads(path.read_text())


def _validator(schema):
    import jsonschema
    import regex

    def go_pattern(validator, pattern, instance, _schema):
        # The schema's patterns are Go regular expressions (\p{L}…): `regex` reads them, `re` cannot.
        if isinstance(instance, str) and not regex.search(pattern, instance):
            yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")

    cls = jsonschema.validators.extend(jsonschema.Draft7Validator, {"pattern": go_pattern})
    return cls(schema)


def _tasks(config):
    for job_name, job in config["resources"]["jobs"].items():
        for task in job["tasks"]:
            yield job_name, job, task


def test_merged_bundle_validates_against_the_official_schema():
    errors = sorted(_validator(bundle_schema()).iter_errors(merged_bundle()), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message[:200]}" for e in errors[:10])


def test_the_schema_check_catches_an_unknown_task_field():
    config = merged_bundle()
    next(_tasks(config))[2]["not_a_task_field"] = 1
    assert list(_validator(bundle_schema()).iter_errors(config))


def test_every_variable_reference_is_declared():
    text = (ROOT / "databricks.yml").read_text() + "".join(Path(p).read_text() for p in glob.glob(str(ROOT / "resources/*.yml")))
    used = set(re.findall(r"\$\{var\.([A-Za-z0-9_]+)[.}]", text))  # a variable, or a field of one
    declared = set(merged_bundle()["variables"])
    assert used and used <= declared, used - declared


def test_targets_dev_and_prod():
    targets = merged_bundle()["targets"]
    assert targets["dev"]["mode"] == "development" and targets["dev"]["default"] is True
    prod = targets["prod"]
    assert prod["mode"] == "production" and prod["workspace"]["root_path"]
    assert prod["run_as"]["service_principal_name"] == "${var.service_principal}" and prod["permissions"]


# What an admin passes to a deployment: the catalog always; for prod the run-as principal and two groups.
DEV_VARS = {"catalog": "main", "node_type": "m5d.xlarge", "warehouse_id": "wh-1"}
PROD_VARS = {"catalog": "main", "node_type": "m5d.xlarge", "warehouse_id": "wh-1", "service_principal": "6a1b2c3d-sp",
             "engineers_group": "lakehouse-engineers",
             "analysts_group": "merchandising-analysts"}


def _storage_of(config) -> set[str]:
    """Every table name, checkpoint, model path and volume a deployment of this target writes; each
    path a task is given must lie in the volume the deployment creates."""
    from ecom_lakehouse.config import Lakehouse
    from ecom_lakehouse.schemas import TABLES

    params = job_parameters(config)
    lake = Lakehouse(env="databricks", raw=params["raw_path"], root=params["lakehouse_path"], catalog=params["catalog"],
                     schema=params["schema"], gold_schema=params["gold_schema"], experiment=params["experiment"])
    names = {str(lake.table(layer, t)) for layer in ("bronze", "silver", "gold") for t in TABLES}
    names |= {str(lake.quarantine(layer)) for layer in ("bronze", "silver")} | {params["experiment"]}
    paths = {lake.checkpoint("bronze", t) for t in TABLES} | {lake.model_path("als"), lake.reports_path(), lake.raw}
    [volume] = config["resources"]["volumes"].values()
    outside = [p for p in paths if not p.startswith(volume["volume_path"] + "/")]
    assert not outside, f"paths outside the volume {volume['volume_path']} the deployment creates: {outside}"
    schemas = {f"{s['catalog_name']}.{s['name']}" for s in config["resources"]["schemas"].values()}
    assert {f"{params['catalog']}.{params[k]}" for k in ("schema", "gold_schema")} == schemas
    return names | paths | {volume["volume_path"]}


def test_each_task_path_lies_in_the_volume_the_deployment_creates():
    """Dev mode prefixes schema names after variables are resolved (the CLI's order, tests/bundle_resolution.py):
    a path built from ${var.schema} names a volume that does not exist."""
    config = resolve("dev", "alice.smith@example.com", DEV_VARS)
    assert config["resources"]["schemas"]["lakehouse"]["name"] == "dev_alice_smith_ecom_lakehouse"
    assert job_parameters(config)["raw_path"] == "/Volumes/main/dev_alice_smith_ecom_lakehouse/lakehouse/raw"
    _storage_of(config)
    _storage_of(resolve("prod", "ci@example.com", PROD_VARS))
    # the check reads what it checks: a path from the unprefixed variable is caught
    parameters = config["resources"]["jobs"]["ecom_lakehouse_pipeline"]["parameters"]
    parameters[3]["default"] = "/Volumes/main/ecom_lakehouse/lakehouse/raw"
    with pytest.raises(AssertionError, match="outside the volume"):
        _storage_of(config)


def test_dev_and_prod_share_no_table_checkpoint_experiment_or_volume():
    dev_alice, dev_bob = (resolve("dev", user, DEV_VARS) for user in ("alice@example.com", "bob@example.com"))
    prod = resolve("prod", "ci-principal@example.com", PROD_VARS)
    assert not _storage_of(dev_alice) & _storage_of(prod)
    assert not _storage_of(dev_alice) & _storage_of(dev_bob)  # two developers do not collide either
    assert prod["workspace"]["root_path"].startswith("/Workspace/Users/ci-principal@example.com/")
    assert "default" not in merged_bundle()["variables"]["service_principal"]  # prod must be given one
    assert "service_principal" not in merged_bundle()["targets"]["prod"].get("variables", {})


def test_the_catalog_node_type_warehouse_and_prods_principals_must_be_named_by_whoever_deploys():
    """No default names a catalog, a node type, a SQL warehouse or a group that exists in one workspace or cloud only."""
    for missing in ("catalog", "node_type", "warehouse_id"):
        with pytest.raises(BundleError, match=f"required variable {missing}"):
            resolve("dev", "alice@example.com", {k: v for k, v in DEV_VARS.items() if k != missing})
    for missing in ("service_principal", "engineers_group", "analysts_group"):
        with pytest.raises(BundleError, match=f"required variable {missing}"):
            resolve("prod", "ci@example.com", {k: v for k, v in PROD_VARS.items() if k != missing})


def undeclared_principals(config: dict) -> list[str]:
    """Grant principals, wherever a grant is written (resources, grant variables, targets), that are not a
    `${var.<name>}` without a default: Unity Catalog refuses a grant to a principal it cannot find ("Could
    not find principal"), so only whoever deploys may name them."""
    def grants_in(node):
        if isinstance(node, dict):
            if {"principal", "privileges"} <= set(node):
                yield node["principal"]
            for value in node.values():
                yield from grants_in(value)
        elif isinstance(node, list):
            for value in node:
                yield from grants_in(value)

    variables = config["variables"]
    named = [(p, re.fullmatch(r"\$\{var\.(\w+)\}", p)) for p in grants_in(config)]
    return [p for p, m in named if not m or "default" in variables.get(m.group(1), {"default": None})]


def test_every_grant_names_a_principal_the_deployer_supplies():
    config = merged_bundle()
    assert undeclared_principals(config) == []
    config["targets"]["prod"]["variables"]["gold_grants"].append({"principal": "analysts", "privileges": ["SELECT"]})
    assert undeclared_principals(config) == ["analysts"]
    config = merged_bundle()
    config["variables"]["analysts_group"]["default"] = "analysts"
    assert undeclared_principals(config) == ["${var.analysts_group}"]


def test_dev_grants_nothing_and_prod_grants_the_job_and_the_groups_what_they_need():
    assert grants(resolve("dev", "alice@example.com", DEV_VARS)) == {}  # the developer owns what they deploy
    granted = grants(resolve("prod", "ci@example.com", PROD_VARS))
    job, engineers, analysts = (PROD_VARS[k] for k in ("service_principal", "engineers_group", "analysts_group"))
    assert {"USE_SCHEMA", "CREATE_TABLE", "MODIFY", "SELECT", "CREATE_MODEL"} <= granted[("schemas", "lakehouse")][job]
    assert {"USE_SCHEMA", "CREATE_TABLE", "MODIFY"} <= granted[("schemas", "gold")][job]
    assert granted[("volumes", "lakehouse")][job] == {"READ_VOLUME", "WRITE_VOLUME"}
    assert granted[("schemas", "gold")][analysts] == {"USE_SCHEMA", "SELECT"}
    assert analysts not in granted[("schemas", "lakehouse")]  # personal data stops at silver
    assert {"MODIFY", "CREATE_TABLE"} <= granted[("schemas", "lakehouse")][engineers]
    prod = resolve("prod", "ci@example.com", PROD_VARS)
    [volume] = prod["resources"]["volumes"].values()
    assert volume["schema_name"] == prod["resources"]["schemas"]["lakehouse"]["name"] and volume["volume_type"] == "MANAGED"
    job_config = prod["resources"]["jobs"]["ecom_lakehouse_pipeline"]
    assert job_config["max_concurrent_runs"] == 1 and "periodic" in job_config["trigger"]


def test_the_experiment_is_a_bundle_resource_in_a_folder_the_workspace_has():
    """MLflow on Databricks cannot create an experiment whose parent folder is missing
    ("RESOURCE_DOES_NOT_EXIST: Parent directory ... does not exist", databricks-demos/dbdemos#155); every
    user and service principal has a home folder /Users/<name>, and /Users itself is protected
    (mlflow-export-import#24). The tasks get the experiment the deployment creates."""
    for target, user, variables in (("dev", "alice@example.com", DEV_VARS), ("prod", "ci@example.com", PROD_VARS)):
        config = resolve(target, user, variables)
        [experiment] = config["resources"]["experiments"].values()
        assert experiment["name"].rpartition("/")[0] == f"/Users/{user}"
        assert job_parameters(config)["experiment"] == experiment["name"]
    ml_tasks = [t for _, _, t in _tasks(merged_bundle()) if t["python_wheel_task"]["parameters"][0] in ("segment", "recommend")]
    assert ml_tasks and all("{{job.parameters.experiment}}" in t["python_wheel_task"]["parameters"] for t in ml_tasks)


def test_each_ml_task_registers_under_the_model_the_deployment_creates():
    """Dev mode prefixes registered models' names (resourcemutator/apply_presets.go): a name the task built
    from the schema would name a model the deployment never created, so each task gets its model's
    three-part name from the resource as deployed."""
    for target, user, variables in (("dev", "alice.smith@example.com", DEV_VARS), ("prod", "ci@example.com", PROD_VARS)):
        config = resolve(target, user, variables)
        models = {key: f"{m['catalog_name']}.{m['schema_name']}.{m['name']}"
                  for key, m in config["resources"]["registered_models"].items()}
        params = job_parameters(config)
        assert (params["segmentation_model"], params["recommender_model"]) == (models["segmentation"], models["recommender"])
        prefix = "dev_alice_smith_" if target == "dev" else ""
        assert models["segmentation"] == f"main.{prefix}ecom_lakehouse.{prefix}customer_segmentation"
    by_stage = {t["python_wheel_task"]["parameters"][0]: t["python_wheel_task"]["parameters"]
                for _, _, t in _tasks(merged_bundle())}
    assert by_stage["segment"][-2:] == ["--registered-model", "{{job.parameters.segmentation_model}}"]
    assert by_stage["recommend"][-2:] == ["--registered-model", "{{job.parameters.recommender_model}}"]


def test_an_ml_stage_on_databricks_without_its_model_name_stops_in_one_line(capsys):
    args = ["segment", "--env", "databricks", "--catalog", "c", "--schema", "s", "--experiment", "/Users/a/e"]
    assert main(args) == 2
    assert "needs --registered-model" in capsys.readouterr().err
    assert main(["gold", "--registered-model", "c.s.m"]) == 2
    assert "give it to segment or recommend" in capsys.readouterr().err


def test_tasks_call_console_scripts_that_exist_and_answer_help(capsys):
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    for _, _, task in _tasks(merged_bundle()):
        wheel = task["python_wheel_task"]
        assert wheel["package_name"] == "ecom_lakehouse"
        assert wheel["entry_point"] in scripts
        command = wheel["parameters"][0]
        with pytest.raises(SystemExit) as done:
            main([command, "--help"])
        assert done.value.code == 0
        assert "--env" in capsys.readouterr().out


def test_task_graph_runs_bronze_silver_gold_in_order():
    job = merged_bundle()["resources"]["jobs"]["ecom_lakehouse_pipeline"]
    deps = {t["task_key"]: [d["task_key"] for d in t.get("depends_on", [])] for t in job["tasks"]}
    assert deps["bronze"] == [] and deps["silver"] == ["bronze"] and deps["gold"] == ["silver"]
    assert deps["segment"] == ["gold"] and deps["recommend"] == ["gold"]  # the two models train in parallel
    assert deps["measure"] == ["recommend"]  # the A/B look reads the serving recommend just recorded
    assert sorted(deps["report"]) == ["measure", "segment"]
    assert deps["maintain"] == ["report"]  # VACUUM never races a stage that writes
    assert set(deps) == set(SCHEDULED)  # the same stages EMR runs as steps
    bronze = next(t for t in job["tasks"] if t["task_key"] == "bronze")
    assert bronze["max_retries"] >= 1


def _deployed_job(target: str, compute: str) -> dict:
    """The job as `target` deploys it with its `compute` variable set to the `compute` variant, the one
    line a team changes in the target to move it between a job cluster and serverless."""
    config = resolve(target, "ci@example.com", PROD_VARS if target == "prod" else DEV_VARS,
                     target_variables={"compute": f"${{var.{compute}}}"})
    job = config["resources"]["jobs"]["ecom_lakehouse_pipeline"]
    errors = job_schema_errors(job)
    assert not errors, f"{list(errors[0].absolute_path)}: {errors[0].message[:300]}"
    return job


def job_schema_errors(job: dict) -> list:
    """The resolved job checked against the job resource's schema (the bundle's schema checks only what
    is written, where a field can still be a ${var…} reference)."""
    schema = bundle_schema()
    job_schema = {"$defs": schema["$defs"], "$ref": "#/$defs/github.com/databricks/cli/bundle/config/resources.Job"}
    return [e for top in _validator(job_schema).iter_errors(job) for e in _deepest(top)]


def _deepest(error):
    """The schema's every value may also be a ${var…} string (oneOf): the error that says what is wrong
    is the deepest of the branch that was meant."""
    if not error.context:
        return [error]
    depth = max(len(e.absolute_path) for e in error.context)
    return [d for e in error.context if len(e.absolute_path) == depth for d in _deepest(e)]


def compute_errors(job: dict) -> list[str]:
    """What deploying the job would refuse. Each task names exactly one compute (the CLI's
    validate/job_task_cluster_spec.go asks for at least one; the Jobs API takes one), defined in the job.
    A job cluster's task installs the wheel as a task library; a serverless task has no libraries: its
    environment's dependencies hold the wheel (the CLI's default template, sample_job.job.yml.tmpl, does
    the same), and its environment version is 4 or later, the first with Spark ML on serverless, which
    segment and recommend need (release notes of serverless environment version 4)."""
    clusters = {c["job_cluster_key"] for c in job.get("job_clusters", [])}
    environments = {e["environment_key"]: e["spec"] for e in job.get("environments", [])}
    errors = []
    for task in job["tasks"]:
        named = [f for f in ("job_cluster_key", "environment_key", "existing_cluster_id", "new_cluster") if task.get(f)]
        if len(named) != 1:
            errors.append(f"{task['task_key']}: names {named or 'no compute'}")
        elif "job_cluster_key" in named:
            if task["job_cluster_key"] not in clusters or {"whl": "../dist/*.whl"} not in task.get("libraries", []):
                errors.append(f"{task['task_key']}: job cluster {task['job_cluster_key']} undefined or no wheel")
        elif "environment_key" in named:
            spec = environments.get(task["environment_key"])
            if spec is None or task.get("libraries") or "../dist/*.whl" not in spec.get("dependencies", []):
                errors.append(f"{task['task_key']}: environment {task['environment_key']} undefined, or the wheel not in it")
            elif int(spec.get("environment_version", "1")) < 4:
                errors.append(f"{task['task_key']}: environment version {spec.get('environment_version')} has no Spark ML")
    return errors


@pytest.mark.parametrize("target", ["dev", "prod"])
def test_each_target_runs_every_task_on_a_job_cluster_or_on_serverless_as_its_compute_variable_says(target):
    assert merged_bundle()["targets"][target]["variables"]["compute"] == "${var.job_cluster}"  # chosen in the target
    on_cluster = _deployed_job(target, "job_cluster")
    [cluster] = on_cluster["job_clusters"]
    assert "environments" not in on_cluster and not compute_errors(on_cluster)
    assert {t.get("job_cluster_key") for t in on_cluster["tasks"]} == {cluster["job_cluster_key"]}
    assert "autoscale" in cluster["new_cluster"]
    assert cluster["new_cluster"]["data_security_mode"] == "DATA_SECURITY_MODE_DEDICATED"
    assert cluster["new_cluster"]["spark_version"].startswith("16.4.")

    serverless = _deployed_job(target, "serverless")
    [environment] = serverless["environments"]
    assert "job_clusters" not in serverless and not compute_errors(serverless)
    assert {t.get("environment_key") for t in serverless["tasks"]} == {environment["environment_key"]}
    # The job is the same otherwise: tasks, parameters, graph
    strip = ("job_cluster_key", "environment_key", "libraries")
    assert ([{k: v for k, v in t.items() if k not in strip} for t in serverless["tasks"]]
            == [{k: v for k, v in t.items() if k not in strip} for t in on_cluster["tasks"]])


def test_the_compute_check_catches_each_way_a_task_can_be_left_without_compute_or_wheel():
    on_cluster = _deployed_job("dev", "job_cluster")
    serverless = _deployed_job("dev", "serverless")
    faults = {
        "no compute": (on_cluster, lambda t: t.pop("job_cluster_key")),
        "two computes": (on_cluster, lambda t: t.update(environment_key="lakehouse_environment")),
        "no wheel on the cluster": (on_cluster, lambda t: t.pop("libraries")),
        "libraries on serverless": (serverless, lambda t: t.update(libraries=[{"whl": "../dist/*.whl"}])),
    }
    for fault, (job, plant) in faults.items():
        broken = json.loads(json.dumps(job))
        plant(broken["tasks"][3])
        assert compute_errors(broken), fault
    misspelt = json.loads(json.dumps(serverless))
    misspelt["environments"][0]["spec"]["environment_versio"] = "4"
    assert job_schema_errors(misspelt)
    old_environment = json.loads(json.dumps(serverless))
    old_environment["environments"][0]["spec"]["environment_version"] = "3"
    assert compute_errors(old_environment) == [f"{t['task_key']}: environment version 3 has no Spark ML"
                                               for t in serverless["tasks"]]


def test_the_wheel_builds_and_contains_the_package(built_wheel):
    wheel = built_wheel
    names = zipfile.ZipFile(wheel).namelist()
    assert "ecom_lakehouse/cli.py" in names and "ecom_lakehouse/bronze.py" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "ecom-lakehouse = ecom_lakehouse.cli:entry" in zipfile.ZipFile(wheel).read(entry_points).decode()
    # What a cluster would pip-install over its runtime: never a second Spark, Delta or py4j.
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    required = [line.split(":", 1)[1].strip() for line in metadata.splitlines()
                if line.startswith("Requires-Dist:") and "extra ==" not in line]
    assert not [r for r in required if re.match(r"(pyspark|delta-spark|py4j)\b", r, re.I)], required
    assert any(line.startswith("Requires-Dist: pyspark") and "extra == \"local\"" in line for line in metadata.splitlines())


def test_each_target_deploys_to_the_host_of_the_local_hosts_file_and_only_that_file_sets_hosts(tmp_path):
    assert "host" not in json.dumps(merged_bundle())  # no company's host is committed
    for item in ("databricks.yml", "resources"):
        (shutil.copytree if (ROOT / item).is_dir() else shutil.copy)(ROOT / item, tmp_path / item)
    assert "host" not in resolve("prod", "ci@example.com", PROD_VARS, root=tmp_path)["workspace"]
    shutil.copy(ROOT / "workspaces.example.yml", tmp_path / "workspaces.local.yml")
    example = yaml.safe_load((ROOT / "workspaces.example.yml").read_text())["targets"]
    hosts = {target: resolve(target, "ci@example.com", PROD_VARS if target == "prod" else DEV_VARS, root=tmp_path)
             ["workspace"]["host"] for target in ("dev", "prod")}
    assert hosts == {target: example[target]["workspace"]["host"] for target in ("dev", "prod")}
    assert hosts["dev"] != hosts["prod"]
    errors = list(_validator(bundle_schema()).iter_errors(merged_bundle(tmp_path)))
    assert not errors, errors[0].message
    assert "workspaces.local*.yml" in (ROOT / ".gitignore").read_text().split()
