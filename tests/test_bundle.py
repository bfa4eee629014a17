"""The Databricks asset bundle, validated offline; its tasks and the package cannot drift apart."""
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
import yaml

from ecom_lakehouse.cli import STEP_STAGES, main
from tests.conftest import SHARED

ROOT = Path(__file__).resolve().parents[1]


def _deep_merge(into: dict, other: dict) -> dict:
    for key, value in other.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _deep_merge(into[key], value)
        else:
            into[key] = value
    return into


def merged_bundle() -> dict:
    config = yaml.safe_load((ROOT / "databricks.yml").read_text())
    for pattern in config.get("include", []):
        for path in sorted(glob.glob(str(ROOT / pattern))):
            _deep_merge(config, yaml.safe_load(Path(path).read_text()))
    return config


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
    used = set(re.findall(r"\$\{var\.([A-Za-z0-9_]+)\}", text))
    declared = set(merged_bundle()["variables"])
    assert used and used <= declared, used - declared


def test_targets_dev_and_prod():
    targets = merged_bundle()["targets"]
    assert targets["dev"]["mode"] == "development" and targets["dev"]["default"] is True
    prod = targets["prod"]
    assert prod["mode"] == "production" and prod["workspace"]["root_path"]
    assert prod["run_as"]["service_principal_name"] == "${var.service_principal}" and prod["permissions"]


def resolved_target(target: str, user: str) -> dict:
    """The merged bundle with one target's variables applied and ${…} references resolved, as
    `databricks bundle validate -t <target>` would for `user`."""
    config = merged_bundle()
    values = {name: spec.get("default") for name, spec in config["variables"].items()}
    values.update(config["targets"][target].get("variables", {}))
    known = {"workspace.current_user.userName": user, "workspace.current_user.short_name": user.split("@")[0],
             "bundle.name": config["bundle"]["name"], "bundle.target": target}

    def resolve(value):
        if isinstance(value, dict):
            return {k: resolve(v) for k, v in value.items()}
        if isinstance(value, list):
            return [resolve(v) for v in value]
        if not isinstance(value, str):
            return value
        for _ in range(5):  # references to references
            value = re.sub(r"\$\{var\.(\w+)\}", lambda m: str(values[m.group(1)]), value)
            value = re.sub(r"\$\{resources\.schemas\.(\w+)\.name\}",
                           lambda m: config["resources"]["schemas"][m.group(1)]["name"], value)
            value = re.sub(r"\$\{([\w.]+)\}", lambda m: known.get(m.group(1), m.group(0)), value)
        return value

    values = {k: resolve(v) for k, v in values.items()}
    config = resolve(config)
    config["variables"] = values
    return config


def _storage_of(config) -> set[str]:
    """Every table name, checkpoint, model path and volume a deployment of this target writes."""
    from ecom_lakehouse.config import Lakehouse
    from ecom_lakehouse.schemas import TABLES

    params = {p["name"]: p["default"] for p in config["resources"]["jobs"]["ecom_lakehouse_pipeline"]["parameters"]}
    lake = Lakehouse(env="databricks", raw=params["raw_path"], root=params["lakehouse_path"], catalog=params["catalog"],
                     schema=params["schema"], gold_schema=params["gold_schema"])
    names = {str(lake.table(layer, t)) for layer in ("bronze", "silver", "gold") for t in TABLES}
    names |= {str(lake.quarantine(layer)) for layer in ("bronze", "silver")}
    paths = {lake.checkpoint("bronze", t) for t in TABLES} | {lake.model_path("als"), lake.reports_path(), lake.raw}
    volume = config["resources"]["volumes"]["lakehouse"]
    paths.add(f"/Volumes/{volume['catalog_name']}/{volume['schema_name']}/{volume['name']}")
    assert all(p.startswith(min(paths, key=len)) for p in paths)  # everything lives in the target's own volume
    return names | paths


def test_dev_and_prod_share_no_table_checkpoint_or_volume():
    dev_alice, dev_bob = resolved_target("dev", "alice@example.com"), resolved_target("dev", "bob@example.com")
    prod = resolved_target("prod", "ci-principal@example.com")
    assert not _storage_of(dev_alice) & _storage_of(prod)
    assert not _storage_of(dev_alice) & _storage_of(dev_bob)  # two developers do not collide either
    assert prod["targets"]["prod"]["workspace"]["root_path"].startswith("/Workspace/Users/ci-principal@example.com/")
    assert "default" not in merged_bundle()["variables"]["service_principal"]  # prod must be given one
    assert "service_principal" not in merged_bundle()["targets"]["prod"].get("variables", {})


def test_the_bundle_creates_the_schemas_and_volume_with_grants():
    config = resolved_target("prod", "ci@example.com")
    schemas, [volume] = config["resources"]["schemas"], config["resources"]["volumes"].values()
    grants = {name: {g["principal"]: set(g["privileges"]) for g in s["grants"]} for name, s in schemas.items()}
    assert grants["gold"]["analysts"] == {"USE_SCHEMA", "SELECT"}
    assert "analysts" not in grants["lakehouse"]  # personal data stops at silver
    assert {"MODIFY", "CREATE_TABLE"} <= grants["lakehouse"]["data-engineers"]
    assert volume["schema_name"] == schemas["lakehouse"]["name"] and volume["volume_type"] == "MANAGED"
    job = config["resources"]["jobs"]["ecom_lakehouse_pipeline"]
    assert job["max_concurrent_runs"] == 1 and "periodic" in job["trigger"]


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
    assert sorted(deps["report"]) == ["recommend", "segment"]
    assert deps["maintain"] == ["report"]  # VACUUM never races a stage that writes
    assert set(deps) == set(STEP_STAGES)  # the same stages EMR runs as steps
    bronze = next(t for t in job["tasks"] if t["task_key"] == "bronze")
    assert bronze["max_retries"] >= 1
    cluster = job["job_clusters"][0]["new_cluster"]
    assert cluster["spark_version"] == "${var.spark_version}"
    assert merged_bundle()["variables"]["spark_version"]["default"].startswith(("15.4.", "16.4."))
    assert "autoscale" in cluster and cluster["data_security_mode"] in ("SINGLE_USER", "USER_ISOLATION")


def test_the_wheel_builds_and_contains_the_package(tmp_path):
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", str(tmp_path), str(ROOT)],
                   check=True, capture_output=True)
    [wheel] = list(tmp_path.glob("ecom_lakehouse-*.whl"))
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
