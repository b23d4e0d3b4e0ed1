// The API rate limit under a concurrent burst: N requests at once from one user whose limit is L get
// exactly L successes when the server's limiter is exact (GET /ready says "rate_limiter": "exact": the
// Worker's RateLimiter Durable Object), at least L otherwise (KV, e.g. on Spin); every refusal is a 429
// problem `rate_limited` with Retry-After and RateLimit-Limit / -Remaining / -Reset.
//
// The low limit is an admin's per-user override: E2E_ADMIN_EMAIL (an address in the server's
// ADMIN_EMAILS) and E2E_ADMIN_PASSWORD; without them the test skips.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { MODEL_FAKE_URL } from './lib/chat.mjs';
import { ADMIN_EMAIL, adminToken, BASE_URL, expectJson, get, newUser, patch } from './lib/client.mjs';
import { openApiDocument } from './lib/openapi.mjs';
import { objectRows } from './lib/worker-state.mjs';

const LIMIT = 5;
const BURST = 20;

test(`${BURST} concurrent requests over a limit of ${LIMIT} get ${LIMIT} successes and 429s with rate-limit headers`, async (t) => {
  if (!ADMIN_EMAIL) {
    t.skip('E2E_ADMIN_EMAIL is not set (an address in the server ADMIN_EMAILS)');
    return;
  }
  const ready = expectJson(await get('/ready'), 200);
  const exact = ready.rate_limiter === 'exact';
  const user = await newUser('ratelimit');
  const admin = await adminToken();
  const api = await openApiDocument();
  api.answers('patch', '/v1/admin/users/{id}', 200, expectJson(await patch(`/v1/admin/users/${user.user.id}`, { limits: { api_requests_minute: LIMIT } }, { token: admin }), 200));
  api.answers('get', '/v1/admin/users', 200, expectJson(await get('/v1/admin/users?limit=200', { token: admin }), 200));

  // All at once, each on its own connection (the suite's client shares six sockets).
  const answers = await Promise.all(
    Array.from({ length: BURST }, () =>
      fetch(`${BASE_URL}/v1/me`, { headers: { authorization: `Bearer ${user.access}` } }).then(async (res) => ({
        status: res.status,
        headers: res.headers,
        body: await res.text(),
      })),
    ),
  );
  const ok = answers.filter((a) => a.status === 200);
  const refused = answers.filter((a) => a.status === 429);
  assert.equal(ok.length + refused.length, BURST, `only 200 and 429: ${answers.map((a) => a.status).join(' ')}`);
  if (exact) {
    assert.equal(ok.length, LIMIT, `the exact limiter let ${ok.length} of ${BURST} through, limit ${LIMIT}`);
  } else {
    // An approximate limiter (KV) may let some extra through under a burst, never fewer than the limit.
    assert.ok(ok.length >= LIMIT, `${ok.length} of ${BURST} through, limit ${LIMIT}`);
  }
  for (const a of ok) {
    assert.equal(a.headers.get('ratelimit-limit'), String(LIMIT));
  }
  for (const a of refused) {
    const problem = JSON.parse(a.body);
    assert.equal(problem.code, 'rate_limited');
    assert.match(a.headers.get('content-type') || '', /^application\/problem\+json/);
    const retry = Number(a.headers.get('retry-after'));
    assert.ok(Number.isInteger(retry) && retry >= 1 && retry <= 60, `Retry-After ${a.headers.get('retry-after')}`);
    assert.equal(a.headers.get('ratelimit-limit'), String(LIMIT));
    assert.equal(a.headers.get('ratelimit-remaining'), '0');
    const reset = Number(a.headers.get('ratelimit-reset'));
    assert.ok(Number.isInteger(reset) && reset >= 1 && reset <= 60, `RateLimit-Reset ${a.headers.get('ratelimit-reset')}`);
  }
  // Another user is not limited by this one's burst.
  const other = await newUser('ratelimit-other');
  const r = await fetch(`${BASE_URL}/v1/me`, { headers: { authorization: `Bearer ${other.access}` } });
  assert.equal(r.status, 200);
});

