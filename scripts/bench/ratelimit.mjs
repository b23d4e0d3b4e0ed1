// The measuring half of scripts/bench-ratelimit (see there). Prints a table; writes
// target/bench/ratelimit.json.
//
// Environment: BASE_URL (the Worker), ADMIN_EMAIL (in its ADMIN_EMAILS), BENCH_REQUESTS (requests per
// variant for the latency, default 400), BENCH_BURST (concurrent requests per burst, default 200),
// BENCH_LIMIT (the server's RATE_LIMIT_ANONYMOUS_PER_MINUTE, default 100), BENCH_USER_LIMIT (the
// per-minute limit of the burst users, default 50), BENCH_ROUNDS (rounds of bursts, default 3).
import fs from 'node:fs';

import { api as request, fixed, pct } from './lib.mjs';

const BASE = process.env.BASE_URL;
const ADMIN_EMAIL = process.env.ADMIN_EMAIL;
const REQUESTS = Number(process.env.BENCH_REQUESTS ?? 400);
const BURST = Number(process.env.BENCH_BURST ?? 200);
const LIMIT = Number(process.env.BENCH_LIMIT ?? 100);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const USER_LIMIT = Number(process.env.BENCH_USER_LIMIT ?? 50);
const ROUTE = '/v1/me';
const PASSWORD = 'bench-ratelimit-Passw0rd';

const f2 = (x) => fixed(x, 2);
const api = (method, path, token, body) => request(BASE, method, path, token, body);

const signup = (email) => api('POST', '/v1/auth/signup', null, { email, password: PASSWORD });
const admin = await signup(ADMIN_EMAIL);
if (admin.user.role !== 'admin') throw new Error(`${ADMIN_EMAIL} is not an admin: is it in ADMIN_EMAILS?`);
const tag = Date.now().toString(36);
/** A new user whose API limit the admin sets (a negative one: no limit, no check). */
async function userWithLimit(name, perMinute) {
  const u = await signup(`bench-rl-${name}-${tag}@example.com`);
  await api('PATCH', `/v1/admin/users/${u.user.id}`, admin.access_token, { limits: { api_requests_minute: perMinute } });
  return u;
}

// --- 1. cost of the check: the same route, same run, interleaved request by request ------------------

const unlimited = await userWithLimit('off', -1);
const limited = await userWithLimit('on', 100_000_000);

async function timeOne(token) {
  const t0 = performance.now();
  const res = await fetch(BASE + ROUTE, { headers: { authorization: `Bearer ${token}` } });
  await res.arrayBuffer();
  const ms = performance.now() - t0;
  return { ms, status: res.status, limited: res.headers.has('ratelimit-limit') };
}

const lat = { off: [], on: [] };
let bad = 0;
for (let i = 0; i < 30; i++) {
  await timeOne(unlimited.access_token);
  await timeOne(limited.access_token);
}
for (let i = 0; i < REQUESTS; i++) {
  // Alternate which goes first, so neither variant always runs on a warmer isolate.
  const order = i % 2 ? ['off', 'on'] : ['on', 'off'];
  for (const v of order) {
    const r = await timeOne(v === 'on' ? limited.access_token : unlimited.access_token);
    if (r.status !== 200 || r.limited !== (v === 'on')) bad++;
    lat[v].push(r.ms);
  }
}
if (bad) throw new Error(`${bad} answers were not 200, or had RateLimit-* headers when they should not (or the reverse)`);

// The Durable Object round trip alone: POST /v1/auth/login with an empty body counts the client IP
// on its RateLimiter object and then answers 400 without touching Postgres; GET /health touches
// nothing. 20 client IPs in turn (each stays under its limit; each object is warm after its first hit).
async function timeAnon(kind, i) {
  const t0 = performance.now();
  const res =
    kind === 'health'
      ? await fetch(`${BASE}/health`)
      : await fetch(`${BASE}/v1/auth/login`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', 'cf-connecting-ip': `203.0.113.${i % 20}` },
          body: '{}',
        });
  await res.arrayBuffer();
  return { ms: performance.now() - t0, status: res.status };
}
const hop = { health: [], login: [] };
const HOP_REQUESTS = Math.min(REQUESTS, 20 * Math.floor(LIMIT / 2));
for (let i = 0; i < 20; i++) await timeAnon('login', i);
for (let i = 0; i < HOP_REQUESTS; i++) {
  for (const kind of i % 2 ? ['health', 'login'] : ['login', 'health']) {
    const r = await timeAnon(kind, i);
    if (r.status !== (kind === 'health' ? 200 : 400)) throw new Error(`${kind}: ${r.status}`);
    hop[kind].push(r.ms);
  }
}

// --- 2. exactness: BURST concurrent requests against one key ---------------------------------------
//
// Per client IP: POST /v1/auth/login with an empty body, counted against the anonymous limit
// (RATE_LIMIT_ANONYMOUS_PER_MINUTE = LIMIT) before anything else: 400 = let through, 429 = refused;
// no Postgres involved, so every request reaches the limiter. Each round is a new IP (wrangler dev
// takes the client's CF-Connecting-IP; Cloudflare's edge would overwrite it).
// Per user: GET /v1/me of a user whose limit is USER_LIMIT. Authentication reads the user from
// Postgres before the limit is counted, so a request that finds no free Postgres connection (a local
// server allows 100) may fail before it reaches the limiter: such answers are counted apart.

