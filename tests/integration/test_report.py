"""The HTML report the pipeline wrote, read back as a reader gets it: the file on disk, parsed."""
from __future__ import annotations

from pathlib import Path

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
