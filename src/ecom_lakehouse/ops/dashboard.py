"""The bundle's AI/BI (Lakeview) dashboard, built from the analyst views: one dataset per view, its SQL as it
is in src/ecom_lakehouse/sql, and the report's headline views as widgets on one page.

The bundle deploys the file this writes (`resources/shop_overview.dashboard.yml`: `file_path`), so the
dashboard's queries cannot drift from the views; `python -m ecom_lakehouse.ops.dashboard` rewrites it
after a view changed (tests/unit/test_dashboard.py fails until then). The serialized form follows the
`.lvdash.json` files Databricks exports (datasets with `queryLines`, pages of widgets on a 6-column grid).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from ecom_lakehouse.analyst_views import View, views

DASHBOARD_FILE = Path(__file__).resolve().parents[2] / "dashboards" / "shop_overview.lvdash.json"
GRID_WIDTH = 6

# What each view is drawn as: a table of all its columns, or a chart of (x, y) with the x axis's scale (and a
# column whose values get a colour each).
# In reading order; each widget's width and height on the grid.
WIDGETS: list[tuple[str, dict]] = [
    ("headline", {"kind": "table", "width": 6, "height": 6}),
    ("sales_by_day", {"kind": "line", "x": ("date", "temporal"), "y": "revenue", "width": 6, "height": 6}),
    ("top_categories", {"kind": "bar", "x": ("category", "categorical"), "y": "revenue", "width": 3, "height": 7}),
    ("segments", {"kind": "bar", "x": ("segment", "categorical"), "y": "share_of_revenue", "width": 3, "height": 7}),
    ("restock_actions", {"kind": "table", "width": 6, "height": 8}),
    ("funnel", {"kind": "bar", "x": ("traffic_source", "categorical"), "y": "conversion_rate", "color": "visitor",
                "width": 3, "height": 6}),
    ("model_verdicts", {"kind": "table", "width": 3, "height": 6}),
    ("recommender_verdicts", {"kind": "table", "width": 6, "height": 6}),
]


def _dataset(view: View) -> dict:
    lines = view.sql.splitlines(keepends=True)
    return {"name": view.name, "displayName": view.title.split(":")[0], "queryLines": lines}


def _widget(view: View, spec: dict) -> dict:
    encodings: dict[str, object]
    if spec["kind"] == "table":
        fields = view.columns
        encodings = {"columns": [{"fieldName": c, "displayName": c.replace("_", " ")} for c in fields]}
        version = 1
    else:
        (x, scale), y = spec["x"], spec["y"]
        fields = [x, y]
        encodings = {"x": {"fieldName": x, "scale": {"type": scale}, "displayName": x.replace("_", " ")},
                     "y": {"fieldName": y, "scale": {"type": "quantitative"}, "displayName": y.replace("_", " ")}}
        if "color" in spec:
            fields.append(spec["color"])
            encodings["color"] = {"fieldName": spec["color"], "scale": {"type": "categorical"}, "displayName": spec["color"]}
        version = 3
    return {
        "name": view.name,
        "queries": [{"name": "main_query", "query": {
            "datasetName": view.name, "fields": [{"name": f, "expression": f"`{f}`"} for f in fields],
            "disaggregated": True}}],  # each view is aggregated already: its rows as they are
        "spec": {"version": version, "widgetType": spec["kind"], "encodings": encodings,
                 "frame": {"showTitle": True, "title": view.title.split(":")[0]}},
    }


def lakeview_dashboard() -> dict:
    """The dashboard's serialized form: widgets placed left to right, top to bottom, on the 6-column grid."""
    found = views()
    layout, x, y, row_height = [{"widget": {"name": "title", "textbox_spec": (
        "# Shop overview\nFrom the gold schema, as the pipeline left it. Revenue counts orders neither cancelled nor "
        "returned; the headline compares whole months and quarters.")},
        "position": {"x": 0, "y": 0, "width": GRID_WIDTH, "height": 2}}], 0, 2, 0
    for name, spec in WIDGETS:
        if x + spec["width"] > GRID_WIDTH:
            x, y, row_height = 0, y + row_height, 0
        layout.append({"widget": _widget(found[name], spec),
                       "position": {"x": x, "y": y, "width": spec["width"], "height": spec["height"]}})
        x, row_height = x + spec["width"], max(row_height, spec["height"])
    return {"datasets": [_dataset(found[name]) for name, _ in WIDGETS],
            "pages": [{"name": "overview", "displayName": "Overview", "layout": layout}]}


def serialized() -> str:
    return json.dumps(lakeview_dashboard(), indent=2) + "\n"


if __name__ == "__main__":
    DASHBOARD_FILE.write_text(serialized(), encoding="utf-8")
    print(f"wrote {DASHBOARD_FILE}", file=sys.stderr)
