// Bad input on the chat routes: missing credentials, another user's (or a missing) session or
// project on every route (404, never 403, and nothing happens), empty / oversized / malformed
// messages, session titles, unknown providers, and WebSocket tickets (garbage, missing, reused,
// bound to another session, no upgrade). Each refusal is followed by a read that proves it changed
// nothing.

import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';

import WebSocket from 'ws';

import { BASE_URL, expectJson, expectProblem, get, missingId, post, request } from './lib/client.mjs';
import { objectRows } from './lib/worker-state.mjs';
import { chatSetup, checkNativeRun, listMessages, natives, newSession, openSse, scenario, sendMessage, serverMode, textOf } from './lib/chat.mjs';
import { TEXT_REPLY } from '../fakes/scenarios.mjs';

let alice;
let bob;
before(async () => {
  alice = await chatSetup('alice');
  bob = await chatSetup('bob');
  // Alice's session has history, so a leak would show.
  const run = await sendMessage(alice.token, alice.session.id, `secret of alice ${scenario('text').text}`);
  assert.equal(checkNativeRun(run.events).status, 'complete');
});

/** Tries a WebSocket upgrade: { status: 101, ws } or { status, body }. */
export function wsAttempt(path, headers = {}) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(BASE_URL.replace(/^http/, 'ws') + path, { headers });
    ws.on('open', () => resolve({ status: 101, ws }));
    ws.on('unexpected-response', (_req, res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let body = null;
        try {
          body = JSON.parse(text);
        } catch {
          /* not JSON */
        }
        resolve({ status: res.statusCode, headers: res.headers, body, text });
      });
    });
    ws.on('error', reject);
  });
}

const ticketFor = async (who, sessionId = who.session.id) => expectJson(await post(`/v1/sessions/${sessionId}/ws-ticket`, {}, { token: who.token }), 201);

describe('credentials and ownership', () => {
  test('every chat route needs a bearer token', async () => {
    const s = alice.session.id;
    const p = alice.project.id;
    const routes = [
      ['GET', `/v1/projects/${p}/sessions`],
      ['POST', `/v1/projects/${p}/sessions`, {}],
      ['GET', `/v1/sessions/${s}/messages`],
      ['POST', `/v1/sessions/${s}/messages`, { content: 'hi' }],
      ['GET', `/v1/sessions/${s}/events`],
      ['POST', `/v1/sessions/${s}/cancel`, {}],
      ['POST', `/v1/sessions/${s}/ws-ticket`, {}],
    ];
    for (const [method, path, json] of routes) {
      expectProblem(await request(method, path, { json }), 401, 'unauthorized');
      expectProblem(await request(method, path, { json, token: 'not.a.token' }), 401, 'invalid_token');
    }
  });

  test("another user's session or project is 404 on every route, and nothing happens to it", async () => {
    const s = alice.session.id;
    const p = alice.project.id;
    const before = await listMessages(alice.token, s);
    const missing = missingId('ses');
    for (const sid of [s, missing]) {
      expectProblem(await get(`/v1/sessions/${sid}/messages`, { token: bob.token }), 404, 'not_found');
      expectProblem(await post(`/v1/sessions/${sid}/messages`, { content: `bob writes ${scenario('text').text}` }, { token: bob.token }), 404, 'not_found');
      const sse = await openSse('POST', `/v1/sessions/${sid}/messages`, { token: bob.token, json: { content: 'bob streams' } });
      assert.equal(sse.status, 404, sse.text);
      assert.equal(sse.problem.code, 'not_found');
      const ev = await openSse('GET', `/v1/sessions/${sid}/events?after=0`, { token: bob.token });
      assert.equal(ev.status, 404, ev.text);
      const ev2 = await openSse('GET', `/v1/sessions/${sid}/events`, { token: bob.token, headers: { 'last-event-id': '0' } });
      assert.equal(ev2.status, 404);
      expectProblem(await post(`/v1/sessions/${sid}/cancel`, {}, { token: bob.token }), 404, 'not_found');
      expectProblem(await post(`/v1/sessions/${sid}/ws-ticket`, {}, { token: bob.token }), 404, 'not_found');
    }
    for (const pid of [p, missingId('prj')]) {
      expectProblem(await get(`/v1/projects/${pid}/sessions`, { token: bob.token }), 404, 'not_found');
      expectProblem(await post(`/v1/projects/${pid}/sessions`, { title: 'intruder' }, { token: bob.token }), 404, 'not_found');
    }
    // Bob's own ticket, used on Alice's session URL.
    const t = await ticketFor(bob);
    const ws = await wsAttempt(`/v1/sessions/${s}/ws?ticket=${t.ticket}`);
    if (ws.ws) ws.ws.close();
    assert.equal(ws.status, 404, `ws with a ticket of another session: ${ws.status} ${ws.text}`);
    assert.equal(ws.body?.code, 'not_found');
    // Nothing changed for Alice, and her session still works.
    assert.deepEqual(await listMessages(alice.token, s), before);
    const sessions = expectJson(await get(`/v1/projects/${p}/sessions`, { token: alice.token }), 200);
    assert.ok(!sessions.items.some((x) => x.title === 'intruder'));
    const run = await sendMessage(alice.token, s, scenario('text').text);
    assert.equal(checkNativeRun(run.events).status, 'complete');
  });
});

