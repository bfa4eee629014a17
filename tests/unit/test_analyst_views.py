"""The analyst's views (src/ecom_lakehouse/sql) as each engine reads them: one text for Databricks SQL, Athena
and Spark SQL. sqlglot parses each in the Athena (Trino) and Databricks dialects; running them is the twins'
part (the Databricks twin runs the dashboard's datasets, the EMR twin Terraform's named queries)."""
from __future__ import annotations

import pytest
import sqlglot
from sqlglot import exp

from ecom_lakehouse.analyst_views import View, views
from ecom_lakehouse.contracts import CONTRACTS

# Athena engine version 3 is Trino: `/` of two integers is integer division (Trino's documentation,
# "Mathematical functions and operators"); Databricks SQL and Spark divide as doubles. sqlglot marks such a
# division `typed` when it reads Trino.
DIALECTS = ("athena", "databricks")


def dialect_problems(view: View) -> list[str]:
    problems = []
    for dialect in DIALECTS:
        try:
            tree = sqlglot.parse_one(view.sql, read=dialect)
        except sqlglot.errors.ParseError as error:
            problems.append(f"{dialect}: {str(error).splitlines()[0]}")
            continue
        if dialect == "athena":
            problems += [f"athena: {division.sql()} divides integers as integers: cast the numerator to DOUBLE"
                         for division in tree.find_all(exp.Div)
                         if not (isinstance(division.this, exp.Cast) and division.this.to.is_type("double"))]
    return problems


def test_each_view_reads_alike_in_athena_and_databricks_and_names_gold_tables_only():
    assert set(views()) == {"headline", "sales_by_day", "top_categories", "restock_actions", "segments", "funnel",
                            "model_verdicts", "recommender_verdicts"}
    for view in views().values():
        assert view.title and not view.sql.startswith("--"), view.name
        assert dialect_problems(view) == [], view.name
        tables = {t.name for t in sqlglot.parse_one(view.sql, read="athena").find_all(exp.Table)}
        assert tables == {view.table} and view.table in CONTRACTS, view.name  # one gold output: analysts get gold only


@pytest.mark.parametrize("sql, problem", [
    ("SELECT `revenue` FROM sales_daily", "athena: "),  # Spark's backticks: not Trino's
    ("SELECT sum(orders) / sum(units) AS r FROM sales_daily", "divides integers as integers"),
    ("SELECT TOP 5 revenue FROM sales_daily", "athena: "),
], ids=["backticks", "integer ratio", "top"])
def test_a_view_outside_the_common_ground_is_named(sql, problem):
    assert any(problem in p for p in dialect_problems(View("planted", "planted", sql)))
