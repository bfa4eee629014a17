-- Headline: revenue, units, gross margin, buyers, orders per buyer and return rate of each complete month and quarter
SELECT period, period_start, revenue, units, gross_margin_pct, buyers, orders_per_buyer, return_rate
FROM kpi_periods
WHERE complete
ORDER BY period, period_start DESC
