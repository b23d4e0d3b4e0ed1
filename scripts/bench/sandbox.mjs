// The measuring half of scripts/bench-sandbox (which starts the Daytona fake, Postgres and the Worker).
// Environment: BASE_URL, DAYTONA_FAKE_URL, DATABASE_URL, JOBS_SECRET, BENCH_RUNS (default 10).
import fs from 'node:fs';
import { randomBytes } from 'node:crypto';
import pg from 'pg';

import { daytonaControls } from '../../tests/fakes/daytona.mjs';

const BASE = process.env.BASE_URL.replace(/\/+$/, '');
const FAKE = daytonaControls(process.env.DAYTONA_FAKE_URL);
const RUNS = Number(process.env.BENCH_RUNS || 10);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function call(method, path, { token, json } = {}) {
  const headers = {};
  if (token) headers.authorization = `Bearer ${token}`;
  if (json !== undefined) headers['content-type'] = 'application/json';
  const r = await fetch(`${BASE}${path}`, { method, headers, body: json === undefined ? undefined : JSON.stringify(json) });
  const text = await r.text();
  let body = null;
  try {
    body = JSON.parse(text);
  } catch {
    body = text;
  }
  return { status: r.status, body };
}

async function user() {
  const r = await call('POST', '/v1/auth/signup', {
    json: { email: `bench-${randomBytes(6).toString('hex')}@example.com`, password: `Bench-${randomBytes(8).toString('hex')}` },
  });
  if (r.status !== 201) throw new Error(`signup: ${r.status} ${JSON.stringify(r.body)}`);
  const token = r.body.access_token;
  const p = await call('POST', '/v1/projects', { token, json: { name: 'bench', template: 'static-html' } });
  if (p.status !== 201) throw new Error(`project: ${p.status} ${JSON.stringify(p.body)}`);
  return { token, project: p.body.id };
}

const pct = (xs, q) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))];
};
const fmt = (xs) => `p50 ${pct(xs, 0.5).toFixed(0)} ms, p90 ${pct(xs, 0.9).toFixed(0)} ms, min ${Math.min(...xs).toFixed(0)} ms`;

async function timedStart(u) {
  const before = (await FAKE.calls(u.project)).calls.length;
  const t0 = performance.now();
  const r = await call('POST', `/v1/projects/${u.project}/sandbox`, { token: u.token });
  const ms = performance.now() - t0;
  if (r.status !== 200 || !r.body.preview_url) throw new Error(`start: ${r.status} ${JSON.stringify(r.body)}`);
  const calls = (await FAKE.calls(u.project)).calls.slice(before);
  return { ms, calls, doc: r.body };
}

async function waitState(u, want) {
  for (let i = 0; i < 200; i++) {
    const r = await call('GET', `/v1/projects/${u.project}/sandbox`, { token: u.token });
    if (r.body.state === want) return;
    await sleep(100);
  }
  throw new Error(`never ${want}`);
}

const results = {};

// 1. start -> preview URL
for (const [label, createMs] of [['fake create 0 ms (our overhead)', 0], ['fake create 300 ms (default)', 300]]) {
  await FAKE.timing({ createMs });
  const times = [];
  let calls = null;
  for (let i = 0; i < RUNS; i++) {
    const u = await user();
    const s = await timedStart(u);
    times.push(s.ms);
    calls = s.calls;
  }
  results[label] = times;
  console.log(`start to preview URL, new sandbox, ${label}: ${fmt(times)} (${RUNS} runs)`);
  console.log(`  Daytona calls of one start: ${calls.map((c) => `${c.method} ${c.path.replace(/fake\w+/, '{id}')}`).join(', ')}`);
}
await FAKE.timing({ createMs: 300 });

