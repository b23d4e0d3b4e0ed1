#!/usr/bin/env node
// A fake of Daytona for the end-to-end tests and benchmarks: the REST API the server uses, the
// per-sandbox toolbox API (files, command execution), preview links, and signed (Svix-style)
// webhook deliveries. Test-only: never deploy it.
//
// REST API under /api (Authorization: Bearer <DAYTONA_FAKE_API_KEY>):
//   POST   /api/sandbox                         {name, snapshot?, labels, autoStopInterval, autoArchiveInterval,
//                                                buildInfo?: {dockerfileContent: "FROM <image>"}, cpu?, memory?, disk?, gpu?}
//                                               -> Sandbox in `creating` (`pending_build` with buildInfo), `started`
//                                               after createMs; 409 on a taken name. As Daytona does: 400 for a
//                                               snapshot with buildInfo, and for resources without buildInfo (a
//                                               snapshot, named or the default one, brings its own size)
//   GET    /api/sandbox?labels=JSON&limit&cursor {items, nextCursor} (a plain array with the legacy list shape)
//   GET    /api/sandbox/{idOrName}              Sandbox
//   DELETE /api/sandbox/{idOrName}              destroying, then gone
//   POST   /api/sandbox/{id}/start              stopped -> starting -> started (startMs);
//                                               archived -> restoring -> started (restoreMs); 400 otherwise
//   POST   /api/sandbox/{id}/stop               started -> stopping -> stopped (stopMs)
//   POST   /api/sandbox/{id}/archive            stopped -> archiving -> archived (archiveMs)
//   POST   /api/sandbox/{id}/last-activity      201, refreshes the idle timer
//   POST   /api/sandbox/{id}/autostop/{min}     also autoarchive/{min}, autodelete/{min}
//   GET    /api/sandbox/{id}/ports/{port}/preview-url                 {sandboxId, url, token}
//   GET    /api/sandbox/{id}/ports/{port}/signed-preview-url?expiresInSeconds=N  {sandboxId, port, token, url}
// A started sandbox whose idle timer (autoStopInterval minutes, a minute being minuteMs) runs out stops
// by itself, as Daytona's does. Every state change is delivered as a `sandbox.state.updated` webhook
// (`sandbox.created` on creation) to the registered target.
// Toolbox API (the Sandbox's toolboxProxyUrl is http://<fake>/toolbox; only while started):
//   POST   /toolbox/{id}/files/bulk-upload      multipart files[i].path + files[i].file
//   GET    /toolbox/{id}/files/download?path=   the bytes
//   DELETE /toolbox/{id}/files?path=
//   POST   /toolbox/{id}/files/folder?path=&mode=
//   POST   /toolbox/{id}/process/execute        {command, cwd, timeout} -> {exitCode, result}; over the timeout:
//                                               408 {message: "command execution timeout"} (as the daemon does).
//                                               Allow-listed commands only: ls [dir], cat FILE, echo ..., pwd,
//                                               node --version, sleep N, seq N, slow-echo N MS (prints "line 1".."line
//                                               N", MS ms apart), true, false, exit N, joined by &&.
//   POST   /toolbox/{id}/process/session        {sessionId} -> 201; 409 when it exists. Process sessions:
//   GET    /toolbox/{id}/process/session        [{sessionId, commands: [{id, command, exitCode}]}]
//   GET    /toolbox/{id}/process/session/{sid}  {sessionId, commands}
//   DELETE /toolbox/{id}/process/session/{sid}  204; kills what runs in it (its commands are gone)
//   POST   /toolbox/{id}/process/session/{sid}/exec  {command, runAsync} -> {cmdId, output: null, exitCode: null}
//                                               at once with runAsync, else after it ran {cmdId, output, exitCode}.
//                                               The same allow-list; a command `cd '<dir>' && (\n<command>\n)` (how
//                                               the server sends a working directory) runs <command> in <dir>.
//                                               Output appears as the command prints it (sleep and slow-echo take
//                                               real time).
//   GET    /toolbox/{id}/process/session/{sid}/command/{cmdId}       {id, command, exitCode: null while it runs}
//   GET    /toolbox/{id}/process/session/{sid}/command/{cmdId}/logs  text/plain, the whole log so far (stdout
//                                               and stderr combined; `follow` is ignored: Daytona follows only
//                                               over a WebSocket)
// Preview: the URLs above point at /preview/{id}/{port}/... (header x-daytona-preview-token) or
// /preview/s/{token}/... (signed); they serve the sandbox's project files like a static server would.
//
// Test controls (JSON in, JSON out):
//   POST /_fake/webhooks {url}                  where deliveries go (default env DAYTONA_FAKE_WEBHOOK_URL)
//   POST /_fake/deliver {body, id?, timestamp?, signature?: good|bad|none|stale, url?}
//                                               one delivery signed (or not) as asked -> {status, body}
//   POST /_fake/outage {mode: down|slow|off, project?, path?, status?: 503, ms?, times?}
//                                               the next calls (of one project's sandboxes when `project` is
//                                               given, whose path contains `path` when given) fail with
//                                               `status` (down) or answer after `ms` (slow)
//   POST /_fake/timing {project?, createMs?, startMs?, restoreMs?, stopMs?, archiveMs?, minuteMs?}
//   POST /_fake/list-shape {legacy: bool}       GET /api/sandbox answers a plain array (before May 2026)
//   POST /_fake/sandboxes/{id}/state {state, errorReason?}   force a state (and deliver its webhook)
//   GET  /_fake/sandboxes?project=ID            [{id, name, state, labels, autoStopInterval, files: {path: sha256},
//                                                source: image|snapshot|default, image, resources: {cpu, memory, disk}|null}]
//   GET  /_fake/calls?since=N&project=ID        {total, calls: [{method, path, project}], uploads}
//   GET  /health
//
// Standalone: `node tests/fakes/daytona.mjs` listens on DAYTONA_FAKE_PORT (default 8793), API key
// DAYTONA_FAKE_API_KEY (default daytona-fake-key), webhook secret DAYTONA_FAKE_WEBHOOK_SECRET (default a
// fixed whsec_ test value). Configure the server with DAYTONA_API_URL=http://127.0.0.1:8793/api, the same
// DAYTONA_API_KEY and DAYTONA_WEBHOOK_SECRET.
// Imported: `await startDaytonaFake({ port: 0, ... })` -> { url, port, state, close() }.

