// Requests that race: the answer of each must be one a client can act on
// (never a 5xx), and the state afterwards must be consistent.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  createProject,
  expectJson,
  expectProblem,
  fileUrl,
  get,
  listFiles,
  login,
  newUser,
  post,
  putFile,
  randomEmail,
  strongPassword,
} from './lib/client.mjs';

const N = 5;

test('concurrent signups with one email create one account', async () => {
  const email = randomEmail('race');
  const passwords = Array.from({ length: N }, () => strongPassword());
  const results = await Promise.all(passwords.map((password) => post('/v1/auth/signup', { email, password })));
  const created = results.filter((r) => r.status === 201);
  assert.equal(created.length, 1, `exactly one signup wins: ${results.map((r) => r.status)}`);
  for (const r of results.filter((x) => x.status !== 201)) expectProblem(r, 409, 'email_taken');
  // the winner's password is the account's password
  const winner = passwords[results.indexOf(created[0])];
  const body = expectJson(await login(email, winner), 200);
  assert.equal(body.user.id, created[0].json.user.id);
});

test('concurrent refreshes of one token issue at most one new pair', async () => {
  const u = await newUser('race-refresh');
  const results = await Promise.all(
    Array.from({ length: N }, () => post('/v1/auth/refresh', { refresh_token: u.refresh })),
  );
  const ok = results.filter((r) => r.status === 200);
  assert.ok(ok.length <= 1, `a refresh token is spent once: ${results.map((r) => r.status)}`);
  for (const r of results.filter((x) => x.status !== 200)) {
    expectProblem(r, 401, ['invalid_refresh_token', 'refresh_token_reused']);
  }
});

test('concurrent writes to one path leave one file', async () => {
  const u = await newUser('race-put');
  const project = await createProject(u.access);
  const contents = Array.from({ length: N }, (_, i) => `version ${i}`);
  const results = await Promise.all(contents.map((c) => putFile(u.access, project.id, 'same.txt', c)));
  for (const r of results) assert.ok([200, 201].includes(r.status), `no failure: ${r.show()}`);
  assert.equal(results.filter((r) => r.status === 201).length, 1, `exactly one creates: ${results.map((r) => r.status)}`);
  const files = await listFiles(u.access, project.id);
  assert.deepEqual([...files.keys()], ['same.txt']);
  const got = await get(fileUrl(project.id, 'same.txt'), { token: u.access });
  assert.ok(contents.includes(got.text), `content is one of the writes: ${got.text}`);
  assert.equal(files.get('same.txt').size, Buffer.byteLength(got.text));
});

test('concurrent writes to different paths all land', async () => {
  const u = await newUser('race-many');
  const project = await createProject(u.access);
  const paths = Array.from({ length: N * 2 }, (_, i) => `dir/file-${i}.txt`);
  const results = await Promise.all(paths.map((p) => putFile(u.access, project.id, p, p)));
  for (const r of results) assert.equal(r.status, 201, r.show());
  const files = await listFiles(u.access, project.id);
  assert.deepEqual([...files.keys()].sort(), [...paths].sort());
  const me = expectJson(await get(`/v1/projects/${project.id}`, { token: u.access }), 200);
  if ('total_bytes' in me) {
    const total = paths.reduce((n, p) => n + Buffer.byteLength(p), 0);
    assert.equal(me.total_bytes, total, 'the project total counts every file once');
  }
});
