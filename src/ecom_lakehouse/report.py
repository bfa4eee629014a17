"""`ecom-lakehouse report`: a self-contained HTML report (plus the PNG charts) from gold.

Each chart function takes a SparkSession and the Lakehouse, reads one small aggregated gold
table (tens of rows at most reach the driver) and returns a matplotlib Figure, or None when
the table is not there yet; the analysis notebook draws the same figures.
"""
from __future__ import annotations

import base64
import html
import io
import time
from pathlib import Path

import matplotlib.pyplot as plt  # headless here: matplotlib falls back to Agg; Jupyter sets inline
from pyspark.sql import SparkSession, Window
from pyspark.sql import functions as F

from ecom_lakehouse.config import Lakehouse
from ecom_lakehouse.ml.ab import Look

TOP_CATEGORIES = 15
TOP_CATEGORY_LINES = 5  # categories drawn month by month
TOP_ALERTS = 15
ACTION_LIST_ROWS = 200  # restock alerts listed in full up to this many, most urgent first


def _rows(spark, lake, name, transform=None, limit=None):
    table = lake.table("gold", name)
    if not table.exists(spark):
        return None
    df = table.read(spark)
    df = transform(df) if transform else df
    return (df.limit(limit) if limit else df).collect()


def sales_chart(spark: SparkSession, lake: Lakehouse):
    """Revenue by day with its 7- and 28-day rolling means over calendar days (a day without sales counts
    as 0): one row per day reaches the driver, a few thousand at most."""
    table = lake.table("gold", "sales_daily")
    if not table.exists(spark):
        return None
    day_number = F.datediff("date", F.lit("1970-01-01"))
    rolling = {days: F.sum("revenue").over(Window.orderBy(day_number).rangeBetween(-(days - 1), 0)) / days
               for days in (7, 28)}
    rows = (table.read(spark).select("date", "revenue", rolling[7].alias("mean_7"), rolling[28].alias("mean_28"))
            .orderBy("date").collect())
    if not rows:
        return None
    days = [r["date"] for r in rows]
    fig, ax = plt.subplots(figsize=(10, 4))
    ax.plot(days, [r["revenue"] for r in rows], color="#BBBBBB", linewidth=0.6, label="revenue per day")
    ax.plot(days, [r["mean_7"] for r in rows], color="#4C72B0", linewidth=1.2, label="7-day mean")
    ax.plot(days, [r["mean_28"] for r in rows], color="#C44E52", linewidth=1.8, label="28-day mean")
    ax.set_ylabel("revenue ($ per day)")
    ax.set_title("Sales over time (orders not cancelled or returned, by the day they were placed)")
    ax.legend()
    fig.tight_layout()
    return fig


def category_sales_chart(spark: SparkSession, lake: Lakehouse):
    """Monthly revenue of the categories with the most revenue overall (one row per month and category reaches
    the driver, a few hundred at most)."""
    table = lake.table("gold", "category_performance_monthly")
    if not table.exists(spark):
        return None
    monthly = table.read(spark).withColumn("name", F.concat_ws(" · ", F.substring("department", 1, 1), "category"))
    top = [r["name"] for r in monthly.groupBy("name").agg(F.sum("revenue").alias("revenue"))
           .orderBy(F.desc("revenue")).limit(TOP_CATEGORY_LINES).collect()]
    rows = monthly.where(F.col("name").isin(top)).select("month", "name", "revenue").orderBy("month").collect()
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(10, 4))
    for name in top:
        mine = [r for r in rows if r["name"] == name]
        ax.plot([r["month"] for r in mine], [r["revenue"] for r in mine], linewidth=1.3, label=name)
    ax.set_ylabel("revenue ($ per month)")
    ax.set_title(f"Monthly revenue of the top {len(top)} categories")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def category_chart(spark: SparkSession, lake: Lakehouse):
    rows = _rows(spark, lake, "category_performance", lambda d: d.orderBy(F.desc("revenue")), TOP_CATEGORIES)
    if not rows:
        return None
    labels = [f"{r['department'][0]} · {r['category']}" for r in rows][::-1]
    fig, ax = plt.subplots(figsize=(9, 6))
    ax.barh(labels, [r["revenue"] for r in rows][::-1], color="#4C72B0")
    ax.set_xlabel("revenue ($, orders not cancelled or returned)")
    twin = ax.twiny()
    twin.plot([r["gross_margin_pct"] for r in rows][::-1], labels, "o", color="#DD8452")
    twin.set_xlabel("gross margin % (orange dots)")
    ax.set_title(f"Top {len(rows)} categories: revenue and gross margin", pad=40)
    fig.tight_layout()
    return fig


