// Accounts: signup, login, refresh rotation, logout, the caller, erasure and export.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  createProject,
  decodeJwt,
  del,
  expectJson,
  expectProblem,
  expectStatus,
  get,
  login,
  newUser,
  post,
  putFile,
  randomEmail,
  sha256,
  strongPassword,
} from './lib/client.mjs';
import { openApiDocument } from './lib/openapi.mjs';

function assertUser(user, email) {
  assert.equal(typeof user.id, 'string', 'user.id');
  assert.ok(user.id.length > 0);
  assert.equal(user.email, email.toLowerCase(), 'user.email');
  assert.equal(user.role, 'user', 'a new account is a plain user');
  assert.equal(typeof user.tier, 'string', 'user.tier');
  assert.ok(!Number.isNaN(Date.parse(user.created_at)), `user.created_at is a date: ${user.created_at}`);
}

function assertTokens(body) {
  assert.equal(typeof body.access_token, 'string');
  assert.equal(body.access_token.split('.').length, 3, 'the access token is a JWT');
  assert.equal(typeof body.refresh_token, 'string');
  assert.ok(body.refresh_token.length >= 32, 'refresh token has enough entropy');
  assert.notEqual(body.refresh_token, body.access_token);
  assert.equal(body.token_type, 'Bearer');
  assert.equal(body.expires_in, 900);
}

function assertNoSecrets(text, password) {
  assert.ok(!text.includes(password), 'the password never comes back');
  assert.ok(!/password_hash|"hash"|pbkdf2|\$argon|salt/i.test(text), `no password hash material: ${text.slice(0, 300)}`);
}

test('signup creates a user and returns tokens', async () => {
  const email = randomEmail('signup');
  const password = strongPassword();
  const res = await post('/v1/auth/signup', { email, password });
  const body = expectJson(res, 201);
  assertUser(body.user, email);
  assertTokens(body);
  assertNoSecrets(res.text, password);
  const { header, payload } = decodeJwt(body.access_token);
  assert.equal(header.alg, 'HS256', 'own access tokens are HS256');
  assert.ok(payload.exp - payload.iat <= 900, 'access token lives at most 15 minutes');
  assert.ok(payload.sub, 'access token has a subject');
});

test('me returns the caller with tier and limits', async () => {
  const u = await newUser('me');
  const res = await get('/v1/me', { token: u.access });
  const me = expectJson(res, 200);
  assertUser(me, u.email);
  assert.equal(me.id, u.user.id);
  assert.equal(typeof me.limits, 'object');
  assert.ok(me.limits !== null);
  assertNoSecrets(res.text, u.password);
});

test('me without a token is unauthorized', async () => {
  expectProblem(await get('/v1/me'), 401, 'unauthorized');
});

test('login returns working tokens', async () => {
  const u = await newUser('login');
  const res = await login(u.email, u.password);
  const body = expectJson(res, 200);
  assertUser(body.user, u.email);
  assertTokens(body);
  assert.equal(body.user.id, u.user.id);
  assertNoSecrets(res.text, u.password);
  const me = expectJson(await get('/v1/me', { token: body.access_token }), 200);
  assert.equal(me.id, u.user.id);
});

test('login ignores the case of the email', async () => {
  const u = await newUser('case');
  const body = expectJson(await login(u.email.toUpperCase(), u.password), 200);
  assert.equal(body.user.id, u.user.id);
});

test('refresh rotates the pair and kills the old refresh token', async () => {
  const u = await newUser('refresh');
  const body = expectJson(await post('/v1/auth/refresh', { refresh_token: u.refresh }), 200);
  assertTokens(body);
  assert.notEqual(body.refresh_token, u.refresh, 'a new refresh token');
  const me = expectJson(await get('/v1/me', { token: body.access_token }), 200);
  assert.equal(me.id, u.user.id);
  // the next rotation with the new token works
  const again = expectJson(await post('/v1/auth/refresh', { refresh_token: body.refresh_token }), 200);
  assertTokens(again);
});

test('reused refresh token revokes the family', async () => {
  const u = await newUser('reuse');
  const second = expectJson(await post('/v1/auth/refresh', { refresh_token: u.refresh }), 200);
  // the first token was rotated: using it again is theft or a replay (a server may name that case)
  const REFRESH_DEAD = ['invalid_refresh_token', 'refresh_token_reused'];
  expectProblem(await post('/v1/auth/refresh', { refresh_token: u.refresh }), 401, REFRESH_DEAD);
  // ...which revokes the newer token of the same family too
  expectProblem(await post('/v1/auth/refresh', { refresh_token: second.refresh_token }), 401, REFRESH_DEAD);
  // and it stays dead
  expectProblem(await post('/v1/auth/refresh', { refresh_token: u.refresh }), 401, REFRESH_DEAD);
  // another login (another family) is unaffected
  const other = expectJson(await login(u.email, u.password), 200);
  expectJson(await post('/v1/auth/refresh', { refresh_token: other.refresh_token }), 200);
});

