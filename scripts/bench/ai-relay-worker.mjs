// A baseline of scripts/bench-chat: the relay a TypeScript developer on Cloudflare would write, the
// `ai` package's streamText answered as an AI SDK UI message stream, run by the same runtime as our
// Worker (workerd under `wrangler dev`). It does no more than relay: no authentication, nothing stored.
// On /bare it is the runtime's floor instead: the fake's stream passed through untouched (no parsing,
// no library), what any Worker in front of the model adds at the least.
import { createAnthropic } from '@ai-sdk/anthropic';
import { streamText } from 'ai';

export default {
  async fetch(req, env) {
    const url = new URL(req.url);
    if (url.pathname === '/health') return Response.json({ status: 'ok' });
    const prompt = `${env.MARKER} ${url.searchParams.get('tag') ?? ''}`;
    if (url.pathname === '/bare') {
      const upstream = await fetch(`${env.MODEL_URL}/v1/messages`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-api-key': 'bench-key', 'anthropic-version': '2023-06-01' },
        body: JSON.stringify({ model: 'claude-sonnet-4-5', max_tokens: 8192, stream: true, messages: [{ role: 'user', content: [{ type: 'text', text: prompt }] }] }),
      });
      return new Response(upstream.body, { status: upstream.status, headers: { 'content-type': 'text/event-stream' } });
    }
    const anthropic = createAnthropic({ baseURL: `${env.MODEL_URL}/v1`, apiKey: 'bench-key' });
    const result = streamText({ model: anthropic('claude-sonnet-4-5'), prompt });
    return result.toUIMessageStreamResponse();
  },
};
