// HTTP client helpers for the end-to-end suite. Raw node:http requests, so a
// path is sent exactly as written (fetch would normalize `..`, `%2e%2e`, ...).
// The suite only knows BASE_URL: it runs the same against any host.

import assert from 'node:assert/strict';
import { createHash, createHmac, randomBytes, randomUUID } from 'node:crypto';
import http from 'node:http';
import https from 'node:https';

export const BASE_URL = (process.env.BASE_URL || 'http://127.0.0.1:8787').replace(/\/+$/, '');
const base = new URL(BASE_URL);
const transport = base.protocol === 'https:' ? https : http;
const agent = new transport.Agent({ keepAlive: true, maxSockets: 6 });
const prefix = base.pathname.replace(/\/+$/, '');
const TIMEOUT_MS = Number(process.env.E2E_TIMEOUT_MS || 60_000);

// The server limits request rates (per IP for signup/login/refresh, per user otherwise). The suite
// makes many users from one IP, so a 429 `rate_limited` is waited out (Retry-After) and retried, as a
// real client would, within a total budget per request. Other 429s (login lockout) are answers.
const RATE_LIMIT_BUDGET_MS = Number(process.env.E2E_RATE_LIMIT_WAIT_S ?? 150) * 1000;
const rateLimitStats = { hits: 0, waitedMs: 0 };
// `wrangler dev` answers a request it could not pass to the Worker (its proxy's connection to the
// runtime failed, a keep-alive race; the Worker never saw it) with this 503 for any method but GET and
// HEAD, which it sends again itself. Production has no such proxy: the suite sends again too, and
// says so. The Worker's own 503s are problem+json and are never sent again.
const PROXY_RESTART = 'Your worker restarted mid-request.';
const PROXY_RETRIES = 3;
let proxyRetries = 0;
/** Whether an answer (status, body text) is wrangler dev's proxy losing the request, and it is sent
 * again (the `attempt`-th time): then says so. */
export function proxyLost(status, text, attempt, what) {
  if (status !== 503 || !text.startsWith(PROXY_RESTART) || attempt > PROXY_RETRIES) return false;
  proxyRetries++;
  process.stderr.write(`e2e: ${what} -> 503 from wrangler dev's proxy; sending it again\n`);
  return true;
}
process.on('exit', () => {
  if (proxyRetries > 0) process.stderr.write(`e2e: sent ${proxyRetries} request(s) again after wrangler dev's proxy lost them\n`);
  if (rateLimitStats.hits > 0) {
    process.stderr.write(
      `e2e: rate limited ${rateLimitStats.hits} times, waited ${Math.round(rateLimitStats.waitedMs / 1000)} s in total` +
        ' (raise the server limits for test runs to go faster)\n',
    );
  }
});

/**
 * Sends one request. `path` is sent verbatim (it must start with `/`).
 * options: headers, body (Buffer|string), json (object: serialized, content type set), token (bearer),
 * noRetry (answer a 429 rate_limited instead of waiting it out).
 * Resolves { status, headers, body: Buffer, text, json } and never rejects on an HTTP status.
 */
export async function request(method, path, options = {}) {
  let waited = 0;
  let lost = 0;
  for (;;) {
    const res = await send(method, path, options);
    if (res.status === 503 && proxyLost(res.status, res.text, ++lost, `${method} ${path}`)) continue;
    if (options.noRetry || res.status !== 429 || !isRateLimited(res)) return res;
    const secs = Number(res.headers['retry-after']);
    const ms = (Number.isFinite(secs) && secs > 0 ? secs : 1) * 1000 + Math.floor(Math.random() * 250);
    if (waited + ms > RATE_LIMIT_BUDGET_MS) return res;
    rateLimitStats.hits++;
    rateLimitStats.waitedMs += ms;
    waited += ms;
    await new Promise((r) => setTimeout(r, ms));
  }
}

function isRateLimited(res) {
  try {
    return JSON.parse(res.body.toString('utf8')).code === 'rate_limited';
  } catch {
    return false;
  }
}