import { createHash, createHmac, randomBytes } from 'node:crypto';
import http from 'node:http';
import { fileURLToPath } from 'node:url';

import { readBody as readBodyUpTo } from './wire.mjs';

export const DEFAULT_KEY = 'daytona-fake-key';
export const DEFAULT_SECRET = 'whsec_ZGF5dG9uYS1mYWtlLXdlYmhvb2stc2VjcmV0LTAx';
export const PROJECT_DIR = '/home/daytona/project';
const MAX_BODY = 64 * 1024 * 1024;
const LOG_LIMIT = 20000;

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const sha256 = (buf) => createHash('sha256').update(buf).digest('hex');
const iso = (ms = Date.now()) => new Date(ms).toISOString();

const readBody = (req) => readBodyUpTo(req, MAX_BODY);

function send(res, status, doc, headers = {}) {
  const body = doc === undefined ? Buffer.alloc(0) : Buffer.from(JSON.stringify(doc));
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': String(body.length), ...headers });
  res.end(body);
}

const error = (res, status, message) => send(res, status, { statusCode: status, message, error: http.STATUS_CODES[status] });

/** Parses multipart/form-data into [{name, filename, data}]. */
export function parseMultipart(contentType, body) {
  const m = /boundary=(?:"([^"]+)"|([^;]+))/i.exec(contentType || '');
  if (!m) throw new Error('no boundary');
  const delim = Buffer.from(`--${m[1] || m[2]}`);
  const parts = [];
  let at = body.indexOf(delim);
  while (at !== -1) {
    const start = at + delim.length;
    if (body.subarray(start, start + 2).toString() === '--') break;
    const next = body.indexOf(delim, start);
    if (next === -1) break;
    const part = body.subarray(start + 2, next - 2); // skip CRLF after the delimiter and before the next
    const split = part.indexOf('\r\n\r\n');
    const head = part.subarray(0, split).toString('utf8');
    const name = /name="([^"]*)"/i.exec(head)?.[1] ?? '';
    const filename = /filename="([^"]*)"/i.exec(head)?.[1];
    parts.push({ name, filename, data: part.subarray(split + 4) });
    at = next;
  }
  return parts;
}

/** Signs a delivery the Svix way: base64 HMAC-SHA256 over `${id}.${ts}.${body}` with the secret's bytes. */
export function svixSign(secret, id, ts, body) {
  const key = Buffer.from(secret.replace(/^whsec_/, ''), 'base64');
  return createHmac('sha256', key).update(`${id}.${ts}.${body}`).digest('base64');
}

