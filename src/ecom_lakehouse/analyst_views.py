"""The analyst's views over gold: the report's headline views as plain SQL, one file each in `sql/`.

The same text runs on Databricks SQL (the bundle's AI/BI dashboard, `ecom-lakehouse databricks results`),
on Athena (Terraform's named queries in the analysts' workgroup) and on Spark SQL (the twins run every one).
Table names are unqualified: each place sets the gold schema as the default (the dashboard's
`dataset_schema`, the named query's `database`, the statement's `schema`, `USE`). The text keeps to what
the dialects share: no quoted identifiers, LIMIT, and a ratio of integers cast to DOUBLE first, because
Athena (Trino) divides integers as integers (tests/unit/test_analyst_views.py checks each rule).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

SQL_DIR = Path(__file__).parent / "sql"


@dataclass(frozen=True)
class View:
    name: str  # the file's stem: the dashboard dataset's and the named query's name
    title: str  # the first line's comment: what an analyst reads it for
    sql: str  # the statement, without the title line

    @property
    def columns(self) -> list[str]:
        """The names of what it selects: each top-level item's alias, or the column it names."""
        select_list = re.search(r"^SELECT\s+(.*?)\s+FROM\s", self.sql, re.S | re.I).group(1)
        items, depth, current = [], 0, ""
        for char in select_list + ",":
            depth += {"(": 1, ")": -1}.get(char, 0)
            if char == "," and depth == 0:
                items.append(current.strip())
                current = ""
            else:
                current += char
        return [re.search(r"(\w+)$", item).group(1) for item in items]

    @property
    def table(self) -> str:
        """The gold table it reads (each view reads one)."""
        return re.search(r"\bFROM\s+(\w+)", self.sql).group(1)


def views() -> dict[str, View]:
    found = {}
    for path in sorted(SQL_DIR.glob("*.sql")):
        title, _, sql = path.read_text(encoding="utf-8").partition("\n")
        found[path.stem] = View(path.stem, title.removeprefix("--").strip(), sql.strip())
    return found
