// The measuring half of scripts/bench-chat (see there). Prints a table; writes target/bench/chat.json.
import http from 'node:http';
import fs from 'node:fs';
import { fork, spawn } from 'node:child_process';
import readline from 'node:readline';
import pg from 'pg';
import { streamText } from 'ai';
import { createAnthropic } from '@ai-sdk/anthropic';

import { startProfile } from './profile.mjs';
import { longText } from '../../tests/fakes/scenarios.mjs';
import { api as request, fixed, pct, readSse, timeStream } from './lib.mjs';

const BASE = process.env.BASE_URL;
// The workerd process running the Worker, without wrangler dev's proxy in front (scripts/lib.sh
// runtime_port); absent when it was not found.
const RUNTIME = process.env.RUNTIME_URL || null;
// The `ai` relay as a TypeScript Worker under the same runtime (scripts/bench/ai-relay-worker.mjs).
const WORKERD_RELAY = process.env.WORKERD_RELAY_URL || null;
const MODEL = process.env.MODEL_URL;
const RUNS = Number(process.env.BENCH_RUNS ?? 15);
const DELTAS = 2000;
// Built by scripts/bench-chat.
const FANOUT_CLIENT = process.env.FANOUT_CLIENT;

const f1 = (x) => fixed(x, 1);
const api = (method, path, token, body) => request(BASE, method, path, token, body);

const marker = `[scenario:long:${DELTAS}]`;
// The same stream from a model that takes MODEL_TTFT ms to its first token, as a real one does (hundreds
// of ms): what a relay adds to it is what its users see. A relay that does its own work (ours: the
// admission) while the model works adds only its relay of the first token; one that does its work
// first adds all of it.
const MODEL_TTFT = Number(process.env.BENCH_MODEL_TTFT_MS ?? 100);
const thinkMarker = `[scenario:long:${DELTAS}:${MODEL_TTFT}]`;

const direct = (text = marker) =>
  fetch(`${MODEL}/v1/messages`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-api-key': 'bench-key', 'anthropic-version': '2023-06-01' },
    body: JSON.stringify({ model: 'claude-sonnet-4-5', max_tokens: 8192, stream: true, messages: [{ role: 'user', content: [{ type: 'text', text }] }] }),
  });

// The Node peer: streamText from the fake, relayed as an AI SDK UI message stream.
const anthropic = createAnthropic({ baseURL: `${MODEL}/v1`, apiKey: 'bench-key' });
const peer = http.createServer(async (req, res) => {
  const q = new URL(req.url, 'http://peer').searchParams;
  const tag = q.get('tag') ?? '';
  const result = streamText({ model: anthropic('claude-sonnet-4-5'), prompt: `${q.get('think') ? thinkMarker : marker} ${tag}` });
  result.pipeUIMessageStreamToResponse(res);
});
await new Promise((r) => peer.listen(0, '127.0.0.1', r));
const PEER = `http://127.0.0.1:${peer.address().port}`;
// Node's floor: the fake's stream passed through untouched (as the TypeScript Worker's /bare is workerd's).
const bare = http.createServer(async (req, res) => {
  const tag = new URL(req.url, 'http://bare').searchParams.get('tag') ?? '';
  const upstream = await direct(`${marker} ${tag}`);
  res.writeHead(upstream.status, { 'content-type': 'text/event-stream' });
  for await (const chunk of upstream.body) res.write(chunk);
  res.end();
});
await new Promise((r) => bare.listen(0, '127.0.0.1', r));
const BARE = `http://127.0.0.1:${bare.address().port}`;

