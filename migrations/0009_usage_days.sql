-- The ledger summed per owner, UTC day, kind and payer: what GET /v1/usage (this month by day) and the
-- admin users list (this month's cost per user) read. Summing the month's ledger rows instead takes
-- time linear in the owner's model calls (tens of milliseconds at 100,000); this reads at most
-- 31 days x 3 kinds x 2 payers rows per owner. Kept by statement triggers on usage_ledger, as
-- usage_daily (0008) is, so every writer and every delete (GDPR erasure included) keeps it right.
-- usage_daily stays the budget check's: the narrowest read, on the way to every run's first token.
CREATE TABLE usage_days (
    owner_id           text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    day                date NOT NULL,
    kind               text NOT NULL,
    byok               boolean NOT NULL,
    calls              bigint NOT NULL DEFAULT 0,
    input_tokens       bigint NOT NULL DEFAULT 0,
    output_tokens      bigint NOT NULL DEFAULT 0,
    cache_read_tokens  bigint NOT NULL DEFAULT 0,
    cache_write_tokens bigint NOT NULL DEFAULT 0,
    cost_micros        bigint NOT NULL DEFAULT 0,
    compute_seconds    bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (owner_id, day, kind, byok)
);

-- The rows a statement removed are taken away, the rows it added are added (an UPDATE does both).
CREATE FUNCTION usage_days_apply() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP IN ('DELETE', 'UPDATE') THEN
        UPDATE usage_days d
           SET calls = d.calls - o.calls,
               input_tokens = d.input_tokens - o.input_tokens,
               output_tokens = d.output_tokens - o.output_tokens,
               cache_read_tokens = d.cache_read_tokens - o.cache_read_tokens,
               cache_write_tokens = d.cache_write_tokens - o.cache_write_tokens,
               cost_micros = d.cost_micros - o.cost_micros,
               compute_seconds = d.compute_seconds - o.compute_seconds
          FROM (SELECT owner_id, (created_at AT TIME ZONE 'UTC')::date AS day, kind, byok, count(*) AS calls,
                       sum(input_tokens) AS input_tokens, sum(output_tokens) AS output_tokens,
                       sum(cache_read_tokens) AS cache_read_tokens, sum(cache_write_tokens) AS cache_write_tokens,
                       sum(cost_micros) AS cost_micros, sum(compute_seconds) AS compute_seconds
                  FROM old_rows GROUP BY 1, 2, 3, 4) o
         WHERE d.owner_id = o.owner_id AND d.day = o.day AND d.kind = o.kind AND d.byok = o.byok;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO usage_days AS d (owner_id, day, kind, byok, calls, input_tokens, output_tokens,
                                     cache_read_tokens, cache_write_tokens, cost_micros, compute_seconds)
        SELECT owner_id, (created_at AT TIME ZONE 'UTC')::date, kind, byok, count(*),
               sum(input_tokens), sum(output_tokens), sum(cache_read_tokens), sum(cache_write_tokens),
               sum(cost_micros), sum(compute_seconds)
          FROM new_rows GROUP BY 1, 2, 3, 4
        ON CONFLICT (owner_id, day, kind, byok) DO UPDATE
           SET calls = d.calls + EXCLUDED.calls,
               input_tokens = d.input_tokens + EXCLUDED.input_tokens,
               output_tokens = d.output_tokens + EXCLUDED.output_tokens,
               cache_read_tokens = d.cache_read_tokens + EXCLUDED.cache_read_tokens,
               cache_write_tokens = d.cache_write_tokens + EXCLUDED.cache_write_tokens,
               cost_micros = d.cost_micros + EXCLUDED.cost_micros,
               compute_seconds = d.compute_seconds + EXCLUDED.compute_seconds;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER usage_days_insert AFTER INSERT ON usage_ledger
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION usage_days_apply();
CREATE TRIGGER usage_days_update AFTER UPDATE ON usage_ledger
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION usage_days_apply();
CREATE TRIGGER usage_days_delete AFTER DELETE ON usage_ledger
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION usage_days_apply();

INSERT INTO usage_days (owner_id, day, kind, byok, calls, input_tokens, output_tokens, cache_read_tokens,
                        cache_write_tokens, cost_micros, compute_seconds)
SELECT owner_id, (created_at AT TIME ZONE 'UTC')::date, kind, byok, count(*), sum(input_tokens),
       sum(output_tokens), sum(cache_read_tokens), sum(cache_write_tokens), sum(cost_micros),
       sum(compute_seconds)
  FROM usage_ledger GROUP BY 1, 2, 3, 4;
