// The live room of a session over WebSocket (Workers with the SessionRoom Durable Object): two
// clients see each other's presence and the same event sequence as the SSE readers; a client joining
// with ?after=N or sending {"type":"resume","after":N} gets exactly the events after N, then the live
// tail. Skipped on a server without rooms (GET /ws answers 501 there).

import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';

import WebSocket from 'ws';

import { BASE_URL, del, expectJson, post } from './lib/client.mjs';
import { chatSetup, checkNativeRun, natives, readEvents, scenario, sendMessage, serverMode, textOf, waitFor, whenText } from './lib/chat.mjs';
import { slowText } from '../fakes/scenarios.mjs';

let mode;
let ctx;
before(async () => {
  mode = await serverMode();
  if (mode === 'rooms') ctx = await chatSetup('ws');
});

const skip = (t) => {
  if (mode !== 'rooms') {
    t.skip('this server has no live rooms (GET /ws answers 501)');
    return true;
  }
  return false;
};

/** Opens the session's WebSocket with a fresh ticket; collects every JSON message. */
async function connect(sessionId, { after, token = ctx.token } = {}) {
  const t = expectJson(await post(`/v1/sessions/${sessionId}/ws-ticket`, {}, { token }), 201);
  const url = BASE_URL.replace(/^http/, 'ws') + t.url + (after === undefined ? '' : `&after=${after}`);
  const ws = new WebSocket(url);
  const client = { ws, messages: [], waiters: [] };
  ws.on('message', (data) => {
    let m;
    try {
      m = JSON.parse(data.toString('utf8'));
    } catch {
      assert.fail(`a WebSocket message is not JSON: ${data}`);
    }
    client.messages.push(m);
    for (const w of [...client.waiters]) w();
  });
  await new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('unexpected-response', (_q, res) => reject(new Error(`ws upgrade answered ${res.statusCode}`)));
    ws.once('error', reject);
  });
  client.events = () => client.messages.filter((m) => typeof m.seq === 'number' && m.seq > 0 && m.type !== 'presence');
  client.presence = () => client.messages.filter((m) => m.type === 'presence');
  /** Resolves when pred(client) holds; fails after timeoutMs. */
  client.until = (what, pred, timeoutMs = 30_000) =>
    new Promise((resolve, reject) => {
      if (pred(client)) return resolve();
      const timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}: ${JSON.stringify(client.messages.slice(-5))}`)), timeoutMs);
      const check = () => {
        if (pred(client)) {
          clearTimeout(timer);
          client.waiters = client.waiters.filter((w) => w !== check);
          resolve();
        }
      };
      client.waiters.push(check);
    });
  client.finished = (runId) => client.events().some((e) => e.type === 'run_finished' && (!runId || e.run_id === runId));
  client.close = () => ws.close();
  return client;
}

const users = (p) => p.users || p.value || [];

describe('WebSocket room', () => {
  test('deleting the project purges its rooms: a connected socket is closed by the server', async (t) => {
    if (skip(t)) return;
    const own = await chatSetup('ws-purge');
    const c = await connect(own.session.id, { token: own.token });
    const run = await sendMessage(own.token, own.session.id, scenario('slow', 5, '5ms').text);
    assert.equal(checkNativeRun(run.events).status, 'complete');
    const r = await del(`/v1/projects/${own.project.id}`, { token: own.token });
    assert.equal(r.status, 204);
    // The server's close frame puts the socket in CLOSING at once ('close' itself waits for the TCP end).
    await waitFor('the server to close the socket', async () => (c.ws.readyState >= WebSocket.CLOSING ? true : null), { timeoutMs: 10_000 });
  });

  test('two clients see each other come and go', async (t) => {
    if (skip(t)) return;
    const a = await connect(ctx.session.id);
    await a.until('my own presence', (c) => c.presence().some((p) => users(p).length >= 1));
    const b = await connect(ctx.session.id);
    await a.until('a sees b', (c) => users(c.presence().at(-1) || {}).length === 2);
    await b.until('b sees a', (c) => users(c.presence().at(-1) || {}).length === 2);
    const list = users(a.presence().at(-1));
    const ids = new Set(list.map((u) => u.connection_id));
    assert.equal(ids.size, 2, 'two connections');
    for (const u of list) assert.equal(u.user_id, ctx.user.user.id);
    b.close();
    await a.until('a sees b leave', (c) => users(c.presence().at(-1) || {}).length === 1);
    a.close();
  });

  test('two clients receive the same sequence as the SSE readers, in order, ending with run_finished', async (t) => {
    if (skip(t)) return;
    const [a, b] = [await connect(ctx.session.id), await connect(ctx.session.id)];
    const N = 40;
    const run = await sendMessage(ctx.token, ctx.session.id, scenario('slow', N, '20ms').text);
    const fin = checkNativeRun(run.events);
    assert.equal(fin.status, 'complete');
    await a.until('run end on a', (c) => c.finished(fin.run_id));
    await b.until('run end on b', (c) => c.finished(fin.run_id));
    const want = natives(run.events);
    const first = want[0].seq;
    for (const [name, c] of [
      ['a', a],
      ['b', b],
    ]) {
      const got = c.events().filter((e) => e.seq >= first && e.run_id === fin.run_id);
      assert.deepEqual(
        got.map((e) => e.seq),
        want.map((e) => e.seq),
        `${name}: same seqs`,
      );
      assert.deepEqual(got, want, `${name}: same events`);
    }
    assert.equal(textOf(a.events()), slowText(N));
    a.close();
    b.close();
  });

  test('joining with ?after=N mid-run and sending resume messages give exactly the events after N', async (t) => {
    if (skip(t)) return;
    const { token, session } = await chatSetup('wsresume');
    const N = 80;
    let mid;
    const midSeen = new Promise((r) => {
      mid = r;
    });
    const runP = sendMessage(token, session.id, scenario('slow', N, '25ms').text, {
      onEvent: whenText('w20 ', (ev) => mid(ev.json.seq)),
    });
    const k = await midSeen;
    const late = await connect(session.id, { after: k - 5, token });
    const run = await runP;
    const want = natives(run.events);
    await late.until('the end', (c) => c.finished());
    assert.deepEqual(
      late.events().map((e) => e.seq),
      want.filter((e) => e.seq > k - 5).map((e) => e.seq),
      'joined with after: no gap, no duplicate',
    );
    // An open socket asks again from several points.
    for (const after of [0, 3, want.at(-1).seq - 1]) {
      late.messages.length = 0;
      late.ws.send(JSON.stringify({ type: 'resume', after }));
      await late.until(`replay after ${after}`, (c) => c.finished());
      assert.deepEqual(
        late.events().map((e) => e.seq),
        want.filter((e) => e.seq > after).map((e) => e.seq),
        `resume after ${after}`,
      );
    }
    late.close();
    const replay = await readEvents(token, session.id, { after: 0 });
    assert.deepEqual(natives(replay.events), want, 'the SSE replay agrees');
  });
});
