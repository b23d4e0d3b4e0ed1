// The measuring half of scripts/bench-github (see there). Prints a table; writes target/bench/github.json.
//   1. commit time of 1, 10 and 200 changed files (POST /v1/projects/{id}/github/push) against the
//      GitHub fake, with the GitHub API calls it took (the fake's count and the server's own), BENCH_RUNS
//      runs each;
//   2. webhook answer latency of a 100-file outside push (what GitHub waits for), p50/p99/max over
//      BENCH_PUSHES deliveries, against a `ping` delivery (no work), and how long until the files were
//      in the project (the work after the answer).
import fs from 'node:fs';
import { randomBytes } from 'node:crypto';
import pg from 'pg';

const BASE = process.env.BASE_URL;
const FAKE = process.env.GITHUB_FAKE_URL;
const RUNS = Number(process.env.BENCH_RUNS ?? 5);
const PUSHES = Number(process.env.BENCH_PUSHES ?? 30);
const HOOK = `${BASE}/webhooks/github`;

const pct = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)] : NaN;
};
const f1 = (x) => (Number.isFinite(x) ? x.toFixed(1) : 'n/a');
const nonce = () => randomBytes(4).toString('hex');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function call(base, method, path, { token, json, body, headers = {} } = {}) {
  const res = await fetch(base + path, {
    method,
    headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...(json ? { 'content-type': 'application/json' } : {}), ...headers },
    body: json ? JSON.stringify(json) : body,
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text.slice(0, 500)}`);
  return text ? JSON.parse(text) : null;
}
const api = (m, p, o) => call(BASE, m, p, o);
const fake = (m, p, json) => call(FAKE, m, p, { json });

const db = new pg.Client({ connectionString: process.env.DATABASE_URL });
await db.connect();
await fake('POST', '/_fake/hooks', { url: HOOK });

let inst = 700_000;
/** A user (enterprise tier, no request limit) with a project connected to a fresh repository. */
async function connected(files = { 'README.md': '# bench\n' }) {
  const installation = ++inst;
  const owner = `bench-${nonce()}`;
  await fake('POST', '/_fake/installations', { id: installation, login: owner, type: 'Organization' });
  await fake('POST', '/_fake/repos', { installation, owner, name: 'site' });
  const signup = await api('POST', '/v1/auth/signup', { json: { email: `bench-gh-${nonce()}@example.com`, password: `Bench-${nonce()}-${nonce()}` } });
  await db.query(`UPDATE users SET tier = 'enterprise', limits_override = '{"api_requests_minute": 100000}' WHERE id = $1`, [signup.user.id]);
  const token = signup.access_token;
  const project = await api('POST', '/v1/projects', { token, json: { name: `bench ${owner}` } });
  for (const [p, c] of Object.entries(files)) await api('PUT', `/v1/projects/${project.id}/files/${p}`, { token, body: c });
  const { code } = await fake('POST', '/_fake/oauth-codes', { installations: [installation] });
  const { state } = await api('POST', '/v1/github/link-state', { token, json: {} });
  await api('POST', '/v1/github/installations', { token, json: { installation_id: installation, code, state } });
  const link = await api('POST', `/v1/projects/${project.id}/github`, { token, json: { installation_id: installation, repository: `${owner}/site` } });
  if (link.sync.status !== 'ok') throw new Error(`connect: ${JSON.stringify(link.sync)}`);
  return { token, project, owner };
}

async function putMany(ctx, n, round) {
  const paths = Array.from({ length: n }, (_, i) => `src/file${String(i).padStart(3, '0')}.js`);
  // Six at a time: what a browser would do.
  for (let i = 0; i < paths.length; i += 6) {
    await Promise.all(paths.slice(i, i + 6).map((p) => api('PUT', `/v1/projects/${ctx.project.id}/files/${p}`, { token: ctx.token, body: `// round ${round}\nexport const v = '${p} ${round} ${nonce()}';\n` })));
  }
}

