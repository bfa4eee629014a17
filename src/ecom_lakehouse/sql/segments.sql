-- Customer segments: each segment's share of users against its share of revenue, and its profile
SELECT segment, users, share_of_users, share_of_revenue, avg_orders, avg_spend, avg_recency_days
FROM segment_summary
ORDER BY share_of_revenue DESC
