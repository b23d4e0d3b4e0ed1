// Runs that do not go to plan: an upstream `error` event mid-stream, a connection cut mid-stream, a
// busy provider (529 / 429 with retry-after: retried; busy for good: the run errors), cancel, tool
// calls with bad input (a tool error the model reads, nothing written), a model that never stops
// calling tools (stopped at the step limit), a second run while one is in progress. After each, the
// partial answer is stored with its status and the session takes the next message.

import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';

import { expectJson, get, listFiles, post } from './lib/client.mjs';
import {
  chatSetup,
  checkNativeRun,
  fakeRequests,
  listMessages,
  natives,
  newSession,
  openSse,
  scenario,
  sendMessage,
  textOf,
  textOfBlocks,
  whenText,
} from './lib/chat.mjs';
import { CUT_PARTIAL, ECHO_PREFIX, ERROR_PARTIAL, MAX_TOKENS_REPLY, RECOVERED_REPLY, slowText } from '../fakes/scenarios.mjs';

let ctx;
before(async () => {
  ctx = await chatSetup('failures');
});

/** Sends an echo message and returns the history the model received (roles), asserting the run completed. */
async function usableAfter(sessionId) {
  const echo = scenario('echo');
  const run = await sendMessage(ctx.token, sessionId, echo.text);
  assert.equal(run.status, 200, `the session takes the next message: ${JSON.stringify(run.problem)}`);
  const fin = checkNativeRun(run.events);
  assert.equal(fin.status, 'complete', `the next run completes: ${JSON.stringify(fin)}`);
  const text = textOf(natives(run.events));
  assert.ok(text.startsWith(ECHO_PREFIX), text);
  return JSON.parse(text.slice(ECHO_PREFIX.length));
}

async function lastAssistant(sessionId) {
  const msgs = await listMessages(ctx.token, sessionId);
  return msgs.filter((m) => m.role === 'assistant').at(-1);
}

describe('upstream failures mid-stream keep the partial answer as incomplete', () => {
  for (const [name, partial] of [
    ['error', ERROR_PARTIAL],
    ['cut', CUT_PARTIAL],
  ]) {
    test(`${name}: run_error, run_finished incomplete, partial text stored, session usable`, async () => {
      const session = await newSession(ctx.token, ctx.project.id);
      const run = await sendMessage(ctx.token, session.id, scenario(name).text);
      assert.equal(run.status, 200);
      const fin = checkNativeRun(run.events);
      const evs = natives(run.events);
      const expected = partial.repeat(4).slice(0, 40); // 5 deltas of 8 characters
      assert.equal(textOf(evs), expected);
      const err = evs.find((e) => e.type === 'run_error');
      assert.ok(err, 'a run_error event');
      assert.equal(err.code, 'upstream_failed');
      assert.equal(typeof err.message, 'string');
      assert.equal(fin.status, 'incomplete');
      assert.equal(fin.stop_reason, 'upstream_failed');
      assert.ok(evs.indexOf(err) < evs.indexOf(fin));
      const asst = await lastAssistant(session.id);
      assert.equal(asst.status, 'incomplete');
      assert.equal(textOfBlocks(asst.content), expected);
      assert.equal(asst.usage.input_tokens, 1000, 'the usage reported before the failure is kept');
      // The provider reports output tokens only at the stream's end: the cut call is billed an
      // estimate of what it streamed (about 4 bytes a token), not the 1 of its start.
      assert.equal(asst.usage.output_tokens, Math.ceil(Buffer.byteLength(expected) / 4));
      const history = await usableAfter(session.id);
      assert.deepEqual(history.roles, ['user', 'assistant', 'user'], 'the partial answer is part of the history');
    });
  }
});