// The hit goes out beside the user's lookup, on the limit the limiter remembers for the user, and is
// judged on the user's own limit once read: a limit lowered or raised since the last request still holds.
test('a changed limit holds at once: a burst after it was lowered, a request after it was raised', async (t) => {
  if (!ADMIN_EMAIL) {
    t.skip('E2E_ADMIN_EMAIL is not set (an address in the server ADMIN_EMAILS)');
    return;
  }
  const ready = expectJson(await get('/ready'), 200);
  const user = await newUser('ratelimit-change');
  const admin = await adminToken();
  const me = () => fetch(`${BASE_URL}/v1/me`, { headers: { authorization: `Bearer ${user.access}` } });
  // The limiter now knows the tier's limit (far above LIMIT).
  assert.equal((await me()).status, 200);
  expectJson(await patch(`/v1/admin/users/${user.user.id}`, { limits: { api_requests_minute: LIMIT } }, { token: admin }), 200);
  const answers = await Promise.all(Array.from({ length: BURST }, me));
  const ok = answers.filter((a) => a.status === 200).length;
  const statuses = answers.map((a) => a.status).join(' ');
  assert.equal(ok + answers.filter((a) => a.status === 429).length, BURST, statuses);
  // One request of the window was made before the burst.
  if (ready.rate_limiter === 'exact') assert.equal(ok, LIMIT - 1, statuses);
  else assert.ok(ok >= LIMIT - 1, statuses);
  for (const a of answers) assert.equal(a.headers.get('ratelimit-limit'), String(LIMIT));
  // Raised: the limiter still remembers LIMIT, which the window has used up; the new limit lets one more through.
  expectJson(await patch(`/v1/admin/users/${user.user.id}`, { limits: { api_requests_minute: LIMIT + 1 } }, { token: admin }), 200);
  const raised = await me();
  assert.equal(raised.status, 200);
  assert.equal(raised.headers.get('ratelimit-limit'), String(LIMIT + 1));
  assert.equal(raised.headers.get('ratelimit-remaining'), '0');
  if (ready.rate_limiter === 'exact') assert.equal((await me()).status, 429);
});

test('the server ports (KV, SQL, rate limiter, crypto, clock, outbound HTTP) pass their conformance suites in its own runtime', async (t) => {
  // The outbound HTTP suite talks to the model fake's echo routes.
  const echo = `${MODEL_FAKE_URL}/_fake/echo`;
  const r = await get(`/v1/_conformance?http=${encodeURIComponent(echo)}`);
  if (r.status === 404) {
    t.skip('the server is not in development or test (EVERJUST_ENV)');
    return;
  }
  const body = expectJson(r, 200);
  assert.ok(Array.isArray(body.ratelimit) && body.ratelimit.length === 3, JSON.stringify(body.ratelimit));
  assert.ok(Array.isArray(body.http) && body.http.length === 5, JSON.stringify(body.http));
  for (const suite of ['kv', 'sql', 'ratelimit', 'crypto', 'clock', 'http']) {
    assert.ok(Array.isArray(body[suite]) && body[suite].length > 0, `${suite}: ${JSON.stringify(body[suite])}`);
    for (const c of body[suite]) assert.ok(c.ok, `${suite} ${c.name}: ${c.detail}`);
  }
  assert.equal(body.ok, true);
});

// The alarm armed in the Durable Object named `name` (ms since the epoch), or null, read from wrangler
// dev's local state: a SQLite file per object, its name in `__miniflare_do_name`, its alarm (ns) in
// `_cf_METADATA` key 1. Node 20 has no SQLite module; Python's is on every machine that runs the suite.
/** The alarm (ms since the epoch, or null) of the rate limiter's object for `key`. */
function localAlarm(state, key) {
  const rows = objectRows(state, 'RateLimiter', key, 'SELECT value FROM _cf_METADATA WHERE key = 1');
  assert.ok(rows, `no RateLimiter object named ${key} under ${state}`);
  const ns = rows[0]?.[0];
  return ns === undefined || ns === null ? null : Number(ns) / 1e6;
}

test("a rate-limit key's clean-up alarm is armed for two windows after its window began, not later", async (t) => {
  const state = process.env.E2E_WORKER_STATE;
  if (!state) {
    t.skip("E2E_WORKER_STATE is not set (wrangler dev's state directory; scripts/test sets it for the Worker)");
    return;
  }
  const user = await newUser('ratelimit-alarm');
  const before = Date.now();
  const r = await fetch(`${BASE_URL}/v1/me`, { headers: { authorization: `Bearer ${user.access}` } });
  assert.equal(r.status, 200);
  const after = Date.now();
  // The user's key: its first hit opens a one-minute window (starting on the minute, at most 60 s before
  // the hit) and arms the alarm that deletes the key's storage once the window has been idle for two
  // windows, plus one second. (set_alarm takes a delay: given a date, it once armed it decades ahead.)
  const alarm = localAlarm(state, `user:${user.user.id}`);
  assert.ok(alarm !== null, 'the key armed no clean-up alarm');
  const slack = 2000;
  assert.ok(
    alarm >= before - 60_000 + 121_000 - slack && alarm <= after + 121_000 + slack,
    `alarm at ${new Date(alarm).toISOString()}, hit between ${new Date(before).toISOString()} and ${new Date(after).toISOString()}`,
  );
});