describe('messages', () => {
  test('empty, blank, oversized and malformed messages are refused and not stored', async () => {
    const session = await newSession(alice.token, alice.project.id);
    const path = `/v1/sessions/${session.id}/messages`;
    const t = alice.token;
    expectProblem(await post(path, { content: '' }, { token: t }), 400, 'empty_message');
    expectProblem(await post(path, { content: ' \n\t ' }, { token: t }), 400, 'empty_message');
    const sse = await openSse('POST', path, { token: t, json: { content: '' } });
    assert.equal(sse.status, 400);
    assert.equal(sse.problem.code, 'empty_message');
    expectProblem(await post(path, { content: 'x'.repeat(64 * 1024 + 1) }, { token: t }), 413, 'message_too_large');
    // The limit counts bytes: 32 769 two-byte characters are 65 538 bytes.
    expectProblem(await post(path, { content: 'é'.repeat(32 * 1024 + 1) }, { token: t }), 413, 'message_too_large');
    expectProblem(await post(path, { content: 'x'.repeat(1024 * 1024 + 10) }, { token: t }), 413, ['body_too_large', 'message_too_large']);
    expectProblem(await request('POST', path, { token: t, body: '{"content": "unterminated', headers: { 'content-type': 'application/json' } }), 400, 'invalid_body');
    expectProblem(await post(path, {}, { token: t }), 400, 'invalid_body');
    expectProblem(await post(path, { content: 42 }, { token: t }), 400, 'invalid_body');
    expectProblem(await post(path, { content: 'hi', temperature: 2 }, { token: t }), 400, 'invalid_body');
    expectProblem(await post(path, [{ content: 'hi' }], { token: t }), 400, 'invalid_body');
    expectProblem(await request('POST', path, { token: t, body: 'content=hi', headers: { 'content-type': 'application/x-www-form-urlencoded' } }), 415, 'unsupported_media_type');
    expectProblem(await post(path, { content: 'hi', provider: 'skynet' }, { token: t }), 400, 'provider_unavailable');
    expectProblem(await post(path, { content: 'hi', provider: 'demo' }, { token: t }), 400, 'provider_unavailable');
    assert.deepEqual(await listMessages(t, session.id), [], 'nothing stored');
    // Exactly at the limit is fine.
    const marker = scenario('text').text;
    const content = marker + ' ' + 'x'.repeat(64 * 1024 - marker.length - 1);
    assert.equal(Buffer.byteLength(content), 64 * 1024);
    const run = await sendMessage(t, session.id, content);
    assert.equal(run.status, 200, JSON.stringify(run.problem));
    assert.equal(checkNativeRun(run.events).status, 'complete');
    assert.equal(textOf(natives(run.events)), TEXT_REPLY);
    const msgs = await listMessages(t, session.id);
    assert.equal(msgs[0].content[0].text, content, 'the long message is stored whole');
  });

  test('the message list pages with a cursor; bad limits and cursors are 400', async () => {
    const t = alice.token;
    const s = alice.session.id;
    const all = await listMessages(t, s);
    assert.ok(all.length >= 4);
    const seen = [];
    let cursor = null;
    for (let i = 0; i < 20; i++) {
      const q = `?limit=1${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`;
      const body = expectJson(await get(`/v1/sessions/${s}/messages${q}`, { token: t }), 200);
      assert.ok(body.items.length <= 1);
      seen.push(...body.items.map((m) => m.id));
      cursor = body.next_cursor;
      if (!cursor) break;
    }
    assert.deepEqual(
      seen,
      all.map((m) => m.id),
    );
    expectProblem(await get(`/v1/sessions/${s}/messages?limit=0`, { token: t }), 400, 'invalid_limit');
    expectProblem(await get(`/v1/sessions/${s}/messages?limit=abc`, { token: t }), 400, 'invalid_limit');
    expectProblem(await get(`/v1/sessions/${s}/messages?cursor=%00garbage`, { token: t }), 400, 'invalid_cursor');
  });
});

test('session titles: long, control characters, unknown fields', async () => {
  const path = `/v1/projects/${alice.project.id}/sessions`;
  const t = alice.token;
  expectProblem(await post(path, { title: 'x'.repeat(201) }, { token: t }), 400, 'invalid_title');
  expectProblem(await post(path, { title: 'bell\u0007' }, { token: t }), 400, 'invalid_title');
  expectProblem(await post(path, { title: 'ok', color: 'red' }, { token: t }), 400, 'invalid_body');
  const ok = expectJson(await post(path, { title: 'é'.repeat(200) }, { token: t }), 201);
  assert.equal(ok.title, 'é'.repeat(200));
  const untitled = expectJson(await request('POST', path, { token: t }), 201);
  assert.match(untitled.id, /^ses_/);
});