describe('a busy provider', () => {
  test('529 with retry-after before the stream: retried after the wait, the run completes', async () => {
    const session = await newSession(ctx.token, ctx.project.id);
    const sc = scenario('overloaded', `k${Date.now()}${Math.random().toString(36).slice(2, 6)}`, 529, 1);
    const t0 = Date.now();
    const run = await sendMessage(ctx.token, session.id, sc.text);
    const fin = checkNativeRun(run.events);
    assert.equal(fin.status, 'complete', JSON.stringify(fin));
    assert.equal(textOf(natives(run.events)), RECOVERED_REPLY);
    assert.ok(Date.now() - t0 >= 900, `waited for retry-after (${Date.now() - t0} ms)`);
    assert.equal(natives(run.events).filter((e) => e.type === 'run_error').length, 0);
    const reqs = await fakeRequests(sc.nonce);
    if (reqs) {
      assert.deepEqual(
        reqs.map((r) => r.status),
        [529, 200],
      );
    }
  });

  test('429 with retry-after: retried too', async () => {
    const session = await newSession(ctx.token, ctx.project.id);
    const run = await sendMessage(ctx.token, session.id, scenario('overloaded', `r${Date.now()}`, 429, 1).text);
    assert.equal(checkNativeRun(run.events).status, 'complete');
    assert.equal(textOf(natives(run.events)), RECOVERED_REPLY);
  });

  test('busy for good: the retries stop, the run ends in error, the session stays usable', async () => {
    const session = await newSession(ctx.token, ctx.project.id);
    const sc = scenario('overloaded', `g${Date.now()}`, 529, 1, 50);
    const run = await sendMessage(ctx.token, session.id, sc.text, { timeoutMs: 90_000 });
    const fin = checkNativeRun(run.events);
    assert.equal(fin.status, 'error', JSON.stringify(fin));
    assert.equal(fin.stop_reason, 'upstream_unavailable');
    assert.ok(natives(run.events).some((e) => e.type === 'run_error' && e.code === 'upstream_unavailable'));
    const reqs = await fakeRequests(sc.nonce);
    if (reqs) assert.ok(reqs.length >= 2 && reqs.length <= 6, `a bounded number of attempts (${reqs.length})`);
    await usableAfter(session.id);
  });
});

test('cancel: the run stops soon with status cancelled, the partial text is stored; cancel again is 409', async () => {
  const session = await newSession(ctx.token, ctx.project.id);
  const N = 300;
  let cancelled;
  const t0 = Date.now();
  const run = await sendMessage(ctx.token, session.id, scenario('slow', N, '20ms').text, {
    onEvent: whenText('w10 ', async () => {
      cancelled = await post(`/v1/sessions/${session.id}/cancel`, {}, { token: ctx.token });
    }),
  });
  assert.ok(cancelled, 'cancel was sent');
  const body = expectJson(cancelled, 202);
  assert.match(body.run_id, /^run_/);
  const fin = checkNativeRun(run.events);
  assert.equal(fin.status, 'cancelled', JSON.stringify(fin));
  assert.equal(fin.run_id, body.run_id);
  assert.ok(Date.now() - t0 < (N * 20) / 2, `stopped well before the model finished (${Date.now() - t0} ms)`);
  const text = textOf(natives(run.events));
  assert.ok(slowText(N).startsWith(text) && text.length < slowText(N).length, 'a strict prefix of the answer');
  const asst = await lastAssistant(session.id);
  assert.equal(asst.status, 'cancelled');
  assert.equal(textOfBlocks(asst.content), text);
  assert.equal(asst.usage.output_tokens, Math.ceil(Buffer.byteLength(text) / 4), 'the cancelled call is billed what it streamed');
  const again = await post(`/v1/sessions/${session.id}/cancel`, {}, { token: ctx.token });
  assert.equal(again.status, 409, again.show());
  assert.equal(again.json.code, 'no_active_run');
  await usableAfter(session.id);
});

describe('tool calls with bad input are tool errors the model reads; nothing is written', () => {
  for (const [kind, pattern, path] of [
    ['json', /not a valid JSON object/i, 'broken.txt'],
    ['missing', /content/, 'missing.txt'],
    ['path', /path/i, 'escape.txt'],
    ['notool', /no tool named launch_rockets/i, null],
  ]) {
    test(kind, async () => {
      const session = await newSession(ctx.token, ctx.project.id);
      const before = await listFiles(ctx.token, ctx.project.id);
      const run = await sendMessage(ctx.token, session.id, scenario('bad-tool-input', kind).text);
      const fin = checkNativeRun(run.events);
      const evs = natives(run.events);
      const result = evs.find((e) => e.type === 'tool_result');
      assert.ok(result, `a tool_result: ${JSON.stringify(evs.map((e) => e.type))} ${JSON.stringify(evs.filter((e) => e.type === 'run_error'))}`);
      assert.equal(result.is_error, true);
      assert.match(result.output, pattern);
      assert.equal(fin.status, 'complete', `the model read the tool error and answered: ${JSON.stringify(fin)} ${JSON.stringify(evs.filter((e) => e.type === 'run_error'))}`);
      assert.equal(textOf(evs), `Trying a tool.Tool error seen: ${result.output}`);
      const after = await listFiles(ctx.token, ctx.project.id);
      assert.deepEqual([...after.keys()].sort(), [...before.keys()].sort(), 'no file written');
      if (path) assert.equal((await get(`/v1/projects/${ctx.project.id}/files/${path}`, { token: ctx.token })).status, 404);
      const asst = await lastAssistant(session.id);
      const stored = asst.content.find((b) => b.type === 'tool_result');
      assert.equal(stored.is_error, true);
      await usableAfter(session.id);
    });
  }
});

