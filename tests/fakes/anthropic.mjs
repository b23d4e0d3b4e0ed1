#!/usr/bin/env node
// A fake of the Anthropic Messages API (and, in the same process, of OpenAI-compatible chat
// completions: tests/fakes/openai.mjs) for the end-to-end tests. Test-only: never deploy it.
//
// It serves, on 127.0.0.1 only:
//   POST /v1/messages           Anthropic Messages API, streaming (stream: true: `event:` + `data:` SSE
//                               lines: message_start, content_block_start/delta/stop, message_delta,
//                               message_stop, ping, error) or not (one JSON message)
//   POST /v1/chat/completions   OpenAI chat completions, streaming (`data:` lines, a usage chunk when
//                               stream_options.include_usage, `data: [DONE]`) or not
//   GET  /v1/models             the model list, as both APIs answer it (Anthropic when `anthropic-version`
//                               is sent, else OpenAI): what the server calls to check a user's own key
//                               (PUT /v1/keys/{provider}); a key containing "rejected" answers 401
//   GET  /health                {"status":"ok"}
//   GET  /_fake/requests?contains=TEXT
//                               test-only: the requests whose last user text contains TEXT, newest last:
//                               [{at, api, path, auth, keyLast4, version, scenario, step, status, output_tokens, body,
//                               sent, aborted}]; `sent` (paced scenarios only): when each text delta was written, ms;
//                               `aborted`: the caller went away before the answer's end
//   ANY  /_fake/echo/request    test-only, for the HTTP conformance suite (GET /v1/_conformance?http=...):
//                               201, x-echo: yes, {method, path, header (of x-conformance), body_hex}
//   GET  /_fake/echo/status/NNN  status NNN, body "status"
//   GET  /_fake/echo/bytes       the 256 byte values in order
//   GET  /_fake/echo/stream      "chunk 0\n", "chunk 1\n", "chunk 2\n", 300 ms apart
// Credentials: Anthropic accepts `x-api-key: <key>` or `authorization: Bearer <key>` (the official
// TypeScript SDK sends the latter) and requires `anthropic-version`; OpenAI requires
// `authorization: Bearer <key>`. Any non-empty key is accepted; the log records which form came.
// The conversation is checked the way the real APIs check it (tool_use answered by tool_result right
// after, no tool_result without its tool_use, no empty text blocks): a violation answers 400
// invalid_request_error, so a server that rebuilds a bad history fails its test here.
//
// What each request gets is chosen by a marker in its last user text block, e.g.
// "[scenario:tool-fragments]" or "[scenario:slow:200:20ms]": see tests/fakes/scenarios.mjs.
//
// Standalone: `node tests/fakes/anthropic.mjs` listens on MODEL_FAKE_PORT (default 8791) and prints
// its address. Point the server at it with ANTHROPIC_BASE_URL=http://127.0.0.1:8791 (and
// OPENAI_BASE_URL=http://127.0.0.1:8791), any API key.
// Imported: `await startModelFake({ port: 0 })` -> { url, port, requests(contains), close() }.

import http from 'node:http';
import { fileURLToPath } from 'node:url';

import { handleOpenAi } from './openai.mjs';
import { readBody, sendJson, sseWriter } from './wire.mjs';
import { USAGE, outputTokens, plan, randomId, sleep } from './scenarios.mjs';

export * from './scenarios.mjs';

const LOG_LIMIT = 2000;

// ------------------------------------------------------------------ Anthropic

function anthropicError(res, status, type, message, headers = {}) {
  sendJson(res, status, { type: 'error', error: { type, message } }, { 'request-id': randomId('req_'), ...headers });
}

const blocksOf = (m) => (typeof m.content === 'string' ? [{ type: 'text', text: m.content }] : Array.isArray(m.content) ? m.content : []);

const resultText = (b) =>
  typeof b.content === 'string'
    ? b.content
    : Array.isArray(b.content)
      ? b.content
          .filter((c) => c.type === 'text')
          .map((c) => c.text)
          .join('')
      : '';

