// Helpers of the chat end-to-end tests: sessions, sending messages, reading the SSE event streams
// (with a WHATWG-style SSE parser over fetch, so a reader can drop after any event), the model
// fake's request log, and which kind of server this is (live rooms or runs inside the request).
//
// Environment:
//   MODEL_FAKE_URL   where the model fake (tests/fakes/anthropic.mjs) answers, default
//                    http://127.0.0.1:${MODEL_FAKE_PORT:-8791}; the server must have been started with
//                    ANTHROPIC_BASE_URL pointing there. Tests that read the fake's request log skip
//                    those checks when it does not answer.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';

import { BASE_URL, createProject, expectJson, get, newUser, post, proxyLost } from './client.mjs';

export const MODEL_FAKE_URL = (process.env.MODEL_FAKE_URL || `http://127.0.0.1:${process.env.MODEL_FAKE_PORT || 8791}`).replace(/\/+$/, '');
const STREAM_TIMEOUT_MS = Number(process.env.E2E_STREAM_TIMEOUT_MS || 60_000);
const RATE_LIMIT_BUDGET_MS = Number(process.env.E2E_RATE_LIMIT_WAIT_S ?? 150) * 1000;

export const nonce = () => randomBytes(5).toString('hex');
/** A scenario marker for the model fake, with a nonce so the fake's log can find this run's requests. */
export const scenario = (name, ...args) => {
  const n = nonce();
  return { text: `[scenario:${[name, ...args].join(':')}] run ${n}`, nonce: n };
};
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ------------------------------------------------------------------ users, projects, sessions

/** A user with a project and a session: { user, token, project, session }. */
export async function chatSetup(tag = 'chat') {
  const user = await newUser(tag);
  const project = await createProject(user.access);
  const session = await newSession(user.access, project.id);
  return { user, token: user.access, project, session };
}

export async function newSession(token, projectId, title = `chat ${nonce()}`) {
  const s = expectJson(await post(`/v1/projects/${projectId}/sessions`, { title }, { token }), 201);
  assert.match(s.id, /^ses_/);
  return s;
}

/** Every stored message of a session, oldest first (follows next_cursor). */
export async function listMessages(token, sessionId) {
  const out = [];
  let cursor = null;
  for (let i = 0; i < 50; i++) {
    const q = cursor ? `?cursor=${encodeURIComponent(cursor)}` : '';
    const body = expectJson(await get(`/v1/sessions/${sessionId}/messages${q}`, { token }), 200);
    assert.ok(Array.isArray(body.items), 'messages list has items');
    out.push(...body.items);
    cursor = body.next_cursor;
    if (!cursor) return out;
  }
  assert.fail('message listing did not end after 50 pages');
}

/** The text of a stored message (its text blocks joined). */
export const textOfBlocks = (content) =>
  (content || [])
    .filter((b) => b.type === 'text')
    .map((b) => b.text)
    .join('');

/** Polls fn until it returns a truthy value; fails after timeoutMs. */
export async function waitFor(what, fn, { timeoutMs = 30_000, everyMs = 500 } = {}) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    last = await fn();
    if (last) return last;
    if (Date.now() > deadline) assert.fail(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(everyMs);
  }
}

/** Waits until the session's run `runId` has its stored assistant message with a final status. */
export async function waitForAssistant(token, sessionId, runId, opts = {}) {
  return waitFor(
    `the assistant message of ${runId}`,
    async () => (await listMessages(token, sessionId)).find((m) => m.role === 'assistant' && m.run_id === runId && m.status !== 'running'),
    opts,
  );
}

// ------------------------------------------------------------------ SSE over fetch

/** Parses an SSE byte stream (WHATWG rules: LF / CRLF / CR, multi-line data, comments, id, event). */
export async function* parseSse(body) {
  const decoder = new TextDecoder('utf-8');
  let buf = '';
  let data = [];
  let event = '';
  let id = null;
  let lastId = null;
  const line = (l) => {
    if (l === '') {
      if (data.length === 0 && !event) return null;
      const ev = { id, lastEventId: lastId, event: event || 'message', data: data.join('\n') };
      data = [];
      event = '';
      id = null;
      return ev;
    }
    if (l.startsWith(':')) return null;
    const i = l.indexOf(':');
    const field = i < 0 ? l : l.slice(0, i);
    let value = i < 0 ? '' : l.slice(i + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'data') data.push(value);
    else if (field === 'event') event = value;
    else if (field === 'id' && !value.includes('\0')) {
      id = value;
      lastId = value;
    }
    return null;
  };
  for await (const chunk of body) {
    buf += decoder.decode(chunk, { stream: true });
    for (;;) {
      const m = /\r\n|\n|\r/.exec(buf);
      if (!m) break;
      // A lone CR at the very end may be half of a CRLF: wait for more.
      if (m[0] === '\r' && m.index === buf.length - 1) break;
      const l = buf.slice(0, m.index);
      buf = buf.slice(m.index + m[0].length);
      const ev = line(l);
      if (ev) yield ev;
    }
  }
}

