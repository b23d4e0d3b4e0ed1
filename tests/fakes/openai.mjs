// The OpenAI-compatible half of the model fake: POST /v1/chat/completions, streamed as `data: {json}`
// chunks (choices[].delta.content, delta.tool_calls[] with index / id / function name / argument
// fragments, finish_reason), a usage chunk with `choices: []` when stream_options.include_usage, and
// `data: [DONE]`. Served by the process of tests/fakes/anthropic.mjs; same scenarios
// (tests/fakes/scenarios.mjs), same markers.

import { USAGE, outputTokens, plan, randomId, sleep } from './scenarios.mjs';
import { sendJson, sseWriter } from './wire.mjs';

function openAiError(res, status, type, message, headers = {}, code = null) {
  sendJson(res, status, { error: { message, type, param: null, code } }, { 'x-request-id': randomId('req_'), ...headers });
}

const textOf = (content) =>
  typeof content === 'string'
    ? content
    : Array.isArray(content)
      ? content
          .filter((p) => p && p.type === 'text')
          .map((p) => p.text)
          .join('')
      : '';

/** Checks a chat completions conversation like the real API does; returns an error message or null. */
export function checkOpenAiMessages(messages) {
  if (!Array.isArray(messages) || messages.length === 0) return "[] is too short - 'messages'";
  for (let i = 0; i < messages.length; i++) {
    const m = messages[i];
    if (!m || !['system', 'developer', 'user', 'assistant', 'tool'].includes(m.role)) return `Invalid value for 'messages[${i}].role'.`;
    if (m.role === 'assistant' && Array.isArray(m.tool_calls) && m.tool_calls.length) {
      const answered = new Set();
      for (let j = i + 1; j < messages.length && messages[j].role === 'tool'; j++) answered.add(messages[j].tool_call_id);
      const missing = m.tool_calls.map((c) => c.id).filter((id) => !answered.has(id));
      if (missing.length) {
        return `An assistant message with 'tool_calls' must be followed by tool messages responding to each 'tool_call_id'. The following tool_call_ids did not have response messages: ${missing.join(', ')}`;
      }
      for (const c of m.tool_calls) {
        if (c.type !== 'function' || typeof c.function?.name !== 'string' || typeof c.function?.arguments !== 'string') {
          return `Invalid 'messages[${i}].tool_calls': each needs type function, a name and string arguments.`;
        }
      }
    }
    if (m.role === 'tool') {
      let k = i - 1;
      while (k >= 0 && messages[k].role === 'tool') k--;
      const prev = messages[k];
      const ids = new Set(prev && prev.role === 'assistant' && Array.isArray(prev.tool_calls) ? prev.tool_calls.map((c) => c.id) : []);
      if (!ids.has(m.tool_call_id)) return "Invalid parameter: messages with role 'tool' must be a response to a preceeding message with 'tool_calls'.";
    }
  }
  return null;
}

export function openAiView(body) {
  const msgs = body.messages;
  let idx = -1;
  let lastUserText = '';
  for (let i = msgs.length - 1; i >= 0; i--) {
    if (msgs[i].role === 'user' && textOf(msgs[i].content)) {
      idx = i;
      lastUserText = textOf(msgs[i].content);
      break;
    }
  }
  const toolResults = [];
  for (let j = msgs.length - 1; j >= 0 && msgs[j].role === 'tool'; j--) {
    toolResults.unshift({ id: msgs[j].tool_call_id, content: textOf(msgs[j].content), isError: false });
  }
  return {
    lastUserText,
    step: msgs.slice(idx + 1).filter((m) => m.role === 'assistant').length,
    toolResults,
    messages: msgs.length,
    roles: msgs.map((m) => m.role),
    allToolResults: msgs.filter((m) => m.role === 'tool').length,
  };
}

const finishReason = (stop) => (stop === 'tool_use' ? 'tool_calls' : stop === 'max_tokens' ? 'length' : 'stop');

function usageOf(p) {
  const completion = outputTokens(p);
  const prompt = USAGE.input_tokens + USAGE.cache_read_input_tokens;
  return {
    prompt_tokens: prompt,
    completion_tokens: completion,
    total_tokens: prompt + completion,
    prompt_tokens_details: { cached_tokens: USAGE.cache_read_input_tokens, audio_tokens: 0 },
    completion_tokens_details: { reasoning_tokens: 0, audio_tokens: 0, accepted_prediction_tokens: 0, rejected_prediction_tokens: 0 },
  };
}

