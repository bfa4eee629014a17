-- Top categories: the 15 with the most revenue, with their gross margin and return rate
SELECT department, category, revenue, gross_margin_pct, units, return_rate
FROM category_performance
ORDER BY revenue DESC
LIMIT 15