def segment_chart(spark: SparkSession, lake: Lakehouse):
    rows = _rows(spark, lake, "segment_summary", lambda d: d.orderBy(F.desc("share_of_revenue")))
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(8, 4))
    x = range(len(rows))
    ax.bar([i - 0.2 for i in x], [r["share_of_users"] * 100 for r in rows], width=0.4, label="% of users")
    ax.bar([i + 0.2 for i in x], [r["share_of_revenue"] * 100 for r in rows], width=0.4, label="% of revenue")
    ax.set_xticks(list(x), [r["segment"] for r in rows], rotation=15, ha="right")
    ax.set_ylabel("%")
    ax.set_title("Segments (buyers by K-means, plus non-buyers): % of users vs % of revenue", fontsize=10)
    ax.legend()
    fig.tight_layout()
    return fig


def restock_chart(spark: SparkSession, lake: Lakehouse):
    rows = _rows(spark, lake, "inventory_restock_alerts", lambda d: d.orderBy("rank"), TOP_ALERTS)
    if rows is None:
        return None
    fig, ax = plt.subplots(figsize=(8, 5))
    if not rows:
        ax.text(0.5, 0.5, "no product is under the cover threshold", ha="center", va="center")
        ax.set_axis_off()
    else:
        labels = [f"#{r['rank']} product {r['product_id']} ({r['category']})" for r in rows][::-1]
        colours = ["#C44E52" if r["severity"] == "critical" else "#DD8452" for r in rows][::-1]
        ax.barh(labels, [r["days_of_cover"] for r in rows][::-1], color=colours)
        ax.set_xlabel("days of cover (unsold units / daily sales velocity)")
    ax.set_title("Restock alerts (red: critical)")
    fig.tight_layout()
    return fig


def funnel_chart(spark: SparkSession, lake: Lakehouse):
    """Anonymous and known sessions side by side: each step as a share of that visitor's sessions, and the
    purchase share by traffic source (at most ten rows reach the driver)."""
    table = lake.table("gold", "funnel")
    if not table.exists(spark):
        return None
    steps = ["sessions", "product_view_sessions", "cart_sessions", "purchase_sessions"]
    rows = table.read(spark).groupBy("visitor", "traffic_source").agg(*[F.sum(c).alias(c) for c in steps]).collect()
    if not rows:
        return None
    visitors = sorted({r["visitor"] for r in rows})
    sources = sorted({r["traffic_source"] for r in rows})
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.8 / len(visitors)
    for j, visitor in enumerate(visitors):
        mine = [r for r in rows if r["visitor"] == visitor]
        sessions = sum(r["sessions"] for r in mine)
        left.bar([i + j * width for i in range(3)], [sum(r[c] for r in mine) / sessions * 100 for c in steps[1:]],
                 width=width, label=f"{visitor} ({sessions:,} sessions)")
        by_source = {r["traffic_source"]: r for r in mine}
        right.bar([i + j * width for i in range(len(sources))],
                  [by_source[s]["purchase_sessions"] / by_source[s]["sessions"] * 100 if s in by_source else 0 for s in sources],
                  width=width, label=visitor)
    left.set_xticks([i + 0.4 - width / 2 for i in range(3)], ["product view", "cart", "purchase"])
    left.set_ylabel("% of the visitor's sessions")
    left.set_title("Session funnel: anonymous and known visitors")
    left.legend(fontsize=8)
    right.set_xticks([i + 0.4 - width / 2 for i in range(len(sources))], sources)
    right.set_ylabel("purchase sessions, % of sessions")
    right.set_title("Conversion by traffic source")
    right.legend(fontsize=8)
    fig.tight_layout()
    return fig


