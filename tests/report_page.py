"""The report as a reader gets it: the written HTML file, parsed (headings, images, sortable tables)."""
from __future__ import annotations

from html.parser import HTMLParser


class ReportPage(HTMLParser):
    """Headings, image sources, the cells of each table with class 'sortable' and the headline's value cells."""

    def __init__(self):
        super().__init__()
        self.headings, self.images = [], []
        self.tables: dict[str, list[list[str]]] = {}  # each sortable table's rows, by the heading it stands under
        self.kpi_cells = []  # the attributes of each headline value cell (data-kpi, data-period, data-value)
        self._in, self._cell, self._sortable = None, None, False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self._sortable = attrs.get("class") == "sortable"
            if self._sortable:
                self.tables[self.headings[-1]] = []
        elif tag == "tr" and self._sortable:
            self.tables[self.headings[-1]].append([])
        elif tag in ("td", "th") and self._sortable:
            self._cell = ""
        elif tag == "td" and "data-kpi" in attrs:
            self.kpi_cells.append(attrs)
        elif tag == "img":
            self.images.append(attrs["src"])
        self._in = tag

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[self.headings[-1]][-1].append(self._cell)
            self._cell = None
        elif tag == "table":
            self._sortable = False

    def handle_data(self, data):
        if self._in == "h2":
            self.headings.append(data)
        if self._cell is not None:
            self._cell += data


def action_list(page: ReportPage) -> list[dict[str, str]]:
    """The restock action list's rows, by its column names."""
    if not page.tables.get("Restock action list"):
        return []
    header, *rows = page.tables["Restock action list"]
    return [dict(zip(header, row, strict=True)) for row in rows]
