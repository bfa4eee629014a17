"""The bundle's AI/BI dashboard: the committed file is what the analyst views build, each widget draws
columns its dataset has, the widgets tile the 6-column grid, and the deployment points it at its own gold."""
from __future__ import annotations

import copy
import json
from pathlib import Path

from ecom_lakehouse.analyst_views import views
from ecom_lakehouse.ops.dashboard import DASHBOARD_FILE, GRID_WIDTH, serialized
from tests.bundle_resolution import ROOT, resolve
from tests.unit.test_bundle import DEV_VARS, PROD_VARS


def dashboard_problems(dashboard: dict) -> list[str]:
    """What a dashboard gets wrong that Databricks would only show as a broken widget: a widget reading a
    dataset that is not there or a field its dataset's query does not select, or two widgets on one cell."""
    columns = {d["name"]: views()[d["name"]].columns if d["name"] in views() else [] for d in dashboard["datasets"]}
    problems, cells = [], {}
    for page in dashboard["pages"]:
        for item in page["layout"]:
            widget, at = item["widget"], item["position"]
            if at["x"] + at["width"] > GRID_WIDTH:
                problems.append(f"{widget['name']}: past the grid's {GRID_WIDTH} columns")
            for cell in ((x, y) for x in range(at["x"], at["x"] + at["width"]) for y in range(at["y"], at["y"] + at["height"])):
                if cell in cells:
                    problems.append(f"{widget['name']}: overlaps {cells[cell]}")
                    break
                cells[cell] = widget["name"]
            for query in widget.get("queries", []):
                dataset = query["query"]["datasetName"]
                if dataset not in columns:
                    problems.append(f"{widget['name']}: no dataset {dataset}")
                    continue
                problems += [f"{widget['name']}: {f['name']} is not a column of {dataset}"
                             for f in query["query"]["fields"] if f["name"] not in columns[dataset]]
    return problems


def test_the_committed_dashboard_is_the_one_the_analyst_views_build():
    assert DASHBOARD_FILE.read_text(encoding="utf-8") == serialized(), (
        "the dashboard is stale: run `.venv/bin/python -m ecom_lakehouse.ops.dashboard`")
    dashboard = json.loads(DASHBOARD_FILE.read_text(encoding="utf-8"))
    assert {d["name"]: "".join(d["queryLines"]) for d in dashboard["datasets"]} == {n: v.sql for n, v in views().items()}
    assert dashboard_problems(dashboard) == []


def test_each_dashboard_check_fails_on_its_fault():
    dashboard = json.loads(DASHBOARD_FILE.read_text(encoding="utf-8"))
    widgets = dashboard["pages"][0]["layout"]
    for fault, expected in (
        (lambda d: d["pages"][0]["layout"][1]["widget"]["queries"][0]["query"]["fields"].append(
            {"name": "email", "expression": "`email`"}), "email is not a column"),
        (lambda d: d["pages"][0]["layout"][2]["position"].update(y=widgets[1]["position"]["y"]), "overlaps"),
        (lambda d: d["pages"][0]["layout"][3]["position"].update(x=5), "past the grid"),
        (lambda d: d["datasets"].pop(0), "no dataset headline"),  # the first widget's
    ):
        planted = copy.deepcopy(dashboard)
        fault(planted)
        assert any(expected in p for p in dashboard_problems(planted)), expected


def test_each_deployment_points_the_dashboard_at_its_own_gold_schema_on_the_warehouse_it_names():
    for target, user, values in (("dev", "alice@example.com", DEV_VARS), ("prod", "ci@example.com", PROD_VARS)):
        config = resolve(target, user, values)
        dashboard = config["resources"]["dashboards"]["shop_overview"]
        assert dashboard["dataset_catalog"] == values["catalog"]
        assert dashboard["dataset_schema"] == config["resources"]["schemas"]["gold"]["name"]
        assert dashboard["warehouse_id"] == values["warehouse_id"]
        assert dashboard["embed_credentials"] is False  # viewers query with their own grants: gold only
        assert (ROOT / "resources" / dashboard["file_path"]).resolve() == DASHBOARD_FILE.resolve()
    dev = resolve("dev", "alice@example.com", DEV_VARS)["resources"]
    assert dev["dashboards"]["shop_overview"]["display_name"] == "[dev alice] ecom_lakehouse shop overview"
    assert dev["schemas"]["gold"]["name"] == "dev_alice_ecom_lakehouse_gold"
    assert Path(DASHBOARD_FILE).suffixes == [".lvdash", ".json"]  # the extension the workspace exports