// A user with room for the benchmark's runs.
const db = new pg.Client({ connectionString: process.env.DATABASE_URL });
await db.connect();
const signup = await api('POST', '/v1/auth/signup', null, { email: `bench-${Date.now()}@example.com`, password: 'bench-password-123' });
const token = signup.access_token;
await db.query(`UPDATE users SET tier = 'enterprise', limits_override = '{"api_requests_minute": 100000}' WHERE id = $1`, [signup.user.id]);
const project = await api('POST', '/v1/projects', token, { name: 'bench' });
// A second user whose own Anthropic key pays for their runs (BYOK): the same stream, timed apart.
const own = await api('POST', '/v1/auth/signup', null, { email: `bench-own-${Date.now()}@example.com`, password: 'bench-password-123' });
await db.query(`UPDATE users SET tier = 'enterprise', limits_override = '{"api_requests_minute": 100000}' WHERE id = $1`, [own.user.id]);
await api('PUT', '/v1/keys/anthropic', own.access_token, { api_key: 'bench-own-key-1234' });
const ownProject = await api('POST', '/v1/projects', own.access_token, { name: 'bench-own' });
// A third user who already made HEAVY_CALLS model calls this month on our keys: every run's start
// weighs the month's use (billing::quota::model_usage), which must not grow with it.
const HEAVY_CALLS = Number(process.env.BENCH_HEAVY_CALLS ?? 20000);
const heavySignup = await api('POST', '/v1/auth/signup', null, { email: `bench-heavy-${Date.now()}@example.com`, password: 'bench-password-123' });
await db.query(`UPDATE users SET tier = 'enterprise', limits_override = '{"api_requests_minute": 100000, "model_calls_day": 100000000, "model_tokens_month": 100000000000}' WHERE id = $1`, [heavySignup.user.id]);
await db.query(
  `INSERT INTO usage_ledger (id, owner_id, kind, provider, model, input_tokens, output_tokens, created_at)
   SELECT 'led_bench_heavy_' || g, $1, 'model', 'anthropic', 'claude-sonnet-4-5', 1000, 200,
          now() - (g % GREATEST(1, EXTRACT(EPOCH FROM now() - (date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'))::int / 60)) * interval '1 minute'
     FROM generate_series(1, $2::int) g`,
  [heavySignup.user.id, HEAVY_CALLS],
);
await db.query('ANALYZE usage_ledger');
const heavy = { token: heavySignup.access_token, project: await api('POST', '/v1/projects', heavySignup.access_token, { name: 'bench-heavy' }) };

// A chat session is made when the user opens a chat, before any message: it is made here before the
// clock starts, and the message is timed (the peer, too, is timed from the request that asks for text).
async function viaWorker(text, protocol = 'native', base = BASE, who = { token, project }) {
  const session = await api('POST', `/v1/projects/${who.project.id}/sessions`, who.token, {});
  return Object.assign(inSession(session.id, text, protocol, base, who), { session: session.id });
}
// A message in a session that exists: a user's next message, after the room's first run.
function inSession(sessionId, text, protocol = 'native', base = BASE, who = { token, project }) {
  return () => fetch(`${base}/v1/sessions/${sessionId}/messages?protocol=${protocol}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${who.token}`, 'content-type': 'application/json', accept: 'text/event-stream' },
    body: JSON.stringify({ content: text }),
  });
}

const isAnthropicText = (d) => d.includes('"text_delta"');
const isNativeText = (d) => d.includes('"type":"text_delta"');
const isUiText = (d) => d.includes('"type":"text-delta"');
// The text each path delivered, checked against what the fake sent: a relay is only fast if it is right.
const anthropicText = (d) => JSON.parse(d).delta.text;
// Our native `text_delta` and the AI SDK's `text-delta` both carry it as `delta`.
const deltaText = (d) => JSON.parse(d).delta;
const EXPECTED = longText(DELTAS);
async function timed(path, start, isText, textOf) {
  const r = await timeStream(start, isText, textOf);
  if (r.text !== EXPECTED) throw new Error(`the ${path} path delivered other text than the fake sent (${r.text.length} of ${EXPECTED.length} chars)`);
  return r;
}

