// The three wire encodings of a run (`?protocol=native|ag-ui|ai-sdk`) read by the official client
// libraries of each protocol: every AG-UI event validates against @ag-ui/core's schemas and runs
// through @ag-ui/client's HttpAgent (its event verifier and message builder); the AI SDK stream goes
// through `ai`'s DefaultChatTransport (uiMessageChunkSchema) and readUIMessageStream. Also replays
// and mid-run joins in both encodings.

import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';

import { HttpAgent, runHttpRequest, transformHttpEventStream, verifyEvents } from '@ag-ui/client';
import { EventSchemas } from '@ag-ui/core/schemas';
import { DefaultChatTransport, readUIMessageStream, uiMessageChunkSchema } from 'ai';

import { BASE_URL } from './lib/client.mjs';
import { openSse } from './lib/chat.mjs';
import { chatSetup, checkNativeRun, listMessages, natives, newSession, readEvents, scenario, sendMessage, textOf, textOfBlocks } from './lib/chat.mjs';
import { ERROR_PARTIAL, PAGE_HTML } from '../fakes/scenarios.mjs';

let ctx;
before(async () => {
  ctx = await chatSetup('protocols');
});

const PAGE_INPUT = { path: 'index.html', content: PAGE_HTML };

/** Validates every event of an AG-UI SSE stream against @ag-ui/core's schemas; returns the events. */
function agUiEvents(sseEvents) {
  const out = [];
  for (const e of sseEvents) {
    assert.ok(e.json, `AG-UI data is JSON: ${e.data}`);
    const parsed = EventSchemas.safeParse(e.json);
    assert.ok(parsed.success, `AG-UI schema rejects ${e.data}: ${JSON.stringify(parsed.error?.issues)}`);
    assert.match(String(e.id), /^\d+$/, 'every SSE event carries the native seq as its id');
    out.push(e.json);
  }
  for (let i = 1; i < sseEvents.length; i++) assert.ok(Number(sseEvents[i].id) >= Number(sseEvents[i - 1].id), 'ids never go back');
  return out;
}

/** Runs a GET of our AG-UI stream through @ag-ui/client's parser and verifier; resolves the events or rejects. */
function verifiedAgUi(path, token, headers = {}) {
  return new Promise((resolve, reject) => {
    const events = [];
    const http$ = runHttpRequest(() => fetch(BASE_URL + path, { headers: { accept: 'text/event-stream', authorization: `Bearer ${token}`, ...headers } }));
    transformHttpEventStream(http$)
      .pipe(verifyEvents(false))
      .subscribe({ next: (e) => events.push(e), error: reject, complete: () => resolve(events) });
  });
}

/** An HttpAgent that posts our message body instead of RunAgentInput. */
function agent(sessionId, content) {
  return new HttpAgent({
    url: `${BASE_URL}/v1/sessions/${sessionId}/messages?protocol=ag-ui`,
    headers: { authorization: `Bearer ${ctx.token}` },
    fetch: (url, init) => fetch(url, { ...init, body: JSON.stringify({ content }) }),
  });
}

/** A DefaultChatTransport speaking to our endpoints. */
function transport(sessionId, { after } = {}) {
  const seen = {};
  const t = new DefaultChatTransport({
    api: `${BASE_URL}/v1/sessions/${sessionId}/messages?protocol=ai-sdk`,
    headers: { authorization: `Bearer ${ctx.token}` },
    prepareSendMessagesRequest: ({ messages, headers }) => ({
      headers: { ...headers, accept: 'text/event-stream' },
      body: { content: messages.at(-1).parts.find((p) => p.type === 'text').text },
    }),
    prepareReconnectToStreamRequest: ({ headers }) => ({
      api: `${BASE_URL}/v1/sessions/${sessionId}/events?protocol=ai-sdk&after=${after ?? 0}`,
      headers,
    }),
    fetch: async (url, init) => {
      const res = await fetch(url, init);
      seen.status = res.status;
      seen.headers = res.headers;
      return res;
    },
  });
  return { t, seen };
}

async function aiSdkSend(sessionId, text) {
  const { t, seen } = transport(sessionId);
  const stream = await t.sendMessages({
    chatId: sessionId,
    messages: [{ id: 'u1', role: 'user', parts: [{ type: 'text', text }] }],
    trigger: 'submit-message',
    messageId: undefined,
    abortSignal: undefined,
  });
  const errors = [];
  let message;
  for await (const m of readUIMessageStream({ stream, onError: (e) => errors.push(e) })) message = m;
  return { message, errors, seen };
}