/** Checks a Messages API conversation like the real API does; returns an error message or null. */
export function checkAnthropicMessages(messages) {
  if (!Array.isArray(messages) || messages.length === 0) return 'messages: at least one message is required';
  for (let i = 0; i < messages.length; i++) {
    const m = messages[i];
    if (!m || (m.role !== 'user' && m.role !== 'assistant')) return `messages.${i}.role: must be user or assistant`;
    if (typeof m.content !== 'string' && !Array.isArray(m.content)) return `messages.${i}.content: must be a string or an array`;
    const blocks = blocksOf(m);
    const last = i === messages.length - 1;
    if (blocks.length === 0 && !(last && m.role === 'assistant')) {
      return `messages.${i}: all messages must have non-empty content except for the optional final assistant message`;
    }
    for (const [j, b] of blocks.entries()) {
      if (!b || typeof b.type !== 'string') return `messages.${i}.content.${j}: a block needs a type`;
      if (b.type === 'text' && (typeof b.text !== 'string' || b.text.length === 0)) {
        return `messages.${i}.content.${j}.text: text content blocks must be non-empty`;
      }
      if (b.type === 'tool_use' && m.role !== 'assistant') return `messages.${i}.content.${j}: tool_use blocks belong to assistant turns`;
      if (b.type === 'tool_use' && (typeof b.input !== 'object' || b.input === null || Array.isArray(b.input))) {
        return `messages.${i}.content.${j}.tool_use.input: Input should be a valid dictionary`;
      }
      if (b.type === 'tool_result' && m.role !== 'user') return `messages.${i}.content.${j}: tool_result blocks belong to user turns`;
      if (b.type === 'thinking' && m.role !== 'assistant') return `messages.${i}.content.${j}: thinking blocks belong to assistant turns`;
    }
    const uses = blocks.filter((b) => b.type === 'tool_use').map((b) => b.id);
    if (m.role === 'assistant' && uses.length) {
      const next = messages[i + 1];
      const answered = new Set(next && next.role === 'user' ? blocksOf(next).filter((b) => b.type === 'tool_result').map((b) => b.tool_use_id) : []);
      const missing = uses.filter((id) => !answered.has(id));
      if (missing.length) {
        return `messages.${i}: \`tool_use\` ids were found without \`tool_result\` blocks immediately after: ${missing.join(', ')}. Each \`tool_use\` block must have a corresponding \`tool_result\` block in the next message.`;
      }
    }
    const results = blocks.filter((b) => b.type === 'tool_result').map((b) => b.tool_use_id);
    if (results.length) {
      const prev = messages[i - 1];
      const known = new Set(prev && prev.role === 'assistant' ? blocksOf(prev).filter((b) => b.type === 'tool_use').map((b) => b.id) : []);
      const unexpected = results.filter((id) => !known.has(id));
      if (unexpected.length) {
        return `messages.${i}.content: unexpected \`tool_use_id\` found in \`tool_result\` blocks: ${unexpected.join(', ')}. Each \`tool_result\` block must have a corresponding \`tool_use\` block in the previous message.`;
      }
    }
  }
  return null;
}

/** The request as the scenarios see it. */
export function anthropicView(body) {
  const msgs = body.messages;
  let idx = -1;
  let lastUserText = '';
  for (let i = msgs.length - 1; i >= 0 && idx < 0; i--) {
    if (msgs[i].role !== 'user') continue;
    const texts = blocksOf(msgs[i]).filter((b) => b.type === 'text');
    if (texts.length) {
      idx = i;
      lastUserText = texts[texts.length - 1].text;
    }
  }
  const lastMsg = msgs[msgs.length - 1];
  const toolResults =
    lastMsg.role === 'user'
      ? blocksOf(lastMsg)
          .filter((b) => b.type === 'tool_result')
          .map((b) => ({ id: b.tool_use_id, content: resultText(b), isError: !!b.is_error }))
      : [];
  return {
    lastUserText,
    step: msgs.slice(idx + 1).filter((m) => m.role === 'assistant').length,
    toolResults,
    messages: msgs.length,
    roles: msgs.map((m) => m.role),
    allToolResults: msgs.reduce((n, m) => n + blocksOf(m).filter((b) => b.type === 'tool_result').length, 0),
  };
}

const ev = (name, data) => `event: ${name}\ndata: ${JSON.stringify(data)}\n\n`;