const results = { direct: [], worker: [], runtime: [], next: [], peer: [], byok: [], heavy: [], workerd: [], bare: [], roomBare: [], nodeBare: [], directThink: [], think: [], peerThink: [] };
const byok = { token: own.access_token, project: ownProject };
// Warm-up of each path.
await timed('direct', direct, isAnthropicText, anthropicText);
await timed('Worker', await viaWorker(marker), isNativeText, deltaText);
if (RUNTIME) await timed('Worker runtime', await viaWorker(marker, 'native', RUNTIME), isNativeText, deltaText);
await timed('Node peer', () => fetch(PEER), isUiText, deltaText);
await timed('Worker, own key', await viaWorker(marker, 'native', RUNTIME ?? BASE, byok), isNativeText, deltaText);
await timed('Worker, heavy user', await viaWorker(marker, 'native', RUNTIME ?? BASE, heavy), isNativeText, deltaText);
if (WORKERD_RELAY) await timed('TypeScript relay under workerd', () => fetch(WORKERD_RELAY), isUiText, deltaText);
if (WORKERD_RELAY) await timed('pass-through under workerd', () => fetch(`${WORKERD_RELAY}/bare`), isAnthropicText, anthropicText);
if (WORKERD_RELAY) {
  await fetch(`${WORKERD_RELAY}/room/prepare?tag=warm`).then((r) => r.arrayBuffer());
  await timed('pass-through via a Durable Object', () => fetch(`${WORKERD_RELAY}/room?tag=warm`), isAnthropicText, anthropicText);
}
await timed('pass-through in Node', () => fetch(BARE), isAnthropicText, anthropicText);
const stopProfile = process.env.BENCH_PROFILE ? await startProfile(process.env.INSPECTOR_PORT) : null;
if (stopProfile) {
  // Attaching the profiler through wrangler's inspector proxy resets the connections open at that
  // moment (the first timed request failed with ECONNRESET): wait until both ports answer again.
  for (let ok = 0, tries = 0; ok < 3; tries++) {
    if (tries > 50) throw new Error('the Worker did not answer again after the profiler attached');
    const up = await Promise.all([BASE, RUNTIME].filter(Boolean).map((b) => fetch(`${b}/health`).then((r) => r.ok, () => false)));
    ok = up.every(Boolean) ? ok + 1 : 0;
    await new Promise((r) => setTimeout(r, 100));
  }
}
// Each timed request names itself (a tag after the marker), so the fake's log tells when the model was
// called: a relay's time to first token is its work before the model call plus its relay after it.
const tagged = (r, tag) => Object.assign(r, { tag });
for (let i = 0; i < RUNS; i++) {
  // Interleaved, so machine noise hits every path alike.
  const tag = (path) => `bench-${path}-${i}-${Date.now()}`;
  results.direct.push(await timed('direct', direct, isAnthropicText, anthropicText));
  const w = tag('worker');
  results.worker.push(tagged(await timed('Worker', await viaWorker(`${marker} ${w}`), isNativeText, deltaText), w));
  const rt = tag('runtime');
  if (RUNTIME) {
    const first = await viaWorker(`${marker} ${rt}`, 'native', RUNTIME);
    results.runtime.push(tagged(await timed('Worker runtime', first, isNativeText, deltaText), rt));
    // The user's next message in that session: its room is running, with its Postgres connection.
    const nx = tag('next');
    results.next.push(tagged(await timed('Worker, next message', inSession(first.session, `${marker} ${nx}`, 'native', RUNTIME), isNativeText, deltaText), nx));
  }
  const b = tag('byok');
  results.byok.push(tagged(await timed('Worker, own key', await viaWorker(`${marker} ${b}`, 'native', RUNTIME ?? BASE, byok), isNativeText, deltaText), b));
  const h = tag('heavy');
  results.heavy.push(tagged(await timed('Worker, heavy user', await viaWorker(`${marker} ${h}`, 'native', RUNTIME ?? BASE, heavy), isNativeText, deltaText), h));
  if (WORKERD_RELAY) {
    const wr = tag('workerd');
    results.workerd.push(tagged(await timed('TypeScript relay under workerd', () => fetch(`${WORKERD_RELAY}/?tag=${wr}`), isUiText, deltaText), wr));
    const wb = tag('bare');
    results.bare.push(tagged(await timed('pass-through under workerd', () => fetch(`${WORKERD_RELAY}/bare?tag=${wb}`), isAnthropicText, anthropicText), wb));
    // Through a Durable Object made beforehand, as a session's room is when the session is made.
    const ro = tag('room');
    await fetch(`${WORKERD_RELAY}/room/prepare?tag=${ro}`).then((r) => r.arrayBuffer());
    results.roomBare.push(tagged(await timed('pass-through via a Durable Object', () => fetch(`${WORKERD_RELAY}/room?tag=${ro}`), isAnthropicText, anthropicText), ro));
  }
  const nb = tag('nodebare');
  results.nodeBare.push(tagged(await timed('pass-through in Node', () => fetch(`${BARE}/?tag=${nb}`), isAnthropicText, anthropicText), nb));
  const p = tag('peer');
  results.peer.push(tagged(await timed('Node peer', () => fetch(`${PEER}/?tag=${p}`), isUiText, deltaText), p));
  // A model that takes MODEL_TTFT ms to its first token: directly, through ours, through the Node peer.
  results.directThink.push(await timed('direct, thinking model', () => direct(thinkMarker), isAnthropicText, anthropicText));
  const th = tag('think');
  results.think.push(tagged(await timed('Worker, thinking model', await viaWorker(`${thinkMarker} ${th}`, 'native', RUNTIME ?? BASE), isNativeText, deltaText), th));
  const pt = tag('peerthink');
  results.peerThink.push(tagged(await timed('Node peer, thinking model', () => fetch(`${PEER}/?think=1&tag=${pt}`), isUiText, deltaText), pt));
}
// When the fake was called (ms since the epoch, whole ms: the split is good to about a millisecond).
for (const path of ['worker', 'runtime', 'next', 'peer', 'byok', 'heavy', 'workerd', 'bare', 'roomBare', 'nodeBare', 'think', 'peerThink']) {
  for (const r of results[path]) {
    const { items } = await (await fetch(`${MODEL}/_fake/requests?contains=${encodeURIComponent(r.tag)}`)).json();
    r.called = items.length ? items[0].at - r.startedAt : NaN;
  }
}
if (stopProfile) await stopProfile(process.env.BENCH_PROFILE);
if (process.env.BENCH_DUMP) {
  for (const path of ['worker', 'runtime', 'next', 'think']) {
    for (const [i, r] of results[path].entries()) console.error('DUMP', path, i, (r.ttft - results.direct[i].ttft).toFixed(1), (r.total - results.direct[i].total).toFixed(1), r.called, JSON.stringify(r.timing));
  }
}
const added = (path, key, base = 'direct') => results[path].map((r, i) => r[key] - results[base][i][key]);

