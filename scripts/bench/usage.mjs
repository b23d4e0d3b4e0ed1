// The measuring half of scripts/bench-usage (see there): the budget read before every run and the
// usage report (GET /v1/usage), at several sizes of one owner's month in the usage ledger, each
// against the same owner's read of the month's ledger rows (what they summed before migrations 0008
// and 0009), in the same run, interleaved.
//
// Environment: DATABASE_URL (a migrated database of its own), BENCH_SIZES (comma-separated ledger
// rows this month, default 1000,20000,100000), BENCH_READS (reads per variant and size, default 200).
import pg from 'pg';

import { fixed, pct } from './lib.mjs';

const SIZES = (process.env.BENCH_SIZES ?? '1000,20000,100000').split(',').map(Number);
const READS = Number(process.env.BENCH_READS ?? 200);

// What billing::quota::model_usage reads (its totals part; its runs-in-flight part is the same in both).
const DAILY = `SELECT COALESCE(sum(calls) FILTER (WHERE day = (now() AT TIME ZONE 'UTC')::date), 0)::int8 AS calls_today,
                      COALESCE(sum(input_tokens + output_tokens + cache_read_tokens + cache_write_tokens), 0)::int8 AS tokens_month
                 FROM usage_days WHERE owner_id = $1 AND kind = 'model' AND NOT byok
                  AND day >= date_trunc('month', now() AT TIME ZONE 'UTC')::date`;
// What it read before: the month's ledger rows themselves.
const LEDGER = `SELECT count(*) FILTER (WHERE created_at >= date_trunc('day', now()))::int8 AS calls_today,
                       COALESCE(sum(input_tokens + output_tokens + cache_read_tokens + cache_write_tokens), 0)::int8 AS tokens_month
                  FROM usage_ledger WHERE owner_id = $1 AND kind = 'model' AND NOT byok AND created_at >= date_trunc('month', now())`;

// What billing::usage::get reads (migration 0009's daily sums) ...
const REPORT = `SELECT to_char(day, 'YYYY-MM-DD') AS day, kind, sum(calls)::int8 AS calls,
                       sum(input_tokens + output_tokens + cache_read_tokens + cache_write_tokens)::int8 AS tokens,
                       sum(cost_micros)::int8 AS cost_micros, sum(compute_seconds)::int8 AS compute_seconds,
                       COALESCE(sum(cost_micros) FILTER (WHERE byok), 0)::int8 AS byok_cost_micros
                  FROM usage_days WHERE owner_id = $1 AND day >= date_trunc('month', now() AT TIME ZONE 'UTC')::date
                 GROUP BY 1, 2 HAVING sum(calls) > 0 ORDER BY 1, 2`;
// ... and what it read before: the month's ledger rows, by day and kind.
const REPORT_LEDGER = `SELECT to_char((created_at AT TIME ZONE 'UTC')::date, 'YYYY-MM-DD') AS day, kind, count(*)::int8 AS calls,
                              sum(input_tokens + output_tokens + cache_read_tokens + cache_write_tokens)::int8 AS tokens,
                              sum(cost_micros)::int8 AS cost_micros, sum(compute_seconds)::int8 AS compute_seconds,
                              COALESCE(sum(cost_micros) FILTER (WHERE byok), 0)::int8 AS byok_cost_micros
                         FROM usage_ledger WHERE owner_id = $1
                          AND created_at >= date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
                        GROUP BY 1, 2 ORDER BY 1, 2`;

const db = new pg.Client({ connectionString: process.env.DATABASE_URL });
await db.connect();
const ms = async (text, owner) => {
  const t0 = process.hrtime.bigint();
  const { rows } = await db.query(text, [owner]);
  return [Number(process.hrtime.bigint() - t0) / 1e6, rows];
};
const reportLines = [];
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
  await db.query('ANALYZE usage_ledger; ANALYZE usage_days');
  const daily = [], ledger = [], report = [], reportLedger = [];
  for (let r = 0; r < READS; r++) {
    const [a, [da]] = await ms(DAILY, owner);
    const [b, [le]] = await ms(LEDGER, owner);
    const [c, days] = await ms(REPORT, owner);
    const [e, rows] = await ms(REPORT_LEDGER, owner);
    if (JSON.stringify(days) !== JSON.stringify(rows))
      throw new Error(`the two usage reports disagree at ${size} rows: ${JSON.stringify(days)} vs ${JSON.stringify(rows)}`);
    report.push(c);
    reportLedger.push(e);
    if (da.tokens_month !== le.tokens_month || da.calls_today !== le.calls_today)
      throw new Error(`the two reads disagree at ${size} rows: ${JSON.stringify(da)} vs ${JSON.stringify(le)}`);
    daily.push(a);
    ledger.push(b);
  }
  const [d, l] = [pct(daily, 50), pct(ledger, 50)];
  console.log(`${String(size).padEnd(24)}${`${fixed(d, 3)} ms`.padStart(18)}${`${fixed(l, 3)} ms`.padStart(18)}${`${fixed(l / d, 1)}x`.padStart(9)}`);
  const [rd, rl] = [pct(report, 50), pct(reportLedger, 50)];
  reportLines.push(`${String(size).padEnd(24)}${`${fixed(rd, 3)} ms`.padStart(18)}${`${fixed(rl, 3)} ms`.padStart(18)}${`${fixed(rl / rd, 1)}x`.padStart(9)}`);
}
console.log(`\nusage report, GET /v1/usage (${READS} reads per variant and size, interleaved)`);
console.log(`${'ledger rows this month'.padEnd(24)}${'daily sums p50'.padStart(18)}${'ledger rows p50'.padStart(18)}${'ratio'.padStart(9)}`);
for (const line of reportLines) console.log(line);
await db.end();
