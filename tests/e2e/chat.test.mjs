// Chat runs end to end against the model fake (tests/fakes/anthropic.mjs; the server must run with
// ANTHROPIC_BASE_URL=http://127.0.0.1:8791 and any ANTHROPIC_API_KEY): the native event stream, the
// files the agent's tools wrote, the stored messages with usage and cost, what the server sent to
// the model, and the stream quirks a provider may send (fragments, pings, unknown events, CRLF,
// thinking blocks, several tool rounds). The OpenAI-compatible provider too.

import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';

import { expectJson, get, listFiles, sha256 } from './lib/client.mjs';
import {
  chatSetup,
  checkNativeRun,
  fakeRequests,
  listMessages,
  natives,
  newSession,
  readEvents,
  scenario,
  sendMessage,
  textOf,
  textOfBlocks,
} from './lib/chat.mjs';
import { longText, PAGE_HTML, TEXT_REPLY, THINKING_REPLY, THINKING_SIGNATURE, THINKING_TEXT, TOOLS_FILES, USAGE, ECHO_PREFIX } from '../fakes/scenarios.mjs';

let ctx;
before(async () => {
  ctx = await chatSetup('chat');
});

/** Cost in micro-USD as the core prices a Sonnet call (per million tokens: 3 in, 15 out, 0.3 cache read, 3.75 cache write). */
function sonnetCost(u) {
  return Math.floor((u.input_tokens * 3_000_000 + u.output_tokens * 15_000_000 + u.cache_read_input_tokens * 300_000 + u.cache_creation_input_tokens * 3_750_000) / 1_000_000);
}