/**
 * Within one SSE stream no two events may carry the same id: a reader that drops between them and
 * resumes with Last-Event-ID gets the stream after that id, so it would never see the second one.
 */
function assertUniqueIds(sseEvents, what) {
  const seen = new Map();
  for (const e of sseEvents) {
    if (e.id === null || e.id === undefined) continue;
    assert.ok(
      !seen.has(e.id),
      `${what}: SSE events ${seen.get(e.id)} and ${e.data} share id ${e.id}; a reader dropping between them and resuming with Last-Event-ID ${e.id} never gets the second`,
    );
    seen.set(e.id, e.data);
  }
}

const uiText = (m) =>
  m.parts
    .filter((p) => p.type === 'text')
    .map((p) => p.text)
    .join('');

describe('AG-UI', () => {
  test('every event of a tool run validates against @ag-ui/core; ids, thread and run ids, tool args and result', async () => {
    const session = await newSession(ctx.token, ctx.project.id);
    const run = await sendMessage(ctx.token, session.id, scenario('tool-fragments').text, { protocol: 'ag-ui' });
    assert.equal(run.status, 200);
    const evs = agUiEvents(run.events);
    assert.equal(evs[0].type, 'RUN_STARTED');
    assert.equal(evs[0].threadId, session.id);
    assert.match(evs[0].runId, /^run_/);
    assert.equal(evs.at(-1).type, 'RUN_FINISHED');
    assert.equal(evs.at(-1).runId, evs[0].runId);
    assert.equal(evs.filter((e) => e.type === 'RUN_STARTED').length, 1);
    const start = evs.find((e) => e.type === 'TOOL_CALL_START');
    assert.equal(start.toolCallName, 'write_file');
    const args = evs.filter((e) => e.type === 'TOOL_CALL_ARGS' && e.toolCallId === start.toolCallId);
    assert.deepEqual(JSON.parse(args.map((e) => e.delta).join('')), PAGE_INPUT);
    assert.ok(evs.some((e) => e.type === 'TOOL_CALL_END' && e.toolCallId === start.toolCallId));
    const result = evs.find((e) => e.type === 'TOOL_CALL_RESULT');
    assert.equal(result.toolCallId, start.toolCallId);
    assert.match(result.content, /index\.html/);
    assert.deepEqual(
      evs.filter((e) => e.type === 'STEP_STARTED').map((e) => e.stepName),
      ['step-1', 'step-2'],
    );
    // The same run read back in AG-UI from the log is the same sequence.
    const msgs = await listMessages(ctx.token, session.id);
    assert.equal(msgs.at(-1).status, 'complete');
    const replay = await readEvents(ctx.token, session.id, { after: 0, protocol: 'ag-ui' });
    assert.deepEqual(agUiEvents(replay.events), evs);
  });

  test('@ag-ui/client HttpAgent runs it: verified events build the text, tool call and tool result messages', async () => {
    const session = await newSession(ctx.token, ctx.project.id);
    const a = agent(session.id, scenario('tool-fragments', 'agui.html').text);
    const seen = [];
    const { newMessages } = await a.runAgent({}, { onEvent: ({ event }) => seen.push(event.type) });
    assert.equal(seen[0], 'RUN_STARTED');
    assert.equal(seen.at(-1), 'RUN_FINISHED');
    const texts = newMessages.filter((m) => m.role === 'assistant' && typeof m.content === 'string' && m.content);
    assert.deepEqual(
      texts.map((m) => m.content.replace(/\(\d+ bytes\)/, '(N bytes)')),
      ["I'll write agui.html.", 'Done. The tool said: Wrote agui.html (N bytes).'],
    );
    const withCall = newMessages.find((m) => m.role === 'assistant' && m.toolCalls?.length);
    assert.ok(withCall, `a tool call message: ${JSON.stringify(newMessages)}`);
    const call = withCall.toolCalls[0];
    assert.equal(call.function.name, 'write_file');
    assert.deepEqual(JSON.parse(call.function.arguments), { path: 'agui.html', content: PAGE_HTML });
    const toolMsg = newMessages.find((m) => m.role === 'tool');
    assert.equal(toolMsg.toolCallId, call.id);
    assert.match(toolMsg.content, /^Wrote agui\.html/);
  });

  test('a failed run ends with RUN_ERROR, which the client reports; the partial text is kept', async () => {
    const session = await newSession(ctx.token, ctx.project.id);
    const run = await sendMessage(ctx.token, session.id, scenario('error').text, { protocol: 'ag-ui' });
    const evs = agUiEvents(run.events);
    assert.equal(evs.at(-1).type, 'RUN_ERROR');
    assert.equal(evs.filter((e) => e.type === 'RUN_FINISHED').length, 0);
    const a = agent(session.id, scenario('error').text);
    const errors = [];
    const { newMessages } = await a.runAgent({}, { onRunErrorEvent: ({ event }) => errors.push(event) }).catch((e) => ({ newMessages: a.messages, thrown: e }));
    assert.equal(errors.length, 1, 'onRunErrorEvent once');
    assert.equal(
      newMessages
        .filter((m) => m.role === 'assistant')
        .map((m) => m.content)
        .join(''),
      ERROR_PARTIAL.repeat(4).slice(0, 40),
    );
  });

  test('replays joined mid-run (inside a text block and inside tool args) pass the client verifier', async () => {
    const session = await newSession(ctx.token, ctx.project.id);
    const run = await sendMessage(ctx.token, session.id, scenario('tool-fragments').text);
    const evs = natives(run.events);
    checkNativeRun(run.events);
    const inText = evs.find((e) => e.type === 'text_delta').seq;
    const inArgs = evs.filter((e) => e.type === 'tool_call_delta')[10].seq;
    for (const after of [0, inText, inArgs]) {
      const got = await verifiedAgUi(`/v1/sessions/${session.id}/events?protocol=ag-ui&after=${after}`, ctx.token).catch((e) => e);
      assert.ok(Array.isArray(got), `joined after ${after} (${evs.find((e) => e.seq === after + 1)?.type}): the AG-UI verifier rejects the stream: ${got}`);
      assert.equal(got[0].type, 'RUN_STARTED');
      assert.equal(got.at(-1).type, 'RUN_FINISHED');
    }
  });
});

