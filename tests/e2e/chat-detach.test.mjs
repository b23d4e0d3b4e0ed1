// A run whose only client leaves. With live rooms (Durable Objects) the run goes on without anyone
// connected and is stored complete; the 202 path answers at once and the run is read from its
// events_url. Without rooms the run lives in its request: when the client leaves, the run dies, the
// session refuses new runs until the dead run is found stale (CHAT_STALE_SECS, default 120 s), then
// the partial answer is stored as incomplete, readers attached to it end, and the session is usable.
// Also: a WebSocket ticket expires. The slow waits run concurrently.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import WebSocket from 'ws';

import { BASE_URL, expectJson, post, request } from './lib/client.mjs';
import {
  STALE_SECS,
  chatSetup,
  checkNativeRun,
  listMessages,
  natives,
  readEvents,
  scenario,
  sendMessage,
  serverMode,
  sleep,
  textOf,
  textOfBlocks,
  waitFor,
} from './lib/chat.mjs';
import { slowText } from '../fakes/scenarios.mjs';

describe('a run whose client left', { concurrency: true }, () => {
  test('the streaming client drops after a few events', { timeout: (STALE_SECS + 90) * 1000 }, async (t) => {
    const mode = await serverMode();
    t.diagnostic(`server mode: ${mode}`);
    const { token, session } = await chatSetup('detach');
    const N = 60;
    const dropped = await sendMessage(token, session.id, scenario('slow', N, '50ms').text, { stopAfter: 6 });
    assert.equal(dropped.status, 200);
    const seen = natives(dropped.events);
    const runId = seen[0].run_id;
    assert.equal(seen[0].type, 'run_started');
    if (mode === 'rooms') {
      const asst = await waitFor(
        'the run to finish without its client',
        async () => (await listMessages(token, session.id)).find((m) => m.role === 'assistant' && m.run_id === runId),
        { timeoutMs: 60_000, everyMs: 1000 },
      );
      assert.equal(asst.status, 'complete');
      assert.equal(textOfBlocks(asst.content), slowText(N));
      const replay = await readEvents(token, session.id, { after: 0 });
      const fin = checkNativeRun(replay.events);
      assert.equal(fin.status, 'complete');
      assert.equal(textOf(natives(replay.events)), slowText(N));
      return;
    }
    // No rooms: the run died with its request.
    const busy = await post(`/v1/sessions/${session.id}/messages`, { content: 'anyone there?' }, { token });
    assert.equal(busy.status, 409, `the dead run still holds the session: ${busy.show()}`);
    assert.equal(busy.json.code, 'run_in_progress');
    // A reader attached to the dead run must end once the run is declared dead.
    const reader = readEvents(token, session.id, { after: 0, timeoutMs: (STALE_SECS + 60) * 1000 });
    const started = Date.now();
    const asst = await waitFor(
      `the dead run to be declared incomplete (after about ${STALE_SECS} s)`,
      async () => (await listMessages(token, session.id)).find((m) => m.role === 'assistant' && m.run_id === runId),
      { timeoutMs: (STALE_SECS + 45) * 1000, everyMs: 3000 },
    );
    t.diagnostic(`declared ${asst.status} after ${Math.round((Date.now() - started) / 1000)} s`);
    assert.equal(asst.status, 'incomplete');
    const stored = textOfBlocks(asst.content);
    t.diagnostic(`the client saw ${JSON.stringify(textOf(seen))}; stored: ${JSON.stringify(stored)}`);
    assert.ok(slowText(N).startsWith(stored), `the stored partial text is a prefix of the answer: ${JSON.stringify(stored)}`);
    const r = await reader;
    assert.ok(r.ended, 'the attached reader ended');
    const fin = natives(r.events).at(-1);
    assert.equal(fin?.type, 'run_finished', `the attached reader saw the end: ${JSON.stringify(fin)}`);
    assert.equal(fin.status, 'incomplete');
    assert.equal(fin.run_id, runId);
    const next = await sendMessage(token, session.id, scenario('text').text);
    assert.equal(next.status, 200, `the session is usable again: ${JSON.stringify(next.problem)}`);
    assert.equal(checkNativeRun(next.events).status, 'complete');
  });

  test('the 202 path: without text/event-stream the answer is 202 with events_url; the run completes and is stored', async () => {
    const mode = await serverMode();
    const { token, session } = await chatSetup('accepted');
    const N = 30;
    const t0 = Date.now();
    const res = await post(`/v1/sessions/${session.id}/messages`, { content: scenario('slow', N, '40ms').text }, { token });
    const took = Date.now() - t0;
    const body = expectJson(res, 202);
    assert.match(body.run_id, /^run_/);
    assert.match(body.message_id, /^msg_/);
    assert.equal(typeof body.after, 'number');
    assert.equal(body.events_url, `/v1/sessions/${session.id}/events?after=${body.after}`);
    if (mode === 'rooms') assert.ok(took < N * 40, `answered before the run ended (${took} ms)`);
    else assert.equal(body.status, 'complete', 'without rooms the 202 comes when the run is done');
    const s = await request('GET', body.events_url, { token, headers: { accept: 'text/event-stream' } });
    assert.equal(s.status, 200);
    const events = s.text
      .split('\n\n')
      .filter((b) => b.includes('data: '))
      .map((b) => JSON.parse(b.split('\n').find((l) => l.startsWith('data: ')).slice(6)));
    assert.equal(events[0].type, 'run_started');
    assert.equal(events[0].seq, body.after + 1);
    assert.equal(events.at(-1).type, 'run_finished');
    assert.equal(events.at(-1).status, 'complete');
    assert.equal(textOf(events), slowText(N));
    const asst = await waitFor('the stored answer', async () => (await listMessages(token, session.id)).find((m) => m.role === 'assistant' && m.status !== 'running'));
    assert.equal(asst.status, 'complete');
    assert.equal(asst.run_id, body.run_id);
    assert.equal(textOfBlocks(asst.content), slowText(N));
  });

  test('a WebSocket ticket expires', { timeout: 120_000 }, async () => {
    const { token, session } = await chatSetup('ticket');
    const t = expectJson(await post(`/v1/sessions/${session.id}/ws-ticket`, {}, { token }), 201);
    await sleep((t.expires_in + 3) * 1000);
    const status = await new Promise((resolve, reject) => {
      const ws = new WebSocket(BASE_URL.replace(/^http/, 'ws') + t.url);
      ws.on('open', () => {
        ws.close();
        resolve(101);
      });
      ws.on('unexpected-response', (_req, res) => {
        res.resume();
        resolve(res.statusCode);
      });
      ws.on('error', reject);
    });
    assert.equal(status, 401, `an expired ticket (${t.expires_in} s) is refused`);
  });
});