test('unknown refresh token is rejected', async () => {
  for (const refresh_token of ['nope', 'x'.repeat(64), 'rt_' + 'a'.repeat(43)]) {
    expectProblem(await post('/v1/auth/refresh', { refresh_token }), 401, 'invalid_refresh_token');
  }
  const empty = await post('/v1/auth/refresh', { refresh_token: '' });
  if (empty.status === 400) expectProblem(empty, 400, 'invalid_body');
  else expectProblem(empty, 401, 'invalid_refresh_token');
});

test('an access token is not a refresh token', async () => {
  const u = await newUser('acc-as-ref');
  expectProblem(await post('/v1/auth/refresh', { refresh_token: u.access }), 401, 'invalid_refresh_token');
  // and the real refresh token still works afterwards
  expectJson(await post('/v1/auth/refresh', { refresh_token: u.refresh }), 200);
});

test('a refresh token is not an access token', async () => {
  const u = await newUser('ref-as-acc');
  expectProblem(await get('/v1/me', { token: u.refresh }), 401, 'invalid_token');
});

test('logout revokes only that refresh token', async () => {
  const u = await newUser('logout');
  const second = expectJson(await login(u.email, u.password), 200);
  expectStatus(await post('/v1/auth/logout', { refresh_token: u.refresh }), 204);
  expectProblem(await post('/v1/auth/refresh', { refresh_token: u.refresh }), 401, 'invalid_refresh_token');
  // the other session goes on
  expectJson(await post('/v1/auth/refresh', { refresh_token: second.refresh_token }), 200);
});

test('logout twice is harmless', async () => {
  const u = await newUser('logout2');
  expectStatus(await post('/v1/auth/logout', { refresh_token: u.refresh }), 204);
  const res = await post('/v1/auth/logout', { refresh_token: u.refresh });
  assert.ok([204, 401].includes(res.status), res.show());
  if (res.status === 401) expectProblem(res, 401, 'invalid_refresh_token');
});

test('deleting me erases the account and frees the email', async () => {
  const u = await newUser('erase');
  const project = await createProject(u.access, { name: 'to be erased' });
  expectStatus(await putFile(u.access, project.id, 'notes.txt', 'private'), 201);
  const res = await del('/v1/me', { token: u.access });
  expectStatus(res, 204);
  assert.equal(res.body.length, 0);
  // the token's user is gone
  expectProblem(await get('/v1/me', { token: u.access }), 401, ['invalid_token', 'unauthorized']);
  expectProblem(await get(`/v1/projects/${project.id}`, { token: u.access }), 401, ['invalid_token', 'unauthorized']);
  // its refresh tokens are dead
  expectProblem(await post('/v1/auth/refresh', { refresh_token: u.refresh }), 401, 'invalid_refresh_token');
  // the email can sign up again, as a new, empty account
  const again = expectJson(await post('/v1/auth/signup', { email: u.email, password: strongPassword() }), 201);
  assert.notEqual(again.user.id, u.user.id);
  const list = expectJson(await get('/v1/projects', { token: again.access_token }), 200);
  assert.deepEqual(list.items, []);
  expectProblem(await get(`/v1/projects/${project.id}`, { token: again.access_token }), 404, 'not_found');
});

test('export returns all of the caller data and nothing of others', async () => {
  const u = await newUser('export');
  const other = await newUser('export-other');
  const otherProject = await createProject(other.access, { name: 'not yours' });
  expectStatus(await putFile(other.access, otherProject.id, 'secret.txt', 'other secret'), 201);

  const project = await createProject(u.access, { name: 'exported', description: 'desc' });
  const content = Buffer.from([0, 1, 2, 250, 251, 255, 10, 13]);
  expectStatus(await putFile(u.access, project.id, 'bin/data.bin', content), 201);
  expectStatus(await putFile(u.access, project.id, 'readme.md', '# hi'), 201);

  const res = await get('/v1/me/export', { token: u.access });
  const body = expectJson(res, 200);
  (await openApiDocument()).answers('get', '/v1/me/export', 200, body);
  assertNoSecrets(res.text, u.password);
  assert.equal(body.user.id, u.user.id);
  assert.equal(body.user.email, u.email);
  assert.ok(Array.isArray(body.projects));
  assert.equal(body.projects.length, 1);
  const p = body.projects[0];
  assert.equal(p.id, project.id);
  assert.equal(p.name, 'exported');
  assert.equal(p.description, 'desc');
  const files = new Map(p.files.map((f) => [f.path, f]));
  assert.deepEqual([...files.keys()].sort(), ['bin/data.bin', 'readme.md']);
  const bin = files.get('bin/data.bin');
  assert.deepEqual(Buffer.from(bin.content_base64, 'base64'), content);
  assert.equal(bin.sha256, sha256(content));
  assert.equal(bin.size, content.length);
  assert.equal(Buffer.from(files.get('readme.md').content_base64, 'base64').toString(), '# hi');
  assert.ok(Array.isArray(body.audit), 'audit is a list');
  assert.ok(!res.text.includes(otherProject.id), 'no trace of another user project');
  assert.ok(!res.text.includes(other.email), 'no trace of another user');
  assert.ok(!res.text.includes(Buffer.from('other secret').toString('base64')), 'no other user file');
});

test('export requires authentication', async () => {
  expectProblem(await get('/v1/me/export'), 401, 'unauthorized');
});