const rows = [];
const row = (name, value, unit, baseName, base, goal = '') =>
  rows.push(`${name.padEnd(52)} ${f1(value).padStart(10)} ${unit.padEnd(3)} | ${baseName.padEnd(30)} ${f1(base).padStart(10)} | ${goal}`);
for (const key of ['ttft', 'total']) {
  const d = results.direct.map((r) => r[key]);
  for (const p of [50, 99]) {
    row(`${key} direct from the fake, p${p}`, pct(d, p), 'ms', '', NaN);
    if (RUNTIME) row(`${key} added by our Worker, p${p}`, pct(added('runtime', key), p), 'ms', 'added by the Node ai relay', pct(added('peer', key), p), 'ours well below');
    row(`${key} added by our Worker via wrangler's proxy, p${p}`, pct(added('worker', key), p), 'ms', 'added by the Node ai relay', pct(added('peer', key), p), RUNTIME ? '' : 'ours well below');
    if (WORKERD_RELAY) row(`${key} added by our Worker, p${p}`, pct(added(RUNTIME ? 'runtime' : 'worker', key), p), 'ms', 'added by the TS ai relay, workerd', pct(added('workerd', key), p), 'same runtime, for scale');
    // Each runtime's floor: what passing the stream through untouched adds.
    if (WORKERD_RELAY) row(`${key} added by a pass-through, workerd, p${p}`, pct(added('bare', key), p), 'ms', 'by a pass-through, Node', pct(added('nodeBare', key), p), 'the runtimes\' floors');
    if (WORKERD_RELAY) row(`${key} added by a pass-through via a DO, p${p}`, pct(added('roomBare', key), p), 'ms', 'by a pass-through, workerd', pct(added('bare', key), p), 'the floor with a room');
  }
}
// The same, from a model that takes MODEL_TTFT ms to its first token (its own time is the baseline's).
for (const key of ['ttft', 'total']) {
  for (const p of [50, 99]) {
    row(`${key} direct, model's ttft ${MODEL_TTFT} ms, p${p}`, pct(results.directThink.map((r) => r[key]), p), 'ms', '', NaN);
    row(`${key} added by our Worker, model's ttft ${MODEL_TTFT} ms, p${p}`, pct(added('think', key, 'directThink'), p), 'ms', 'added by the Node ai relay', pct(added('peerThink', key, 'directThink'), p), 'ours well below');
  }
}
// Where the time to first token goes: before the model is called (ours: authentication, rate limit,
// quota, the run stored in Postgres, the session's room) and after (the relay of the first token).
const split = (path, f) => pct(results[path].map(f), 50);
const ours = RUNTIME ? 'runtime' : 'worker';
row('ttft: request -> model called, ours, p50', split(ours, (r) => r.called), 'ms', 'Node ai relay', split('peer', (r) => r.called));
if (RUNTIME) row('ttft added by our Worker, next message in a session, p50', pct(added('next', 'ttft'), 50), 'ms', 'added by the Node ai relay', pct(added('peer', 'ttft'), 50));
if (RUNTIME) row('ttft: request -> model called, next message, p50', split('next', (r) => r.called), 'ms', 'Node ai relay', split('peer', (r) => r.called));
row('ttft added by our Worker, own key (BYOK), p50', pct(added('byok', 'ttft'), 50), 'ms', 'added by the Node ai relay', pct(added('peer', 'ttft'), 50));
// Our Worker's own account of the time before the model call (its Server-Timing header).
row('ttft: of which admit (auth, limits, run stored), p50', split(ours, (r) => r.timing.admit), 'ms', '', NaN, 'Server-Timing');
row('ttft: of which room (until its answer), p50', split(ours, (r) => r.timing.room), 'ms', '', NaN, 'Server-Timing; calls the model before');
if (WORKERD_RELAY) row('ttft: request -> model called, ours, p50', split(ours, (r) => r.called), 'ms', 'TS ai relay, workerd', split('workerd', (r) => r.called));
if (WORKERD_RELAY) row('ttft: request -> model called, pass-through, workerd, p50', split('bare', (r) => r.called), 'ms', 'pass-through, Node', split('nodeBare', (r) => r.called));
if (WORKERD_RELAY) row('ttft: request -> model called, pass-through via a DO, p50', split('roomBare', (r) => r.called), 'ms', 'pass-through, workerd', split('bare', (r) => r.called), 'the floor with a room');
row(`ttft: request -> model called, ${HEAVY_CALLS} calls this month, p50`, split('heavy', (r) => r.called), 'ms', 'a new user (ours above)', split(ours, (r) => r.called), 'the budget read must not grow with use');
row('ttft: request -> model called, own key (BYOK), p50', split('byok', (r) => r.called), 'ms', 'Node ai relay', split('peer', (r) => r.called));
row('ttft: model called -> first token at client, p50', split(ours, (r) => r.ttft - r.called), 'ms', 'Node ai relay', split('peer', (r) => r.ttft - r.called), 'direct ttft is the fake\'s part');
row('ttft: model called -> first token, own key, p50', split('byok', (r) => r.ttft - r.called), 'ms', 'Node ai relay', split('peer', (r) => r.ttft - r.called));
// The same text in fewer events: text deltas that arrive in a burst, faster than they can be relayed
// one by one, are passed on merged (functions/cloudflare/src/body_stream.rs).
const textEvents = (path) => pct(results[path].map((r) => r.deltas), 50);
row('text events per stream via our Worker, p50', textEvents(ours), '', 'via the Node ai relay', textEvents('peer'), `the fake sent ${DELTAS}`);

