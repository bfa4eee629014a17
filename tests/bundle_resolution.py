"""The bundle as `databricks bundle deploy -t <target>` resolves it, for the bundle tests and the twin.

Each rule is the Databricks CLI's (github.com/databricks/cli, read at commit 7bbe285, August 2026),
applied in the order of bundle/phases/initialize.go:
1. Target overrides (bundle/config/root.go, MergeTargetOverrides): a target's `variables` become the
   variables' defaults (rewriteShorthands); its `resources`, `permissions`, `presets`, `run_as`,
   `workspace` merge into the top level, mappings key by key, lists concatenated
   (libs/dyn/merge/merge.go, mergeSequence).
2. SetVariables (bundle/config/mutator/set_variables.go): `--var` (or BUNDLE_VAR_<name>) first, then
   .databricks/bundle/<target>/variable-overrides.json, then the default; a variable left without a
   value fails the deployment ("no value assigned to required variable <name>").
3. ResolveVariableReferences (mutator/resolve_variable_references.go, and in resources through
   resourcemutator/process_static_resources.go): `${var.*}`, `${bundle.*}`, `${workspace.*}`, before
   any preset, so a name built from a variable never sees a prefix.
4. ApplyTargetMode (resourcemutator/apply_target_mode.go): `mode: development` sets the name prefix
   preset to "[dev <short_name>] " unless one is set, pauses triggers and allows 4 concurrent runs;
   short_name is the e-mail's local part, normalized (libs/iamutil/user.go, GetShortUserName;
   libs/textutil/textutil.go, NormalizeString).
5. ApplyPresets (resourcemutator/apply_presets.go): jobs get `prefix + name`; schemas and registered
   models `normalizePrefix(prefix) + name` ("[dev alice] " -> "dev_alice_"); experiments
   `dir + "/" + prefix + base`; dashboards `prefix + display_name`; volumes keep their name. The CLI's own
   acceptance output shows it for a schema and its volume: acceptance/bundle/resource_deps/implicit_deps_volume/output.txt
   ("name": "dev_[USERNAME]_myschema", "volume_path": "/Volumes/mycatalog/dev_[USERNAME]_myschema/myvolume").
6. InitializeVolumePaths (mutator/initialize_volume_paths.go): `volume_path` =
   /Volumes/<catalog>/<schema>/<name>, with references resolved.
7. `${resources.<type>.<key>.<field>}` references take the resources' final values at deploy.
8. Fields left empty are not sent (omitempty in bundle/internal/tf/schema/resource_job.go).
"""
from __future__ import annotations

import copy
import glob
import json
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = re.compile(r"\$\{([A-Za-z0-9_.\-\[\]]+)\}")
TARGET_MERGED = ("resources", "permissions", "presets", "run_as", "workspace", "mode", "default")


class BundleError(Exception):
    """What `databricks bundle validate/deploy` would refuse, in its words."""


def deep_merge(into: dict, other: dict) -> dict:
    """libs/dyn/merge/merge.go: mappings merged key by key, sequences concatenated, scalars replaced."""
    for key, value in other.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            deep_merge(into[key], value)
        elif isinstance(value, list) and isinstance(into.get(key), list):
            into[key] = into[key] + value
        else:
            into[key] = copy.deepcopy(value)
    return into


def merged_bundle(root: Path = ROOT) -> dict:
    """databricks.yml with its `include`d files, before any target."""
    config = yaml.safe_load((root / "databricks.yml").read_text())
    for pattern in config.get("include", []):
        for path in sorted(glob.glob(str(root / pattern))):
            deep_merge(config, yaml.safe_load(Path(path).read_text()))
    return config


def normalize_string(name: str) -> str:
    """libs/textutil/textutil.go NormalizeString."""
    name = re.sub(r"[^\w]|_", "_", name.lower())
    return re.sub(r"_+", "_", name).strip("_")


def short_name(user: str) -> str:
    return normalize_string(user.partition("@")[0])


def normalize_prefix(prefix: str) -> str:
    """resourcemutator/apply_presets.go normalizePrefix: "[dev alice] " -> "dev_alice_"."""
    prefix = prefix.replace("[", "").strip(" ")
    return normalize_string(prefix) + ("_" if prefix.endswith("]") else "")


def _substitute(value, lookup):
    """Replace ${...} references that `lookup` knows; a string that is one reference takes the value whole
    (a complex variable)."""
    if isinstance(value, dict):
        return {k: _substitute(v, lookup) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, lookup) for v in value]
    if not isinstance(value, str):
        return value
    whole = REFERENCE.fullmatch(value)
    if whole and lookup(whole.group(1)) is not None:
        return copy.deepcopy(lookup(whole.group(1)))
    return REFERENCE.sub(lambda m: str(lookup(m.group(1))) if lookup(m.group(1)) is not None else m.group(0), value)


def _until_stable(value, lookup):
    for _ in range(10):  # references to references
        resolved = _substitute(value, lookup)
        if resolved == value:
            return resolved
        value = resolved
    return value


