// The OpenAPI document describes what the chat API really sends. Every answer of the chat routes
// and every native event of real runs (text, a tool call in fragments, several tool rounds, a failed
// upstream, a cancelled run) is validated against the schema that the document gives for that route
// and status (tests/e2e/lib/openapi.mjs: Ajv, JSON Schema 2020-12, OpenAPI 3.1's dialect). The schemas
// forbid unknown properties, so a field the document does not name fails here too. The document
// itself is checked against the official OpenAPI 3.1 schema (@seriousme/openapi-schema-validator).

import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';

import { Validator as OpenApiValidator } from '@seriousme/openapi-schema-validator';
import WebSocket from 'ws';

import { BASE_URL, del, expectJson, get, post, put } from './lib/client.mjs';
import { chatSetup, newSession, openSse, scenario, sendMessage, serverMode, waitFor, whenText } from './lib/chat.mjs';
import { escapePointer as escape, openApiDocument } from './lib/openapi.mjs';

let doc;
let validatorAt;
let answerPointer;
let conforms;
let answers;
let ctx;
before(async () => {
  ({ doc, validatorAt, answerPointer, conforms, answers } = await openApiDocument());
  ctx = await chatSetup('contract');
});

/** Asserts every SSE event of a native stream: its `data` as the route's 200 answer says, `id` its seq. */
function eventsConform(method, path, sseEvents) {
  const pointer = answerPointer(method, path, 200, 'sse');
  const types = new Set();
  for (const e of sseEvents) {
    assert.ok(e.json, `SSE data is JSON: ${e.data}`);
    conforms(pointer, e.json, `a ${e.json.type} event of ${method.toUpperCase()} ${path}`);
    assert.equal(e.id, String(e.json.seq), 'the SSE id is the sequence number');
    types.add(e.json.type);
  }
  return types;
}

describe('the OpenAPI document', () => {
  test('is valid OpenAPI 3.1 by the official schema', async () => {
    const validator = new OpenApiValidator();
    const result = await validator.validate(structuredClone(doc));
    assert.ok(result.valid, `not valid OpenAPI: ${JSON.stringify(result.errors)?.slice(0, 1500)}`);
    assert.equal(validator.version, '3.1');
  });

  test('compiles as JSON Schema 2020-12, with a schema for every chat answer', () => {
    for (const name of Object.keys(doc.components.schemas)) validatorAt(`/components/schemas/${name}`);
    for (const [method, path, status] of [
      ['post', '/v1/projects/{id}/sessions', 201],
      ['get', '/v1/projects/{id}/sessions', 200],
      ['get', '/v1/sessions/{id}/messages', 200],
      ['post', '/v1/sessions/{id}/messages', 202],
      ['post', '/v1/sessions/{id}/ws-ticket', 201],
      ['post', '/v1/sessions/{id}/cancel', 202],
    ])
      validatorAt(answerPointer(method, path, status));
    validatorAt(answerPointer('post', '/v1/sessions/{id}/messages', 200, 'sse'));
    validatorAt(answerPointer('get', '/v1/sessions/{id}/events', 200, 'sse'));
  });

  test('names the native encoding, the resume parameters and the one-run-at-a-time conflict', () => {
    const send = doc.paths['/v1/sessions/{id}/messages'].post;
    const events = doc.paths['/v1/sessions/{id}/events'].get;
    const names = (op) => op.parameters.map((p) => `${p.in}:${p.name}`);
    assert.ok(names(send).includes('query:protocol'));
    assert.ok(names(events).includes('query:protocol') && names(events).includes('query:after') && names(events).includes('header:Last-Event-ID'));
    assert.deepEqual(events.parameters.find((p) => p.name === 'protocol').schema.enum, ['native', 'ag-ui', 'ai-sdk']);
    assert.ok(send.responses['409'], 'a second run in a session is documented');
    const kinds = doc.components.schemas.NativeEvent.oneOf.map((s) => s.properties.type.const);
    for (const t of ['run_started', 'text_delta', 'tool_call_delta', 'tool_call_end', 'tool_result', 'run_finished', 'run_error'])
      assert.ok(kinds.includes(t), `NativeEvent documents ${t}`);
  });

  test('rejects what the API never sends', () => {
    const pointer = answerPointer('get', '/v1/sessions/{id}/events', 200, 'sse');
    const ok = { seq: 3, run_id: 'run_x', type: 'text_delta', block_id: 'b1', delta: 'hi' };
    assert.ok(validatorAt(pointer)(ok));
    for (const bad of [
      { ...ok, extra: 1 },
      { ...ok, seq: 0 },
      { ...ok, type: 'text_deltas' },
      { seq: 3, run_id: 'run_x', type: 'text_delta', block_id: 'b1' },
      { ...ok, type: 'run_finished' },
    ])
      assert.equal(validatorAt(pointer)(bad), false, `accepted ${JSON.stringify(bad)}`);
  });
});

