-- Recommender verdicts: each strategy's hits of the warm test users with their exact 95% interval, against chance and the default, and what serves and why
SELECT data_mode, strategy, hits, users, hit_rate, hit_rate_low, hit_rate_high, chance_hits, ratio_to_chance,
       versus_chance, adjusted_p, verdict, served, why
FROM strategy_verdicts
ORDER BY data_mode, served DESC, strategy
