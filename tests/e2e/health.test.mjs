// Liveness, readiness, the OpenAPI document, headers every response carries,
// unknown routes and wrong methods.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { del, expectJson, expectProblem, get, newUser, post, request } from './lib/client.mjs';

const SECURITY_HEADERS = {
  'x-content-type-options': /^nosniff$/i,
  'strict-transport-security': /max-age=\d+/i,
  'referrer-policy': /./,
  'content-security-policy': /./,
  'x-frame-options': /^(deny|sameorigin)$/i,
};

function assertSecurityHeaders(res) {
  for (const [name, pattern] of Object.entries(SECURITY_HEADERS)) {
    assert.match(String(res.headers[name] ?? ''), pattern, `${name} on ${res.describe()}`);
  }
  assert.ok(res.headers['x-request-id'], `x-request-id on ${res.describe()}`);
}

test('health answers ok without touching dependencies', async () => {
  const body = expectJson(await get('/health'), 200);
  assert.equal(body.status, 'ok');
});

test('ready reports postgres and kv ok', async () => {
  const body = expectJson(await get('/ready'), 200);
  assert.equal(body.status, 'ready');
  assert.equal(body.checks?.postgres, 'ok');
  assert.equal(body.checks?.kv, 'ok');
});

// Every route of the contract, as the OpenAPI document must list it.
const ROUTES = [
  ['get', '/health'],
  ['get', '/ready'],
  ['get', '/v1/openapi.json'],
  ['post', '/v1/auth/signup'],
  ['post', '/v1/auth/login'],
  ['post', '/v1/auth/refresh'],
  ['post', '/v1/auth/logout'],
  ['get', '/v1/auth/oidc'],
  ['post', '/v1/auth/oidc/callback'],
  ['get', '/v1/me'],
  ['delete', '/v1/me'],
  ['get', '/v1/me/export'],
  ['get', '/v1/templates'],
  ['post', '/v1/projects'],
  ['get', '/v1/projects'],
  ['get', '/v1/projects/{id}'],
  ['patch', '/v1/projects/{id}'],
  ['delete', '/v1/projects/{id}'],
  ['get', '/v1/projects/{id}/files'],
  ['get', '/v1/projects/{id}/files/{path}'],
  ['put', '/v1/projects/{id}/files/{path}'],
  ['delete', '/v1/projects/{id}/files/{path}'],
];

test('openapi document is OpenAPI 3.1 and lists every route', async () => {
  const doc = expectJson(await get('/v1/openapi.json'), 200);
  assert.match(String(doc.openapi), /^3\.1(\.\d+)?$/, 'openapi version');
  assert.equal(typeof doc.info?.title, 'string', 'info.title');
  assert.equal(typeof doc.info?.version, 'string', 'info.version');
  assert.equal(typeof doc.paths, 'object', 'paths');
  // Normalize parameter names so `{*path}` / `{path}` / `{file_path}` all match `{}`.
  const norm = (p) => p.replace(/\{[^}]*\}/g, '{}');
  const paths = new Map(Object.entries(doc.paths).map(([p, ops]) => [norm(p), ops]));
  const missing = [];
  for (const [method, path] of ROUTES) {
    const ops = paths.get(norm(path));
    if (!ops || typeof ops[method] !== 'object') missing.push(`${method.toUpperCase()} ${path}`);
  }
  assert.deepEqual(missing, [], `routes missing from the OpenAPI document`);
  for (const [p] of Object.entries(doc.paths)) {
    assert.ok(!p.includes('*'), `OpenAPI path ${p} uses router syntax instead of {param}`);
  }
});

test('every response carries security headers and a request id', async () => {
  const { access } = await newUser('headers');
  const responses = [
    await get('/health'),
    await get('/v1/openapi.json'),
    await get('/v1/me', { token: access }),
    await get('/v1/me'), // 401
    await get('/v1/no-such-route'), // 404
    await post('/v1/auth/login', {}), // 400
  ];
  for (const res of responses) assertSecurityHeaders(res);
  const ids = responses.map((r) => r.headers['x-request-id']);
  assert.equal(new Set(ids).size, ids.length, 'request ids are unique');
});

test('a hostile x-request-id is not reflected', async () => {
  const hostile = 'abc<script>alert(1)</script>';
  const res = await request('GET', '/v1/no-such-route', { headers: { 'x-request-id': hostile } });
  const p = expectProblem(res, 404, 'not_found');
  assert.notEqual(res.headers['x-request-id'], hostile);
  assert.notEqual(p.request_id, hostile);
  assert.ok(!res.text.includes('<script>'), 'body does not echo the header');
});

test('unknown route is a problem 404', async () => {
  expectProblem(await get('/v1/does-not-exist'), 404, 'not_found');
  expectProblem(await get('/nothing/here'), 404, 'not_found');
});

test('wrong method is 405 with an Allow header', async () => {
  const cases = [
    ['POST', '/health', 'GET'],
    ['DELETE', '/v1/templates', 'GET'],
    ['PUT', '/v1/projects', 'POST'],
    ['GET', '/v1/auth/login', 'POST'],
    ['POST', '/v1/me', 'GET'],
  ];
  for (const [method, path, allowed] of cases) {
    const res = await request(method, path, method === 'GET' || method === 'DELETE' ? {} : { json: {} });
    expectProblem(res, 405, 'method_not_allowed');
    const allow = String(res.headers.allow || '')
      .split(',')
      .map((s) => s.trim().toUpperCase());
    assert.ok(allow.includes(allowed), `Allow of ${method} ${path} includes ${allowed}: ${res.headers.allow}`);
    assert.ok(!allow.includes(method), `Allow of ${method} ${path} excludes ${method}`);
  }
});

test('health answers HEAD like GET without a body', async () => {
  const res = await request('HEAD', '/health');
  assert.equal(res.status, 200, res.show());
  assert.equal(res.body.length, 0);
});

test('templates are listed without authentication', async () => {
  const body = expectJson(await get('/v1/templates'), 200);
  assert.ok(Array.isArray(body.items));
});

test('delete on the collection of projects is not allowed', async () => {
  expectProblem(await del('/v1/projects'), 405, 'method_not_allowed');
});
