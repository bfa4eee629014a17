-- Sales by day: revenue, orders and units of orders neither cancelled nor returned, by the day they were placed
SELECT date, revenue, orders, units, gross_margin_pct
FROM sales_daily
ORDER BY date