describe('the chat answers match the document', () => {
  test('sessions: created and listed', async () => {
    const s = expectJson(await post(`/v1/projects/${ctx.project.id}/sessions`, { title: 'contract' }, { token: ctx.token }), 201);
    answers('post', '/v1/projects/{id}/sessions', 201, s);
    const page = expectJson(await get(`/v1/projects/${ctx.project.id}/sessions?limit=1`, { token: ctx.token }), 200);
    assert.equal(page.items.length, 1);
    assert.ok(page.next_cursor, 'a second page exists');
    answers('get', '/v1/projects/{id}/sessions', 200, page);
  });

  test('a streamed run with several tool rounds: every event, then the stored messages', async () => {
    const session = await newSession(ctx.token, ctx.project.id);
    const run = await sendMessage(ctx.token, session.id, scenario('tools').text);
    assert.equal(run.status, 200);
    const timing = run.headers.get('server-timing');
    conforms(`/paths/${escape('/v1/sessions/{id}/messages')}/post/responses/200/headers/Server-Timing/schema`, timing, 'the Server-Timing header');
    assert.equal(/room;dur=/.test(timing), (await serverMode()) === 'rooms', `a room's part only with rooms: ${timing}`);
    const types = eventsConform('post', '/v1/sessions/{id}/messages', run.events);
    for (const t of ['run_started', 'step_started', 'text_start', 'text_delta', 'text_end', 'tool_call_start', 'tool_call_delta', 'tool_call_end', 'tool_result', 'step_finished', 'run_finished'])
      assert.ok(types.has(t), `the run had a ${t} event (had ${[...types]})`);
    const replay = await openSse('GET', `/v1/sessions/${session.id}/events?after=0`, { token: ctx.token });
    eventsConform('get', '/v1/sessions/{id}/events', (await replay.read()).events);
    const page = expectJson(await get(`/v1/sessions/${session.id}/messages`, { token: ctx.token }), 200);
    answers('get', '/v1/sessions/{id}/messages', 200, page);
    const blocks = new Set(page.items.flatMap((m) => m.content.map((b) => b.type)));
    for (const b of ['text', 'tool_use', 'tool_result']) assert.ok(blocks.has(b), `the stored messages have a ${b} block`);
  });

  test('a run started without a stream (202), and one whose upstream fails', async () => {
    const session = await newSession(ctx.token, ctx.project.id);
    const res = await post(`/v1/sessions/${session.id}/messages`, { content: scenario('error').text }, { token: ctx.token });
    const accepted = expectJson(res, 202);
    answers('post', '/v1/sessions/{id}/messages', 202, accepted);
    conforms(`/paths/${escape('/v1/sessions/{id}/messages')}/post/responses/202/headers/Server-Timing/schema`, res.headers['server-timing'], 'the Server-Timing header');
    const s = await openSse('GET', accepted.events_url, { token: ctx.token });
    const types = eventsConform('get', '/v1/sessions/{id}/events', (await s.read()).events);
    assert.ok(types.has('run_error'), 'the failed upstream shows as run_error');
    const page = expectJson(await get(`/v1/sessions/${session.id}/messages`, { token: ctx.token }), 200);
    answers('get', '/v1/sessions/{id}/messages', 200, page);
    assert.ok(page.items.some((m) => m.status === 'incomplete'), 'the partial answer is stored as incomplete');
  });

  test('cancel, its events, and the problems of a second run and of no run', async () => {
    const session = await newSession(ctx.token, ctx.project.id);
    let cancel;
    let second;
    const run = await sendMessage(ctx.token, session.id, scenario('slow', 200, '20ms').text, {
      onEvent: whenText('w5 ', async () => {
        second = await post(`/v1/sessions/${session.id}/messages`, { content: 'meanwhile' }, { token: ctx.token });
        cancel = await post(`/v1/sessions/${session.id}/cancel`, {}, { token: ctx.token });
      }),
    });
    assert.ok(cancel, 'cancel was sent');
    assert.equal(second.status, 409, 'a second run in the session is refused');
    conforms('/components/schemas/Problem', second.json, 'the run_in_progress problem');
    answers('post', '/v1/sessions/{id}/cancel', 202, expectJson(cancel, 202));
    eventsConform('post', '/v1/sessions/{id}/messages', run.events);
    assert.equal(run.events.at(-1).json.status, 'cancelled');
    const none = await post(`/v1/sessions/${session.id}/cancel`, {}, { token: ctx.token });
    assert.equal(none.status, 409);
    conforms('/components/schemas/Problem', none.json, 'the no_active_run problem');
  });

  test('a WebSocket ticket, and the frames of the room', async (t) => {
    const session = await newSession(ctx.token, ctx.project.id);
    const ticket = expectJson(await post(`/v1/sessions/${session.id}/ws-ticket`, {}, { token: ctx.token }), 201);
    answers('post', '/v1/sessions/{id}/ws-ticket', 201, ticket);
    if ((await serverMode()) !== 'rooms') return t.skip('this server has no live rooms');
    const frames = [];
    const ws = new WebSocket(BASE_URL.replace(/^http/, 'ws') + ticket.url);
    ws.on('message', (d) => frames.push(JSON.parse(d.toString('utf8'))));
    await new Promise((resolve, reject) => ws.once('open', resolve).once('error', reject));
    await sendMessage(ctx.token, session.id, scenario('tool-fragments').text);
    await waitFor('the run to reach the socket', async () => frames.some((f) => f.type === 'run_finished'), { everyMs: 50 });
    ws.send(JSON.stringify({ type: 'ping' }));
    ws.send('not a message');
    await waitFor('the answers to a ping and to a bad frame', async () => frames.some((f) => f.type === 'pong') && frames.some((f) => f.type === 'error'), { everyMs: 50 });
    ws.close();
    assert.ok(frames.some((f) => f.type === 'presence'), 'a presence frame came');
    for (const f of frames) conforms('/components/schemas/WsServerFrame', f, 'a WebSocket frame');
  });

  test('own model keys and the usage report', async (t) => {
    const json = { 'content-type': 'application/json' };
    const stored = await put('/v1/keys/anthropic', JSON.stringify({ api_key: 'sk-ant-contract-k3y9' }), { token: ctx.token, headers: json });
    if (stored.json?.code === 'keys_unavailable') return t.skip('this server has no KEYS_ENCRYPTION_KEY');
    answers('put', '/v1/keys/{provider}', 200, expectJson(stored, 200));
    const listed = expectJson(await get('/v1/keys', { token: ctx.token }), 200);
    answers('get', '/v1/keys', 200, listed);
    assert.deepEqual(listed.items.map((k) => [k.provider, k.last4]), [['anthropic', 'k3y9']]);
    const removed = await del('/v1/keys/anthropic', { token: ctx.token });
    assert.equal(removed.status, 204);
    assert.ok(doc.paths['/v1/keys/{provider}'].delete.responses['204'], 'DELETE /v1/keys/{provider} is documented as 204');
    // The runs above wrote ledger rows, so the report has days.
    const usage = expectJson(await get('/v1/usage', { token: ctx.token }), 200);
    answers('get', '/v1/usage', 200, usage);
    assert.ok(usage.by_day.length > 0 && usage.totals.model_calls > 0, JSON.stringify(usage.totals));
  });
});

describe('other answers match the document', () => {
  test('health, readiness and the audit log', async () => {
    answers('get', '/health', 200, expectJson(await get('/health'), 200));
    answers('get', '/ready', 200, expectJson(await get('/ready'), 200));
    const page = expectJson(await get('/v1/audit?limit=3', { token: ctx.token }), 200);
    answers('get', '/v1/audit', 200, page);
    assert.equal(page.items.length, 3);
    assert.ok(page.next_cursor, 'the contract runs left more than three events');
  });
});
