// The model fake itself (tests/fakes/anthropic.mjs) against the official clients: the Anthropic
// TypeScript SDK, the OpenAI SDK and the AI SDK's Anthropic provider read its streams and get the
// expected text, tool inputs, usage, retries and errors. So when a chat test fails, it is the
// server's doing, not the fake's. Needs no server.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import Anthropic from '@anthropic-ai/sdk';
import OpenAI from 'openai';
import { createAnthropic } from '@ai-sdk/anthropic';
import { streamText } from 'ai';

import {
  CUT_PARTIAL,
  ERROR_PARTIAL,
  PAGE_HTML,
  RECOVERED_REPLY,
  TEXT_REPLY,
  THINKING_REPLY,
  THINKING_SIGNATURE,
  THINKING_TEXT,
  TOOLS_FILES,
  USAGE,
  longText,
  slowText,
  startModelFake,
} from '../fakes/anthropic.mjs';

let fake;
let client;
before(async () => {
  fake = await startModelFake({ port: 0 });
  client = new Anthropic({ apiKey: 'fake-key', baseURL: fake.url, maxRetries: 0 });
});
after(async () => {
  await fake.close();
});

const nonce = () => Math.random().toString(36).slice(2, 10);
const MODEL = 'claude-sonnet-4-6'; // 4-5 is on the SDK's deprecation list (end of life 2026-11-30)
const user = (text) => ({ role: 'user', content: text });

async function final(messages, opts = {}) {
  const stream = (opts.client || client).messages.stream({ model: MODEL, max_tokens: 1024, messages });
  let streamed = '';
  stream.on('text', (d) => {
    streamed += d;
  });
  const msg = await stream.finalMessage();
  return { msg, streamed };
}

/** Runs the agent loop with the SDK as the agent and a Map as the project: what the server does. */
async function agentLoop(firstText, files = new Map()) {
  const messages = [user(firstText)];
  for (let step = 0; step < 10; step++) {
    const { msg } = await final(messages);
    messages.push({ role: 'assistant', content: msg.content });
    if (msg.stop_reason !== 'tool_use') return { messages, files, last: msg };
    const results = [];
    for (const b of msg.content.filter((c) => c.type === 'tool_use')) {
      let out;
      if (b.name === 'write_file') {
        files.set(b.input.path, b.input.content);
        out = `Wrote ${b.input.path}.`;
      } else if (b.name === 'read_file') out = files.get(b.input.path);
      else if (b.name === 'edit_file') {
        files.set(b.input.path, files.get(b.input.path).replace(b.input.old, b.input.new));
        out = `Edited ${b.input.path}.`;
      } else if (b.name === 'list_files') out = [...files.keys()].sort().join('\n');
      results.push({ type: 'tool_result', tool_use_id: b.id, content: out });
    }
    messages.push({ role: 'user', content: results });
  }
  assert.fail('the loop did not end');
}

