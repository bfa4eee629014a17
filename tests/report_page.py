"""The report as a reader gets it: the written HTML file, parsed (headings, images, sortable tables)."""
from __future__ import annotations

from html.parser import HTMLParser


class ReportPage(HTMLParser):
    """Headings, image sources, the cells of every table with class 'sortable' and the headline's value cells."""

    def __init__(self):
        super().__init__()
        self.headings, self.images, self.rows = [], [], []
        self.kpi_cells = []  # the attributes of each headline value cell (data-kpi, data-period, data-value)
        self._in, self._cell, self._sortable = None, None, False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self._sortable = attrs.get("class") == "sortable"
        elif tag == "tr" and self._sortable:
            self.rows.append([])
        elif tag in ("td", "th") and self._sortable:
            self._cell = ""
        elif tag == "td" and "data-kpi" in attrs:
            self.kpi_cells.append(attrs)
        elif tag == "img":
            self.images.append(attrs["src"])
        self._in = tag

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append(self._cell)
            self._cell = None
        elif tag == "table":
            self._sortable = False

    def handle_data(self, data):
        if self._in == "h2":
            self.headings.append(data)
        if self._cell is not None:
            self._cell += data


def action_list(page: ReportPage) -> list[dict[str, str]]:
    if not page.rows:
        return []
    header, *rows = page.rows
    return [dict(zip(header, row, strict=True)) for row in rows]
