// A message calls the model while it is admitted (shared/src/chat/early.rs): the session's room
// holds a lease from when its owner made it (renewed as each run ends), starts the model call at
// once, and the run takes that call only if the admission passes and the run's first request is
// exactly the one sent. What the caller sees is what it would see without it. Observed here from the outside: the
// answer's Server-Timing names `early` when a call was started beside the checks, and the model fake
// logs every call, with `aborted` when its caller went away before the answer's end.
//
// With live rooms only (Workers); a server that drives runs inline (Spin) starts no early call, which
// the first test checks instead.

import assert from 'node:assert/strict';
import { before, test } from 'node:test';

import { chatSetup, checkNativeRun, fakeRequests, listMessages, natives, newSession, scenario, sendMessage, serverMode, sleep, textOf, waitFor } from './lib/chat.mjs';
import { ECHO_PREFIX, slowText } from '../fakes/scenarios.mjs';
import { ADMIN_EMAIL, adminToken, createProject, del, expectJson, expectProblem, get, newUser, patch, post, put } from './lib/client.mjs';

const early = (headers) => /(^|,\s*)early(;|,|$)/.test(headers.get('server-timing') || '');

let ctx;
let rooms;
before(async () => {
  ctx = await chatSetup('early');
  rooms = (await serverMode()) === 'rooms';
});

test('a new session\'s first message is answered by the call made while it was admitted, and so is the next, with the first run in its history', async () => {
  const session = await newSession(ctx.token, ctx.project.id);
  const first = scenario('text');
  const run = await sendMessage(ctx.token, session.id, first.text);
  assert.equal(run.status, 200, run.text);
  assert.equal(checkNativeRun(run.events).status, 'complete');
  assert.equal(early(run.headers), rooms, `server-timing: ${run.headers.get('server-timing')}`);
  const calls = await fakeRequests(first.nonce);
  if (calls !== null) {
    assert.equal(calls.length, 1, 'one model call: the early one, taken');
    assert.ok(!calls[0].aborted, 'and read to its end');
  }
  const messages = await listMessages(ctx.token, session.id);
  assert.deepEqual(messages.map((m) => [m.role, m.status]), [['user', 'complete'], ['assistant', 'complete']]);

  // The room renews the lease as the run ends (a round trip after its end: a user reads the answer
  // first), with the session's messages: the next call is started early too, and taken only because
  // the history it sent is exactly the one the admission read.
  await sleep(300);
  const next = scenario('echo');
  const second = await sendMessage(ctx.token, session.id, next.text);
  assert.equal(checkNativeRun(second.events).status, 'complete');
  assert.equal(early(second.headers), rooms);
  const echoed = JSON.parse(textOf(natives(second.events)).slice(ECHO_PREFIX.length));
  assert.deepEqual(echoed.roles, ['user', 'assistant', 'user'], 'the first run is in the history sent');
  if (calls !== null) {
    const nextCalls = await fakeRequests(next.nonce);
    assert.equal(nextCalls.length, 1, 'one call: the early one, its history the admission\'s');
    assert.ok(!nextCalls[0].aborted);
  }
});

test('another user\'s message to the session starts no call and leaves the owner\'s lease', async (t) => {
  if (!rooms) return t.skip('no live rooms on this server');
  const session = await newSession(ctx.token, ctx.project.id);
  const other = await newUser('early-other');
  const theirs = scenario('text');
  const refused = await sendMessage(other.access, session.id, theirs.text);
  assert.equal(refused.status, 404);
  assert.equal(refused.problem?.code, 'not_found');
  const seen = await fakeRequests(theirs.nonce);
  if (seen !== null) assert.deepEqual(seen, [], 'no model call for a request refused as not found');

  const mine = scenario('text');
  const run = await sendMessage(ctx.token, session.id, mine.text);
  assert.equal(checkNativeRun(run.events).status, 'complete');
  assert.ok(early(run.headers), 'the owner\'s first message still starts early');
});