test('a model that never stops calling tools is stopped at the step limit; stored as incomplete; the session goes on', async () => {
  const user = await chatSetup('forever');
  const sc = scenario('forever');
  const run = await sendMessage(user.token, user.session.id, sc.text, { timeoutMs: 120_000 });
  const fin = checkNativeRun(run.events);
  assert.equal(fin.status, 'incomplete', JSON.stringify(fin));
  assert.equal(fin.stop_reason, 'max_steps');
  const evs = natives(run.events);
  const steps = evs.filter((e) => e.type === 'step_started').length;
  assert.ok(steps >= 2 && steps <= 100, `${steps} steps`);
  assert.equal(evs.filter((e) => e.type === 'tool_result').length, steps, 'every step ran its tool');
  const reqs = await fakeRequests(sc.nonce);
  if (reqs) assert.equal(reqs.length, steps, 'one model call per step');
  const msgs = await listMessages(user.token, user.session.id);
  const asst = msgs.at(-1);
  assert.equal(asst.status, 'incomplete');
  assert.equal(asst.content.filter((b) => b.type === 'tool_use').length, steps);
  assert.equal(asst.content.filter((b) => b.type === 'tool_result').length, steps);
  assert.equal(asst.usage.input_tokens, steps * 1000);
  // The next run sends the whole history back; the model fake checks every tool_use has its result.
  const echo = scenario('echo');
  const next = await sendMessage(user.token, user.session.id, echo.text);
  assert.equal(checkNativeRun(next.events).status, 'complete', JSON.stringify(natives(next.events).filter((e) => e.type === 'run_error')));
});

test('max_tokens: the run ends incomplete with stop_reason max_tokens (the answer was cut)', async () => {
  const session = await newSession(ctx.token, ctx.project.id);
  const run = await sendMessage(ctx.token, session.id, scenario('max-tokens').text);
  const fin = checkNativeRun(run.events);
  assert.deepEqual([fin.status, fin.stop_reason], ['incomplete', 'max_tokens']);
  assert.equal(textOf(natives(run.events)), MAX_TOKENS_REPLY);
});

test('a second message while a run is in progress is 409 run_in_progress; the first run is unharmed', async () => {
  const session = await newSession(ctx.token, ctx.project.id);
  const N = 80;
  let second;
  let second202;
  const run = await sendMessage(ctx.token, session.id, scenario('slow', N, '25ms').text, {
    onEvent: async (ev) => {
      if (!second && ev.json?.type === 'text_delta') {
        second = await openSse('POST', `/v1/sessions/${session.id}/messages`, { token: ctx.token, json: { content: 'me too' } });
        second202 = await post(`/v1/sessions/${session.id}/messages`, { content: 'me too, later' }, { token: ctx.token });
      }
    },
  });
  assert.equal(second.status, 409, second.text);
  assert.equal(second.problem.code, 'run_in_progress');
  assert.equal(second202.status, 409, second202.show());
  assert.equal(second202.json.code, 'run_in_progress');
  const fin = checkNativeRun(run.events);
  assert.equal(fin.status, 'complete');
  assert.equal(textOf(natives(run.events)), slowText(N));
  const msgs = await listMessages(ctx.token, session.id);
  assert.deepEqual(
    msgs.map((m) => m.role),
    ['user', 'assistant'],
    'the refused messages were not stored',
  );
  await usableAfter(session.id);
});