async function streamAnthropic(res, body, p, ctx) {
  const w = sseWriter(res, { split: p.split, crlf: p.crlf });
  res.writeHead(200, {
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-cache',
    'request-id': randomId('req_'),
    'anthropic-organization-id': 'fake-org',
  });
  let deltas = 0;
  // For a paced stream, when each delta was handed to the socket (ms since the epoch, sub-ms precision):
  // what a benchmark measures delivery delays from (`sent` in /_fake/requests).
  const sent = p.delayMs ? [] : null;
  if (sent) ctx.amend({ sent });
  const send = async (name, data) => {
    if (w.closed) return false;
    if (p.pings) await w.write(ev('ping', { type: 'ping' }));
    if (p.unknown && name === 'content_block_delta') await w.write(ev('mystery_event', { type: 'mystery_event', detail: { future: true } }));
    return w.write(ev(name, data));
  };
  /** Before a delta: delay, and the failure point. Returns false when the stream must stop. */
  const fail = async (next) => {
    if (p.fail.kind === 'error') {
      await w.write(ev('error', { type: 'error', error: { type: 'overloaded_error', message: 'Overloaded' } }));
      res.end();
    } else {
      await w.cut(next);
    }
    return false;
  };
  const beforeDelta = async (next) => {
    if (p.delayMs) await sleep(p.delayMs);
    if (w.closed) return false;
    if (p.fail && deltas >= p.fail.afterDeltas) return fail(next);
    deltas++;
    return true;
  };
  if (p.pings) await w.write(': keep-alive comment\n\n');
  await send('message_start', {
    type: 'message_start',
    message: {
      id: randomId('msg_01'),
      type: 'message',
      role: 'assistant',
      model: body.model,
      content: [],
      stop_reason: null,
      stop_sequence: null,
      usage: { ...USAGE, output_tokens: 1 },
    },
  });
  // The model's time to its first token (a scenario's `firstMs`).
  if (p.firstMs) await sleep(p.firstMs);
  let index = 0;
  for (const b of p.blocks) {
    if (b.type === 'unknown') {
      await send('content_block_start', { type: 'content_block_start', index, content_block: { type: 'future_block', payload: { x: 1 } } });
      await send('content_block_delta', { type: 'content_block_delta', index, delta: { type: 'future_delta', payload: 'ignored' } });
      await send('content_block_stop', { type: 'content_block_stop', index });
      index++;
      continue;
    }
    const start =
      b.type === 'text'
        ? { type: 'text', text: '' }
        : b.type === 'thinking'
          ? { type: 'thinking', thinking: '' }
          : { type: 'tool_use', id: b.id, name: b.name, input: {} };
    await send('content_block_start', { type: 'content_block_start', index, content_block: start });
    if (b.type === 'tool_use') {
      // The real API opens every tool input with an empty fragment.
      await send('content_block_delta', { type: 'content_block_delta', index, delta: { type: 'input_json_delta', partial_json: '' } });
    }
    for (const d of b.deltas || b.fragments) {
      const delta =
        b.type === 'text'
          ? { type: 'text_delta', text: d }
          : b.type === 'thinking'
            ? { type: 'thinking_delta', thinking: d }
            : { type: 'input_json_delta', partial_json: d };
      const data = { type: 'content_block_delta', index, delta };
      if (!(await beforeDelta(ev('content_block_delta', data)))) return;
      if (p.unknown && b.type === 'text' && d === b.deltas[1]) {
        // An unknown delta type on a known block.
        await send('content_block_delta', { type: 'content_block_delta', index, delta: { type: 'sparkle_delta', sparkle: '✨' } });
      }
      await send('content_block_delta', data);
      sent?.push(performance.timeOrigin + performance.now());
    }
    if (b.type === 'thinking') {
      await send('content_block_delta', { type: 'content_block_delta', index, delta: { type: 'signature_delta', signature: b.signature } });
    }
    await send('content_block_stop', { type: 'content_block_stop', index });
    index++;
  }
  if (p.fail) return void (await fail(ev('message_delta', { type: 'message_delta', delta: { stop_reason: p.stop } })));
  await send('message_delta', {
    type: 'message_delta',
    delta: { stop_reason: p.stop, stop_sequence: null },
    usage: { output_tokens: outputTokens(p) },
  });
  await send('message_stop', { type: 'message_stop' });
  if (!w.closed) res.end();
}