// --- room fan-out: N WebSocket clients, delay from the model's delta to delivery --------------------
// Baseline: a Node process with a `ws` server relaying the same paced answer to as many clients
// (scripts/bench/fanout-peer.mjs), so the figure of this machine's clients is known.
const fanPeer = fork(new URL('./fanout-peer.mjs', import.meta.url), { env: { ...process.env, MODEL_URL: MODEL } });
const fanPeerPort = await new Promise((resolve) => fanPeer.once('message', (m) => resolve(m.port)));
const peerStarts = {
  socket: async () => `ws://127.0.0.1:${fanPeerPort}/`,
  run: (content) =>
    new Promise((resolve) => {
      fanPeer.once('message', resolve);
      fanPeer.send({ run: content });
    }),
};
// The sockets connect to the Worker's runtime when it was found (production has no dev proxy).
async function roomStarts(base = RUNTIME ?? BASE) {
  const session = await api('POST', `/v1/projects/${project.id}/sessions`, token, {});
  return {
    socket: async () => base.replace('http', 'ws') + (await api('POST', `/v1/sessions/${session.id}/ws-ticket`, token, {})).url,
    run: (content) => api('POST', `/v1/sessions/${session.id}/messages`, token, { content }),
  };
}
async function fanout(clients, target) {
  const { socket, run } = target ?? (await roomStarts());
  const n = 100;
  const gap = 20;
  // The sockets are read by a Rust process with a thread per socket (scripts/bench/fanout-client),
  // which notes each arrival when it happens: read by this one Node process, the figure was mostly
  // this process's own queueing.
  const urls = [];
  for (let c = 0; c < clients; c++) urls.push(await socket());
  const child = spawn(FANOUT_CLIENT, [String(n), '60000'], { stdio: ['pipe', 'pipe', 'inherit'] });
  const lines = readline.createInterface({ input: child.stdout });
  const out = lines[Symbol.asyncIterator]();
  child.stdin.end(urls.join('\n') + '\n');
  const tag = `fan-${clients}-${Date.now()}`;
  let arrivals;
  try {
    const ready = await out.next();
    if (ready.done || ready.value !== 'ready') throw new Error('the fan-out client did not connect its sockets');
    await run(`[scenario:slow:${n}:${gap}ms] ${tag}`);
    const result = await out.next();
    if (result.done) throw new Error('the fan-out client ended without its arrivals');
    ({ arrivals } = JSON.parse(result.value));
  } finally {
    // On a failure it would otherwise read its sockets until its own deadline.
    child.kill();
  }
  const { items: log } = await (await fetch(`${MODEL}/_fake/requests?contains=${encodeURIComponent(tag)}`)).json();
  if (!log.length) throw new Error('the fake saw no request of the fan-out run');
  // When the fake handed delta k to its socket (timers drift, so not its start + k * gap).
  const { sent } = log[log.length - 1];
  if (!Array.isArray(sent) || sent.length < n) throw new Error('the fake did not record when it sent each delta');
  const delays = [];
  for (const a of arrivals) for (const [k, t] of a) delays.push(t - sent[k]);
  const complete = arrivals.filter((a) => a.length >= n).length;
  return { delays, complete };
}
const header = () => console.log(`${'measure'.padEnd(52)} ${'value'.padStart(10)}     | ${'baseline'.padEnd(30)} ${'value'.padStart(10)} | goal`);
console.log(`\nchat relay (${RUNS} streams of ${DELTAS} deltas per path, interleaved; Worker to Postgres: ${process.env.POSTGRES_PATH ?? 'direct'})`);
header();
for (const r of rows.splice(0)) console.log(r);
if (process.env.BENCH_RELAY_ONLY) {
  // Only the relay figures (quick comparisons of one change).
  await db.end();
  peer.close();
  bare.close();
  fanPeer.kill();
  process.exit(0);
}
let one = { delays: [] };
let many = { delays: [], complete: 0 };
try {
  const clients = Number(process.env.BENCH_CLIENTS ?? 100);
  // Several rounds, interleaved, their deliveries pooled: on these machines one round's p99 (the
  // 10 worst of 1,000 deliveries) of our room swung from 5 to 31 ms between rounds of the same build
  // (the Node relay's from 4 to 6). Each round is a new room (session) and a new set of sockets.
  const rounds = Math.max(1, Number(process.env.BENCH_FANOUT_ROUNDS ?? 5));
  const pooled = () => ({ delays: [], complete: 0, p99s: [] });
  const node = pooled();
  const proxied = RUNTIME ? pooled() : null;
  const add = (into, r) => {
    into.delays.push(...r.delays);
    into.complete += r.complete;
    into.p99s.push(pct(r.delays, 99));
  };
  one = pooled();
  many = pooled();
  for (let r = 0; r < rounds; r++) {
    add(one, await fanout(1));
    add(many, await fanout(clients));
    add(node, await fanout(clients, peerStarts));
    if (proxied) add(proxied, await fanout(clients, await roomStarts(BASE)));
  }
  const spread = (x) => `${fixed(Math.min(...x.p99s), 1)}-${fixed(Math.max(...x.p99s), 1)}`;
  for (const p of [50, 99]) {
    row(`fan-out, ${clients} clients: model -> delivery, p${p}`, pct(many.delays, p), 'ms', `1 client, p${p}`, pct(one.delays, p), p === 99 ? 'p99 < 10 ms' : '');
    row(`fan-out, ${clients} clients: same, p${p}`, pct(many.delays, p), 'ms', `Node ws relay, ${clients} clients`, pct(node.delays, p));
    if (proxied) row(`fan-out, ${clients} clients via wrangler's proxy, p${p}`, pct(proxied.delays, p), 'ms', `Node ws relay, ${clients} clients`, pct(node.delays, p));
  }
  rows.push(`fan-out, ${rounds} rounds pooled; p99 of single rounds: ours ${spread(many)} ms, Node ws relay ${spread(node)} ms`);
  row('fan-out, clients that got every delta', many.complete, '', 'clients', clients * rounds);
} catch (e) {
  rows.push(`fan-out failed: ${e.message}${e.cause ? ` (${e.cause.message})` : ''}`);
}