describe('WebSocket tickets', () => {
  test('a ticket: 201 with ticket, url and expiry', async () => {
    const t = await ticketFor(alice);
    assert.equal(typeof t.ticket, 'string');
    assert.ok(t.ticket.length >= 20, 'a ticket has enough entropy');
    assert.equal(t.url, `/v1/sessions/${alice.session.id}/ws?ticket=${t.ticket}`);
    assert.ok(t.expires_in > 0 && t.expires_in <= 300);
    const t2 = await ticketFor(alice);
    assert.notEqual(t2.ticket, t.ticket);
  });

  test('garbage, missing and oversized tickets are 401 invalid_ticket', async () => {
    const s = alice.session.id;
    for (const q of ['?ticket=garbage', '', '?ticket=', `?ticket=${'a'.repeat(100)}`]) {
      const r = await wsAttempt(`/v1/sessions/${s}/ws${q}`);
      if (r.ws) r.ws.close();
      assert.equal(r.status, 401, `ws${q}: ${r.status} ${r.text}`);
      assert.equal(r.body?.code, 'invalid_ticket');
    }
  });

  test('a ticket works once: reused it is 401 (with rooms)', async () => {
    const t = await ticketFor(alice);
    const first = await wsAttempt(t.url);
    if (first.ws) first.ws.close();
    assert.ok([101, 501].includes(first.status), `first use: 101 (rooms) or 501 (no rooms), got ${first.status} ${first.text}`);
    const second = await wsAttempt(t.url);
    if (first.status === 501) {
      // No rooms: no socket opens, so the ticket is not used up; it keeps answering 501.
      assert.equal(first.body?.code, 'websocket_unsupported');
      if (second.ws) second.ws.close();
      assert.equal(second.status, 501, `second use without rooms: ${second.status} ${second.text}`);
      return;
    }
    if (second.ws) second.ws.close();
    assert.equal(second.status, 401, `reused ticket: ${second.status} ${second.text}`);
    assert.equal(second.body?.code, 'invalid_ticket');
  });

  test("a ticket of one of my sessions does not open another of my sessions", async () => {
    const other = await newSession(alice.token, alice.project.id);
    const t = await ticketFor(alice);
    const r = await wsAttempt(`/v1/sessions/${other.id}/ws?ticket=${t.ticket}`);
    if (r.ws) r.ws.close();
    assert.equal(r.status, 404, `${r.status} ${r.text}`);
  });

  test('a plain GET with a valid ticket (no upgrade) is 426 (501 without rooms)', async () => {
    const t = await ticketFor(alice);
    const r = await get(t.url, {});
    // Without rooms the route answers 501 before it looks for an upgrade.
    if ((await serverMode()) === 'rooms') expectProblem(r, 426, 'upgrade_required');
    else expectProblem(r, 501, 'websocket_unsupported');
  });
});

/** The tables in the local storage of the session room `name`; null when it has none. */
const roomTables = (state, name) =>
  objectRows(state, 'SessionRoom', name, "SELECT name FROM sqlite_master WHERE type = 'table'")?.map((r) => r[0]) ?? null;

test("messages to a session that does not exist or is another user's leave no room storage behind", async (t) => {
  const state = process.env.E2E_WORKER_STATE;
  if (!state) {
    t.skip("E2E_WORKER_STATE is not set (wrangler dev's state directory; scripts/test sets it for the Worker)");
    return;
  }
  // Sending a message is answered in the session's room (with a valid token of ours), so a room is
  // reached before the session is known to be the caller's: a stranger's guesses must cost no storage.
  const ghost = missingId('ses');
  for (const accept of ['application/json', 'text/event-stream']) {
    const r = await request('POST', `/v1/sessions/${ghost}/messages`, {
      token: bob.token,
      json: { content: `to nobody ${scenario('text').text}` },
      headers: { accept },
    });
    expectProblem(r, 404, 'not_found');
  }
  const own = roomTables(state, alice.session.id);
  assert.ok(own?.includes('events'), `alice's room keeps its events: ${JSON.stringify(own)}`);
  const tables = roomTables(state, ghost) ?? [];
  assert.deepEqual(tables.filter((name) => ['events', 'meta', 'tickets'].includes(name)), [], `the ghost session's room stored ${tables}`);
  // The session that is alice's, asked by bob: 404, and her room is as it was.
  expectProblem(await post(`/v1/sessions/${alice.session.id}/messages`, { content: 'bob again' }, { token: bob.token }), 404, 'not_found');
  const messages = await listMessages(alice.token, alice.session.id);
  assert.ok(!messages.some((m) => JSON.stringify(m.content).includes('bob again')), 'bob\'s message reached alice\'s session');
});