describe('a run with a tool call whose input arrives in fragments', () => {
  let run;
  let sc;
  before(async () => {
    sc = scenario('tool-fragments');
    run = await sendMessage(ctx.token, ctx.session.id, `Build me a page ${sc.text}`);
  });

  test('the native stream: ids = seqs, one run, steps, text, tool call, result, finish', () => {
    assert.equal(run.status, 200);
    assert.ok(run.ended, 'the stream ended by itself');
    const fin = checkNativeRun(run.events);
    const evs = natives(run.events);
    assert.equal(fin.status, 'complete', JSON.stringify(fin));
    assert.equal(fin.stop_reason, 'end_turn');
    const started = evs[0];
    assert.equal(started.provider, 'anthropic');
    assert.match(started.message_id, /^msg_/);
    assert.match(started.user_message_id, /^msg_/);
    assert.deepEqual(
      evs.map((e) => e.type).filter((t) => !t.endsWith('_delta')),
      [
        'run_started',
        'step_started',
        'text_start',
        'text_end',
        'tool_call_start',
        'tool_call_end',
        'step_finished',
        'tool_result',
        'step_started',
        'text_start',
        'text_end',
        'step_finished',
        'run_finished',
      ],
    );
    assert.deepEqual(
      evs.filter((e) => e.type === 'step_started').map((e) => e.step),
      [1, 2],
    );
    const call = evs.find((e) => e.type === 'tool_call_start');
    assert.equal(call.name, 'write_file');
    const deltas = evs.filter((e) => e.type === 'tool_call_delta');
    assert.ok(deltas.length > 50, `input came in many fragments (${deltas.length})`);
    const json = deltas.map((e) => e.delta).join('');
    assert.deepEqual(JSON.parse(json), { path: 'index.html', content: PAGE_HTML });
    const end = evs.find((e) => e.type === 'tool_call_end');
    assert.equal(end.tool_call_id, call.tool_call_id);
    assert.deepEqual(end.input, { path: 'index.html', content: PAGE_HTML });
    const result = evs.find((e) => e.type === 'tool_result');
    assert.equal(result.tool_call_id, call.tool_call_id);
    assert.equal(result.is_error, false);
    assert.match(result.output, /index\.html/);
    assert.equal(textOf(evs), `I'll write index.html.Done. The tool said: ${result.output}`);
  });

  test('the tool wrote the file, byte for byte', async () => {
    const files = await listFiles(ctx.token, ctx.project.id);
    const entry = files.get('index.html');
    assert.ok(entry, `index.html listed: ${[...files.keys()]}`);
    const bytes = Buffer.from(PAGE_HTML, 'utf8');
    assert.equal(entry.size, bytes.length);
    assert.equal(entry.sha256, sha256(bytes));
    const res = await get(`/v1/projects/${ctx.project.id}/files/index.html`, { token: ctx.token });
    assert.equal(res.status, 200);
    assert.equal(res.body.toString('utf8'), PAGE_HTML);
  });

  test('the user and assistant messages are stored with blocks, usage and cost', async () => {
    const evs = natives(run.events);
    const fin = evs.at(-1);
    const started = evs[0];
    const msgs = await listMessages(ctx.token, ctx.session.id);
    const user = msgs.find((m) => m.id === started.user_message_id);
    const asst = msgs.find((m) => m.id === started.message_id);
    assert.ok(user, 'user message stored');
    assert.ok(asst, 'assistant message stored');
    assert.ok(msgs.indexOf(user) < msgs.indexOf(asst), 'user message first');
    assert.equal(user.role, 'user');
    assert.deepEqual(user.content, [{ type: 'text', text: `Build me a page ${sc.text}` }]);
    assert.equal(asst.role, 'assistant');
    assert.equal(asst.status, 'complete');
    assert.equal(asst.run_id, fin.run_id);
    assert.deepEqual(
      asst.content.map((b) => b.type),
      ['text', 'tool_use', 'tool_result', 'text'],
    );
    const [, use, result] = asst.content;
    const call = evs.find((e) => e.type === 'tool_call_start');
    assert.equal(use.id, call.tool_call_id);
    assert.equal(use.name, 'write_file');
    assert.deepEqual(use.input, { path: 'index.html', content: PAGE_HTML });
    assert.equal(result.tool_use_id, use.id);
    assert.equal(result.is_error, false);
    assert.equal(textOfBlocks(asst.content), textOf(evs));
    // Two model calls, each reporting the fake's usage.
    assert.equal(asst.usage.input_tokens, 2 * USAGE.input_tokens);
    assert.equal(asst.usage.cache_read_tokens, 2 * USAGE.cache_read_input_tokens);
    assert.equal(asst.usage.cache_write_tokens, 2 * USAGE.cache_creation_input_tokens);
    assert.ok(asst.usage.output_tokens > 50, `output tokens ${asst.usage.output_tokens}`);
    assert.deepEqual(fin.usage, asst.usage, 'run_finished reports the stored usage');
    assert.equal(fin.cost_micros, asst.cost_micros);
    assert.ok(asst.cost_micros > 0, 'a paid model costs something');
    if (/^claude-sonnet/.test(asst.model || started.model)) {
      const reqs = await fakeRequests(sc.nonce);
      if (reqs) {
        const expected = reqs.reduce((sum, r) => sum + sonnetCost({ ...USAGE, output_tokens: r.output_tokens }), 0);
        assert.equal(asst.cost_micros, expected, 'cost = sum of the per-call Sonnet prices');
        assert.equal(asst.usage.output_tokens, reqs.reduce((s, r) => s + r.output_tokens, 0), 'output tokens = what the model reported');
      }
    }
  });

  test('what the server sent the model: credentials, tools, system prompt, the tool result back', async (t) => {
    const reqs = await fakeRequests(sc.nonce);
    if (!reqs) return t.skip('the model fake is not reachable at MODEL_FAKE_URL');
    assert.equal(reqs.length, 2, `two model calls: ${JSON.stringify(reqs.map((r) => r.step))}`);
    const [first, second] = reqs;
    for (const r of reqs) {
      assert.equal(r.api, 'anthropic');
      assert.ok(['x-api-key', 'bearer'].includes(r.auth), `credentials sent (${r.auth})`);
      assert.ok(r.version, 'anthropic-version sent');
      assert.equal(r.body.stream, true);
      assert.ok(r.body.max_tokens > 0);
      assert.ok(r.body.system, 'a system prompt');
      const names = r.body.tools.map((x) => x.name).sort();
      for (const n of ['write_file', 'read_file', 'list_files', 'edit_file', 'delete_file']) assert.ok(names.includes(n), `tool ${n} offered`);
      for (const tool of r.body.tools) assert.equal(tool.input_schema.type, 'object');
    }
    assert.deepEqual(
      [first.step, second.step],
      [0, 1],
    );
    const msgs = second.body.messages;
    assert.deepEqual(
      msgs.map((m) => m.role),
      ['user', 'assistant', 'user'],
    );
    const use = msgs[1].content.find((b) => b.type === 'tool_use');
    const res = msgs[2].content.find((b) => b.type === 'tool_result');
    assert.equal(res.tool_use_id, use.id);
    assert.deepEqual(use.input, { path: 'index.html', content: PAGE_HTML });
  });

  test('the session list shows the session', async () => {
    const body = expectJson(await get(`/v1/projects/${ctx.project.id}/sessions`, { token: ctx.token }), 200);
    const s = body.items.find((x) => x.id === ctx.session.id);
    assert.ok(s, 'session listed');
    assert.equal(s.project_id, ctx.project.id);
  });
});