def recommender_chart(spark: SparkSession, lake: Lakehouse):
    """Each strategy's hit rate@10 on warm test users with its exact 95% interval (Clopper-Pearson, from its hits
    of users) and, dashed, the rate ten random unbought products in the user's gender would hit: a bar whose
    interval reaches the line is not told apart from chance; dotted, on generated taste data, the rate of the
    generator's truth (the oracle), the ceiling. A few dozen rows reach the driver."""
    from ecom_lakehouse.ml.recommend import ORACLE, STRATEGIES
    from ecom_lakehouse.ml.stats import clopper_pearson

    rows = _rows(spark, lake, "recommender_evaluation", lambda d: d.where("users = 'warm' AND metric IN ('hits', 'users')"))
    if not rows:
        return None
    value = {(r["data_mode"], r["model"], r["metric"]): r["value"] for r in rows}
    modes = sorted({r["data_mode"] for r in rows})
    fig, axes = plt.subplots(1, len(modes), figsize=(5.5 * len(modes), 4.2), squeeze=False)
    for ax, mode in zip(axes[0], modes, strict=True):
        shown = [m for m in STRATEGIES if (mode, m, "users") in value]
        hits = [int(value.get((mode, m, "hits"), 0)) for m in shown]
        users = [int(value[(mode, m, "users")]) for m in shown]
        rates = [h / n * 100 if n else 0.0 for h, n in zip(hits, users, strict=True)]
        intervals = [clopper_pearson(h, n) if n else (0.0, 0.0) for h, n in zip(hits, users, strict=True)]
        errors = [[r - low * 100 for r, (low, _) in zip(rates, intervals, strict=True)],
                  [high * 100 - r for r, (_, high) in zip(rates, intervals, strict=True)]]
        ax.bar(range(len(shown)), rates, yerr=errors, capsize=4, color="#4C72B0")
        for i, (h, n) in enumerate(zip(hits, users, strict=True)):
            ax.annotate(f"{h} of {n:,}", (i, rates[i]), textcoords="offset points", xytext=(0, 3), ha="center", fontsize=7)
        chance, warm = value.get((mode, "chance", "hits")), max(users, default=0)
        if chance is not None and warm:
            ax.axhline(chance / warm * 100, color="#C44E52", linestyle="--", label=f"chance: {chance:.1f} hits expected")
        oracle, oracle_users = value.get((mode, ORACLE, "hits")), value.get((mode, ORACLE, "users"))
        if oracle is not None and oracle_users:
            ax.axhline(oracle / oracle_users * 100, color="#55A868", linestyle=":",
                       label=f"oracle (the generator's truth): {int(oracle)} of {int(oracle_users):,}")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        ax.set_xticks(range(len(shown)), [m.replace("_", " ") for m in shown], rotation=25, ha="right", fontsize=8)
        ax.set_ylabel("hit rate@10, % of warm test users")
        ax.set_title(f"{mode} data: hits with 95% exact intervals", fontsize=10)
    fig.tight_layout()
    return fig


CHARTS = {
    "sales_over_time": ("Sales over time", sales_chart),
    "category_sales": ("Sales by top category", category_sales_chart),
    "category_revenue_margin": ("Revenue and margin by category", category_chart),
    "segments": ("Customer segments", segment_chart),
    "restock_alerts": ("Restock alerts", restock_chart),
    "funnel": ("Funnel", funnel_chart),
    "recommender": ("Recommender against baselines", recommender_chart),
}


SEGMENT_COLUMNS = {"segment": "segment", "users": "users", "share_of_users": "% of users",
                   "share_of_revenue": "% of revenue", "avg_orders": "orders per user", "avg_spend": "spend per user ($)",
                   "avg_recency_days": "days since last order", "share_repeat": "% repeat buyers",
                   "share_recent": "% ordered within a year", "share_high_spend": "% above median spend"}