def resolve(target: str, user: str, overrides: dict | None = None, root: Path = ROOT,
            target_variables: dict | None = None) -> dict:
    """The bundle as deployed to `target` by `user` with `--var name=value` `overrides`; `target_variables`
    are values written into the target's `variables` in databricks.yml (a complex variable, such as
    `compute`, cannot be given with --var: bundle/config/root.go)."""
    config = merged_bundle(root)
    target_config = config["targets"][target]
    target_config.setdefault("variables", {}).update(target_variables or {})
    # 1. target overrides
    for key in TARGET_MERGED:
        if key in target_config:
            value = target_config[key]
            if isinstance(value, dict) and isinstance(config.get(key), dict):
                deep_merge(config[key], value)
            else:
                config[key] = copy.deepcopy(value)
    config.pop("targets")
    variables = config.get("variables", {})
    for name, value in target_config.get("variables", {}).items():
        variables[name]["default"] = value
    # 2. values
    values = {}
    overrides_file = root / ".databricks" / "bundle" / target / "variable-overrides.json"
    from_file = json.loads(overrides_file.read_text()) if overrides_file.exists() else {}
    for name, spec in variables.items():
        if name in (overrides or {}):
            values[name] = overrides[name]
        elif name in from_file:
            values[name] = from_file[name]
        elif "default" in spec:
            values[name] = spec["default"]
        else:
            raise BundleError(f'no value assigned to required variable {name}. Variables are usually assigned in '
                              f'databricks.yml, and they can be overridden using "--var", the BUNDLE_VAR_{name} '
                              f"environment variable, or .databricks/bundle/<target>/variable-overrides.json")
    known = {"bundle.name": config["bundle"]["name"], "bundle.target": target,
             "workspace.current_user.userName": user, "workspace.current_user.short_name": short_name(user)}
    known["workspace.root_path"] = _until_stable(  # DefineDefaultWorkspaceRoot: ~/.bundle/<name>/<target>
        config.get("workspace", {}).get("root_path", f"/Workspace/Users/{user}/.bundle/${{bundle.name}}/${{bundle.target}}"),
        known.get)

    # 3. ${var.*}, ${bundle.*}, ${workspace.*}; ${var.<name>.<field>} is a field of a complex variable
    # (acceptance/bundle/variables/complex: "${var.cluster.spark_version}")
    def variable_or_known(ref: str):
        if not ref.startswith("var."):
            return known.get(ref)
        node = values
        for part in ref[4:].split("."):
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return node

    values = _until_stable(values, variable_or_known)
    config = _until_stable(config, variable_or_known)
    config["variables"] = values
    # 4. target mode
    presets = config.setdefault("presets", {})
    if config.get("mode") == "development":
        presets.setdefault("name_prefix", f"[dev {short_name(user)}] ")
        presets.setdefault("trigger_pause_status", "PAUSED")
        presets.setdefault("jobs_max_concurrent_runs", 4)
    # 5. presets
    prefix = presets.get("name_prefix", "")
    resources = config.get("resources", {})
    for job in resources.get("jobs", {}).values():
        job["name"] = prefix + job["name"]
        job.setdefault("max_concurrent_runs", presets.get("jobs_max_concurrent_runs", 0))
        if presets.get("trigger_pause_status") and isinstance(job.get("trigger"), dict):
            job["trigger"].setdefault("pause_status", presets["trigger_pause_status"])
    for kind in ("schemas", "registered_models"):
        for item in resources.get(kind, {}).values():
            item["name"] = normalize_prefix(prefix) + item["name"]
    for experiment in resources.get("experiments", {}).values():
        folder, slash, base = experiment["name"].rpartition("/")
        experiment["name"] = f"{folder}{slash}{prefix}{base}"
    for dashboard in resources.get("dashboards", {}).values():  # "Dashboards: Prefix"
        dashboard["display_name"] = prefix + dashboard["display_name"]

    # 6-7. resource references, then each volume's path
    def resource(ref: str):
        if not ref.startswith("resources."):
            return None
        node = resources
        for part in ref.split(".")[1:]:
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return node if isinstance(node, str) and not REFERENCE.search(node) else None

    for volume in resources.get("volumes", {}).values():
        parts = [_until_stable(volume[k], resource) for k in ("catalog_name", "schema_name", "name")]
        volume["volume_path"] = "/Volumes/" + "/".join(parts)
    for _ in range(10):  # a reference to a field that is itself a reference (libs/dyn/dynvar resolves chains)
        resolved = _substitute(resources, resource)
        if resolved == resources:
            break
        resources = resolved
    config["resources"] = resources
    left = sorted(set(REFERENCE.findall(yaml.safe_dump(resources))))
    if left:
        raise BundleError(f"references the deployment cannot resolve: {left}")
    # 8. What the deployment sends: a job's and a task's fields are `omitempty` (bundle/internal/tf/schema/
    # resource_job.go), so one left empty ("" or []) is not set at all.
    for job in resources.get("jobs", {}).values():
        for settings in (job, *job.get("tasks", [])):
            for field in [f for f, value in settings.items() if value in ("", [])]:
                del settings[field]
    return config


def job_parameters(config: dict, job: str = "ecom_lakehouse_pipeline") -> dict[str, str]:
    """The values `{{job.parameters.<name>}}` takes in a run started without overrides."""
    return {p["name"]: p["default"] for p in config["resources"]["jobs"][job]["parameters"]}


def grants(config: dict) -> dict[tuple[str, str], dict[str, set[str]]]:
    """{(kind, key): {principal: privileges}} of every securable the deployment grants on."""
    return {(kind, key): {g["principal"]: set(g["privileges"]) for g in item.get("grants", [])}
            for kind in ("schemas", "volumes", "registered_models") for key, item in config["resources"].get(kind, {}).items()
            if item.get("grants")}


def build_wheel(root: Path = ROOT) -> Path:
    """The wheel `bundle deploy` uploads, made by the bundle's own artifact build command in the bundle
    root (`python3` being the interpreter running the tests)."""
    import shlex
    import subprocess
    import sys

    command = shlex.split(merged_bundle(root)["artifacts"]["python_artifact"]["build"])
    if command[0] == "python3":
        command[0] = sys.executable
    done = subprocess.run(command, cwd=root, capture_output=True, text=True)
    if done.returncode != 0:
        raise BundleError(f"artifact build failed: {' '.join(command)}\n{done.stderr[-2000:]}")
    return max((root / "dist").glob("ecom_lakehouse-*.whl"), key=lambda p: p.stat().st_mtime)
