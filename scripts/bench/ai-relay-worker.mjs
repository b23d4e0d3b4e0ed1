// A baseline of scripts/bench-chat: the relay a TypeScript developer on Cloudflare would write, the
// `ai` package's streamText answered as an AI SDK UI message stream, run by the same runtime as our
// Worker (workerd under `wrangler dev`). It does no more than relay: no authentication, nothing stored.
import { createAnthropic } from '@ai-sdk/anthropic';
import { streamText } from 'ai';

export default {
  async fetch(req, env) {
    const url = new URL(req.url);
    if (url.pathname === '/health') return Response.json({ status: 'ok' });
    const anthropic = createAnthropic({ baseURL: `${env.MODEL_URL}/v1`, apiKey: 'bench-key' });
    const result = streamText({ model: anthropic('claude-sonnet-4-5'), prompt: `${env.MARKER} ${url.searchParams.get('tag') ?? ''}` });
    return result.toUIMessageStreamResponse();
  },
};