def segment_section(spark: SparkSession, lake: Lakehouse) -> str:
    """Each segment's profile side by side: what separates one segment from the next is in its columns."""
    rows = _rows(spark, lake, "segment_summary", lambda d: d.orderBy(F.desc("share_of_revenue"), "segment_id"))  # <= 7
    if not rows:
        return "<h2>Segment profiles</h2><p>Not built yet (run segment).</p>"

    def cell(row, column):
        value = row[column]
        if value is None:
            return ""
        if column.startswith("share_"):
            return f"{value:.1%}"
        return f"{value:,.2f}" if isinstance(value, float) else html.escape(str(value))
    return ("<h2>Segment profiles</h2><p>Buyers' segments from K-means on their orders, spend and recency, then "
            "the users who never bought; averages per user of the segment.</p><table class='sortable'><tr>"
            + "".join(f"<th>{html.escape(label)}</th>" for label in SEGMENT_COLUMNS.values()) + "</tr>"
            + "".join("<tr>" + "".join(f"<td>{cell(r, c)}</td>" for c in SEGMENT_COLUMNS) + "</tr>" for r in rows)
            + "</table>")


# The headline numbers (gold kpi_periods): label, format, whether a rise is good, and how a change is shown
# ("relative": in % of the previous period; "points": the difference of two percentages).
KPIS = {
    "revenue": ("Revenue", "${:,.0f}", True, "relative"),
    "units": ("Units sold", "{:,}", True, "relative"),
    "gross_margin_pct": ("Gross margin", "{:.1f}%", True, "points"),
    "buyers": ("Buyers", "{:,}", True, "relative"),
    "orders_per_buyer": ("Orders per buyer", "{:.2f}", True, "relative"),
    "return_rate": ("Return rate", "{:.1%}", False, "points"),
}


def _period_label(period: str, start) -> str:
    return f"{start:%b %Y}" if period == "month" else f"{start.year} Q{(start.month - 1) // 3 + 1}"


def _change(kpi: str, current, previous) -> tuple[str, str]:
    """The change from the previous period as text and its CSS class (good, bad or flat)."""
    _, _, rise_is_good, shown_as = KPIS[kpi]
    if previous is None or current is None:
        return "no earlier period", "flat"
    if shown_as == "points":
        scale = 100 if kpi == "return_rate" else 1  # return_rate is a fraction, gross_margin_pct a percentage
        delta = (current - previous) * scale
        text = f"{delta:+.1f} pts"
    elif previous == 0:
        return "new", "flat"
    else:
        delta = (current - previous) / previous * 100
        text = f"{delta:+.1f}%"
    if round(delta, 1) == 0:
        return text, "flat"
    return text, "good" if (delta > 0) == rise_is_good else "bad"


def kpi_section(spark: SparkSession, lake: Lakehouse) -> str:
    """The headline: each KPI of the latest complete month and quarter against the period before it (at most
    four rows of gold kpi_periods reach the driver). Each value cell carries its KPI, period and raw value."""
    table = lake.table("gold", "kpi_periods")
    if not table.exists(spark):
        return "<h2>Headline</h2><p>Not built yet (run gold).</p>"
    latest_first = Window.partitionBy("period").orderBy(F.desc("period_start"))
    rows = (table.read(spark).where("complete").withColumn("recency", F.row_number().over(latest_first))
            .where("recency <= 2").collect())
    by_period = {period: sorted((r for r in rows if r["period"] == period), key=lambda r: r["recency"])
                 for period in ("month", "quarter")}
    if not by_period["month"] and not by_period["quarter"]:
        return "<h2>Headline</h2><p>No complete month in the data yet.</p>"
    header, cells = ["<th>KPI</th>"], {kpi: [f"<th>{html.escape(label)}</th>"] for kpi, (label, *_) in KPIS.items()}
    for period, (current, *earlier) in ((p, r) for p, r in by_period.items() if r):
        previous = earlier[0] if earlier else None
        header.append(f"<th>{_period_label(period, current['period_start'])}</th><th>vs "
                      + (_period_label(period, previous["period_start"]) if previous else "the period before") + "</th>")
        for kpi, (_, shown, *_) in KPIS.items():
            text, trend = _change(kpi, current[kpi], previous[kpi] if previous else None)
            cells[kpi].append(f"<td class='value' data-kpi='{kpi}' data-period='{period}' data-value='{current[kpi]}'>"
                              f"{shown.format(current[kpi])}</td><td class='{trend}'>{text}</td>")
    return ("<h2>Headline</h2><p>The latest complete month and quarter, each against the one before it.</p>"
            "<table class='kpi'><tr>" + "".join(header) + "</tr>"
            + "".join("<tr>" + "".join(c) + "</tr>" for c in cells.values()) + "</table>")