// ---------------------------------------------------------------- 1. commit time
const commits = [];
for (const n of [1, 10, 200]) {
  const ctx = await connected();
  const times = [];
  const calls = [];
  const reported = [];
  for (let run = 1; run <= RUNS; run++) {
    await putMany(ctx, n, run);
    const before = (await fake('GET', `/_fake/calls?repo=${ctx.owner}/site`)).total;
    const t0 = performance.now();
    const r = await api('POST', `/v1/projects/${ctx.project.id}/github/push`, { token: ctx.token, json: { message: `bench ${n} files, run ${run}` } });
    times.push(performance.now() - t0);
    const after = await fake('GET', `/_fake/calls?since=${before}&repo=${ctx.owner}/site`);
    calls.push(after.calls.length);
    reported.push(r.api_calls);
    if (r.pushed.length !== n) throw new Error(`push of ${n}: pushed ${r.pushed.length}`);
  }
  commits.push({ files: n, runs: RUNS, ms_p50: pct(times, 50), ms_min: Math.min(...times), ms_max: Math.max(...times), api_calls: pct(calls, 50), api_calls_reported: pct(reported, 50), expected_calls: n + 4 });
}

// ---------------------------------------------------------------- 2. webhook latency
const ctx = await connected();
const files100 = (round) => Object.fromEntries(Array.from({ length: 100 }, (_, i) => [`pages/p${String(i).padStart(3, '0')}.html`, `<p>${round} ${i} ${nonce()}</p>\n`]));
// Warm-up (first token exchange, first blob reads).
await fake('POST', '/_fake/push', { owner: ctx.owner, name: 'site', files: files100(0), url: HOOK });
await sleep(3000);
const pings = [];
for (let i = 0; i < PUSHES; i++) {
  const r = await fake('POST', '/_fake/deliver', { event: 'ping', payload: { zen: 'Design for failure.', hook_id: 1 }, url: HOOK });
  if (r.status !== 202) throw new Error(`ping: ${r.status} ${r.body}`);
  pings.push(r.ms);
}
const answers = [];
const applied = [];
for (let round = 1; round <= PUSHES; round++) {
  const t0 = performance.now();
  const r = await fake('POST', '/_fake/push', { owner: ctx.owner, name: 'site', files: files100(round), url: HOOK });
  if (r.delivery.status !== 202) throw new Error(`push delivery: ${r.delivery.status} ${r.delivery.body}`);
  answers.push(r.delivery.ms);
  // The work after the answer: until the link records this commit.
  for (;;) {
    const link = await api('GET', `/v1/projects/${ctx.project.id}/github`, { token: ctx.token });
    if (link.last_synced_commit === r.commit) {
      if (link.last_report.pulled.length !== 100) throw new Error(`pulled ${link.last_report.pulled.length}`);
      break;
    }
    if (performance.now() - t0 > 120_000) {
      const { rows } = await db.query(`SELECT delivery_id, event, result FROM webhook_deliveries ORDER BY received_at DESC LIMIT 3`);
      throw new Error(`push ${round} was not applied within 120 s; last deliveries: ${JSON.stringify(rows)}; link error: ${link.last_error}`);
    }
    await sleep(50);
  }
  applied.push(performance.now() - t0);
}
const webhook = {
  pushes: PUSHES,
  files_per_push: 100,
  answer_ms: { p50: pct(answers, 50), p99: pct(answers, 99), max: Math.max(...answers) },
  ping_answer_ms: { p50: pct(pings, 50), p99: pct(pings, 99) },
  applied_ms: { p50: pct(applied, 50), p99: pct(applied, 99) },
  goal_p99_ms: 100,
};
await db.end();

console.log('\ncommit to the GitHub fake (POST /v1/projects/{id}/github/push)');
console.log('files  runs  p50 ms   min ms   max ms   API calls (fake / server / files+4)');
for (const c of commits) {
  console.log(`${String(c.files).padStart(5)}  ${String(c.runs).padStart(4)}  ${f1(c.ms_p50).padStart(7)}  ${f1(c.ms_min).padStart(7)}  ${f1(c.ms_max).padStart(7)}   ${c.api_calls} / ${c.api_calls_reported} / ${c.expected_calls}`);
}
console.log(`\nwebhook: ${PUSHES} outside pushes of 100 files each`);
console.log(`  answer    p50 ${f1(webhook.answer_ms.p50)} ms  p99 ${f1(webhook.answer_ms.p99)} ms  max ${f1(webhook.answer_ms.max)} ms  (goal p99 < 100 ms)`);
console.log(`  ping      p50 ${f1(webhook.ping_answer_ms.p50)} ms  p99 ${f1(webhook.ping_answer_ms.p99)} ms  (no work: the floor)`);
console.log(`  applied   p50 ${f1(webhook.applied_ms.p50)} ms  p99 ${f1(webhook.applied_ms.p99)} ms  (push sent -> 100 files in the project)`);
fs.mkdirSync('target/bench', { recursive: true });
fs.writeFileSync('target/bench/github.json', JSON.stringify({ commits, webhook }, null, 2));