// --- replay of a 10,000-event run -----------------------------------------------------------------
// 3,334 text blocks of one delta each: run_started, step_started, 3 events per block, step_finished,
// run_finished (a burst of deltas in one block would be relayed merged into far fewer events).
const replaySession = await api('POST', `/v1/projects/${project.id}/sessions`, token, {});
const big = await fetch(`${BASE}/v1/sessions/${replaySession.id}/messages`, {
  method: 'POST',
  headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', accept: 'text/event-stream' },
  body: JSON.stringify({ content: '[scenario:blocks:3334]' }),
});
let events = 0;
await readSse(big, () => events++);
const t0 = performance.now();
let replayed = 0;
await readSse(await fetch(`${BASE}/v1/sessions/${replaySession.id}/events?after=0`, { headers: { authorization: `Bearer ${token}` } }), () => replayed++);
const replayMs = performance.now() - t0;
const h0 = performance.now();
await fetch(`${BASE}/health`).then((r) => r.text());
const healthMs = performance.now() - h0;
row(`replay of a ${replayed}-event run`, replayMs, 'ms', 'one GET /health', healthMs, `${f1(replayed / (replayMs / 1000))} events/s`);

console.log('\nroom fan-out and replay');
header();
for (const r of rows) console.log(r);
fs.mkdirSync('target/bench', { recursive: true });
fs.writeFileSync('target/bench/chat.json', JSON.stringify({ results, fanout: { one: one.delays.length, many: many.delays.length }, replay: { events: replayed, ms: replayMs } }, null, 2));
await db.end();
peer.close();
bare.close();
fanPeer.kill();
