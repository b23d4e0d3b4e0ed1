// A user's own model key (BYOK) through the real runtime. After PUT /v1/keys/anthropic, a run with
// several tool rounds calls the model with that key on every step: the model fake logs the last four
// characters of the key each call sent. The run's usage is not billed. Once the key is deleted, the
// next run is back on the server's key. The key itself never comes back in an answer or an event.
// On Workers the starting request hands the opened key to the session's room with the run, so this
// exercises that hand-over, not only the room reading the key from Postgres.

import assert from 'node:assert/strict';
import { before, test } from 'node:test';

import { del, expectJson, expectStatus, get, put } from './lib/client.mjs';
import { chatSetup, checkNativeRun, fakeRequests, natives, newSession, scenario, sendMessage } from './lib/chat.mjs';

let ctx;
before(async () => {
  ctx = await chatSetup('byok');
});

test('a run on the user\'s own key calls the model with it on every step, unbilled; deleting the key goes back to the server\'s', async (t) => {
  const own = `sk-ant-e2e-own-${Date.now()}-w9Zq`;
  const stored = await put('/v1/keys/anthropic', JSON.stringify({ api_key: own }), { token: ctx.token, headers: { 'content-type': 'application/json' } });
  if (stored.status === 503 || stored.json?.code === 'keys_unavailable') return t.skip('this server has no KEYS_ENCRYPTION_KEY');
  assert.equal(expectJson(stored, 200).last4, 'w9Zq');
  const before = expectJson(await get('/v1/usage', { token: ctx.token }), 200).totals;

  const session = await newSession(ctx.token, ctx.project.id);
  const sc = scenario('tools');
  const run = await sendMessage(ctx.token, session.id, sc.text);
  assert.equal(run.status, 200, run.text);
  const fin = checkNativeRun(run.events);
  assert.equal(fin.status, 'complete', JSON.stringify(fin));
  const events = natives(run.events);
  assert.equal(events[0].provider, 'anthropic');
  assert.ok(!JSON.stringify(events).includes(own), 'the key is not in any event');

  const calls = await fakeRequests(sc.nonce);
  if (calls === null) return t.skip('the model fake is not reachable from the tests');
  assert.ok(calls.length >= 2, `several model calls (${calls.length})`);
  assert.deepEqual(calls.map((c) => c.keyLast4), calls.map(() => 'w9Zq'), 'every step is paid by the user\'s key');

  const after = expectJson(await get('/v1/usage', { token: ctx.token }), 200).totals;
  assert.ok(after.tokens > before.tokens, 'the run\'s tokens are counted');
  assert.equal(after.billable_tokens, before.billable_tokens, 'and not billed');

  expectStatus(await del('/v1/keys/anthropic', { token: ctx.token }), 204);
  const next = scenario('text');
  const server = await sendMessage(ctx.token, session.id, next.text);
  assert.equal(checkNativeRun(server.events).status, 'complete');
  const serverCalls = await fakeRequests(next.nonce);
  assert.deepEqual(serverCalls.map((c) => c.keyLast4), ['-key'], 'the server\'s key (fake-key) pays once the user\'s is gone');
});
