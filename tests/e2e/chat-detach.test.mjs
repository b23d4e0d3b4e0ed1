// A run whose only client leaves goes on and is stored complete. With live rooms (Durable Objects)
// the room drives it; without rooms (Spin) it lives in its request, whose stream the adapter reads to
// the end once its client is gone. (A run whose driver died, the process with it, is found stale and
// stored incomplete: host tests `a_lost_run*`.) The 202 path answers at once with rooms and is read
// from its events_url. Also: a WebSocket ticket expires. The slow waits run concurrently.

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import WebSocket from 'ws';

import { BASE_URL, expectJson, post, request } from './lib/client.mjs';
import {
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
  test('the streaming client drops after a few events', { timeout: 120_000 }, async (t) => {
    const mode = await serverMode();
    t.diagnostic(`server mode: ${mode}`);
    const { token, session } = await chatSetup('detach');
    const N = 60;
    const dropped = await sendMessage(token, session.id, scenario('slow', N, '50ms').text, { stopAfter: 6 });
    assert.equal(dropped.status, 200);
    const seen = natives(dropped.events);
    const runId = seen[0].run_id;
    assert.equal(seen[0].type, 'run_started');
    // The client is gone; the run is not.
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
    // Resuming from the last event the client saw gives exactly the rest.
    const rest = await readEvents(token, session.id, { after: seen.at(-1).seq });
    assert.equal(textOf(seen) + textOf(natives(rest.events)), slowText(N));
    const next = await sendMessage(token, session.id, scenario('text').text);
    assert.equal(next.status, 200, `the session takes the next message: ${JSON.stringify(next.problem)}`);
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
    assert.ok(took < N * 40, `${mode}: answered before the run ended (${took} ms)`);
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
