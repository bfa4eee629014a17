-- Restock actions: products under 60 days of cover, most urgent first
SELECT rank, name AS product, brand, category, distribution_center_id, units_on_hand, sold_last_30d, sold_last_90d,
       days_of_cover, severity
FROM inventory_restock_alerts
ORDER BY rank
