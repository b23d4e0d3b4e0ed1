// A baseline of scripts/bench-chat: the relay a TypeScript developer on Cloudflare would write, the
// `ai` package's streamText answered as an AI SDK UI message stream, run by the same runtime as our
// Worker (workerd under `wrangler dev`). It does no more than relay: no authentication, nothing stored.
// On /bare it is the runtime's floor instead: the fake's stream passed through untouched (no parsing,
// no library), what any Worker in front of the model adds at the least. On /room the same pass-through
// is made by a Durable Object that the Worker hands the request to (/room/prepare?tag= makes the object
// first, as our Worker makes a session's room when the session is made): the floor of the shape the
// product has, a session's room that owns the run.
import { DurableObject } from 'cloudflare:workers';
import { createAnthropic } from '@ai-sdk/anthropic';
import { streamText } from 'ai';

async function bare(env, prompt) {
  const upstream = await fetch(`${env.MODEL_URL}/v1/messages`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-api-key': 'bench-key', 'anthropic-version': '2023-06-01' },
    body: JSON.stringify({ model: 'claude-sonnet-4-5', max_tokens: 8192, stream: true, messages: [{ role: 'user', content: [{ type: 'text', text: prompt }] }] }),
  });
  return new Response(upstream.body, { status: upstream.status, headers: { 'content-type': 'text/event-stream' } });
}

export class Room extends DurableObject {
  async fetch(req) {
    const url = new URL(req.url);
    if (url.pathname === '/room/prepare') return new Response(null, { status: 204 });
    return bare(this.env, `${this.env.MARKER} ${url.searchParams.get('tag') ?? ''}`);
  }
}

export default {
  async fetch(req, env) {
    const url = new URL(req.url);
    if (url.pathname === '/health') return Response.json({ status: 'ok' });
    const tag = url.searchParams.get('tag') ?? '';
    const prompt = `${env.MARKER} ${tag}`;
    if (url.pathname === '/bare') return bare(env, prompt);
    if (url.pathname.startsWith('/room')) return env.ROOM.get(env.ROOM.idFromName(tag)).fetch(req);
    const anthropic = createAnthropic({ baseURL: `${env.MODEL_URL}/v1`, apiKey: 'bench-key' });
    const result = streamText({ model: anthropic('claude-sonnet-4-5'), prompt });
    return result.toUIMessageStreamResponse();
  },
};