def verdicts_section(spark: SparkSession, lake: Lakehouse) -> str:
    """Every model check as a table: what was decided, why, and what it changed (e.g. why no model
    was fitted on data too thin for one)."""
    rows = _rows(spark, lake, "model_verdicts", lambda d: d.orderBy("model", "data_mode", "check"))  # a few rows
    if not rows:
        return "<h2>Model checks</h2><p>Not built yet (run segment and recommend).</p>"
    columns = ("model", "data_mode", "check", "verdict", "detail", "consequence")
    cells = "".join("<tr>" + "".join(f"<td>{html.escape(str(r[c] or ''))}</td>" for c in columns) + "</tr>" for r in rows)
    return ("<h2>Model checks</h2><table><tr>" + "".join(f"<th>{c.replace('_', ' ')}</th>" for c in columns) + "</tr>"
            + cells + "</table>")


STRATEGY_COLUMNS = {"strategy": "strategy", "hits": "hits of users", "hit_rate": "hit rate [95% interval]",
                    "chance_hits": "expected by chance", "ratio_to_chance": "ratio to chance",
                    "in_gender_share": "in the user's gender", "versus_chance": "against chance (two-sided p)",
                    "adjusted_p": "adjusted p", "verdict": "verdict", "served": "served", "why": "why"}


def strategy_verdicts_section(spark: SparkSession, lake: Lakehouse) -> str:
    """The verdict table (gold strategy_verdicts): per strategy, its served lists' hits of the warm test users with
    their exact interval, against chance and against the default, and what serves and why."""
    rows = _rows(spark, lake, "strategy_verdicts", lambda d: d.orderBy("data_mode"))  # one row per strategy
    if not rows:
        return "<h2>Recommender verdicts</h2><p>Not built yet (run recommend).</p>"

    def cell(r, column) -> str:
        value = r[column]
        if column == "hits":
            return f"{r['hits']:,} of {r['users']:,}"
        if column == "hit_rate":
            return "" if value is None else f"{value:.2%} [{r['hit_rate_low']:.2%}, {r['hit_rate_high']:.2%}]"
        if column == "versus_chance":
            return f"{value.replace('_', ' ').lower()} (p = {r['chance_p']:.2g})"
        if column == "served":
            return "yes" if value else "no"
        if value is None:
            return ""
        formats = {"chance_hits": "{:.1f}", "ratio_to_chance": "{:.2f}x", "in_gender_share": "{:.0%}", "adjusted_p": "{:.2g}"}
        return formats[column].format(value) if column in formats else html.escape(str(value))
    tables = []
    for mode in sorted({r["data_mode"] for r in rows}):
        mine = [r for r in rows if r["data_mode"] == mode]
        tables.append(f"<h3>{html.escape(mode)} data</h3><table class='sortable verdicts'><tr>"
                      + "".join(f"<th>{html.escape(label)}</th>" for label in STRATEGY_COLUMNS.values()) + "</tr>"
                      + "".join("<tr>" + "".join(f"<td>{cell(r, c)}</td>" for c in STRATEGY_COLUMNS) + "</tr>" for r in mine)
                      + "</table>")
    return ("<h2>Recommender verdicts</h2><p>Each strategy's served lists (its own products, topped up to 10 by "
            "the fallback) on the users who bought something new in the test period and had bought before. Chance is "
            "what ten random unbought products in the user's gender would hit. The default serves unless another "
            "strategy hit more validation users and then beats it on the test period (exact paired test, "
            "Holm-adjusted across the strategies tested; ALS must beat every baseline).</p>" + "".join(tables))


