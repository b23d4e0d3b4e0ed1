// Readers of a session's event stream: two readers see the same sequence; a reader that drops after
// any event and comes back with Last-Event-ID gets exactly the rest (no gap, no duplicate), also when
// it reconnects right at the live edge of a running run; replays of a finished run from any point;
// malformed resume points. Works on both kinds of server: the run is driven by its POST, which stays
// connected here (on a server without rooms the run lives in that request).

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { get } from './lib/client.mjs';
import { chatSetup, checkNativeRun, natives, openEvents, readEvents, scenario, sendMessage, textOf } from './lib/chat.mjs';
import { slowText } from '../fakes/scenarios.mjs';

/** Starts a run and resolves once its first event arrived; `.done` resolves the whole POST stream. */
async function startRun(token, sessionId, content) {
  let firstSeen;
  const first = new Promise((r) => {
    firstSeen = r;
  });
  const done = sendMessage(token, sessionId, content, { onEvent: (ev) => firstSeen(ev) });
  done.catch(() => firstSeen(null));
  const ev = await first;
  assert.ok(ev, 'the run started streaming');
  return { done };
}

function assertSameRun(got, want, what) {
  const a = got.map((e) => e.seq);
  const b = want.map((e) => e.seq);
  assert.deepEqual(a, b, `${what}: same seqs`);
  assert.deepEqual(got, want, `${what}: same events`);
}

test('two readers of one session see the same sequence as the run itself', async () => {
  const { token, session } = await chatSetup('readers');
  const N = 60;
  const run = await startRun(token, session.id, scenario('slow', N, '25ms').text);
  const [a, b] = await Promise.all([readEvents(token, session.id, { after: 0 }), readEvents(token, session.id, { lastEventId: 0 })]);
  const post = await run.done;
  checkNativeRun(post.events);
  assert.ok(a.ended && b.ended, 'both readers ended with the run');
  const evs = natives(post.events);
  assertSameRun(natives(a.events), evs, 'reader a');
  assertSameRun(natives(b.events), evs, 'reader b');
  assert.equal(textOf(natives(a.events)), slowText(N));
  for (const r of [a, b]) for (const e of r.events) assert.equal(e.id, String(e.json.seq));
});

test('a reader dropping after k events (>= 20 points, live) and resuming with Last-Event-ID gets every event once', async (t) => {
  const { token, session } = await chatSetup('resume');
  // Deltas 60 ms apart: a reconnect costs less than that, so the reader keeps reaching the live edge.
  const N = 100;
  const run = await startRun(token, session.id, scenario('slow', N, '60ms').text);
  const got = [];
  const dropPoints = new Set();
  let last = 0;
  let reconnects = 0;
  let atLiveEdge = 0;
  for (let i = 0; ; i++) {
    const limited = reconnects < 70;
    const k = limited ? 1 + (i % 4) : Infinity;
    const s = await openEvents(token, session.id, { lastEventId: last });
    assert.equal(s.status, 200, s.text);
    const t0 = Date.now();
    const { events, ended } = await s.read({ stopAfter: k });
    if (Date.now() - t0 > 25) atLiveEdge++; // waited for the run's next event: this reconnect sat at the live edge
    for (const e of events) got.push(e.json);
    if (events.length) last = events.at(-1).json.seq;
    if (got.length && got.at(-1).type === 'run_finished') break;
    if (ended && !events.length) assert.fail(`the stream ended with nothing after ${last} before the run finished`);
    if (!ended) {
      dropPoints.add(last);
      reconnects++;
    }
  }
  const post = await run.done;
  const evs = natives(post.events);
  checkNativeRun(post.events);
  assertSameRun(got, evs, 'resumed reader');
  assert.equal(textOf(got), slowText(N));
  t.diagnostic(`${reconnects} reconnects, ${dropPoints.size} drop points, ${atLiveEdge} at the live edge, ${got.length} events`);
  assert.ok(dropPoints.size >= 20, `dropped at ${dropPoints.size} different points`);
  assert.ok(atLiveEdge >= 1, 'at least one reconnect waited at the live edge of the run');
});

test('a finished run replays exactly from every point, by Last-Event-ID and by ?after=', async () => {
  const { token, session } = await chatSetup('replay');
  const post = await sendMessage(token, session.id, scenario('tool-fragments').text);
  checkNativeRun(post.events);
  const evs = natives(post.events);
  const last = evs.at(-1).seq;
  const points = new Set([0, 1, 2, last - 1, last]);
  for (let i = 0; points.size < 25; i++) points.add(Math.floor((i * 37) % last));
  for (const p of [...points].sort((x, y) => x - y)) {
    const r = await readEvents(token, session.id, p % 2 ? { lastEventId: p } : { after: p });
    assert.ok(r.ended, `replay after ${p} ends (the run is over)`);
    assertSameRun(natives(r.events), evs.filter((e) => e.seq > p), `after ${p}`);
  }
  // Last-Event-ID wins over ?after= when both are given.
  const s = await openEvents(token, session.id, { after: 0, lastEventId: last - 2 });
  const { events } = await s.read();
  assert.deepEqual(
    natives(events).map((e) => e.seq),
    [last - 1, last],
  );
  // Beyond the end: nothing, and the stream ends.
  const beyond = await readEvents(token, session.id, { lastEventId: last + 1000 });
  assert.ok(beyond.ended);
  assert.deepEqual(natives(beyond.events), []);
});

test('malformed resume points are 400 invalid_resume_point', async () => {
  const { token, session } = await chatSetup('badresume');
  for (const v of ['abc', '-1', '1.5', '0x10', '99999999999999999999999', '1 2']) {
    const s = await openEvents(token, session.id, { lastEventId: v });
    assert.equal(s.status, 400, `Last-Event-ID ${JSON.stringify(v)}: ${s.status} ${s.text}`);
    assert.equal(s.problem?.code, 'invalid_resume_point', `Last-Event-ID ${v}`);
  }
  for (const v of ['abc', '-5', '1e3', '']) {
    const res = await get(`/v1/sessions/${session.id}/events?after=${encodeURIComponent(v)}`, { token, headers: { accept: 'text/event-stream' } });
    if (v === '') {
      assert.ok([200, 400].includes(res.status), `?after= (empty): ${res.status}`);
      continue;
    }
    assert.equal(res.status, 400, `?after=${v}: ${res.show()}`);
    assert.equal(res.json.code, 'invalid_resume_point');
  }
});

test('a session without runs: the event stream is empty and ends at once', async () => {
  const { token, session } = await chatSetup('empty');
  const t0 = Date.now();
  const r = await readEvents(token, session.id, { after: 0, timeoutMs: 15_000 });
  assert.ok(r.ended);
  assert.deepEqual(r.events, []);
  assert.ok(Date.now() - t0 < 10_000, 'it did not wait for a run');
});