test('several tool rounds, two calls in one turn: the files and the final answer', async () => {
  const session = await newSession(ctx.token, ctx.project.id);
  const sc = scenario('tools');
  const run = await sendMessage(ctx.token, session.id, sc.text);
  const fin = checkNativeRun(run.events);
  assert.equal(fin.status, 'complete', JSON.stringify(fin));
  const evs = natives(run.events);
  assert.equal(evs.filter((e) => e.type === 'step_started').length, 5);
  const results = evs.filter((e) => e.type === 'tool_result');
  assert.equal(results.length, 5);
  for (const r of results) assert.equal(r.is_error, false, `tool ok: ${r.output}`);
  const read = results[2];
  assert.equal(read.output, 'alpha\n', 'read_file saw what write_file wrote in the turn before');
  for (const [path, content] of Object.entries(TOOLS_FILES)) {
    const res = await get(`/v1/projects/${ctx.project.id}/files/${path}`, { token: ctx.token });
    assert.equal(res.status, 200, `${path} exists`);
    assert.equal(res.body.toString('utf8'), content, path);
  }
  const listed = results[4].output;
  assert.match(listed, /src\/a\.txt/);
  assert.match(textOf(evs), /^Step one\.Editing\.Files now: /);
  const msgs = await listMessages(ctx.token, session.id);
  const asst = msgs.find((m) => m.role === 'assistant');
  assert.equal(asst.content.filter((b) => b.type === 'tool_use').length, 5);
  assert.equal(asst.content.filter((b) => b.type === 'tool_result').length, 5);
  assert.equal(asst.usage.input_tokens, 5 * USAGE.input_tokens);
});

test('pings, comments, unknown events / blocks / deltas and CRLF split streams give the same text', async () => {
  for (const name of ['text', 'pings', 'unknown-event', 'text-crlf']) {
    const session = await newSession(ctx.token, ctx.project.id);
    const run = await sendMessage(ctx.token, session.id, scenario(name).text);
    const fin = checkNativeRun(run.events);
    assert.equal(fin.status, 'complete', `${name}: ${JSON.stringify(fin)}`);
    assert.equal(textOf(natives(run.events)), TEXT_REPLY, name);
    const msgs = await listMessages(ctx.token, session.id);
    assert.equal(textOfBlocks(msgs.at(-1).content), TEXT_REPLY, `${name}: stored text`);
  }
});

// The Worker takes what arrives in a burst as one piece and merges its text deltas
// (functions/cloudflare/src/body_stream.rs): however the burst was split, no byte may be lost, repeated
// or reordered, live, stored or replayed.
test('a 2,000-delta burst arrives whole: the live stream, the stored message and a replay carry exactly its text', async () => {
  const session = await newSession(ctx.token, ctx.project.id);
  const run = await sendMessage(ctx.token, session.id, scenario('long', 2000).text);
  const fin = checkNativeRun(run.events);
  assert.equal(fin.status, 'complete', JSON.stringify(fin));
  const live = natives(run.events);
  assert.equal(textOf(live), longText(2000), 'the live text');
  const deltas = live.filter((e) => e.type === 'text_delta');
  assert.ok(deltas.length >= 1 && deltas.length <= 2000, `${deltas.length} text events`);
  const msgs = await listMessages(ctx.token, session.id);
  assert.equal(textOfBlocks(msgs.at(-1).content), longText(2000), 'the stored text');
  const replay = await readEvents(ctx.token, session.id, { after: live[0].seq - 1 });
  assert.deepEqual(natives(replay.events), live, 'the replay is the live stream, event for event');
});

