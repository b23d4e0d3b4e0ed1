// The measuring half of scripts/bench-files (see there). Prints a table.
import pg from 'pg';

import { api as request, fixed, pct } from './lib.mjs';

const BASE = process.env.BASE_URL;
const WRITES = Number(process.env.BENCH_WRITES ?? 200);
const api = (method, path, token, body) => request(BASE, method, path, token, body);

const user = await api('POST', '/v1/auth/signup', null, { email: `bench-files-${Date.now()}@example.com`, password: 'bench-password-123' });
const token = user.access_token;
// Room for the benchmark's requests (the free tier allows 120 a minute).
const db = new pg.Client({ connectionString: process.env.DATABASE_URL });
await db.connect();
await db.query(`UPDATE users SET tier = 'enterprise', limits_override = '{"api_requests_minute": -1, "projects": 100000}' WHERE id = $1`, [user.user.id]);
await db.end();
const project = await api('POST', '/v1/projects', token, { name: 'bench-files', template: 'blank' });
const content = 'x'.repeat(1024);

async function timed(n, call) {
  const ms = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    const res = await call(i);
    await res.arrayBuffer();
    if (!res.ok) throw new Error(`${res.status} on call ${i}`);
    ms.push(performance.now() - t0);
  }
  return ms;
}
const put = (path, body) => () =>
  fetch(`${BASE}/v1/projects/${project.id}/files/${path}`, { method: 'PUT', headers: { authorization: `Bearer ${token}` }, body });

// Warm: the isolate, its connections.
await timed(20, (i) => put(`warm/${i}.txt`, content)());
await timed(20, () => fetch(`${BASE}/health`));
const health = await timed(WRITES, () => fetch(`${BASE}/health`));
const me = await timed(WRITES, () => fetch(`${BASE}/v1/me`, { headers: { authorization: `Bearer ${token}` } }));
const fresh = await timed(WRITES, (i) => put(`new/${i}.txt`, content)());
const over = await timed(WRITES, (i) => put('same.txt', `${content}${i}`)());
// A project from the largest template (its files written in the same transaction).
const CREATES = Math.min(WRITES, 100);
const made = await timed(CREATES, (i) =>
  fetch(`${BASE}/v1/projects`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify({ name: `made-${i}`, template: 'vite-react' }),
  }),
);
const removed = await timed(WRITES, (i) =>
  fetch(`${BASE}/v1/projects/${project.id}/files/new/${i}.txt`, { method: 'DELETE', headers: { authorization: `Bearer ${token}` } }),
);

const rows = [
  ['GET /health', health],
  ['GET /v1/me (authenticated, one read)', me],
  ['PUT a new file', fresh],
  ['PUT over a file', over],
  ['DELETE a file', removed],
  ['POST a project (vite-react template)', made],
];
console.log(`\nfile writes (${WRITES} of each, one after another; Worker to Postgres: ${process.env.POSTGRES_PATH})`);
console.log(`${'measure'.padEnd(40)} ${'p50'.padStart(8)} ${'p99'.padStart(8)}  p50 / GET /v1/me`);
const base = pct(me, 50);
for (const [name, xs] of rows) {
  console.log(`${name.padEnd(40)} ${fixed(pct(xs, 50), 2).padStart(6)} ms ${fixed(pct(xs, 99), 2).padStart(6)} ms  ${fixed(pct(xs, 50) / base, 2)}`);
}
