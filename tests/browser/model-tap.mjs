#!/usr/bin/env node
// A transparent HTTP proxy between the server and the model fake that notes
// when each text delta leaves for the server: the "first token at the
// server" clock of the paint-latency benchmark (tests/browser/bench.mjs).
//
//   node tests/browser/model-tap.mjs   (MODEL_TAP_PORT, MODEL_FAKE_URL)
//   GET  /_tap/deltas   [{t, text}] since the last reset (t: ms since the epoch, sub-ms)
//   POST /_tap/reset
// Everything else is forwarded to MODEL_FAKE_URL as is, streamed.

import http from 'node:http';
import { performance } from 'node:perf_hooks';

const now = () => performance.timeOrigin + performance.now();

export function startTap({ target, port = 0 }) {
  const upstream = new URL(target);
  let deltas = [];
  const server = http.createServer((req, res) => {
    if (req.url === '/_tap/deltas') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(deltas));
      return;
    }
    if (req.url === '/_tap/reset' && req.method === 'POST') {
      deltas = [];
      res.writeHead(204);
      res.end();
      return;
    }
    const out = http.request(
      { host: upstream.hostname, port: upstream.port || 80, method: req.method, path: req.url, headers: { ...req.headers, host: upstream.host } },
      (up) => {
        res.writeHead(up.statusCode || 502, up.headers);
        let buf = '';
        up.on('data', (chunk) => {
          // Note the time a delta is handed to the server, then hand it over.
          buf += chunk.toString('utf8');
          let nl;
          while ((nl = buf.indexOf('\n')) >= 0) {
            const line = buf.slice(0, nl);
            buf = buf.slice(nl + 1);
            if (line.startsWith('data:') && line.includes('"text_delta"')) {
              try {
                const ev = JSON.parse(line.slice(5));
                if (ev.delta && ev.delta.type === 'text_delta') deltas.push({ t: now(), text: ev.delta.text });
              } catch {
                /* not JSON */
              }
            }
          }
          res.write(chunk);
        });
        up.on('end', () => res.end());
        up.on('error', () => res.destroy());
      },
    );
    out.on('error', () => {
      res.writeHead(502);
      res.end();
    });
    req.pipe(out);
  });
  return new Promise((resolve) => {
    server.listen(port, '127.0.0.1', () => {
      resolve({ url: `http://127.0.0.1:${server.address().port}`, close: () => new Promise((r) => server.close(r)) });
    });
  });
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const target = process.env.MODEL_FAKE_URL || 'http://127.0.0.1:8791';
  const tap = await startTap({ target, port: Number(process.env.MODEL_TAP_PORT || 0) });
  console.log(`model tap on ${tap.url} -> ${target}`);
}
