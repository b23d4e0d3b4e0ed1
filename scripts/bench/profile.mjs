// A CPU profile of the Worker under `wrangler dev`, taken through workerd's V8 inspector (the Chrome
// DevTools protocol): `const stop = await startProfile(port)`, run the load, `await stop(file)`.
// Writes FILE (a .cpuprofile that Chrome DevTools opens) and prints the functions with the most self
// time. wasm functions show as wasm-function[N]: the release build keeps no name section. With the
// profiler attached V8 may run the wasm in its baseline tier, so shares of time mean more than totals
// (60 messages sampled as 27 s busy in one try).
import fs from 'node:fs';
import WebSocket from 'ws';

export async function startProfile(port) {
  const targets = await (await fetch(`http://127.0.0.1:${port}/json`)).json();
  const target = targets.find((t) => t.webSocketDebuggerUrl);
  if (!target) throw new Error(`no inspector target on :${port}`);
  const ws = new WebSocket(target.webSocketDebuggerUrl);
  await new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
  });
  let next = 0;
  const pending = new Map();
  ws.on('message', (raw) => {
    const msg = JSON.parse(raw.toString());
    const waiter = pending.get(msg.id);
    if (!waiter) return;
    pending.delete(msg.id);
    if (msg.error) waiter.reject(new Error(`${msg.error.message}`));
    else waiter.resolve(msg.result);
  });
  const send = (method, params = {}) =>
    new Promise((resolve, reject) => {
      const id = ++next;
      pending.set(id, { resolve, reject });
      ws.send(JSON.stringify({ id, method, params }));
    });
  await send('Profiler.enable');
  await send('Profiler.setSamplingInterval', { interval: 100 });
  await send('Profiler.start');
  return async (file) => {
    const { profile } = await send('Profiler.stop');
    ws.close();
    fs.writeFileSync(file, JSON.stringify(profile));
    summarize(profile);
  };
}

/** Prints self time per function (and per category), largest first. */
export function summarize(profile, top = 40) {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const dt = new Map();
  for (let i = 0; i < profile.samples.length; i++) {
    const id = profile.samples[i];
    dt.set(id, (dt.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0));
  }
  const self = new Map();
  let total = 0;
  for (const [id, us] of dt) {
    const f = byId.get(id).callFrame;
    const name = `${f.functionName || '(anonymous)'} ${f.url ? f.url.split('/').pop() : ''}`.trim();
    self.set(name, (self.get(name) ?? 0) + us);
    total += us;
  }
  const idle = self.get('(idle)') ?? 0;
  console.log(`\nCPU profile: ${(total / 1000).toFixed(1)} ms sampled, ${((total - idle) / 1000).toFixed(1)} ms busy`);
  const print = (title, map) => {
    console.log(title);
    for (const [name, us] of [...map].sort((a, b) => b[1] - a[1]).slice(0, top)) {
      console.log(`${(us / 1000).toFixed(1).padStart(9)} ms ${((100 * us) / (total - idle || 1)).toFixed(1).padStart(5)}%  ${name.slice(0, 110)}`);
    }
  };
  print('self time:', self);
  // Time with callees, each sample counted once per function on its stack.
  const parent = new Map();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const inclusive = new Map();
  for (const [id, us] of dt) {
    const seen = new Set();
    for (let at = id; at !== undefined; at = parent.get(at)) {
      const f = byId.get(at).callFrame;
      const name = `${f.functionName || '(anonymous)'} ${f.url ? f.url.split('/').pop() : ''}`.trim();
      if (name === '(root)' || name === '(idle)' || seen.has(name)) continue;
      seen.add(name);
      inclusive.set(name, (inclusive.get(name) ?? 0) + us);
    }
  }
  print('with callees:', inclusive);
}

if (process.argv[2] === 'summarize') summarize(JSON.parse(fs.readFileSync(process.argv[3], 'utf8')), Number(process.argv[4] ?? 60));