export async function startDaytonaFake({
  port = Number(process.env.DAYTONA_FAKE_PORT || 8793),
  host = '127.0.0.1',
  apiKey = process.env.DAYTONA_FAKE_API_KEY || DEFAULT_KEY,
  secret = process.env.DAYTONA_FAKE_WEBHOOK_SECRET || DEFAULT_SECRET,
  webhookUrl = process.env.DAYTONA_FAKE_WEBHOOK_URL || '',
} = {}) {
  const state = {
    sandboxes: new Map(), // id -> sandbox
    calls: [],
    total: 0,
    uploads: 0,
    webhookUrl,
    deliveries: [],
    legacyList: false,
    timing: { createMs: 300, startMs: 200, restoreMs: 1500, stopMs: 200, archiveMs: 300, minuteMs: 60_000 },
    projectTiming: new Map(),
    outages: [], // {mode, project, status, ms, times}
    nextId: 1,
  };
  let base = '';

  const timing = (sb) => ({ ...state.timing, ...(state.projectTiming.get(sb?.labels?.everjust_project) || {}) });
  const projectOf = (sb) => sb?.labels?.everjust_project || null;
  const find = (idOrName) => state.sandboxes.get(idOrName) || [...state.sandboxes.values()].find((s) => s.name === idOrName);

  const dto = (sb) => ({
    id: sb.id,
    organizationId: 'org_fake',
    name: sb.name,
    snapshot: sb.snapshot,
    user: 'daytona',
    env: {},
    labels: sb.labels,
    public: false,
    networkBlockAll: false,
    target: 'us',
    cpu: sb.resources?.cpu ?? 1,
    gpu: 0,
    memory: sb.resources?.memory ?? 1,
    disk: sb.resources?.disk ?? 3,
    state: sb.state,
    desiredState: sb.desired,
    errorReason: sb.errorReason || undefined,
    recoverable: false,
    autoStopInterval: sb.autoStopInterval,
    autoArchiveInterval: sb.autoArchiveInterval,
    autoDeleteInterval: -1,
    sandboxClass: 'container',
    createdAt: iso(sb.createdAt),
    updatedAt: iso(sb.updatedAt),
    lastActivityAt: iso(sb.lastActivity),
    toolboxProxyUrl: `${base}/toolbox`,
  });

  async function deliver(body, { id = `msg_${randomBytes(12).toString('hex')}`, timestamp, signature = 'good', url } = {}) {
    const target = url || state.webhookUrl;
    if (!target) return { status: 0, body: 'no webhook target' };
    const raw = typeof body === 'string' ? body : JSON.stringify(body);
    const ts = String(timestamp ?? Math.floor(Date.now() / 1000) - (signature === 'stale' ? 600 : 0));
    const headers = { 'content-type': 'application/json', 'svix-id': id, 'svix-timestamp': ts };
    if (signature === 'good' || signature === 'stale') headers['svix-signature'] = `v1,${svixSign(secret, id, ts, raw)}`;
    if (signature === 'bad') headers['svix-signature'] = `v1,${svixSign('whsec_' + Buffer.from('wrong secret').toString('base64'), id, ts, raw)}`;
    const started = Date.now();
    try {
      const r = await fetch(target, { method: 'POST', headers, body: raw, signal: AbortSignal.timeout(15000) });
      const out = { id, status: r.status, body: await r.text(), ms: Date.now() - started };
      state.deliveries.push(out);
      return out;
    } catch (e) {
      const out = { id, status: 0, body: String(e), ms: Date.now() - started };
      state.deliveries.push(out);
      return out;
    }
  }

  function setState(sb, next, { errorReason } = {}) {
    if (sb.state === next && !errorReason) return;
    const old = sb.state;
    sb.state = next;
    sb.updatedAt = Date.now();
    if (errorReason !== undefined) sb.errorReason = errorReason;
    void deliver({ event: 'sandbox.state.updated', timestamp: iso(), id: sb.id, organizationId: 'org_fake', oldState: old, newState: next, updatedAt: iso(sb.updatedAt) });
  }

  /** Moves `sb` to `via` now and to `to` after `ms`, unless something else happened meanwhile. */
  function transition(sb, via, to, ms) {
    setState(sb, via);
    const token = (sb.seq = (sb.seq || 0) + 1);
    clearTimeout(sb.timer);
    sb.timer = setTimeout(() => {
      if (sb.seq !== token || !state.sandboxes.has(sb.id)) return;
      if (to === 'gone') {
        state.sandboxes.delete(sb.id);
        return;
      }
      setState(sb, to);
      if (to === 'started') sb.lastActivity = Date.now();
    }, ms);
    sb.timer.unref?.();
  }

  const touch = (sb) => {
    sb.lastActivity = Date.now();
  };

  // Daytona's own auto-stop.
  const idleTimer = setInterval(() => {
    for (const sb of state.sandboxes.values()) {
      const t = timing(sb);
      if (sb.state === 'started' && sb.autoStopInterval > 0 && Date.now() - sb.lastActivity > sb.autoStopInterval * t.minuteMs) {
        transition(sb, 'stopping', 'stopped', t.stopMs);
      }
    }
  }, 250);
  idleTimer.unref?.();

  function outageFor(project, path) {
    const i = state.outages.findIndex((o) => (!o.project || o.project === project) && (!o.path || path.includes(o.path)));
    if (i === -1) return null;
    const o = state.outages[i];
    if (o.times !== undefined) {
      o.times -= 1;
      if (o.times <= 0) state.outages.splice(i, 1);
    }
    return o;
  }

  /**
   * A tiny shell: allow-listed commands over the sandbox's files. Returns {code, out, sleepS, chunks}:
   * sleepS is how long it runs (sleep, slow-echo), chunks its output as [{at: ms after its start, text}].
   */
  function shell(sb, cwd, command) {
    let out = '';
    let code = 0;
    let t = 0;
    let mark = 0;
    const chunks = [];
    const flush = () => {
      if (out.length > mark) chunks.push({ at: t, text: out.slice(mark) });
      mark = out.length;
    };
    const dir = (cwd || PROJECT_DIR).replace(/\/+$/, '');
    const resolve = (p) => (p.startsWith('/') ? p : `${dir}/${p}`).replace(/\/\.\//g, '/').replace(/\/+$/, '');
    for (const part of command.split('&&').map((p) => p.trim())) {
      const words = part.split(/\s+/).filter(Boolean);
      const [cmd, ...args] = words;
      if (cmd === 'echo') out += `${args.join(' ').replace(/^"(.*)"$/, '$1').replace(/^'(.*)'$/, '$1')}\n`;
      else if (cmd === 'pwd') out += `${dir}\n`;
      else if (cmd === 'true') code = 0;
      else if (cmd === 'false') code = 1;
      else if (cmd === 'exit') code = Number(args[0] || 0);
      else if (cmd === 'node' && args[0] === '--version') out += 'v20.11.1\n';
      else if (cmd === 'sleep') {
        flush();
        t += Number(args[0] || 0) * 1000;
      } else if (cmd === 'slow-echo') {
        // slow-echo N MS: lines "line 1".."line N", MS apart.
        const n = Math.min(Number(args[0] || 0), 10_000);
        const ms = Math.min(Number(args[1] || 0), 60_000);
        flush();
        for (let k = 1; k <= n; k++) {
          if (k > 1) t += ms;
          out += `line ${k}\n`;
          flush();
        }
      }
      else if (cmd === 'seq') {
        const n = Math.min(Number(args[0] || 0), 2_000_000);
        const lines = new Array(n);
        for (let i = 0; i < n; i++) lines[i] = String(i + 1);
        out += n ? `${lines.join('\n')}\n` : '';
      } else if (cmd === 'cat') {
        for (const f of args) {
          const data = sb.files.get(resolve(f));
          if (data) out += data.toString('utf8');
          else {
            out += `cat: ${f}: No such file or directory\n`;
            code = 1;
          }
        }
      } else if (cmd === 'ls') {
        const d = resolve(args[0] || '.').replace(/\/\.$/, '');
        const names = new Set();
        for (const p of sb.files.keys()) if (p.startsWith(`${d}/`)) names.add(p.slice(d.length + 1).split('/')[0]);
        if (!names.size && ![...sb.files.keys()].some((p) => p.startsWith(`${d}/`)) && d !== PROJECT_DIR) {
          out += `ls: cannot access '${args[0]}': No such file or directory\n`;
          code = 2;
        } else out += [...names].sort().map((n) => `${n}\n`).join('');
      } else {
        out += `sh: 1: ${cmd}: not found\n`;
        code = 127;
      }
      if (code !== 0) break;
    }
    flush();
    return { code, out, sleepS: t / 1000, chunks };
  }

  /** A command run in a process session: what it has printed by now, and its exit code once done. */
  const sessionCommandLog = (c) => {
    const elapsed = Date.now() - c.started;
    return c.chunks.filter((ch) => ch.at <= elapsed).map((ch) => ch.text).join('');
  };
  const sessionCommandDto = (c) => ({
    id: c.id,
    command: c.command,
    exitCode: Date.now() - c.started >= c.durationMs ? c.code : null,
  });

  /** Process sessions: /process/session[/{sessionId}[/exec | /command/{commandId}[/logs]]]. */
  async function sessions(req, res, sb, rest, body) {
    sb.sessions ||= new Map(); // sessionId -> Map(cmdId -> command)
    const [, sid, ...more] = rest.split('/').slice(1).map(decodeURIComponent);
    if (sid === undefined) {
      if (req.method === 'GET') {
        return send(res, 200, [...sb.sessions].map(([sessionId, cmds]) => ({ sessionId, commands: [...cmds.values()].map(sessionCommandDto) })));
      }
      if (req.method !== 'POST') return error(res, 405, 'method not allowed');
      let doc;
      try {
        doc = JSON.parse(body.toString('utf8'));
      } catch {
        return error(res, 400, 'invalid request body');
      }
      if (typeof doc.sessionId !== 'string' || !doc.sessionId) return error(res, 400, 'sessionId is required');
      if (sb.sessions.has(doc.sessionId)) return error(res, 409, 'session already exists');
      sb.sessions.set(doc.sessionId, new Map());
      return send(res, 201);
    }
    const cmds = sb.sessions.get(sid);
    if (!cmds) return error(res, 404, 'session not found');
    if (more.length === 0 && req.method === 'DELETE') {
      // Deleting a session kills what runs in it.
      sb.sessions.delete(sid);
      return send(res, 204);
    }
    if (more.length === 0 && req.method === 'GET') {
      return send(res, 200, { sessionId: sid, commands: [...cmds.values()].map(sessionCommandDto) });
    }
    if (more.length === 1 && more[0] === 'exec' && req.method === 'POST') {
      let doc;
      try {
        doc = JSON.parse(body.toString('utf8'));
      } catch {
        return error(res, 400, 'invalid request body');
      }
      if (typeof doc.command !== 'string' || !doc.command.trim()) return error(res, 400, 'command is required');
      // A session has no working directory per command: the server sends `cd '<dir>' && (\n<command>\n)`.
      let cwd = PROJECT_DIR;
      let command = doc.command;
      const m = /^cd '((?:[^']|'\\'')*)' && \(\n([\s\S]*)\n\)$/.exec(doc.command);
      if (m) {
        cwd = m[1].replace(/'\\''/g, "'").replace(/\/+$/, '');
        command = m[2];
      }
      const id = `cmd_${randomBytes(8).toString('hex')}`;
      let run;
      if (!sb.dirs.has(cwd) && ![...sb.files.keys()].some((p) => p.startsWith(`${cwd}/`))) {
        run = { code: 1, chunks: [{ at: 0, text: `sh: 1: cd: can't cd to ${cwd}\n` }], sleepS: 0 };
      } else run = shell(sb, cwd, command);
      const c = { id, command: doc.command, started: Date.now(), chunks: run.chunks, code: run.code, durationMs: run.sleepS * 1000 };
      cmds.set(id, c);
      if (doc.runAsync || doc.async) return send(res, 200, { cmdId: id, output: null, exitCode: null });
      await sleep(c.durationMs);
      const output = sessionCommandLog(c);
      return send(res, 200, { cmdId: id, output, exitCode: c.code });
    }
    if (more[0] === 'command' && more.length >= 2 && req.method === 'GET') {
      const c = cmds.get(more[1]);
      if (!c) return error(res, 404, 'command not found');
      if (more.length === 2) return send(res, 200, sessionCommandDto(c));
      if (more.length === 3 && more[2] === 'logs') {
        // The whole log so far, combined stdout and stderr (Daytona follows only over a WebSocket).
        const text = Buffer.from(sessionCommandLog(c));
        res.writeHead(200, { 'content-type': 'text/plain; charset=utf-8', 'content-length': String(text.length) });
        return res.end(text);
      }
    }
    return error(res, 404, 'no such session route');
  }

  async function toolbox(req, res, sb, rest, url, body) {
    if (sb.state !== 'started') return error(res, 400, `Sandbox is not running (state ${sb.state})`);
    touch(sb);
    const path = url.searchParams.get('path');
    if (req.method === 'POST' && rest === 'files/bulk-upload') {
      let parts;
      try {
        parts = parseMultipart(req.headers['content-type'], body);
      } catch {
        return send(res, 400, { errors: ['invalid multipart form'] });
      }
      const dests = new Map();
      const files = [];
      for (const p of parts) {
        const idx = p.name.replace(/^files\[/, '').replace(/\]\.(path|file)$/, '');
        if (p.name.endsWith('.path')) dests.set(idx, p.data.toString('utf8').trim());
        else if (p.name.endsWith('.file')) {
          const dest = dests.get(idx);
          if (!dest) return send(res, 400, { errors: [`file[${idx}]: missing .path metadata`] });
          sb.files.set(dest, Buffer.from(p.data));
          files.push({ path: dest, bytes: p.data.length });
        }
      }
      state.uploads += files.length;
      return send(res, 200, { files });
    }
    if (req.method === 'GET' && rest === 'files/download') {
      const data = sb.files.get(path);
      if (!data) return error(res, 404, 'file not found');
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(data.length) });
      return res.end(data);
    }
    if (req.method === 'POST' && rest === 'files/folder') {
      sb.dirs.add(path.replace(/\/+$/, ''));
      return send(res, 200, {});
    }
    if (req.method === 'DELETE' && rest === 'files') {
      if (!sb.files.delete(path)) return error(res, 404, 'file not found');
      return send(res, 204);
    }
    if (rest === 'process/session' || rest.startsWith('process/session/')) return sessions(req, res, sb, rest, body);
    if (req.method === 'POST' && rest === 'process/execute') {
      let doc;
      try {
        doc = JSON.parse(body.toString('utf8'));
      } catch {
        return error(res, 400, 'invalid request body');
      }
      if (typeof doc.command !== 'string' || !doc.command.trim()) return error(res, 400, 'command cannot be empty or whitespace-only');
      const timeout = Number(doc.timeout || 10);
      const cwd = (doc.cwd || PROJECT_DIR).replace(/\/+$/, '');
      if (!sb.dirs.has(cwd) && ![...sb.files.keys()].some((p) => p.startsWith(`${cwd}/`))) {
        return send(res, 200, { exitCode: -1, result: `chdir ${cwd}: no such file or directory` });
      }
      const r = shell(sb, doc.cwd, doc.command);
      if (r.sleepS > 0) {
        const wait = Math.min(r.sleepS, timeout);
        await sleep(wait * 1000);
        if (r.sleepS > timeout) return send(res, 408, { statusCode: 408, message: 'command execution timeout', code: 'REQUEST_TIMEOUT' });
      }
      touch(sb);
      return send(res, 200, { exitCode: r.code, result: r.out });
    }
    return error(res, 404, 'no such toolbox route');
  }

  async function api(req, res, parts, url, body) {
    // parts: path segments after /api
    if (parts[0] !== 'sandbox') return error(res, 404, 'no such route');
    if (parts.length === 1 && req.method === 'POST') {
      let doc;
      try {
        doc = JSON.parse(body.toString('utf8') || '{}');
      } catch {
        return error(res, 400, 'invalid JSON');
      }
      const name = doc.name || `sandbox-${state.nextId}`;
      const build = doc.buildInfo?.dockerfileContent;
      if (doc.buildInfo && typeof build !== 'string') return error(res, 400, 'buildInfo.dockerfileContent must be a string');
      if (build && doc.snapshot) return error(res, 400, 'Cannot specify a snapshot when using a build info entry');
      const sized = ['cpu', 'gpu', 'memory', 'disk'].some((k) => doc[k]);
      if (!build && sized) return error(res, 400, 'Cannot specify Sandbox resources when using a snapshot');
      for (const k of ['cpu', 'memory', 'disk']) {
        if (doc[k] !== undefined && !(Number.isInteger(doc[k]) && doc[k] > 0)) return error(res, 400, `${k} must be a positive integer`);
      }
      const image = build ? (/^FROM\s+(\S+)/m.exec(build)?.[1] ?? null) : null;
      if (build && !image) return error(res, 400, 'buildInfo.dockerfileContent has no FROM line');
      if (find(name)) return error(res, 409, `Sandbox with name ${name} already exists`);
      const id = `fake${String(state.nextId++).padStart(6, '0')}${randomBytes(3).toString('hex')}`;
      const now = Date.now();
      const sb = {
        id,
        name,
        snapshot: build ? null : doc.snapshot || 'daytonaio/sandbox:fake',
        source: build ? 'image' : doc.snapshot ? 'snapshot' : 'default',
        image,
        // Daytona's sizes when none are asked for (and a snapshot's in this fake).
        resources: build ? { cpu: doc.cpu || 1, memory: doc.memory || 1, disk: doc.disk || 3 } : null,
        labels: doc.labels || {},
        state: build ? 'pending_build' : 'creating',
        desired: 'started',
        autoStopInterval: doc.autoStopInterval ?? 15,
        autoArchiveInterval: doc.autoArchiveInterval ?? 10080,
        files: new Map(),
        dirs: new Set(),
        createdAt: now,
        updatedAt: now,
        lastActivity: now,
        previewTokens: new Map(),
      };
      state.sandboxes.set(id, sb);
      const first = build ? 'pending_build' : 'creating';
      void deliver({ event: 'sandbox.created', timestamp: iso(), id, organizationId: 'org_fake', state: first, sandboxClass: 'container', createdAt: iso(now) });
      transition(sb, first, 'started', timing(sb).createMs);
      return send(res, 200, dto(sb));
    }
    if (parts.length === 1 && req.method === 'GET') {
      let want = {};
      try {
        want = JSON.parse(url.searchParams.get('labels') || '{}');
      } catch {
        return error(res, 400, 'labels must be JSON');
      }
      const all = [...state.sandboxes.values()].filter((s) => Object.entries(want).every(([k, v]) => s.labels[k] === v));
      const limit = Math.min(Number(url.searchParams.get('limit') || 100), 200);
      const start = Number(url.searchParams.get('cursor') || 0);
      const page = all.slice(start, start + limit).map(dto);
      if (state.legacyList) return send(res, 200, page);
      return send(res, 200, { items: page, nextCursor: start + limit < all.length ? String(start + limit) : null });
    }
    const sb = find(decodeURIComponent(parts[1] || ''));
    if (!sb) return error(res, 404, 'Sandbox not found');
    const t = timing(sb);
    const action = parts.slice(2).join('/');
    if (req.method === 'GET' && action === '') return send(res, 200, dto(sb));
    if (req.method === 'DELETE' && action === '') {
      transition(sb, 'destroying', 'gone', 100);
      return send(res, 200, dto(sb));
    }
    if (req.method === 'POST' && action === 'start') {
      if (sb.state === 'stopped') transition(sb, 'starting', 'started', t.startMs);
      else if (sb.state === 'archived') transition(sb, 'restoring', 'started', t.restoreMs);
      else if (sb.state === 'started') return send(res, 200, dto(sb));
      else return error(res, 400, `Sandbox is ${sb.state}; it cannot be started`);
      return send(res, 200, dto(sb));
    }
    if (req.method === 'POST' && action === 'stop') {
      if (sb.state !== 'started') return error(res, 400, `Sandbox is ${sb.state}; it cannot be stopped`);
      transition(sb, 'stopping', 'stopped', t.stopMs);
      return send(res, 200, dto(sb));
    }
    if (req.method === 'POST' && action === 'archive') {
      if (sb.state !== 'stopped') return error(res, 400, `Sandbox is ${sb.state}; only a stopped sandbox can be archived`);
      transition(sb, 'archiving', 'archived', t.archiveMs);
      return send(res, 200, dto(sb));
    }
    if (req.method === 'POST' && action === 'last-activity') {
      touch(sb);
      return send(res, 201);
    }
    const interval = /^(autostop|autoarchive|autodelete)\/(-?\d+)$/.exec(action);
    if (req.method === 'POST' && interval) {
      if (interval[1] === 'autostop') sb.autoStopInterval = Number(interval[2]);
      if (interval[1] === 'autoarchive') sb.autoArchiveInterval = Number(interval[2]);
      return send(res, 200, dto(sb));
    }
    const preview = /^ports\/(\d+)\/(preview-url|signed-preview-url)$/.exec(action);
    if (req.method === 'GET' && preview) {
      const port = Number(preview[1]);
      if (preview[2] === 'preview-url') {
        const token = (sb.previewToken ||= randomBytes(12).toString('hex'));
        return send(res, 200, { sandboxId: sb.id, url: `${base}/preview/${sb.id}/${port}/`, token });
      }
      const secs = Number(url.searchParams.get('expiresInSeconds') || 60);
      const token = randomBytes(12).toString('hex');
      sb.previewTokens.set(token, { port, expires: Date.now() + secs * 1000 });
      return send(res, 200, { sandboxId: sb.id, port, token, url: `${base}/preview/s/${token}/` });
    }
    return error(res, 404, 'no such route');
  }

  function previewServe(req, res, sb, rest) {
    if (sb.state !== 'started') return error(res, 502, 'sandbox is not running');
    touch(sb);
    let p = decodeURIComponent(rest || '');
    if (!p || p.endsWith('/')) p += 'index.html';
    if (p.split('/').some((s) => s === '..')) return error(res, 400, 'bad path');
    const data = sb.files.get(`${PROJECT_DIR}/${p}`);
    if (!data) return error(res, 404, 'not found');
    const type = p.endsWith('.html') ? 'text/html; charset=utf-8' : p.endsWith('.css') ? 'text/css' : p.endsWith('.js') ? 'text/javascript' : 'application/octet-stream';
    res.writeHead(200, { 'content-type': type, 'content-length': String(data.length) });
    res.end(data);
  }

  async function control(req, res, parts, url, body) {
    const doc = body.length ? JSON.parse(body.toString('utf8')) : {};
    const what = parts.join('/');
    if (req.method === 'POST' && what === 'webhooks') {
      state.webhookUrl = doc.url || '';
      return send(res, 200, { url: state.webhookUrl });
    }
    if (req.method === 'POST' && what === 'deliver') return send(res, 200, await deliver(doc.body, doc));
    if (req.method === 'POST' && what === 'outage') {
      if (doc.mode === 'off') state.outages = state.outages.filter((o) => doc.project && o.project !== doc.project);
      else state.outages.push({ mode: doc.mode || 'down', project: doc.project || null, path: doc.path || null, status: doc.status || 503, ms: doc.ms || 0, times: doc.times });
      return send(res, 200, { outages: state.outages });
    }
    if (req.method === 'POST' && what === 'timing') {
      const { project, ...rest } = doc;
      if (project) state.projectTiming.set(project, { ...(state.projectTiming.get(project) || {}), ...rest });
      else Object.assign(state.timing, rest);
      return send(res, 200, project ? state.projectTiming.get(project) : state.timing);
    }
    if (req.method === 'POST' && what === 'list-shape') {
      state.legacyList = !!doc.legacy;
      return send(res, 200, { legacy: state.legacyList });
    }
    if (req.method === 'POST' && parts[0] === 'sandboxes' && parts[2] === 'state') {
      const sb = find(parts[1]);
      if (!sb) return error(res, 404, 'Sandbox not found');
      clearTimeout(sb.timer);
      sb.seq = (sb.seq || 0) + 1;
      setState(sb, doc.state, { errorReason: doc.errorReason });
      return send(res, 200, dto(sb));
    }
    if (req.method === 'GET' && what === 'sandboxes') {
      const project = url.searchParams.get('project');
      const list = [...state.sandboxes.values()]
        .filter((s) => !project || projectOf(s) === project)
        .map((s) => ({
          ...dto(s),
          source: s.source,
          image: s.image,
          resources: s.resources,
          files: Object.fromEntries([...s.files].map(([p, d]) => [p, sha256(d)])),
        }));
      return send(res, 200, list);
    }
    if (req.method === 'GET' && what === 'calls') {
      const since = Number(url.searchParams.get('since') || 0);
      const project = url.searchParams.get('project');
      const calls = state.calls.filter((c) => c.n > since && (!project || c.project === project));
      return send(res, 200, { total: state.total, calls, uploads: state.uploads, deliveries: state.deliveries.length });
    }
    return error(res, 404, 'no such control');
  }

  const server = http.createServer(async (req, res) => {
    try {
      const url = new URL(req.url, 'http://fake');
      const parts = url.pathname.split('/').filter(Boolean);
      const body = await readBody(req);
      if (url.pathname === '/health') return send(res, 200, { status: 'ok' });
      if (parts[0] === '_fake') return await control(req, res, parts.slice(1), url, body);
      if (parts[0] === 'preview') {
        if (parts[1] === 's') {
          const sb = [...state.sandboxes.values()].find((s) => s.previewTokens.has(parts[2]));
          const tok = sb?.previewTokens.get(parts[2]);
          if (!sb || tok.expires < Date.now()) return error(res, 401, 'invalid or expired preview token');
          return previewServe(req, res, sb, parts.slice(3).join('/'));
        }
        const sb = state.sandboxes.get(parts[1]);
        if (!sb || req.headers['x-daytona-preview-token'] !== sb.previewToken) return error(res, 401, 'preview token required');
        return previewServe(req, res, sb, parts.slice(3).join('/'));
      }
      // Everything else is the API: logged, authenticated, subject to outages.
      let sb = null;
      if (parts[0] === 'api' && parts[1] === 'sandbox' && parts[2]) sb = find(decodeURIComponent(parts[2]));
      if (parts[0] === 'toolbox') sb = state.sandboxes.get(parts[1]);
      let project = projectOf(sb);
      if (!project && parts[0] === 'api' && req.method === 'POST' && parts.length === 2) {
        try {
          project = JSON.parse(body.toString('utf8')).labels?.everjust_project || null;
        } catch {
          project = null;
        }
      }
      state.total += 1;
      state.calls.push({ n: state.total, method: req.method, path: url.pathname, project });
      if (state.calls.length > LOG_LIMIT) state.calls.splice(0, state.calls.length - LOG_LIMIT);
      if (req.headers.authorization !== `Bearer ${apiKey}`) return error(res, 401, 'Invalid API key');
      const outage = outageFor(project, url.pathname);
      if (outage?.mode === 'down') return error(res, outage.status, 'Service Unavailable');
      if (outage?.mode === 'slow') await sleep(outage.ms);
      if (parts[0] === 'api') return await api(req, res, parts.slice(1), url, body);
      if (parts[0] === 'toolbox') {
        if (!sb) return error(res, 404, 'Sandbox not found');
        return await toolbox(req, res, sb, parts.slice(2).join('/'), url, body);
      }
      return error(res, 404, 'no such route');
    } catch (e) {
      if (!res.headersSent) error(res, 500, String(e?.message || e));
    }
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, resolve);
  });
  const actual = server.address().port;
  base = `http://${host}:${actual}`;
  return {
    url: base,
    port: actual,
    state,
    deliver,
    close: () =>
      new Promise((r) => {
        clearInterval(idleTimer);
        for (const sb of state.sandboxes.values()) clearTimeout(sb.timer);
        server.closeAllConnections?.();
        server.close(() => r());
      }),
  };
}

