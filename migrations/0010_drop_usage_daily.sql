-- usage_daily (0008) is no longer read: the budget check before every run sums usage_days (0009)
-- since the release before this one, and nothing else read it. Its triggers cost every ledger write
-- (each model call's row) an upsert; they go with it. Dropped in a later release than the one that
-- stopped reading it, because migrations run before the new code is deployed.
DROP TRIGGER IF EXISTS usage_daily_insert ON usage_ledger;
DROP TRIGGER IF EXISTS usage_daily_update ON usage_ledger;
DROP TRIGGER IF EXISTS usage_daily_delete ON usage_ledger;
DROP FUNCTION IF EXISTS usage_daily_apply();
DROP TABLE IF EXISTS usage_daily;