test('a first message the admission refuses gets its problem, aborts the early call and stores nothing', async (t) => {
  if (!rooms) return t.skip('no live rooms on this server');
  if (!ADMIN_EMAIL) return t.skip('E2E_ADMIN_EMAIL is not set (an address in the server ADMIN_EMAILS)');
  const user = await newUser('early-refused');
  const project = await createProject(user.access);
  const session = await newSession(user.access, project.id);
  // Within its limits when the session was made (so it holds a lease); out of model calls now.
  const admin = await adminToken();
  expectJson(await patch(`/v1/admin/users/${user.user.id}`, { limits: { model_calls_day: 0 } }, { token: admin }), 200);

  const sc = scenario('slow', 40, '50ms');
  const refused = await sendMessage(user.access, session.id, sc.text);
  assert.equal(refused.status, 402, refused.text);
  assert.equal(refused.problem?.code, 'quota_model_calls');
  assert.match(refused.headers.get('content-type') || '', /problem\+json/);
  const calls = await fakeRequests(sc.nonce);
  if (calls !== null) {
    assert.equal(calls.length, 1, 'the call started beside the checks');
    const aborted = await waitFor('the early call aborted', async () => (await fakeRequests(sc.nonce))[0].aborted, { timeoutMs: 5000, everyMs: 100 });
    assert.ok(aborted, 'long before its 2 s answer would have ended');
  }
  assert.deepEqual(await listMessages(user.access, session.id), [], 'nothing stored');
  const usage = expectJson(await get('/v1/usage', { token: user.access }), 200).totals;
  assert.equal(usage.tokens, 0, 'and nothing billed');
});

test('an early call the run would not make (the user added their own key meanwhile) is aborted; the run calls with the key', async (t) => {
  if (!rooms) return t.skip('no live rooms on this server');
  const user = await newUser('early-key');
  const project = await createProject(user.access);
  const session = await newSession(user.access, project.id);
  const own = `sk-ant-e2e-early-${Date.now()}-k3Yp`;
  const stored = await put('/v1/keys/anthropic', JSON.stringify({ api_key: own }), { token: user.access, headers: { 'content-type': 'application/json' } });
  if (stored.status === 503) return t.skip('this server has no KEYS_ENCRYPTION_KEY');
  expectJson(stored, 200);

  const sc = scenario('slow', 20, '50ms');
  const run = await sendMessage(user.access, session.id, sc.text);
  assert.equal(checkNativeRun(run.events).status, 'complete');
  assert.equal(textOf(natives(run.events)), slowText(20), 'the whole answer, once');
  assert.ok(early(run.headers), 'a call was started early');
  const calls = await fakeRequests(sc.nonce);
  if (calls === null) return;
  assert.deepEqual(calls.map((c) => c.keyLast4), ['-key', 'k3Yp'], 'the early call on the server\'s key, then the run\'s on the user\'s');
  assert.ok(calls[0].aborted, 'the early call was aborted');
  assert.ok(!calls[1].aborted);

  // Leases are on the server's key only: a user's own key, once deleted, is never called again.
  assert.equal((await del('/v1/keys/anthropic', { token: user.access })).status, 204);
  await sleep(300);
  const after = scenario('text');
  const next = await sendMessage(user.access, session.id, after.text);
  assert.equal(checkNativeRun(next.events).status, 'complete');
  assert.equal(early(next.headers), false, 'no lease was renewed for a run on the user\'s key');
  assert.deepEqual((await fakeRequests(after.nonce)).map((c) => c.keyLast4), ['-key']);
});

test('bad input to a new session\'s first message is refused as before, with no call', async (t) => {
  if (!rooms) return t.skip('no live rooms on this server');
  const session = await newSession(ctx.token, ctx.project.id);
  const empty = await post(`/v1/sessions/${session.id}/messages`, { content: '' }, { token: ctx.token });
  expectProblem(empty, 400);
  const unknown = scenario('text');
  const wrong = await post(`/v1/sessions/${session.id}/messages`, { content: unknown.text, provider: 'nope' }, { token: ctx.token });
  assert.equal(wrong.status, 400, wrong.text);
  const seen = await fakeRequests(unknown.nonce);
  if (seen !== null) assert.deepEqual(seen, []);
});