AB_COLUMNS = ("measured at", "servings", "treatment: hits of users", "control: hits of users", "difference",
              "always-valid p", "95% confidence sequence", "verdict")


def ab_section(spark: SparkSession, lake: Lakehouse) -> str:
    """The A/B hold-out's looks at its latest experiment (gold ab_looks), newest first: each arm's users who bought a
    product of their list since its serving with the exact interval of the rate, the difference, and the mixture
    sequential test's always-valid p-value and confidence sequence, which may be read at every look."""
    rows = _rows(spark, lake, "ab_looks", lambda d: d.orderBy(F.desc("measured_at")), limit=30)  # a look per run
    if not rows:
        return "<h2>A/B hold-out</h2><p>Not built yet (run recommend and measure).</p>"
    experiment = rows[0]["experiment"]
    looks = [Look(**r.asDict()) for r in rows if r["experiment"] == experiment]

    def arm(look: Look, name: str) -> str:
        hits, users, low, high = look.rate(name)
        return f"{hits:,} of {users:,}" + (f" ({hits / users:.2%} [{low:.2%}, {high:.2%}])" if users else "")

    def cells(look: Look) -> list[str]:
        measured = [f"{look.difference:+.2%}", f"{look.always_valid_p:.3g}",
                    f"[{look.interval_low:+.2%}, {look.interval_high:+.2%}]"] if look.difference is not None else ["", "", ""]
        return [look.measured_at.strftime("%Y-%m-%d %H:%M"), str(look.servings), arm(look, "treatment"),
                arm(look, "control"), *measured, look.verdict]
    return (f"<h2>A/B hold-out</h2><p>Experiment <i>{html.escape(experiment)}</i>: users are in control by a stable hash "
            "of their id. A user hits when they buy a product of the list recorded for them, after its serving and "
            "before the next. The p-value and the confidence sequence are always valid: they keep their 5% level "
            "however many looks are read (mixture sequential probability ratio test).</p><table class='sortable'><tr>"
            + "".join(f"<th>{c}</th>" for c in AB_COLUMNS) + "</tr>"
            + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells(look)) + "</tr>" for look in looks)
            + "</table>")


RESTOCK_COLUMNS = {"rank": "#", "name": "product", "brand": "brand", "category": "category",
                   "distribution_center": "distribution centre", "units_on_hand": "on hand",
                   "sold_last_30d": "sold 30 d", "sold_last_90d": "sold 90 d", "days_of_cover": "days of cover",
                   "severity": "severity"}


def restock_section(spark: SparkSession, lake: Lakehouse) -> str:
    """The restock alerts as an action list a buyer works through: what, where, how much is left, how fast it
    sells; sortable by any column (inline script, no network)."""
    alerts = lake.table("gold", "inventory_restock_alerts")
    if not alerts.exists(spark):
        return "<h2>Restock action list</h2><p>Not built yet (run gold).</p>"
    listed = alerts.read(spark).orderBy("rank").limit(ACTION_LIST_ROWS)
    centres = lake.table("silver", "distribution_centers")
    if centres.exists(spark):  # names are no personal data; gold keeps the id
        listed = listed.join(centres.read(spark).select(F.col("id").alias("distribution_center_id"),
                                                         F.col("name").alias("distribution_center")),
                             "distribution_center_id", "left")
    else:
        listed = listed.withColumn("distribution_center", F.col("distribution_center_id").cast("string"))
    rows = listed.orderBy("rank").collect()
    if not rows:
        return "<h2>Restock action list</h2><p>No product is under the cover threshold.</p>"
    cells = "".join("<tr>" + "".join(f"<td>{html.escape(str(r[c] if r[c] is not None else ''))}</td>"
                                     for c in RESTOCK_COLUMNS) + "</tr>" for r in rows)
    return (f"<h2>Restock action list</h2><p>{len(rows)} products under the cover threshold, most urgent first "
            "(click a column to sort).</p><table class='sortable'><tr>"
            + "".join(f"<th>{html.escape(label)}</th>" for label in RESTOCK_COLUMNS.values()) + "</tr>" + cells + "</table>")