// 2. second start of an unchanged project
{
  const restarts = [];
  const uploads = [];
  for (let i = 0; i < Math.min(RUNS, 5); i++) {
    const u = await user();
    await timedStart(u);
    await call('DELETE', `/v1/projects/${u.project}/sandbox`, { token: u.token });
    await waitState(u, 'stopped');
    const s = await timedStart(u);
    restarts.push(s.ms);
    uploads.push(s.calls.filter((c) => c.path.endsWith('/files/bulk-upload')).length + s.doc.uploaded_files);
  }
  console.log(`second start of an unchanged project: uploads ${uploads.join(', ')} (goal 0); start of a stopped sandbox ${fmt(restarts)}`);
}

// 3. the idle job over 10,000 rows
{
  const db = new pg.Client({ connectionString: process.env.DATABASE_URL });
  await db.connect();
  const store = fs.readFileSync(new URL('../../shared/src/sandbox/store.rs', import.meta.url), 'utf8');
  const m = /pub const DUE_QUERY: &str = "([\s\S]*?)";/.exec(store);
  if (!m) throw new Error('DUE_QUERY not found in store.rs');
  const dueQuery = m[1].replace(/\\\n\s*/g, '');
  await db.query(`INSERT INTO users (id, email, email_normalized) VALUES ('usr_bench_idle', 'idle@bench', 'idle@bench') ON CONFLICT DO NOTHING`);
  await db.query(`INSERT INTO projects (id, owner_id, name) SELECT 'prj_bench_' || g, 'usr_bench_idle', 'p' || g FROM generate_series(1, 10000) g`);
  // A realistic mix: most started and not due, some stopped (archive later), some archived (never due), 50 due now.
  await db.query(`INSERT INTO sandboxes (project_id, owner_id, provider, external_id, state, idle_minutes, last_activity_at, due_at, started_at)
    SELECT 'prj_bench_' || g, 'usr_bench_idle', 'daytona', 'bench-missing-' || g,
      CASE WHEN g % 10 = 0 THEN 'stopped' WHEN g % 7 = 0 THEN 'archived' ELSE 'started' END, 10,
      now() - (g % 9) * interval '1 minute',
      CASE WHEN g % 7 = 0 AND g % 10 <> 0 THEN NULL
           WHEN g <= 50 THEN now() - interval '1 minute'
           ELSE now() + (g % 600 + 1) * interval '1 minute' END,
      CASE WHEN g % 10 <> 0 AND g % 7 <> 0 THEN now() - interval '5 minutes' END
    FROM generate_series(1, 10000) g`);
  await db.query('ANALYZE sandboxes');
  const count = (await db.query('SELECT count(*)::int AS n FROM sandboxes')).rows[0].n;
  const plan = await db.query(`EXPLAIN (ANALYZE, BUFFERS) ${dueQuery}`, [new Date(), 50]);
  const lines = plan.rows.map((r) => r['QUERY PLAN']);
  const exec = Number(/Execution Time: ([\d.]+) ms/.exec(lines.join('\n'))?.[1]);
  const planning = Number(/Planning Time: ([\d.]+) ms/.exec(lines.join('\n'))?.[1]);
  const indexed = lines.some((l) => /Index Scan (using|on) sandboxes_due/.test(l)) && !lines.some((l) => /Seq Scan/.test(l));
  const due = (await db.query('SELECT count(*)::int AS n FROM sandboxes WHERE due_at <= now()')).rows[0].n;
  console.log(`idle query over ${count} sandbox rows (${due} due): execution ${exec} ms, planning ${planning} ms, ${indexed ? 'one range scan of the index sandboxes_due' : 'NOT the index'}`);
  for (const l of lines) console.log(`    ${l}`);
  const t0 = performance.now();
  const job = await call('POST', '/v1/_jobs/sandbox-idle', { token: process.env.JOBS_SECRET });
  const jobMs = performance.now() - t0;
  console.log(`one idle job run (${due} due of ${count}, each looked up at the fake): ${jobMs.toFixed(0)} ms, report ${JSON.stringify(job.body)}`);
  await db.end();
  if (!indexed || !(exec < 50)) process.exitCode = 1;
}
