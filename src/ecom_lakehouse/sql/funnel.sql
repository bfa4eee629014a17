-- Funnel by traffic source: sessions, anonymous ones, and sessions reaching a product view, a cart and a purchase
SELECT traffic_source, sum(sessions) AS sessions, sum(anonymous_sessions) AS anonymous_sessions,
       sum(product_view_sessions) AS product_view_sessions, sum(cart_sessions) AS cart_sessions,
       sum(purchase_sessions) AS purchase_sessions,
       CAST(sum(purchase_sessions) AS DOUBLE) / sum(sessions) AS conversion_rate
FROM funnel
GROUP BY traffic_source
ORDER BY sessions DESC