function anthropicMessage(body, p) {
  const content = [];
  for (const b of p.blocks) {
    if (b.type === 'text') content.push({ type: 'text', text: b.deltas.join('') });
    else if (b.type === 'thinking') content.push({ type: 'thinking', thinking: b.deltas.join(''), signature: b.signature });
    else if (b.type === 'tool_use') {
      let input = {};
      try {
        input = JSON.parse(b.fragments.join(''));
      } catch {
        /* the non-streaming API always sends valid JSON */
      }
      content.push({ type: 'tool_use', id: b.id, name: b.name, input });
    }
  }
  return {
    id: randomId('msg_01'),
    type: 'message',
    role: 'assistant',
    model: body.model,
    content,
    stop_reason: p.stop,
    stop_sequence: null,
    usage: { ...USAGE, output_tokens: outputTokens(p) },
  };
}

async function handleAnthropic(req, res, raw, ctx) {
  const key = req.headers['x-api-key'];
  const bearer = /^Bearer\s+(\S+)$/i.exec(String(req.headers.authorization || ''));
  const entry = {
    at: Date.now(),
    api: 'anthropic',
    path: req.url,
    auth: key ? 'x-api-key' : bearer ? 'bearer' : 'none',
    // Which key paid (its last four characters, as a dashboard shows them).
    keyLast4: String(key || bearer?.[1] || '').slice(-4),
    version: req.headers['anthropic-version'] || null,
  };
  if (!key && !bearer) {
    return anthropicError(res, 401, 'authentication_error', 'x-api-key header is required');
  }
  if (!req.headers['anthropic-version']) {
    return anthropicError(res, 400, 'invalid_request_error', 'anthropic-version: header is required');
  }
  let body;
  try {
    body = JSON.parse(raw.toString('utf8'));
  } catch {
    return anthropicError(res, 400, 'invalid_request_error', 'The request body is not valid JSON.');
  }
  if (typeof body !== 'object' || body === null) return anthropicError(res, 400, 'invalid_request_error', 'The request body must be an object.');
  if (typeof body.model !== 'string' || !body.model) return anthropicError(res, 400, 'invalid_request_error', 'model: Field required');
  if (!Number.isInteger(body.max_tokens) || body.max_tokens < 1) return anthropicError(res, 400, 'invalid_request_error', 'max_tokens: Field required');
  const bad = checkAnthropicMessages(body.messages);
  const view = bad ? null : anthropicView(body);
  ctx.log({ ...entry, body, scenario: null, step: view?.step ?? null, lastUserText: view?.lastUserText ?? '', status: bad ? 400 : null });
  // A caller that goes away before the answer's end (an aborted call) is logged as such.
  res.on('close', () => {
    if (!res.writableEnded) ctx.amend({ aborted: true });
  });
  if (bad) return anthropicError(res, 400, 'invalid_request_error', bad);
  const p = plan(view, ctx.busyKeys);
  ctx.amend({ scenario: p.scenario, status: p.busy ? p.busy.status : 200, output_tokens: p.busy ? 0 : outputTokens(p) });
  if (p.busy) {
    const type = p.busy.status === 429 ? 'rate_limit_error' : 'overloaded_error';
    return anthropicError(res, p.busy.status, type, p.busy.status === 429 ? 'Rate limited' : 'Overloaded', {
      'retry-after': String(p.busy.retryAfter),
    });
  }
  if (body.stream === true) return streamAnthropic(res, body, p, ctx);
  return sendJson(res, 200, anthropicMessage(body, p), { 'request-id': randomId('req_') });
}

/** The echo routes of the HTTP conformance suite (/_fake/echo/..., see the header). */
async function echo(req, res, url, raw) {
  const what = url.pathname.slice('/_fake/echo/'.length);
  if (what === 'request') {
    const seen = { method: req.method, path: req.url, header: req.headers['x-conformance'] ?? null, body_hex: raw.toString('hex') };
    return sendJson(res, 201, seen, { 'x-echo': 'yes' });
  }
  const status = /^status\/(\d{3})$/.exec(what);
  if (status) {
    res.writeHead(Number(status[1]), { 'content-type': 'text/plain' });
    return res.end('status');
  }
  if (what === 'bytes') {
    res.writeHead(200, { 'content-type': 'application/octet-stream' });
    return res.end(Buffer.from(Array.from({ length: 256 }, (_, i) => i)));
  }
  if (what === 'stream') {
    res.writeHead(200, { 'content-type': 'text/plain' });
    for (let i = 0; i < 3; i++) {
      if (i) await sleep(300);
      res.write(`chunk ${i}\n`);
    }
    return res.end();
  }
  return sendJson(res, 404, { error: 'no such echo route' });
}

