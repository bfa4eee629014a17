"""The report's restock action list on hand-made gold and silver tables, read back from the written file."""
from __future__ import annotations

import datetime as dt

from pyspark.sql import functions as F

from tests.headless_chromium import render
from tests.report_page import ReportPage, action_list

# A click on the action list's "on hand" header sorts it by that column, as numbers.
SORT_BY_ON_HAND = "[...document.querySelectorAll('table.sortable th')].find(th => th.innerText === 'on hand').click()"


def test_the_action_list_names_each_alerts_product_and_distribution_centre_in_rank_order(spark, tmp_path):
    """Hand-made: two alerts in gold, the centres in silver; the list read back from the written file."""
    from ecom_lakehouse import gold
    from ecom_lakehouse.config import Lakehouse
    from ecom_lakehouse.report import write_report

    lake = Lakehouse(root=str(tmp_path / "lake"))
    inventory = spark.createDataFrame(
        [(1, "2024-03-20"), (1, "2024-03-25"), (1, "2024-03-30"), (1, None),
         (2, "2024-03-28"), (2, "2024-03-29"), (2, None), (2, None)], "product_id long, sold_at string"
    ).withColumn("sold_at", F.col("sold_at").cast("timestamp"))
    products = spark.createDataFrame([(1, "Slim Jeans", "Acme", "Men", "Jeans", 2), (2, "Soft Socks", "Bco", "Men", "Socks", 1)],
                                     "id long, name string, brand string, department string, category string, "
                                     "distribution_center_id long")
    lake.table("gold", "inventory_restock_alerts").overwrite(
        gold.inventory_restock_alerts(inventory, products, dt.datetime(2024, 4, 1)))
    lake.table("silver", "distribution_centers").overwrite(
        spark.createDataFrame([(1, "Memphis TN"), (2, "Chicago IL")], "id long, name string"))
    report = write_report(spark, lake, str(tmp_path / "out"), echo=lambda *_: None)
    page = ReportPage()
    page.feed(report.read_text(encoding="utf-8"))
    listed = [(r["#"], r["product"], r["brand"], r["distribution centre"], r["on hand"], r["severity"])
              for r in action_list(page)]
    assert listed == [("1", "Slim Jeans", "Acme", "Chicago IL", "1", "critical"),
                      ("2", "Soft Socks", "Bco", "Memphis TN", "2", "warning")]

    # In a browser, a click on "on hand" sorts by it: the list as Chromium shows it after the click
    rendered = render(report, tmp_path / "report.png", script=SORT_BY_ON_HAND + "; " + SORT_BY_ON_HAND)
    clicked = ReportPage()
    clicked.feed(rendered.dom)
    assert rendered.console_errors == [] and [r["on hand"] for r in action_list(clicked)] == ["2", "1"]


def test_the_browser_check_sees_a_console_error_an_uncaught_exception_and_a_broken_image(tmp_path):
    """The faults the report's Chromium test must catch, planted in a page of their own."""
    page = tmp_path / "faulty.html"
    page.write_text("<!doctype html><html><body><h2>x</h2><img alt='broken chart' src='data:image/png;base64,AAAA'>"
                    "<script>console.error('planted error'); undefinedFunction();</script></body></html>")
    rendered = render(page, tmp_path / "faulty.png")
    assert rendered.broken_images == ["broken chart"]
    assert any("planted error" in e for e in rendered.console_errors)
    assert any("undefinedFunction" in e for e in rendered.console_errors)


def test_the_recommender_chart_draws_the_oracle_as_the_ceiling_where_the_data_kept_its_truth(spark, tmp_path):
    """Hand-made recommender_evaluation rows: the oracle is a dotted line at its rate, not a strategy's bar; faithful
    data, which has no truth, gets no such line."""
    from ecom_lakehouse.config import Lakehouse
    from ecom_lakehouse.report import recommender_chart

    lake = Lakehouse(root=str(tmp_path / "lake"))
    rows = [("taste", "als", "hits", 30.0), ("taste", "als", "users", 100.0), ("taste", "oracle", "hits", 60.0),
            ("taste", "oracle", "users", 100.0), ("taste", "chance", "hits", 0.5),
            ("faithful", "als", "hits", 1.0), ("faithful", "als", "users", 100.0), ("faithful", "chance", "hits", 1.2)]
    lake.table("gold", "recommender_evaluation").overwrite(spark.createDataFrame(
        [(model, metric, mode, "warm", value) for mode, model, metric, value in rows],
        "model string, metric string, data_mode string, users string, value double"))
    faithful, taste = recommender_chart(spark, lake).axes
    assert [t.get_text() for t in taste.get_xticklabels()] == ["als"]  # the oracle is no bar
    ceiling = [line for line in taste.get_lines() if line.get_linestyle() == ":"]
    assert [line.get_ydata()[0] for line in ceiling] == [60.0]
    assert "oracle (the generator's truth): 60 of 100" in [t.get_text() for t in taste.get_legend().get_texts()]
    assert not [line for line in faithful.get_lines() if line.get_linestyle() == ":"]