async function streamOpenAi(res, body, p) {
  const w = sseWriter(res, { split: p.split, crlf: p.crlf });
  res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', 'x-request-id': randomId('req_') });
  const id = randomId('chatcmpl-');
  const created = Math.floor(Date.now() / 1000);
  const includeUsage = body.stream_options?.include_usage === true;
  const chunk = (delta, finish = null) => ({
    id,
    object: 'chat.completion.chunk',
    created,
    model: body.model,
    system_fingerprint: 'fp_fake',
    choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }],
    ...(includeUsage ? { usage: null } : {}),
  });
  const data = (doc) => `data: ${JSON.stringify(doc)}\n\n`;
  const send = async (doc) => {
    if (w.closed) return false;
    if (p.pings) await w.write(': ping\n\n');
    return w.write(data(doc));
  };
  let deltas = 0;
  const fail = async (next) => {
    if (p.fail.kind === 'error') {
      await w.write(data({ error: { message: 'The server had an error while processing your request.', type: 'server_error', param: null, code: null } }));
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
  await send(chunk({ role: 'assistant', content: '', refusal: null }));
  // The model's time to its first token (a scenario's `firstMs`).
  if (p.firstMs) await sleep(p.firstMs);
  let toolIndex = 0;
  for (const b of p.blocks) {
    if (b.type === 'unknown') continue;
    if (b.type === 'tool_use') {
      const index = toolIndex++;
      await send(chunk({ tool_calls: [{ index, id: b.id.replace(/^toolu_/, 'call_'), type: 'function', function: { name: b.name, arguments: '' } }] }));
      for (const f of b.fragments) {
        const doc = chunk({ tool_calls: [{ index, function: { arguments: f } }] });
        if (!(await beforeDelta(data(doc)))) return;
        await send(doc);
      }
      continue;
    }
    for (const d of b.deltas) {
      const doc = chunk(b.type === 'thinking' ? { reasoning_content: d } : { content: d });
      if (!(await beforeDelta(data(doc)))) return;
      await send(doc);
    }
  }
  if (p.fail) return void (await fail(data(chunk({}, finishReason(p.stop)))));
  await send(chunk({}, finishReason(p.stop)));
  if (includeUsage) {
    await send({ id, object: 'chat.completion.chunk', created, model: body.model, system_fingerprint: 'fp_fake', choices: [], usage: usageOf(p) });
  }
  if (!w.closed) {
    await w.write('data: [DONE]\n\n');
    res.end();
  }
}

function completion(body, p) {
  let content = '';
  const toolCalls = [];
  for (const b of p.blocks) {
    if (b.type === 'text') content += b.deltas.join('');
    if (b.type === 'tool_use') {
      toolCalls.push({ id: b.id.replace(/^toolu_/, 'call_'), type: 'function', function: { name: b.name, arguments: b.fragments.join('') } });
    }
  }
  return {
    id: randomId('chatcmpl-'),
    object: 'chat.completion',
    created: Math.floor(Date.now() / 1000),
    model: body.model,
    system_fingerprint: 'fp_fake',
    choices: [
      {
        index: 0,
        message: { role: 'assistant', content: content || null, refusal: null, ...(toolCalls.length ? { tool_calls: toolCalls } : {}) },
        logprobs: null,
        finish_reason: finishReason(p.stop),
      },
    ],
    usage: usageOf(p),
  };
}

export async function handleOpenAi(req, res, raw, ctx) {
  const bearer = /^Bearer\s+(\S+)$/i.exec(String(req.headers.authorization || ''));
  const entry = { at: Date.now(), api: 'openai', path: req.url, auth: bearer ? 'bearer' : 'none', version: null };
  if (!bearer) {
    return openAiError(res, 401, 'invalid_request_error', "You didn't provide an API key.", {}, 'missing_api_key');
  }
  let body;
  try {
    body = JSON.parse(raw.toString('utf8'));
  } catch {
    return openAiError(res, 400, 'invalid_request_error', 'We could not parse the JSON body of your request.');
  }
  if (typeof body !== 'object' || body === null || typeof body.model !== 'string' || !body.model) {
    return openAiError(res, 400, 'invalid_request_error', 'you must provide a model parameter');
  }
  const bad = checkOpenAiMessages(body.messages);
  const view = bad ? null : openAiView(body);
  ctx.log({ ...entry, body, scenario: null, step: view?.step ?? null, lastUserText: view?.lastUserText ?? '', status: bad ? 400 : null });
  if (bad) return openAiError(res, 400, 'invalid_request_error', bad);
  const p = plan(view, ctx.busyKeys);
  ctx.amend({ scenario: p.scenario, status: p.busy ? p.busy.status : 200, output_tokens: p.busy ? 0 : outputTokens(p) });
  if (p.busy) {
    return openAiError(res, p.busy.status, 'requests', 'Rate limit reached for requests', { 'retry-after': String(p.busy.retryAfter) }, 'rate_limit_exceeded');
  }
  if (body.stream === true) return streamOpenAi(res, body, p);
  return sendJson(res, 200, completion(body, p), { 'x-request-id': randomId('req_') });
}