describe('AI SDK UI message stream', () => {
  test('DefaultChatTransport + readUIMessageStream: header, text parts, the write_file tool part with input and output', async () => {
    const session = await newSession(ctx.token, ctx.project.id);
    const { message, errors, seen } = await aiSdkSend(session.id, scenario('tool-fragments').text);
    assert.equal(seen.status, 200);
    assert.equal(seen.headers.get('x-vercel-ai-ui-message-stream'), 'v1');
    assert.deepEqual(errors, []);
    assert.match(message.id, /^run_/);
    assert.equal(message.role, 'assistant');
    assert.deepEqual(
      message.parts.map((p) => p.type),
      ['step-start', 'text', 'tool-write_file', 'step-start', 'text'],
    );
    const tool = message.parts[2];
    assert.equal(tool.state, 'output-available');
    assert.deepEqual(tool.input, PAGE_INPUT);
    assert.match(tool.output, /^Wrote index\.html/);
    assert.equal(uiText(message), `I'll write index.html.Done. The tool said: ${tool.output}`);
    for (const p of message.parts.filter((x) => x.type === 'text')) assert.equal(p.state, 'done');
    const stored = await listMessages(ctx.token, session.id);
    assert.equal(textOfBlocks(stored.at(-1).content), uiText(message));
  });

  test('the raw stream: every data line is a valid UI message chunk, then data: [DONE]', async () => {
    const session = await newSession(ctx.token, ctx.project.id);
    const s = await openSse('POST', `/v1/sessions/${session.id}/messages?protocol=ai-sdk`, { token: ctx.token, json: { content: scenario('tools').text } });
    assert.equal(s.status, 200);
    assert.equal(s.headers.get('x-vercel-ai-ui-message-stream'), 'v1');
    const { events, ended } = await s.read();
    assert.ok(ended);
    assert.equal(events.at(-1).data, '[DONE]');
    assert.equal(events.filter((e) => e.data === '[DONE]').length, 1);
    const chunks = events.slice(0, -1);
    for (const e of chunks) {
      const r = await uiMessageChunkSchema().validate(e.json);
      assert.ok(r.success, `uiMessageChunkSchema rejects ${e.data}: ${r.error}`);
      assert.match(String(e.id), /^\d+$/);
    }
    assert.equal(chunks[0].json.type, 'start');
    assert.equal(chunks.at(-1).json.type, 'finish');
    const available = chunks.filter((e) => e.json.type === 'tool-input-available').map((e) => e.json.toolName);
    assert.deepEqual(available, ['write_file', 'write_file', 'read_file', 'edit_file', 'list_files']);
  });

  test('a tool error becomes an output-error tool part', async () => {
    const session = await newSession(ctx.token, ctx.project.id);
    const { message, errors } = await aiSdkSend(session.id, scenario('bad-tool-input', 'path').text);
    assert.deepEqual(errors, []);
    const tool = message.parts.find((p) => p.type === 'tool-write_file');
    assert.equal(tool.state, 'output-error', JSON.stringify(tool));
    assert.match(tool.errorText, /path/i);
  });

  test('every SSE event has its own id, so resuming after any of them loses nothing (failed run, mid-run join)', async () => {
    const session = await newSession(ctx.token, ctx.project.id);
    const run = await sendMessage(ctx.token, session.id, scenario('error').text, { protocol: 'ai-sdk' });
    assertUniqueIds(run.events, 'ai-sdk failed run');
    const join = await readEvents(ctx.token, session.id, { after: 3, protocol: 'ai-sdk' });
    assertUniqueIds(join.events, 'ai-sdk joined after 3');
    const agui = await readEvents(ctx.token, session.id, { after: 3, protocol: 'ag-ui' });
    assertUniqueIds(agui.events, 'ag-ui joined after 3');
  });

  test('a failed run: error chunk reported through onError, partial text kept, the stream still finishes', async () => {
    const session = await newSession(ctx.token, ctx.project.id);
    const { message, errors } = await aiSdkSend(session.id, scenario('error').text);
    assert.equal(errors.length, 1);
    assert.match(String(errors[0].message || errors[0]), /incomplete/);
    assert.equal(uiText(message), ERROR_PARTIAL.repeat(4).slice(0, 40));
  });

  test('reconnectToStream replays the run from its start: the same UI message', async () => {
    const session = await newSession(ctx.token, ctx.project.id);
    const first = await aiSdkSend(session.id, scenario('tool-fragments').text);
    const { t } = transport(session.id, { after: 0 });
    const stream = await t.reconnectToStream({ chatId: session.id });
    assert.ok(stream, 'a stream to reconnect to');
    let replayed;
    for await (const m of readUIMessageStream({ stream })) replayed = m;
    assert.deepEqual(replayed, first.message);
  });

  test('a stream joined mid-run (inside a text block, inside tool input) is still readable by readUIMessageStream', async () => {
    const session = await newSession(ctx.token, ctx.project.id);
    const run = await sendMessage(ctx.token, session.id, scenario('tool-fragments').text);
    const evs = natives(run.events);
    const joins = [evs.find((e) => e.type === 'text_delta').seq, evs.filter((e) => e.type === 'tool_call_delta')[10].seq];
    for (const after of joins) {
      const { t } = transport(session.id, { after });
      const stream = await t.reconnectToStream({ chatId: session.id });
      const got = await (async () => {
        let m;
        for await (const x of readUIMessageStream({ stream, terminateOnError: true })) m = x;
        return m;
      })().catch((e) => e);
      assert.ok(!(got instanceof Error), `joined after ${after} (${evs.find((e) => e.seq === after + 1)?.type}): readUIMessageStream fails: ${got?.message}`);
      assert.equal(got.parts.filter((p) => p.type === 'tool-write_file').length, 1);
    }
  });
});

test('protocol=native is the default; an unknown protocol is 400', async () => {
  const session = await newSession(ctx.token, ctx.project.id);
  const run = await sendMessage(ctx.token, session.id, scenario('text').text, { protocol: 'native' });
  assert.equal(checkNativeRun(run.events).status, 'complete');
  assert.ok(textOf(natives(run.events)).length > 0);
  const bad = await openSse('POST', `/v1/sessions/${session.id}/messages?protocol=grpc`, { token: ctx.token, json: { content: 'hi' } });
  assert.equal(bad.status, 400);
  assert.equal(bad.problem.code, 'invalid_protocol');
  const badEvents = await openSse('GET', `/v1/sessions/${session.id}/events?protocol=AG-UI`, { token: ctx.token });
  assert.equal(badEvents.status, 400);
  assert.equal(badEvents.problem.code, 'invalid_protocol');
});
