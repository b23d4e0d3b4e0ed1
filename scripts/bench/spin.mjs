// The chat half of scripts/bench-spin (see there): time to first token and total time of a
// 2,000-delta stream from the fake model, read directly from the fake (baseline), through the
// Worker under wrangler dev and through the Spin component on the test host, interleaved; prints
// p50/p99 of what each relay adds. Both hosts share one database and one JWT secret, so one user
// and one token serve both. Prints a table; writes target/bench/spin-chat.json.
import fs from 'node:fs';
import pg from 'pg';

import { api, fixed, pct, timeStream } from './lib.mjs';

const WORKER = process.env.WORKER_URL;
const SPIN = process.env.SPIN_URL;
const MODEL = process.env.MODEL_URL;
const RUNS = Number(process.env.BENCH_RUNS ?? 10);
const DELTAS = 2000;

const f1 = (x) => fixed(x, 1);

const marker = `[scenario:long:${DELTAS}]`;

const direct = () =>
  fetch(`${MODEL}/v1/messages`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-api-key': 'bench-key', 'anthropic-version': '2023-06-01' },
    body: JSON.stringify({ model: 'claude-sonnet-4-5', max_tokens: 8192, stream: true, messages: [{ role: 'user', content: [{ type: 'text', text: marker }] }] }),
  });

// One user for both hosts, with room for the benchmark's runs.
const db = new pg.Client({ connectionString: process.env.DATABASE_URL });
await db.connect();
const signup = await api(WORKER, 'POST', '/v1/auth/signup', null, { email: `bench-spin-chat-${Date.now()}@example.com`, password: 'bench-password-123' });
const token = signup.access_token;
await db.query(`UPDATE users SET tier = 'enterprise', limits_override = '{"api_requests_minute": 100000}' WHERE id = $1`, [signup.user.id]);
await db.end();
const project = await api(WORKER, 'POST', '/v1/projects', token, { name: 'bench spin chat' });

async function via(base) {
  const session = await api(base, 'POST', `/v1/projects/${project.id}/sessions`, token, {});
  return fetch(`${base}/v1/sessions/${session.id}/messages?protocol=native`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', accept: 'text/event-stream' },
    body: JSON.stringify({ content: marker }),
  });
}

const isAnthropicText = (d) => d.includes('"text_delta"');
const isNativeText = (d) => d.includes('"type":"text_delta"');

const paths = { direct: () => timeStream(direct, isAnthropicText), worker: () => timeStream(() => via(WORKER), isNativeText), spin: () => timeStream(() => via(SPIN), isNativeText) };
const results = { direct: [], worker: [], spin: [] };
// A stream cut by the network (wrangler dev restarts the Worker when its build changes) is
// retried once and counted; a second failure ends the run.
const retried = { direct: 0, worker: 0, spin: 0 };
async function measure(name) {
  try {
    return await paths[name]();
  } catch (e) {
    retried[name]++;
    console.log(`warning: a ${name} stream failed (${e.message}${e.cause ? `: ${e.cause.message}` : ''}); once more`);
    return paths[name]();
  }
}
// Warm-up of each path.
for (const name of Object.keys(paths)) await measure(name);
for (let i = 0; i < RUNS; i++) {
  // Interleaved, so machine noise hits every path alike.
  for (const name of Object.keys(paths)) results[name].push(await measure(name));
}
for (const name of ['worker', 'spin']) {
  const short = results[name].filter((r) => r.deltas !== DELTAS).length;
  if (short) console.log(`warning: ${short} of the ${name}'s streams did not carry ${DELTAS} text deltas`);
}
const added = (path, key) => results[path].map((r, i) => r[key] - results.direct[i][key]);

console.log(`\nchat relay (${RUNS} streams of ${DELTAS} deltas per path, interleaved)`);
console.log(`${'measure'.padEnd(36)} ${'Spin'.padStart(10)} ${'Worker'.padStart(10)} ${'ratio'.padStart(7)}`);
const out = {};
for (const key of ['ttft', 'total']) {
  for (const p of [50, 99]) {
    const d = pct(results.direct.map((r) => r[key]), p);
    const s = pct(added('spin', key), p);
    const w = pct(added('worker', key), p);
    out[`${key}_p${p}`] = { direct: d, spin_added: s, worker_added: w };
    console.log(`${`${key} direct from the fake, p${p}`.padEnd(36)} ${f1(d).padStart(10)} ms`);
    console.log(`${`${key} added by the relay, p${p}`.padEnd(36)} ${f1(s).padStart(10)} ${f1(w).padStart(10)} ${(w > 0 ? (s / w).toFixed(2) : 'n/a').padStart(7)}`);
  }
}
fs.mkdirSync('target/bench', { recursive: true });
fs.writeFileSync('target/bench/spin-chat.json', JSON.stringify({ runs: RUNS, deltas: DELTAS, summary: out, retried, results }, null, 2));