# Click a header to sort its table by that column (numbers as numbers), again to reverse.
SORT_SCRIPT = """<script>
document.querySelectorAll('table.sortable th').forEach((th, i) => th.addEventListener('click', () => {
  const table = th.closest('table'), rows = [...table.querySelectorAll('tr')].slice(1);
  const numeric = rows.every(r => r.cells[i].innerText === '' || !isNaN(Number(r.cells[i].innerText)));
  const order = th.dataset.order = th.dataset.order === 'up' ? 'down' : 'up';
  rows.sort((a, b) => {
    const x = a.cells[i].innerText, y = b.cells[i].innerText;
    const c = numeric ? Number(x) - Number(y) : x.localeCompare(y);
    return order === 'up' ? c : -c;
  }).forEach(r => table.appendChild(r));
}));
</script>"""


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    return buffer.getvalue()


def _where(lake: Lakehouse) -> str:
    return f"{lake.catalog}.{lake.schema}" if lake.env == "databricks" else lake.root


def write_report(spark: SparkSession, lake: Lakehouse, out_dir: str, echo=print) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sections = [kpi_section(spark, lake)]
    for name, (title, chart) in CHARTS.items():
        fig = chart(spark, lake)
        if fig is None:
            sections.append(f"<h2>{html.escape(title)}</h2><p>Not built yet (run the stage that makes it).</p>")
            continue
        png = _png(fig)
        (out / f"{name}.png").write_bytes(png)
        sections.append(f"<h2>{html.escape(title)}</h2><img alt='{html.escape(title)}' "
                        f"src='data:image/png;base64,{base64.b64encode(png).decode()}'>")
    # each table after its chart (the headline is section 0)
    sections.insert(list(CHARTS).index("segments") + 2, segment_section(spark, lake))
    sections.insert(list(CHARTS).index("restock_alerts") + 3, restock_section(spark, lake))
    sections.insert(list(CHARTS).index("recommender") + 4, strategy_verdicts_section(spark, lake))
    sections.insert(list(CHARTS).index("recommender") + 5, ab_section(spark, lake))
    sections.append(verdicts_section(spark, lake))
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>ecom_lakehouse report</title>"
            "<style>body{font-family:sans-serif;max-width:1000px;margin:auto}img{max-width:100%}"
            "table{border-collapse:collapse;font-size:90%}td,th{border:1px solid #ccc;padding:4px;text-align:left;"
            "vertical-align:top}th{cursor:pointer}table.kpi td.value{font-size:130%;font-weight:bold}"
            "table.verdicts{font-size:75%}table.verdicts td:last-child{min-width:16em}"
            ".good{color:#2E7D32}.bad{color:#C62828}.flat{color:#666}"
            "@media print{img{page-break-inside:avoid}h2{page-break-after:avoid}}</style></head><body>"
            f"<h1>ecom_lakehouse report</h1><p>Generated {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} from "
            f"{html.escape(_where(lake))}. Revenue counts orders that were neither "
            "cancelled nor returned.</p>" + "".join(sections) + SORT_SCRIPT + "</body></html>")
    report = out / "report.html"
    report.write_text(page, encoding="utf-8")
    echo(f"  report: {report.resolve()}")
    return report


def publish(spark: SparkSession, lake: Lakehouse, echo=print) -> str:
    """The report stage: written in place on local disk; elsewhere (S3, a volume) written to a local folder
    first (matplotlib and the HTML need a file system) and uploaded. Returns where it is."""
    import tempfile

    from ecom_lakehouse import files

    if lake.on_local_disk:
        return str(write_report(spark, lake, lake.reports_path(), echo=echo))
    local = Path(tempfile.mkdtemp(prefix="ecom-report-"))
    write_report(spark, lake, str(local), echo=lambda *_: None)
    files.upload_folder(spark, local, lake.reports_path())
    echo(f"  report: {lake.reports_path()}/report.html")
    return lake.reports_path()
