-- Funnel: anonymous and known visitors' sessions by traffic source, and those reaching a product view, a cart and a purchase
SELECT visitor, traffic_source, sum(sessions) AS sessions, sum(product_view_sessions) AS product_view_sessions,
       sum(cart_sessions) AS cart_sessions, sum(purchase_sessions) AS purchase_sessions,
       CAST(sum(purchase_sessions) AS DOUBLE) / sum(sessions) AS conversion_rate
FROM funnel
GROUP BY visitor, traffic_source
ORDER BY visitor, sessions DESC