function send(method, path, options) {
  const headers = { ...(options.headers || {}) };
  let body = options.body;
  if (options.json !== undefined) {
    body = JSON.stringify(options.json);
    if (!Object.keys(headers).some((k) => k.toLowerCase() === 'content-type')) {
      headers['content-type'] = 'application/json';
    }
  }
  if (options.token) headers.authorization = `Bearer ${options.token}`;
  if (typeof body === 'string') body = Buffer.from(body, 'utf8');
  if (body !== undefined && body !== null) headers['content-length'] = String(body.length);
  else if (['POST', 'PUT', 'PATCH'].includes(method)) headers['content-length'] = '0';

  return new Promise((resolve, reject) => {
    const req = transport.request(
      {
        protocol: base.protocol,
        hostname: base.hostname,
        port: base.port || (base.protocol === 'https:' ? 443 : 80),
        method,
        path: prefix + path,
        headers,
        agent,
      },
      (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('error', reject);
        res.on('end', () => resolve(new Res(method, path, res.statusCode, res.headers, Buffer.concat(chunks))));
      },
    );
    req.setTimeout(TIMEOUT_MS, () => req.destroy(new Error(`${method} ${path}: no answer in ${TIMEOUT_MS} ms`)));
    req.on('error', reject);
    if (body) req.end(body);
    else req.end();
  });
}

export class Res {
  constructor(method, path, status, headers, body) {
    this.method = method;
    this.path = path;
    this.status = status;
    this.headers = headers;
    this.body = body;
  }
  get text() {
    return this.body.toString('utf8');
  }
  get json() {
    try {
      return JSON.parse(this.text);
    } catch {
      assert.fail(`${this.describe()}: body is not JSON: ${this.text.slice(0, 300)}`);
    }
  }
  describe() {
    return `${this.method} ${this.path.length > 120 ? this.path.slice(0, 120) + '...' : this.path} -> ${this.status}`;
  }
  show() {
    return `${this.describe()} ${this.text.slice(0, 500)}`;
  }
}

export const get = (path, o) => request('GET', path, o);
export const post = (path, json, o = {}) => request('POST', path, { ...o, json });
export const patch = (path, json, o = {}) => request('PATCH', path, { ...o, json });
export const del = (path, o) => request('DELETE', path, o);
export const put = (path, body, o = {}) => request('PUT', path, { ...o, body });

/** Asserts an exact status, showing the body when it differs. */
export function expectStatus(res, status) {
  assert.equal(res.status, status, `expected ${status}: ${res.show()}`);
  return res;
}

/** Asserts a JSON success response and returns its parsed body. */
export function expectJson(res, status) {
  expectStatus(res, status);
  assert.match(String(res.headers['content-type'] || ''), /^application\/json/i, `content type of ${res.describe()}`);
  return res.json;
}

/**
 * Asserts an RFC 9457 problem: content type, status, code, a non-empty detail,
 * request_id equal to the x-request-id header. Returns the problem object.
 */
export function expectProblem(res, status, code) {
  expectStatus(res, status);
  assertProblemShape(res);
  const p = res.json;
  if (code !== undefined) {
    const codes = Array.isArray(code) ? code : [code];
    assert.ok(codes.includes(p.code), `expected code ${codes.join(' or ')}: ${res.show()}`);
  }
  return p;
}

/** The problem+json shape alone, for any status. */
export function assertProblemShape(res) {
  assert.match(
    String(res.headers['content-type'] || ''),
    /^application\/problem\+json/i,
    `problem content type: ${res.show()}`,
  );
  const p = res.json;
  assert.equal(p.status, res.status, `problem.status: ${res.show()}`);
  assert.equal(typeof p.code, 'string', `problem.code: ${res.show()}`);
  assert.match(p.code, /^[a-z][a-z0-9_]*$/, `problem.code is a stable snake_case code: ${res.show()}`);
  assert.equal(typeof p.detail, 'string', `problem.detail: ${res.show()}`);
  assert.ok(p.detail.length > 0, `problem.detail not empty: ${res.show()}`);
  assert.equal(typeof p.title, 'string', `problem.title: ${res.show()}`);
  assert.equal(typeof p.type, 'string', `problem.type: ${res.show()}`);
  assert.equal(typeof p.request_id, 'string', `problem.request_id: ${res.show()}`);
  assert.ok(p.request_id.length > 0, `problem.request_id not empty: ${res.show()}`);
  assert.equal(p.request_id, res.headers['x-request-id'], `problem.request_id equals x-request-id: ${res.show()}`);
  return p;
}

// ---------------------------------------------------------------- users

export function randomEmail(tag = 'user') {
  return `e2e-${tag}-${Date.now().toString(36)}-${randomBytes(5).toString('hex')}@example.com`;
}

export function strongPassword() {
  return `Tr0ub4dor-${randomBytes(8).toString('base64url')}`;
}

/** Signs up a fresh user; returns { email, password, user, access, refresh, body }. */
export async function newUser(tag = 'user') {
  const email = randomEmail(tag);
  const password = strongPassword();
  const res = await post('/v1/auth/signup', { email, password });
  const body = expectJson(res, 201);
  return { email, password, user: body.user, access: body.access_token, refresh: body.refresh_token, body };
}

