"""The HTML report the pipeline wrote, read back as a reader gets it: the file on disk, parsed."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from ecom_lakehouse.report import CHARTS
from tests.headless_chromium import render
from tests.report_page import ReportPage, action_list


def test_the_report_shows_sales_over_time_and_as_many_restock_actions_as_gold_has_alerts(spark, pipeline):
    lake, _ = pipeline
    report = Path(lake.reports_path()) / "report.html"
    page = ReportPage()
    page.feed(report.read_text(encoding="utf-8"))
    assert {"Sales over time", "Restock action list"} <= set(page.headings)
    assert (report.parent / "sales_over_time.png").stat().st_size > 10_000
    assert all(src.startswith("data:image/png;base64,") for src in page.images)  # one file, nothing fetched
    alerts = lake.table("gold", "inventory_restock_alerts").read(spark).count()
    assert len(action_list(page)) == alerts
    assert alerts > 0 or "No product is under the cover threshold." in report.read_text(encoding="utf-8")


# Each section as a reader finds it: its heading, then an image that decoded or a table with rows, and no
# "Not built yet" placeholder.
SECTIONS_SCRIPT = """[...document.querySelectorAll('h2')].map(h => {
  const parts = [];
  for (let e = h.nextElementSibling; e && e.tagName !== 'H2' && e.tagName !== 'SCRIPT'; e = e.nextElementSibling) parts.push(e);
  return {heading: h.innerText,
          images: parts.filter(e => e.tagName === 'IMG' && e.naturalWidth > 0).length,
          rows: parts.filter(e => e.tagName === 'TABLE').map(t => t.rows.length - 1).reduce((a, b) => a + b, 0),
          placeholder: parts.some(e => e.innerText && e.innerText.startsWith('Not built yet'))};
})"""


def _months_before(first_of_month: dt.date, months: int) -> dt.date:
    index = first_of_month.year * 12 + first_of_month.month - 1 - months
    return dt.date(index // 12, index % 12 + 1, 1)


def _latest_complete_kpis(spark, lake):
    """The headline's KPIs recomputed without gold kpi_periods: revenue, units and margin from gold sales_daily,
    buyers, orders and returns from silver order_items, for the month and quarter before the latest order item's."""
    silver_items = lake.table("silver", "order_items").read(spark)
    as_of = silver_items.agg(F.max("created_at")).first()[0]
    month, quarter = dt.date(as_of.year, as_of.month, 1), dt.date(as_of.year, (as_of.month - 1) // 3 * 3 + 1, 1)
    starts = {"month": (_months_before(month, 1), month), "quarter": (_months_before(quarter, 3), quarter)}
    daily = lake.table("gold", "sales_daily").read(spark)
    expected = {}
    for period, (start, end) in starts.items():
        sales = daily.where((F.col("date") >= start) & (F.col("date") < end)).agg(
            F.sum("revenue").alias("revenue"), F.sum("cost").alias("cost"), F.sum("units").alias("units")).first()
        items = silver_items.where((F.to_date("created_at") >= start) & (F.to_date("created_at") < end))
        valid = ~F.col("status").isin("Cancelled", "Returned")
        people = items.agg(F.countDistinct(F.when(valid, F.col("user_id"))).alias("buyers"),
                           F.countDistinct(F.when(valid, F.col("order_id"))).alias("orders"),
                           F.sum((F.col("status") == "Returned").cast("int")).alias("returned"),
                           F.sum((F.col("status") != "Cancelled").cast("int")).alias("shipped")).first()
        expected[period] = {"revenue": sales["revenue"], "units": sales["units"],
                            "gross_margin_pct": (sales["revenue"] - sales["cost"]) / sales["revenue"] * 100,
                            "buyers": people["buyers"], "orders_per_buyer": people["orders"] / people["buyers"],
                            "return_rate": people["returned"] / people["shipped"]}
    return expected


def test_the_report_renders_in_chromium_with_every_section_filled_and_the_headline_equal_to_gold(spark, pipeline):
    """Looked at as a person would: headless Chromium opens the written file, no console error, no broken
    image, every section holds a chart or rows (the action list none only when gold has no alert: this small
    shop has none), and the headline's numbers equal the ones recomputed here. The full-page screenshot stays
    beside the report for a person to open."""
    lake, _ = pipeline
    report = Path(lake.reports_path()) / "report.html"
    rendered = render(report, report.parent / "report.png", evaluate={"sections": SECTIONS_SCRIPT})
    assert rendered.console_errors == [] and rendered.broken_images == []
    assert (report.parent / "report.png").stat().st_size > 100_000 and rendered.height > 3000

    sections = {s["heading"]: s for s in rendered.values["sections"]}
    assert set(sections) == {"Headline", *(title for title, _ in CHARTS.values()), "Segment profiles", "Restock action list",
                             "Recommender verdicts", "A/B hold-out", "Model checks"}
    # the verdict table shows every strategy gold has a verdict for
    assert sections["Recommender verdicts"]["rows"] == lake.table("gold", "strategy_verdicts").read(spark).count() > 0
    assert sections["A/B hold-out"]["rows"] == lake.table("gold", "ab_looks").read(spark).count() == 1  # the run's look
    empty = {h for h, s in sections.items() if s["placeholder"] or not (s["images"] or s["rows"])}
    alerts = lake.table("gold", "inventory_restock_alerts").read(spark).count()
    assert empty == (set() if alerts else {"Restock action list"})

    page = ReportPage()
    page.feed(rendered.dom)

    shown = {(c["data-period"], c["data-kpi"]): float(c["data-value"]) for c in page.kpi_cells}
    expected = _latest_complete_kpis(spark, lake)
    assert set(shown) == {(p, k) for p in expected for k in expected[p]}
    for (period, kpi), value in shown.items():
        assert value == pytest.approx(expected[period][kpi], rel=1e-3, abs=0.5 if kpi == "revenue" else 1e-3), (period, kpi)