/** GET /v1/models: a key containing "rejected" (or none) is refused, as the real APIs refuse a bad key. */
function listModels(req, res) {
  const anthropic = Boolean(req.headers['anthropic-version']);
  const bearer = /^Bearer\s+(\S+)$/i.exec(String(req.headers.authorization || ''));
  const key = req.headers['x-api-key'] || (bearer && bearer[1]) || '';
  if (!key || key.includes('rejected')) {
    if (anthropic) return anthropicError(res, 401, 'authentication_error', 'invalid x-api-key');
    return sendJson(res, 401, { error: { message: 'Incorrect API key provided.', type: 'invalid_request_error', param: null, code: 'invalid_api_key' } });
  }
  if (anthropic) {
    const data = [{ type: 'model', id: 'claude-fake', display_name: 'Claude (fake)', created_at: '2025-01-01T00:00:00Z' }];
    return sendJson(res, 200, { data, has_more: false, first_id: 'claude-fake', last_id: 'claude-fake' });
  }
  return sendJson(res, 200, { object: 'list', data: [{ id: 'gpt-fake', object: 'model', created: 1735689600, owned_by: 'fake' }] });
}

// ------------------------------------------------------------------ the server

/** Starts the fake. Resolves { url, port, requests(contains), close() }. */
export function startModelFake({ port = Number(process.env.MODEL_FAKE_PORT || 8791), host = '127.0.0.1' } = {}) {
  const log = [];
  const busyKeys = new Map();
  const sockets = new Set();
  const server = http.createServer(async (req, res) => {
    const url = new URL(req.url, 'http://fake');
    let current = null;
    const ctx = {
      busyKeys,
      log: (entry) => {
        current = entry;
        log.push(entry);
        if (log.length > LOG_LIMIT) log.splice(0, log.length - LOG_LIMIT);
      },
      amend: (fields) => current && Object.assign(current, fields),
    };
    try {
      if (req.method === 'GET' && url.pathname === '/health') return sendJson(res, 200, { status: 'ok' });
      if (req.method === 'GET' && url.pathname === '/v1/models') return listModels(req, res);
      if (url.pathname.startsWith('/_fake/echo/')) return await echo(req, res, url, await readBody(req));
      if (req.method === 'GET' && url.pathname === '/_fake/requests') {
        const contains = url.searchParams.get('contains') || '';
        return sendJson(res, 200, { items: log.filter((e) => (e.lastUserText || '').includes(contains)) });
      }
      if (url.pathname === '/v1/messages' || url.pathname === '/v1/chat/completions') {
        if (req.method !== 'POST') return sendJson(res, 405, { type: 'error', error: { type: 'invalid_request_error', message: 'Method not allowed' } });
        const raw = await readBody(req);
        if (url.pathname === '/v1/messages') return await handleAnthropic(req, res, raw, ctx);
        return await handleOpenAi(req, res, raw, ctx);
      }
      return sendJson(res, 404, { type: 'error', error: { type: 'not_found_error', message: `No route ${req.method} ${url.pathname}` } });
    } catch (e) {
      if (!res.headersSent) sendJson(res, 500, { type: 'error', error: { type: 'api_error', message: String(e?.message || e) } });
      else res.destroy();
    }
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.setNoDelay(true);
    s.on('close', () => sockets.delete(s));
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      const actual = server.address().port;
      resolve({
        url: `http://${host}:${actual}`,
        port: actual,
        server,
        requests: (contains = '') => log.filter((e) => (e.lastUserText || '').includes(contains)),
        close: () =>
          new Promise((r) => {
            for (const s of sockets) s.destroy();
            server.close(() => r());
          }),
      });
    });
  });
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const fake = await startModelFake();
  console.log(`model fake: Anthropic ${fake.url}/v1/messages, OpenAI ${fake.url}/v1/chat/completions`);
  const stop = () => fake.close().then(() => process.exit(0));
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}