export async function login(email, password) {
  return post('/v1/auth/login', { email, password });
}

/** The admin the suite may use: an address in the server's ADMIN_EMAILS (tests that need one skip without). */
export const ADMIN_EMAIL = process.env.E2E_ADMIN_EMAIL || '';
const ADMIN_PASSWORD = process.env.E2E_ADMIN_PASSWORD || 'Sandbox-admin-e2e-Passw0rd';

/** An access token of ADMIN_EMAIL: signed up the first time, logged in after (any test file may be first). */
export async function adminToken() {
  let r = await post('/v1/auth/signup', { email: ADMIN_EMAIL, password: ADMIN_PASSWORD });
  if (r.status === 409) r = await login(ADMIN_EMAIL, ADMIN_PASSWORD);
  const body = expectJson(r, r.status === 201 ? 201 : 200);
  assert.equal(body.user.role, 'admin', `${ADMIN_EMAIL} is not an admin: is it in ADMIN_EMAILS?`);
  return body.access_token;
}

// ---------------------------------------------------------------- projects and files

export async function createProject(token, fields = {}) {
  const res = await post('/v1/projects', { name: `e2e project ${randomBytes(3).toString('hex')}`, ...fields }, { token });
  return expectJson(res, 201);
}

/** Percent-encodes each segment of a project file path. */
export function encodePath(path) {
  return path
    .split('/')
    .map((s) => encodeURIComponent(s))
    .join('/');
}

export function fileUrl(projectId, path, { raw = false } = {}) {
  return `/v1/projects/${projectId}/files/${raw ? path : encodePath(path)}`;
}

export async function putFile(token, projectId, path, content, headers = {}) {
  return put(fileUrl(projectId, path), Buffer.isBuffer(content) ? content : Buffer.from(content, 'utf8'), {
    token,
    headers: { 'content-type': 'application/octet-stream', ...headers },
  });
}

/** All the project's files (follows next_cursor), as a map path -> entry. */
export async function listFiles(token, projectId) {
  const out = new Map();
  let cursor = null;
  for (let i = 0; i < 100; i++) {
    const q = cursor ? `?cursor=${encodeURIComponent(cursor)}` : '';
    const body = expectJson(await get(`/v1/projects/${projectId}/files${q}`, { token }), 200);
    assert.ok(Array.isArray(body.items), 'files list has items');
    for (const item of body.items) {
      assert.ok(!out.has(item.path), `file ${item.path} listed twice`);
      out.set(item.path, item);
    }
    cursor = body.next_cursor;
    if (!cursor) return out;
  }
  assert.fail('file listing did not end after 100 pages');
}

/** All the caller's projects (follows next_cursor). */
export async function listProjects(token) {
  const out = [];
  let cursor = null;
  for (let i = 0; i < 100; i++) {
    const q = cursor ? `?cursor=${encodeURIComponent(cursor)}` : '';
    const body = expectJson(await get(`/v1/projects${q}`, { token }), 200);
    out.push(...body.items);
    cursor = body.next_cursor;
    if (!cursor) return out;
  }
  assert.fail('project listing did not end after 100 pages');
}

export function sha256(buf) {
  return createHash('sha256').update(buf).digest('hex');
}

/** A well-formed id that names nothing. */
export function missingId(prefix = 'prj') {
  const alphabet = '0123456789abcdefghjkmnpqrstvwxyz';
  let s = '';
  for (const b of randomBytes(26)) s += alphabet[b % 32];
  return `${prefix}_${s}`;
}

// ---------------------------------------------------------------- JWT crafting

export const b64url = (buf) => Buffer.from(buf).toString('base64url');
export const b64urlJson = (obj) => b64url(JSON.stringify(obj));

export function decodeJwt(token) {
  const [h, p, s] = token.split('.');
  return {
    header: JSON.parse(Buffer.from(h, 'base64url').toString('utf8')),
    payload: JSON.parse(Buffer.from(p, 'base64url').toString('utf8')),
    signature: s,
  };
}

export function signHs256(header, payload, secret) {
  const input = `${b64urlJson(header)}.${b64urlJson(payload)}`;
  const sig = createHmac('sha256', secret).update(input).digest();
  return `${input}.${b64url(sig)}`;
}

export function unsignedJwt(header, payload, signature = '') {
  return `${b64urlJson(header)}.${b64urlJson(payload)}.${signature}`;
}

export const nowSecs = () => Math.floor(Date.now() / 1000);

export { randomBytes, randomUUID };
