-- Model usage that our keys paid for (not the user's own, BYOK), per owner and UTC day: what the
-- budget check before every run reads (billing::quota::model_usage). Summing the month's ledger
-- rows instead took time linear in the owner's calls (10 ms at 20,000 calls, on the way to every
-- first token); this reads at most 31 rows. Kept by statement triggers on usage_ledger, so every
-- writer of the ledger (and every delete, GDPR erasure included) keeps it right.
CREATE TABLE usage_daily (
    owner_id     text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    day          date NOT NULL,
    model_calls  bigint NOT NULL DEFAULT 0,
    model_tokens bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (owner_id, day)
);

-- One statement per ledger statement: the rows it removed are taken away, the rows it added are
-- added (an UPDATE does both).
CREATE FUNCTION usage_daily_apply() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('DELETE', 'UPDATE') THEN
        UPDATE usage_daily d
           SET model_calls = d.model_calls - o.calls, model_tokens = d.model_tokens - o.tokens
          FROM (SELECT owner_id, (created_at AT TIME ZONE 'UTC')::date AS day, count(*) AS calls,
                       sum(input_tokens + output_tokens + cache_read_tokens + cache_write_tokens) AS tokens
                  FROM old_rows WHERE kind = 'model' AND NOT byok GROUP BY 1, 2) o
         WHERE d.owner_id = o.owner_id AND d.day = o.day;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO usage_daily AS d (owner_id, day, model_calls, model_tokens)
        SELECT owner_id, (created_at AT TIME ZONE 'UTC')::date, count(*),
               sum(input_tokens + output_tokens + cache_read_tokens + cache_write_tokens)
          FROM new_rows WHERE kind = 'model' AND NOT byok GROUP BY 1, 2
        ON CONFLICT (owner_id, day) DO UPDATE
           SET model_calls = d.model_calls + EXCLUDED.model_calls,
               model_tokens = d.model_tokens + EXCLUDED.model_tokens;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER usage_daily_insert AFTER INSERT ON usage_ledger
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION usage_daily_apply();
CREATE TRIGGER usage_daily_update AFTER UPDATE ON usage_ledger
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION usage_daily_apply();
CREATE TRIGGER usage_daily_delete AFTER DELETE ON usage_ledger
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION usage_daily_apply();

INSERT INTO usage_daily (owner_id, day, model_calls, model_tokens)
SELECT owner_id, (created_at AT TIME ZONE 'UTC')::date, count(*),
       sum(input_tokens + output_tokens + cache_read_tokens + cache_write_tokens)
  FROM usage_ledger WHERE kind = 'model' AND NOT byok GROUP BY 1, 2;
