-- Model checks: each check's verdict, why, and what it changed (what is served and published)
SELECT model, data_mode, check, verdict, detail, consequence, decided_at
FROM model_verdicts
ORDER BY model, data_mode, check