/** A client for a running fake's test controls (for the end-to-end tests). */
export function daytonaControls(url) {
  const base = url.replace(/\/+$/, '');
  const call = async (method, path, body) => {
    const r = await fetch(`${base}${path}`, {
      method,
      headers: body === undefined ? {} : { 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(20000),
    });
    const text = await r.text();
    if (!r.ok) throw new Error(`daytona fake ${method} ${path}: ${r.status} ${text}`);
    return text ? JSON.parse(text) : null;
  };
  return {
    url: base,
    reachable: () => fetch(`${base}/health`, { signal: AbortSignal.timeout(3000) }).then((r) => r.ok, () => false),
    webhooks: (target) => call('POST', '/_fake/webhooks', { url: target }),
    deliver: (opts) => call('POST', '/_fake/deliver', opts),
    outage: (opts) => call('POST', '/_fake/outage', opts),
    timing: (opts) => call('POST', '/_fake/timing', opts),
    forceState: (id, state, errorReason) => call('POST', `/_fake/sandboxes/${id}/state`, { state, errorReason }),
    sandboxes: (project) => call('GET', `/_fake/sandboxes?project=${encodeURIComponent(project)}`),
    calls: (project, since = 0) => call('GET', `/_fake/calls?since=${since}&project=${encodeURIComponent(project)}`),
  };
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const fake = await startDaytonaFake();
  console.log(`daytona fake: ${fake.url}/api (toolbox ${fake.url}/toolbox, controls ${fake.url}/_fake)`);
  const stop = () => fake.close().then(() => process.exit(0));
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}
