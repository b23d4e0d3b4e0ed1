// What the measuring halves of the bench scripts share: percentiles, number formatting, JSON calls
// to the API, an SSE reader and the timing of one stream.

/** The p-th percentile (0-100) of xs; NaN when empty. */
export const pct = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] : NaN;
};

/** x with `digits` decimals, or 'n/a'. */
export const fixed = (x, digits = 1) => (Number.isFinite(x) ? x.toFixed(digits) : 'n/a');

/** A JSON request to base + path; the parsed answer, or an error naming the call. */
export async function api(base, method, path, token, body) {
  const res = await fetch(base + path, {
    method,
    headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...(body ? { 'content-type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${base}${path}: ${res.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

/** Reads an SSE response; calls onData(data) per event; returns when it ends. */
export async function readSse(res, onData) {
  const dec = new TextDecoder();
  let buf = '';
  for await (const chunk of res.body) {
    buf += dec.decode(chunk, { stream: true });
    let i;
    while ((i = buf.indexOf('\n\n')) >= 0) {
      const block = buf.slice(0, i);
      buf = buf.slice(i + 2);
      const data = block.split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trimStart()).join('\n');
      if (data) onData(data);
    }
  }
}

/**
 * Times one stream: ms to the first text event and to the end; counts the text events. With
 * `textOf` (an event's data -> its text), also returns the text they carried, joined.
 */
export async function timeStream(start, isText, textOf = null) {
  const t0 = performance.now();
  let first = NaN;
  let deltas = 0;
  let text = '';
  const res = await start();
  if (!res.ok) throw new Error(`stream: ${res.status} ${await res.text()}`);
  await readSse(res, (data) => {
    if (!isText(data)) return;
    deltas++;
    if (Number.isNaN(first)) first = performance.now() - t0;
    if (textOf) text += textOf(data);
  });
  // Our answers say how long their phases took (Server-Timing: admit;dur=N, room;dur=N).
  const timing = Object.fromEntries(
    String(res.headers.get('server-timing') || '')
      .split(',')
      .map((m) => /^\s*([\w-]+);dur=([\d.]+)/.exec(m))
      .filter(Boolean)
      .map((m) => [m[1], Number(m[2])]),
  );
  return { ttft: first, total: performance.now() - t0, deltas, text, startedAt: performance.timeOrigin + t0, timing };
}
