// The fan-out baseline of scripts/bench-chat: a Node process with a `ws` server that streams one
// model answer from the fake and sends each text delta to every connected client, as our room does
// (one JSON message per delta). Run as a child of scripts/bench/chat.mjs: it sends {port} when
// listening; on {run: marker} it streams the fake's answer to `marker`, then sends {done: true}.
import { WebSocketServer } from 'ws';

const MODEL = process.env.MODEL_URL;
const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
wss.on('listening', () => process.send({ port: wss.address().port }));

async function relay(marker) {
  const res = await fetch(`${MODEL}/v1/messages`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-api-key': 'bench-key', 'anthropic-version': '2023-06-01' },
    body: JSON.stringify({ model: 'claude-sonnet-4-5', max_tokens: 8192, stream: true, messages: [{ role: 'user', content: [{ type: 'text', text: marker }] }] }),
  });
  const decoder = new TextDecoder();
  let buf = '';
  let seq = 0;
  for await (const chunk of res.body) {
    buf += decoder.decode(chunk, { stream: true });
    let i;
    while ((i = buf.indexOf('\n\n')) !== -1) {
      const block = buf.slice(0, i);
      buf = buf.slice(i + 2);
      const data = block.split('\n').find((l) => l.startsWith('data: '));
      if (!data) continue;
      const ev = JSON.parse(data.slice(6));
      if (ev.type !== 'content_block_delta' || ev.delta.type !== 'text_delta') continue;
      const frame = JSON.stringify({ type: 'text_delta', seq: ++seq, delta: ev.delta.text });
      for (const ws of wss.clients) ws.send(frame);
    }
  }
}

process.on('message', async (m) => {
  if (m.run) {
    await relay(m.run);
    process.send({ done: true });
  }
  if (m.exit) process.exit(0);
});