/**
 * Opens an SSE request. Resolves { status, headers, ok, problem (json, when not a stream),
 * read({ stopAfter, onEvent }) } where read collects events ({id, event, data, json}) until the stream
 * ends or stopAfter events arrived (then the request is aborted: the reader "drops").
 */
export async function openSse(method, path, { token, json, headers = {}, timeoutMs = STREAM_TIMEOUT_MS } = {}) {
  const ac = new AbortController();
  let timedOut = null;
  const timer = setTimeout(() => {
    timedOut = new Error(`${method} ${path}: stream not finished after ${timeoutMs} ms`);
    ac.abort(timedOut);
  }, timeoutMs);
  const h = { accept: 'text/event-stream', ...headers };
  if (token) h.authorization = `Bearer ${token}`;
  if (json !== undefined) h['content-type'] = 'application/json';
  let res;
  try {
    // A 429 rate_limited is waited out (Retry-After) and retried, like lib/client.mjs does.
    for (let waited = 0, lost = 0; ; ) {
      res = await fetch(BASE_URL + path, { method, headers: h, body: json === undefined ? undefined : JSON.stringify(json), signal: ac.signal });
      if (res.status === 503) {
        const text = await res.text();
        if (proxyLost(res.status, text, ++lost, `${method} ${path}`)) continue;
        res = new Response(text, { status: 503, headers: res.headers });
        break;
      }
      if (res.status !== 429) break;
      const text = await res.text();
      let code = null;
      try {
        code = JSON.parse(text).code;
      } catch {
        /* not a problem document */
      }
      const ms = Math.max(1, Number(res.headers.get('retry-after')) || 1) * 1000;
      if (code !== 'rate_limited' || waited + ms > RATE_LIMIT_BUDGET_MS) {
        res = new Response(text, { status: 429, headers: res.headers });
        break;
      }
      waited += ms;
      await sleep(ms);
    }
  } catch (e) {
    clearTimeout(timer);
    throw e;
  }
  const out = {
    status: res.status,
    headers: res.headers,
    response: res,
    abort: () => ac.abort(),
    async read({ stopAfter = Infinity, onEvent } = {}) {
      const events = [];
      let ended = false;
      let dropped = false;
      try {
        if (stopAfter === 0) {
          ac.abort();
          return { events, ended };
        }
        for await (const ev of parseSse(res.body)) {
          if (ev.data && ev.data !== '[DONE]') {
            try {
              ev.json = JSON.parse(ev.data);
            } catch {
              assert.fail(`${method} ${path}: SSE data is not JSON: ${ev.data.slice(0, 200)}`);
            }
          }
          events.push(ev);
          if (onEvent) await onEvent(ev, events);
          if (events.length >= stopAfter) {
            dropped = true;
            ac.abort();
            break;
          }
        }
        ended = !dropped;
      } catch (e) {
        if (!dropped || timedOut) throw timedOut || e;
      } finally {
        clearTimeout(timer);
      }
      return { events, ended };
    },
  };
  if (!String(res.headers.get('content-type') || '').startsWith('text/event-stream')) {
    const text = await res.text();
    clearTimeout(timer);
    out.text = text;
    try {
      out.problem = JSON.parse(text);
    } catch {
      out.problem = null;
    }
  }
  return out;
}

/** Asserts an SSE response (200, text/event-stream, no caching). */
export function expectStream(s, what = 'stream') {
  assert.equal(s.status, 200, `${what}: expected 200 text/event-stream, got ${s.status} ${s.text || ''}`);
  assert.match(String(s.headers.get('content-type')), /^text\/event-stream/, `${what}: content type`);
  assert.match(String(s.headers.get('cache-control') || ''), /no-cache/, `${what}: cache-control no-cache`);
}

/**
 * Sends a message and reads the run's stream. Resolves { status, headers, events, ended, stream }.
 * protocol: native (default), ag-ui, ai-sdk. stopAfter: drop after that many SSE events.
 */
export async function sendMessage(token, sessionId, content, { protocol, provider, stopAfter, onEvent, timeoutMs } = {}) {
  const q = protocol ? `?protocol=${protocol}` : '';
  const body = { content };
  if (provider) body.provider = provider;
  const s = await openSse('POST', `/v1/sessions/${sessionId}/messages${q}`, { token, json: body, timeoutMs });
  if (s.status !== 200) return { status: s.status, headers: s.headers, problem: s.problem, text: s.text, events: [], ended: true, stream: s };
  expectStream(s, 'POST messages');
  const r = await s.read({ stopAfter, onEvent });
  return { status: s.status, headers: s.headers, events: r.events, ended: r.ended, stream: s };
}

/**
 * An `onEvent` that runs `fn(ev)` once: at the first text delta after which the run's text so far
 * contains `needle`. Not on one exact delta: deltas that arrive in a burst are relayed merged (a
 * loaded machine makes bursts), so one delta may carry several words.
 */
export function whenText(needle, fn) {
  let text = '';
  let done = false;
  return (ev) => {
    if (done || ev.json?.type !== 'text_delta') return undefined;
    text += ev.json.delta;
    if (!text.includes(needle)) return undefined;
    done = true;
    return fn(ev);
  };
}