test('thinking blocks are kept in the stored message, not streamed as text; the next call sends them back', async () => {
  const session = await newSession(ctx.token, ctx.project.id);
  const run = await sendMessage(ctx.token, session.id, scenario('thinking').text);
  assert.equal(checkNativeRun(run.events).status, 'complete');
  assert.equal(textOf(natives(run.events)), THINKING_REPLY);
  const msgs = await listMessages(ctx.token, session.id);
  const asst = msgs.at(-1);
  const thinking = asst.content.find((b) => b.type === 'thinking');
  assert.ok(thinking, `a thinking block stored: ${JSON.stringify(asst.content)}`);
  assert.equal(thinking.thinking, THINKING_TEXT);
  assert.equal(thinking.signature, THINKING_SIGNATURE);
  const echo = scenario('echo');
  const second = await sendMessage(ctx.token, session.id, echo.text);
  assert.equal(checkNativeRun(second.events).status, 'complete');
  const reqs = await fakeRequests(echo.nonce);
  if (reqs) {
    const sent = reqs[0].body.messages;
    assert.deepEqual(
      sent.map((m) => m.role),
      ['user', 'assistant', 'user'],
    );
    const back = sent[1].content.find((b) => b.type === 'thinking');
    assert.ok(back, 'the thinking block goes back to the model');
    assert.equal(back.signature, THINKING_SIGNATURE);
  }
});

test('the conversation history goes to the model on the next run', async () => {
  const session = await newSession(ctx.token, ctx.project.id);
  const first = await sendMessage(ctx.token, session.id, `first ${scenario('text').text}`);
  assert.equal(checkNativeRun(first.events).status, 'complete');
  const echo = scenario('echo');
  const second = await sendMessage(ctx.token, session.id, `second ${echo.text}`);
  assert.equal(checkNativeRun(second.events).status, 'complete');
  const text = textOf(natives(second.events));
  assert.ok(text.startsWith(ECHO_PREFIX), text);
  const doc = JSON.parse(text.slice(ECHO_PREFIX.length));
  assert.deepEqual(doc.roles, ['user', 'assistant', 'user']);
  assert.equal(doc.last_user_text, `second ${echo.text}`);
  const seqs1 = natives(first.events).map((e) => e.seq);
  const seqs2 = natives(second.events).map((e) => e.seq);
  assert.equal(seqs2[0], seqs1.at(-1) + 1, 'sequence numbers continue across the runs of a session');
  const msgs = await listMessages(ctx.token, session.id);
  assert.deepEqual(
    msgs.map((m) => m.role),
    ['user', 'assistant', 'user', 'assistant'],
  );
});

test('the OpenAI-compatible provider runs the same tool call', async (t) => {
  const session = await newSession(ctx.token, ctx.project.id);
  const sc = scenario('tool-fragments', 'openai/page.html');
  const run = await sendMessage(ctx.token, session.id, sc.text, { provider: 'openai' });
  if (run.status === 400 && run.problem?.code === 'provider_unavailable') {
    return t.skip('the server has no OPENAI_API_KEY / OPENAI_BASE_URL for the fake');
  }
  assert.equal(run.status, 200, JSON.stringify(run.problem));
  const fin = checkNativeRun(run.events);
  assert.equal(fin.status, 'complete', JSON.stringify(fin));
  assert.equal(natives(run.events)[0].provider, 'openai');
  const res = await get(`/v1/projects/${ctx.project.id}/files/openai/page.html`, { token: ctx.token });
  assert.equal(res.status, 200);
  assert.equal(res.body.toString('utf8'), PAGE_HTML);
  const msgs = await listMessages(ctx.token, session.id);
  const asst = msgs.at(-1);
  assert.equal(asst.usage.input_tokens, 2 * USAGE.input_tokens, 'prompt tokens minus cached tokens');
  assert.equal(asst.usage.cache_read_tokens, 2 * USAGE.cache_read_input_tokens);
  const reqs = await fakeRequests(sc.nonce);
  if (reqs) {
    assert.deepEqual(
      reqs.map((r) => r.api),
      ['openai', 'openai'],
    );
    assert.equal(reqs[0].auth, 'bearer');
    const sent = reqs[1].body.messages;
    assert.deepEqual(
      sent.map((m) => m.role),
      ['system', 'user', 'assistant', 'tool'],
    );
  }
});