describe('Anthropic SDK', () => {
  test('plain text streams and finalMessage agree; usage as documented', async () => {
    const { msg, streamed } = await final([user(`hi [scenario:text] ${nonce()}`)]);
    assert.equal(streamed, TEXT_REPLY);
    assert.equal(msg.content.length, 1);
    assert.equal(msg.content[0].text, TEXT_REPLY);
    assert.equal(msg.stop_reason, 'end_turn');
    assert.equal(msg.model, MODEL);
    assert.equal(msg.usage.input_tokens, USAGE.input_tokens);
    assert.equal(msg.usage.cache_read_input_tokens, USAGE.cache_read_input_tokens);
    assert.ok(msg.usage.output_tokens > 1);
  });

  test('no marker means plain text; the SDK authenticates with a bearer token', async () => {
    const n = nonce();
    const { msg } = await final([user(`just chatting ${n}`)]);
    assert.equal(msg.content[0].text, TEXT_REPLY);
    const [req] = fake.requests(n);
    assert.equal(req.auth, 'bearer');
    assert.ok(req.version, 'anthropic-version sent');
  });

  test('CRLF line ends and events split inside UTF-8 characters', async () => {
    const { msg, streamed } = await final([user(`[scenario:text-crlf] ${nonce()}`)]);
    assert.equal(streamed, TEXT_REPLY);
    assert.equal(msg.content[0].text, TEXT_REPLY);
  });

  test('pings, comments, unknown events, blocks and deltas are ignored', async () => {
    for (const s of ['pings', 'unknown-event']) {
      const { msg, streamed } = await final([user(`[scenario:${s}] ${nonce()}`)]);
      assert.equal(streamed, TEXT_REPLY, s);
      assert.equal(msg.content.find((c) => c.type === 'text').text, TEXT_REPLY, s);
    }
  });

  test('tool input in many fragments parses to the exact write_file input; the follow-up sees the result', async () => {
    const n = nonce();
    const { msg } = await final([user(`[scenario:tool-fragments:site/index.html] ${n}`)]);
    assert.equal(msg.stop_reason, 'tool_use');
    assert.deepEqual(
      msg.content.map((c) => c.type),
      ['text', 'tool_use'],
    );
    const call = msg.content[1];
    assert.equal(call.name, 'write_file');
    assert.match(call.id, /^toolu_/);
    assert.deepEqual(call.input, { path: 'site/index.html', content: PAGE_HTML });
    const [req] = fake.requests(n);
    assert.equal(req.step, 0);
    const follow = await final([
      user(`[scenario:tool-fragments:site/index.html] ${n}`),
      { role: 'assistant', content: msg.content },
      { role: 'user', content: [{ type: 'tool_result', tool_use_id: call.id, content: 'Wrote it (42 bytes).' }] },
    ]);
    assert.equal(follow.msg.stop_reason, 'end_turn');
    assert.equal(follow.msg.content[0].text, 'Done. The tool said: Wrote it (42 bytes).');
    assert.equal(fake.requests(n)[1].step, 1);
  });

  test('several tool rounds, two calls in one turn, end in the expected files', async () => {
    const { files, last } = await agentLoop(`[scenario:tools] ${nonce()}`);
    assert.deepEqual(Object.fromEntries(files), TOOLS_FILES);
    assert.equal(last.content[0].text, `Files now: ${Object.keys(TOOLS_FILES).sort().join('\n')}`);
  });

  test('thinking block with its signature, then text', async () => {
    const { msg, streamed } = await final([user(`[scenario:thinking] ${nonce()}`)]);
    assert.equal(streamed, THINKING_REPLY);
    assert.equal(msg.content[0].type, 'thinking');
    assert.equal(msg.content[0].thinking, THINKING_TEXT);
    assert.equal(msg.content[0].signature, THINKING_SIGNATURE);
    assert.equal(msg.content[1].text, THINKING_REPLY);
  });

  test('an error event mid-stream fails the stream after the partial text', async () => {
    const stream = client.messages.stream({ model: MODEL, max_tokens: 100, messages: [user(`[scenario:error:3] ${nonce()}`)] });
    let streamed = '';
    stream.on('text', (d) => {
      streamed += d;
    });
    await assert.rejects(stream.finalMessage(), (e) => {
      assert.ok(e instanceof Anthropic.APIError, String(e));
      assert.match(String(e.message), /overloaded_error|Overloaded/);
      return true;
    });
    assert.equal(streamed, ERROR_PARTIAL.repeat(4).slice(0, 24));
  });

  test('a connection cut mid-stream fails the stream after the partial text', async () => {
    const stream = client.messages.stream({ model: MODEL, max_tokens: 100, messages: [user(`[scenario:cut:2] ${nonce()}`)] });
    let streamed = '';
    stream.on('text', (d) => {
      streamed += d;
    });
    await assert.rejects(stream.finalMessage());
    assert.equal(streamed, CUT_PARTIAL.slice(0, 16));
  });

  test('529 with retry-after before the stream, once per key: the SDK retries and succeeds', async () => {
    const key = nonce();
    const retrying = new Anthropic({ apiKey: 'fake-key', baseURL: fake.url, maxRetries: 2 });
    const t0 = Date.now();
    const { msg } = await final([user(`[scenario:overloaded:${key}:529:1]`)], { client: retrying });
    assert.equal(msg.content[0].text, RECOVERED_REPLY);
    assert.ok(Date.now() - t0 >= 900, 'waited for retry-after');
    assert.deepEqual(
      fake.requests(key).map((r) => r.status),
      [529, 200],
    );
    const key2 = nonce();
    await assert.rejects(final([user(`[scenario:overloaded:${key2}:429:7]`)]), (e) => {
      assert.equal(e.status, 429);
      assert.equal(e.headers.get('retry-after'), '7');
      assert.equal(e.error?.error?.type, 'rate_limit_error');
      return true;
    });
  });

  test('slow and long streams deliver every delta in order', async () => {
    const t0 = Date.now();
    const slow = await final([user(`[scenario:slow:10:30ms] ${nonce()}`)]);
    assert.equal(slow.msg.content[0].text, slowText(10));
    assert.ok(Date.now() - t0 >= 270, 'deltas were spaced');
    const long = await final([user(`[scenario:long:2000] ${nonce()}`)]);
    assert.equal(long.streamed, longText(2000));
  });

  test('forever calls a tool at every step', async () => {
    const n = nonce();
    const messages = [user(`[scenario:forever] ${n}`)];
    for (let i = 0; i < 4; i++) {
      const { msg } = await final(messages);
      assert.equal(msg.stop_reason, 'tool_use');
      const call = msg.content.find((c) => c.type === 'tool_use');
      assert.equal(call.name, 'list_files');
      messages.push({ role: 'assistant', content: msg.content }, { role: 'user', content: [{ type: 'tool_result', tool_use_id: call.id, content: '' }] });
    }
    assert.deepEqual(
      fake.requests(n).map((r) => r.step),
      [0, 1, 2, 3],
    );
  });

  test('bad tool input: the raw fragments join to the broken JSON', async () => {
    const stream = await client.messages.create({ model: MODEL, max_tokens: 100, stream: true, messages: [user(`[scenario:bad-tool-input:json] ${nonce()}`)] });
    let json = '';
    const types = [];
    for await (const e of stream) {
      types.push(e.type);
      if (e.type === 'content_block_delta' && e.delta.type === 'input_json_delta') json += e.delta.partial_json;
    }
    assert.equal(json, '{"path": "broken.txt", "content": "unterminated');
    assert.equal(types[0], 'message_start');
    assert.equal(types.at(-1), 'message_stop');
  });

  test('non-streaming requests get one message', async () => {
    const msg = await client.messages.create({ model: MODEL, max_tokens: 100, messages: [user(`[scenario:tool-fragments] ${nonce()}`)] });
    assert.equal(msg.stop_reason, 'tool_use');
    assert.deepEqual(msg.content[1].input, { path: 'index.html', content: PAGE_HTML });
  });

  test('the fake checks the conversation like the real API', async () => {
    const n = nonce();
    const { msg } = await final([user(`[scenario:tool-fragments] ${n}`)]);
    await assert.rejects(
      final([user(`[scenario:tool-fragments] ${n}`), { role: 'assistant', content: msg.content }, user('no tool result here')]),
      (e) => e.status === 400 && /tool_use` ids were found without `tool_result`/.test(e.message),
    );
    await assert.rejects(
      final([user('x'), { role: 'assistant', content: [{ type: 'text', text: 'ok' }] }, { role: 'user', content: [{ type: 'tool_result', tool_use_id: 'toolu_nope', content: 'x' }] }]),
      (e) => e.status === 400 && /unexpected `tool_use_id`/.test(e.message),
    );
    await assert.rejects(final([{ role: 'user', content: [{ type: 'text', text: '' }] }]), (e) => e.status === 400);
  });

  test('credentials: x-api-key and bearer accepted; none -> 401; no anthropic-version -> 400', async () => {
    const body = JSON.stringify({ model: MODEL, max_tokens: 10, stream: true, messages: [user('[scenario:text]')] });
    const post = (headers) => fetch(`${fake.url}/v1/messages`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body });
    const ok = await post({ 'x-api-key': 'k', 'anthropic-version': '2023-06-01' });
    assert.equal(ok.status, 200);
    assert.match(ok.headers.get('content-type'), /^text\/event-stream/);
    const text = await ok.text();
    assert.match(text, /^event: message_start\ndata: \{/);
    assert.match(text, /event: message_stop\ndata: \{"type":"message_stop"\}\n\n$/);
    const none = await post({ 'anthropic-version': '2023-06-01' });
    assert.equal(none.status, 401);
    assert.equal((await none.json()).error.type, 'authentication_error');
    const noVersion = await post({ 'x-api-key': 'k' });
    assert.equal(noVersion.status, 400);
    assert.equal((await noVersion.json()).error.type, 'invalid_request_error');
  });
});

describe('AI SDK Anthropic provider', () => {
  test('streamText reads the fake (x-api-key auth)', async () => {
    const n = nonce();
    const anthropic = createAnthropic({ apiKey: 'fake-key', baseURL: `${fake.url}/v1` });
    const result = streamText({ model: anthropic(MODEL), prompt: `[scenario:pings] ${n}`, maxRetries: 0 });
    let text = '';
    for await (const d of result.textStream) text += d;
    assert.equal(text, TEXT_REPLY);
    assert.equal((await result.usage).outputTokens > 0, true);
    assert.equal(fake.requests(n)[0].auth, 'x-api-key');
  });
});

describe('OpenAI SDK', () => {
  let openai;
  before(() => {
    openai = new OpenAI({ apiKey: 'fake-key', baseURL: `${fake.url}/v1`, maxRetries: 0 });
  });

  async function collect(messages, extra = {}, c = openai) {
    const stream = await c.chat.completions.create({ model: 'gpt-4o', stream: true, stream_options: { include_usage: true }, messages, ...extra });
    let text = '';
    const calls = [];
    let finish = null;
    let usage = null;
    for await (const chunk of stream) {
      if (chunk.usage) usage = chunk.usage;
      const ch = chunk.choices[0];
      if (!ch) continue;
      if (ch.delta.content) text += ch.delta.content;
      for (const tc of ch.delta.tool_calls || []) {
        calls[tc.index] ??= { id: tc.id, name: tc.function?.name, args: '' };
        calls[tc.index].args += tc.function?.arguments || '';
      }
      if (ch.finish_reason) finish = ch.finish_reason;
    }
    return { text, calls, finish, usage };
  }

  test('text, usage chunk, [DONE]', async () => {
    const r = await collect([{ role: 'user', content: `[scenario:text] ${nonce()}` }]);
    assert.equal(r.text, TEXT_REPLY);
    assert.equal(r.finish, 'stop');
    assert.equal(r.usage.prompt_tokens, USAGE.input_tokens + USAGE.cache_read_input_tokens);
    assert.equal(r.usage.prompt_tokens_details.cached_tokens, USAGE.cache_read_input_tokens);
  });

  test('tool call arguments in fragments; the follow-up sees the tool message', async () => {
    const n = nonce();
    const first = await collect([{ role: 'user', content: `[scenario:tool-fragments] ${n}` }]);
    assert.equal(first.finish, 'tool_calls');
    assert.equal(first.calls.length, 1);
    assert.equal(first.calls[0].name, 'write_file');
    assert.deepEqual(JSON.parse(first.calls[0].args), { path: 'index.html', content: PAGE_HTML });
    const second = await collect([
      { role: 'user', content: `[scenario:tool-fragments] ${n}` },
      { role: 'assistant', content: first.text, tool_calls: [{ id: first.calls[0].id, type: 'function', function: { name: 'write_file', arguments: first.calls[0].args } }] },
      { role: 'tool', tool_call_id: first.calls[0].id, content: 'Wrote index.html.' },
    ]);
    assert.equal(second.text, 'Done. The tool said: Wrote index.html.');
    await assert.rejects(
      collect([
        { role: 'user', content: 'x' },
        { role: 'assistant', content: '', tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'list_files', arguments: '{}' } }] },
        { role: 'user', content: 'no tool message' },
      ]),
      (e) => e.status === 400,
    );
  });

  test('an error chunk mid-stream throws; 429 is retried after retry-after', async () => {
    await assert.rejects(collect([{ role: 'user', content: `[scenario:error] ${nonce()}` }]));
    const key = nonce();
    const retrying = new OpenAI({ apiKey: 'k', baseURL: `${fake.url}/v1`, maxRetries: 2 });
    const r = await collect([{ role: 'user', content: `[scenario:overloaded:${key}:429:1]` }], {}, retrying);
    assert.equal(r.text, RECOVERED_REPLY);
    assert.deepEqual(
      fake.requests(key).map((x) => x.status),
      [429, 200],
    );
  });
});