/** GET /events: { after } as a query, or { lastEventId } as the header. */
export async function openEvents(token, sessionId, { after, lastEventId, protocol, timeoutMs } = {}) {
  const params = new URLSearchParams();
  if (after !== undefined) params.set('after', String(after));
  if (protocol) params.set('protocol', protocol);
  const q = params.size ? `?${params}` : '';
  const headers = lastEventId === undefined ? {} : { 'last-event-id': String(lastEventId) };
  return openSse('GET', `/v1/sessions/${sessionId}/events${q}`, { token, headers, timeoutMs });
}

export async function readEvents(token, sessionId, opts = {}) {
  const s = await openEvents(token, sessionId, opts);
  expectStream(s, 'GET events');
  const r = await s.read({ stopAfter: opts.stopAfter });
  return { ...r, headers: s.headers };
}

/** The native event objects of a list of SSE events. */
export const natives = (events) => events.filter((e) => e.json).map((e) => e.json);
export const textOf = (evs) =>
  evs
    .filter((e) => e.type === 'text_delta')
    .map((e) => e.delta)
    .join('');

/**
 * Checks the invariants of one run's native events: ids equal seqs, seqs contiguous, run_started first,
 * run_finished last and once, every delta inside its start/end. Returns the run_finished event.
 */
export function checkNativeRun(sseEvents, { complete = true } = {}) {
  const evs = natives(sseEvents);
  assert.ok(evs.length >= 2, `a run has events: ${JSON.stringify(evs).slice(0, 300)}`);
  for (const e of sseEvents.filter((x) => x.json)) assert.equal(e.id, String(e.json.seq), 'SSE id is the event seq');
  for (let i = 1; i < evs.length; i++) assert.equal(evs[i].seq, evs[i - 1].seq + 1, `seq contiguous at ${i}: ${evs[i - 1].seq} -> ${evs[i].seq}`);
  const runId = evs[0].run_id;
  assert.match(runId, /^run_/);
  for (const e of evs) assert.equal(e.run_id, runId, 'one run id');
  assert.equal(evs[0].type, 'run_started');
  const last = evs.at(-1);
  if (complete) {
    assert.equal(last.type, 'run_finished', `last event is run_finished: ${JSON.stringify(last)}`);
    assert.equal(evs.filter((e) => e.type === 'run_finished').length, 1);
    assert.ok(['complete', 'incomplete', 'error', 'cancelled'].includes(last.status), `status ${last.status}`);
  }
  const openText = new Set();
  const openTools = new Set();
  for (const e of evs) {
    if (e.type === 'text_start') openText.add(e.block_id);
    if (e.type === 'text_delta') assert.ok(openText.has(e.block_id), `text_delta inside its block ${e.block_id}`);
    if (e.type === 'text_end') {
      assert.ok(openText.has(e.block_id));
      openText.delete(e.block_id);
    }
    if (e.type === 'tool_call_start') openTools.add(e.tool_call_id);
    if (e.type === 'tool_call_delta') assert.ok(openTools.has(e.tool_call_id), 'tool_call_delta inside its call');
    if (e.type === 'tool_call_end') openTools.delete(e.tool_call_id);
  }
  if (complete) assert.equal(openText.size, 0, 'every text block ended');
  return last;
}

// ------------------------------------------------------------------ the model fake

let fakeUp;
/** The model fake's log of requests whose last user text contains `contains`, or null when it is not reachable. */
export async function fakeRequests(contains) {
  if (fakeUp === false) return null;
  try {
    const res = await fetch(`${MODEL_FAKE_URL}/_fake/requests?contains=${encodeURIComponent(contains)}`, { signal: AbortSignal.timeout(5000) });
    if (!res.ok) throw new Error(String(res.status));
    fakeUp = true;
    return (await res.json()).items;
  } catch {
    fakeUp = false;
    return null;
  }
}

// ------------------------------------------------------------------ which server

let roomsCache;
/**
 * 'rooms' when GET /v1/sessions/{id}/ws upgrades (live rooms: runs outlive their requests),
 * 'inline' when it answers 501 (runs live inside the request that started them).
 */
export async function serverMode() {
  if (roomsCache) return roomsCache;
  const { token, session } = await chatSetup('mode');
  const t = expectJson(await post(`/v1/sessions/${session.id}/ws-ticket`, {}, { token }), 201);
  const { default: WebSocket } = await import('ws');
  const wsUrl = BASE_URL.replace(/^http/, 'ws') + t.url;
  roomsCache = await new Promise((resolve, reject) => {
    const ws = new WebSocket(wsUrl);
    ws.on('open', () => {
      ws.close();
      resolve('rooms');
    });
    ws.on('unexpected-response', (_req, res) => {
      res.resume();
      if (res.statusCode === 501) resolve('inline');
      else reject(new Error(`GET ws answered ${res.statusCode}`));
    });
    ws.on('error', (e) => reject(e));
  });
  return roomsCache;
}
