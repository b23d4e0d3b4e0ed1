// The measuring half of scripts/bench-usage (see there): the budget read before every run, at
// several sizes of one owner's month in the usage ledger, against the same owner's read of the
// month's ledger rows (what it summed before migration 0008), in the same run, interleaved.
//
// Environment: DATABASE_URL (a migrated database of its own), BENCH_SIZES (comma-separated ledger
// rows this month, default 1000,20000,100000), BENCH_READS (reads per variant and size, default 200).
import pg from 'pg';

import { fixed, pct } from './lib.mjs';

const SIZES = (process.env.BENCH_SIZES ?? '1000,20000,100000').split(',').map(Number);
const READS = Number(process.env.BENCH_READS ?? 200);

// What billing::quota::model_usage reads (its totals part; its runs-in-flight part is the same in both).
const DAILY = `SELECT COALESCE(sum(model_calls) FILTER (WHERE day = (now() AT TIME ZONE 'UTC')::date), 0)::int8 AS calls_today,
                      COALESCE(sum(model_tokens), 0)::int8 AS tokens_month
                 FROM usage_daily WHERE owner_id = $1 AND day >= date_trunc('month', now() AT TIME ZONE 'UTC')::date`;
// What it read before: the month's ledger rows themselves.
const LEDGER = `SELECT count(*) FILTER (WHERE created_at >= date_trunc('day', now()))::int8 AS calls_today,
                       COALESCE(sum(input_tokens + output_tokens + cache_read_tokens + cache_write_tokens), 0)::int8 AS tokens_month
                  FROM usage_ledger WHERE owner_id = $1 AND kind = 'model' AND NOT byok AND created_at >= date_trunc('month', now())`;

const db = new pg.Client({ connectionString: process.env.DATABASE_URL });
await db.connect();
const ms = async (text, owner) => {
  const t0 = process.hrtime.bigint();
  const { rows } = await db.query(text, [owner]);
  return [Number(process.hrtime.bigint() - t0) / 1e6, rows[0]];
};
console.log(`\nbudget read before each run (${READS} reads per variant and size, interleaved)`);
console.log(`${'ledger rows this month'.padEnd(24)}${'daily totals p50'.padStart(18)}${'ledger rows p50'.padStart(18)}${'ratio'.padStart(9)}`);
for (const [i, size] of SIZES.entries()) {
  const owner = `usr_bench_usage_${i}`;
  await db.query(`INSERT INTO users (id, email) VALUES ($1, $1 || '@example.com')`, [owner]);
  // Spread over this UTC month up to now (one row a minute back from now, wrapping at the month's start).
  await db.query(
    `INSERT INTO usage_ledger (id, owner_id, kind, provider, model, input_tokens, output_tokens, created_at)
     SELECT $1 || '_' || g, $1, 'model', 'anthropic', 'claude-sonnet-4-5', 1000, 200,
            now() - (g % GREATEST(1, EXTRACT(EPOCH FROM now() - (date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'))::int / 60)) * interval '1 minute'
       FROM generate_series(1, $2::int) g`,
    [owner, size],
  );
  await db.query('ANALYZE usage_ledger; ANALYZE usage_daily');
  const daily = [], ledger = [];
  for (let r = 0; r < READS; r++) {
    const [a, da] = await ms(DAILY, owner);
    const [b, le] = await ms(LEDGER, owner);
    if (da.tokens_month !== le.tokens_month || da.calls_today !== le.calls_today)
      throw new Error(`the two reads disagree at ${size} rows: ${JSON.stringify(da)} vs ${JSON.stringify(le)}`);
    daily.push(a);
    ledger.push(b);
  }
  const [d, l] = [pct(daily, 50), pct(ledger, 50)];
  console.log(`${String(size).padEnd(24)}${`${fixed(d, 3)} ms`.padStart(18)}${`${fixed(l, 3)} ms`.padStart(18)}${`${fixed(l / d, 1)}x`.padStart(9)}`);
}
await db.end();
