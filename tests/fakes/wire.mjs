// HTTP plumbing shared by the fakes: body reading, JSON answers, and (for the model fakes) an SSE
// writer that can split writes at awkward bytes and cut the connection mid-event.

import { sleep } from './scenarios.mjs';

const MAX_BODY = 32 * 1024 * 1024;

/** The whole request body; rejects (and drops the connection) past `max` bytes. */
export function readBody(req, max = MAX_BODY) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (c) => {
      size += c.length;
      if (size > max) {
        reject(new Error('body too large'));
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

export function sendJson(res, status, doc, headers = {}) {
  const body = Buffer.from(JSON.stringify(doc));
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': String(body.length), ...headers });
  res.end(body);
}

/**
 * A writer for one SSE response: write(text) resolves once the bytes are handed to the socket;
 * `closed` is true once the client went away. With `split`, every write goes out in two pieces split
 * at a byte inside a multi-byte UTF-8 character when there is one, else in the middle.
 */
export function sseWriter(res, { split = false, crlf = false } = {}) {
  const state = { closed: false };
  res.on('close', () => {
    state.closed = true;
  });
  const raw = (buf) =>
    new Promise((resolve) => {
      if (state.closed || res.destroyed) return resolve(false);
      res.write(buf, () => resolve(true));
    });
  state.write = async (text) => {
    if (crlf) text = text.replace(/\n/g, '\r\n');
    const buf = Buffer.from(text, 'utf8');
    if (!split || buf.length < 2) return raw(buf);
    let at = buf.findIndex((b) => b >= 0x80 && b < 0xc0);
    if (at <= 0) at = Math.floor(buf.length / 2);
    if (!(await raw(buf.subarray(0, at)))) return false;
    await sleep(2);
    return raw(buf.subarray(at));
  };
  /** Writes the first half of `text`, then destroys the socket (a connection cut mid-event). */
  state.cut = async (text) => {
    const buf = Buffer.from(text, 'utf8');
    await raw(buf.subarray(0, Math.max(1, Math.floor(buf.length / 2))));
    await sleep(20);
    res.socket?.destroy();
    state.closed = true;
  };
  return state;
}