async function burst(send) {
  const answers = await Promise.all(
    Array.from({ length: BURST }, () =>
      send().then(async (res) => {
        const text = await res.text();
        let code = '';
        try {
          code = JSON.parse(text).code || '';
        } catch {
          // Not ours (every answer of the core is JSON): say what it was.
          code = JSON.stringify(text.slice(0, 60));
        }
        return { status: res.status, code, retryAfter: res.headers.get('retry-after'), limit: res.headers.get('ratelimit-limit') };
      }, (e) => ({ status: 0, code: `connection error ${e.cause?.code || e.message}` })),
    ),
  );
  const count = {};
  for (const a of answers) {
    const k = `${a.status} ${a.code}`.trim();
    count[k] = (count[k] || 0) + 1;
  }
  return { answers, count };
}

// The server's windows are aligned to the minute. A burst that spans a minute boundary may rightly
// let a few more through: in the new window the previous one's count weighs in less every second
// (a sliding window), so a burst never starts in the last 8 s of a minute.
async function clearOfTheMinuteBoundary() {
  const left = 60_000 - (Date.now() % 60_000);
  if (left < 8_000) await new Promise((r) => setTimeout(r, left + 200));
}

const rounds = [];
for (let round = 0; round < ROUNDS; round++) {
  const ip = `198.51.100.${10 + round}`;
  await clearOfTheMinuteBoundary();
  const byIp = await burst(() =>
    fetch(`${BASE}/v1/auth/login`, { method: 'POST', headers: { 'content-type': 'application/json', 'cf-connecting-ip': ip }, body: '{}' }),
  );
  const u = await userWithLimit(`burst${round}`, USER_LIMIT);
  await clearOfTheMinuteBoundary();
  const byUser = await burst(() => fetch(BASE + ROUTE, { headers: { authorization: `Bearer ${u.access_token}` } }));
  const summary = (b, passed, limit) => {
    const allowed = b.answers.filter((a) => a.status === passed).length;
    const refused = b.answers.filter((a) => a.status === 429);
    return {
      limit,
      allowed,
      refused: refused.length,
      refused_with_headers: refused.filter((a) => a.retryAfter && a.limit === String(limit)).length,
      answers: b.count,
    };
  };
  rounds.push({ ip: summary(byIp, 400, LIMIT), user: summary(byUser, 200, USER_LIMIT) });
}

// --- report -----------------------------------------------------------------------------------------

const R = {
  route: ROUTE,
  requests_per_variant: REQUESTS,
  without_limit_p50_ms: pct(lat.off, 50),
  without_limit_p99_ms: pct(lat.off, 99),
  with_limit_p50_ms: pct(lat.on, 50),
  with_limit_p99_ms: pct(lat.on, 99),
  burst: BURST,
  ip_limit: LIMIT,
  user_limit: USER_LIMIT,
  rounds,
};
R.added_p50_ms = R.with_limit_p50_ms - R.without_limit_p50_ms;
R.added_p99_ms = R.with_limit_p99_ms - R.without_limit_p99_ms;
R.hop_requests = HOP_REQUESTS;
R.health_p50_ms = pct(hop.health, 50);
R.health_p99_ms = pct(hop.health, 99);
R.login_checked_p50_ms = pct(hop.login, 50);
R.login_checked_p99_ms = pct(hop.login, 99);

console.log(`\n1. cost of the rate-limit check: GET ${ROUTE}, ${REQUESTS} sequential requests per variant, interleaved`);
console.log(`${'variant'.padEnd(44)} ${'p50 ms'.padStart(8)} ${'p99 ms'.padStart(8)}`);
console.log(`${'without (api_requests_minute = -1: no check)'.padEnd(44)} ${f2(R.without_limit_p50_ms).padStart(8)} ${f2(R.without_limit_p99_ms).padStart(8)}`);
console.log(`${'with (RateLimiter Durable Object)'.padEnd(44)} ${f2(R.with_limit_p50_ms).padStart(8)} ${f2(R.with_limit_p99_ms).padStart(8)}`);
console.log(`${'added by the check'.padEnd(44)} ${f2(R.added_p50_ms).padStart(8)} ${f2(R.added_p99_ms).padStart(8)}`);
console.log(`the Durable Object round trip alone, ${HOP_REQUESTS} requests each, interleaved:`);
console.log(`${'GET /health (no check, no Postgres)'.padEnd(44)} ${f2(R.health_p50_ms).padStart(8)} ${f2(R.health_p99_ms).padStart(8)}`);
console.log(`${'POST /v1/auth/login {} (IP check, then 400)'.padEnd(44)} ${f2(R.login_checked_p50_ms).padStart(8)} ${f2(R.login_checked_p99_ms).padStart(8)}`);
console.log(`\n2. exactness: ${BURST} concurrent requests against one key, ${ROUNDS} rounds (a fresh key each)`);
const line = (what, r) =>
  `${what.padEnd(34)} allowed ${String(r.allowed).padStart(3)} vs limit ${String(r.limit).padStart(3)} ` +
  `(${r.allowed === r.limit ? 'exact' : `off by ${r.allowed - r.limit}`}); 429: ${r.refused} ` +
  `(${r.refused_with_headers} with Retry-After and RateLimit-*); answers ${JSON.stringify(r.answers)}`;
rounds.forEach((r, i) => {
  console.log(line(`round ${i + 1}, per IP (POST login)`, r.ip));
  console.log(line(`round ${i + 1}, per user (GET ${ROUTE})`, r.user));
});
fs.mkdirSync('target/bench', { recursive: true });
fs.writeFileSync('target/bench/ratelimit.json', JSON.stringify({ date: new Date().toISOString(), ...R }, null, 1) + '\n');
console.log('numbers: target/bench/ratelimit.json');
if (rounds.some((r) => r.ip.allowed !== r.ip.limit || r.user.allowed !== r.user.limit)) process.exitCode = 1;
