// Forged, tampered, expired and garbage bearer tokens are refused.
// Tests that need the server's JWT_SECRET (to forge an otherwise valid token
// with one claim wrong) run only when the runner passes it in env JWT_SECRET.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  b64url,
  b64urlJson,
  decodeJwt,
  expectJson,
  expectProblem,
  get,
  newUser,
  nowSecs,
  post,
  request,
  signHs256,
  unsignedJwt,
} from './lib/client.mjs';

const JWT_SECRET = process.env.JWT_SECRET || '';

async function assertRejected(token, what) {
  const res = await get('/v1/me', { token });
  assert.equal(res.status, 401, `${what} must be rejected: ${res.show()}`);
  expectProblem(res, 401, 'invalid_token');
  // and on a route that would change data
  const res2 = await post('/v1/projects', { name: `forged ${what}` }, { token });
  expectProblem(res2, 401, 'invalid_token');
}

/** Asserts that the victim has no project created by a forged request. */
async function assertNoProjects(victim) {
  const list = expectJson(await get('/v1/projects', { token: victim.access }), 200);
  assert.deepEqual(list.items, [], 'a rejected token created nothing');
}

test('alg none is rejected', async () => {
  const u = await newUser('algnone');
  const { header, payload, signature } = decodeJwt(u.access);
  for (const alg of ['none', 'None', 'NONE', 'nOnE']) {
    await assertRejected(unsignedJwt({ ...header, alg }, payload), `alg ${alg} without signature`);
    await assertRejected(unsignedJwt({ ...header, alg }, payload, signature), `alg ${alg} with the old signature`);
  }
  await assertRejected(`${b64urlJson({ alg: 'none' })}.${b64urlJson(payload)}`, 'two-part token');
  await assertNoProjects(u);
});

test('HS256 signed with a guessable secret is rejected', async () => {
  const u = await newUser('guess');
  const { header, payload } = decodeJwt(u.access);
  for (const secret of ['secret', 'changeme', 'everjust', 'jwt_secret', 'your-256-bit-secret']) {
    await assertRejected(signHs256(header, payload, secret), `HS256 with secret "${secret}"`);
  }
  await assertNoProjects(u);
});

test('HS256 signed with an empty secret is rejected', async () => {
  const u = await newUser('empty');
  const { header, payload } = decodeJwt(u.access);
  await assertRejected(signHs256(header, payload, ''), 'HS256 with an empty secret');
  await assertRejected(signHs256(header, payload, Buffer.alloc(32)), 'HS256 with a zero key');
  await assertNoProjects(u);
});

test('tampered payload with role admin is rejected', async () => {
  const u = await newUser('tamper');
  const [h, , s] = u.access.split('.');
  const { payload } = decodeJwt(u.access);
  const variants = [
    { ...payload, role: 'admin' },
    { ...payload, roles: ['admin'], admin: true },
    { ...payload, tier: 'enterprise' },
    { ...payload, exp: payload.exp + 86400 * 365 },
  ];
  for (const p of variants) {
    await assertRejected(`${h}.${b64urlJson(p)}.${s}`, `tampered payload ${JSON.stringify(p).slice(0, 60)}`);
  }
  // a flipped signature byte
  const sig = Buffer.from(s, 'base64url');
  sig[0] ^= 1;
  await assertRejected(`${h}.${u.access.split('.')[1]}.${b64url(sig)}`, 'flipped signature');
  // the genuine token still works and is still a plain user
  const me = expectJson(await get('/v1/me', { token: u.access }), 200);
  assert.equal(me.role, 'user');
});

test('token of one user with the subject of another is rejected', async () => {
  const a = await newUser('sub-a');
  const b = await newUser('sub-b');
  const [h, , s] = a.access.split('.');
  const pa = decodeJwt(a.access).payload;
  const pb = decodeJwt(b.access).payload;
  await assertRejected(`${h}.${b64urlJson({ ...pa, sub: pb.sub })}.${s}`, 'swapped subject');
});

test('garbage bearer strings are rejected', async () => {
  const garbage = [
    'garbage',
    'a.b.c',
    'a.b',
    '...',
    'eyJhbGciOiJIUzI1NiJ9',
    'eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0',
    'eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.',
    '!!!.@@@.###',
    `${b64url('not json')}.${b64url('not json')}.${b64url('sig')}`,
    `${b64urlJson([1, 2])}.${b64urlJson('x')}.sig`,
    'x'.repeat(8000),
  ];
  for (const token of garbage) {
    expectProblem(await get('/v1/me', { token }), 401, 'invalid_token');
  }
  // a header that is not even ASCII may be refused as missing
  const res = await request('GET', '/v1/me', {
    headers: { authorization: Buffer.from('Bearer Ω≈ç√', 'utf8').toString('latin1') },
  });
  expectProblem(res, 401, ['invalid_token', 'unauthorized']);
});

test('missing or non-bearer authorization is unauthorized', async () => {
  const u = await newUser('nobearer');
  expectProblem(await get('/v1/me'), 401, 'unauthorized');
  for (const authorization of [`Basic ${Buffer.from('a:b').toString('base64')}`, u.access, `Token ${u.access}`, 'Bearer', 'Bearer ']) {
    const res = await request('GET', '/v1/me', { headers: { authorization } });
    expectProblem(res, 401, ['unauthorized', 'invalid_token']);
  }
});

test('bearer scheme is case-insensitive', async () => {
  const u = await newUser('scheme');
  const res = await request('GET', '/v1/me', { headers: { authorization: `bearer ${u.access}` } });
  expectJson(res, 200);
});

// ---- forged with the real secret: only the named claim is wrong

function needSecret(t) {
  if (JWT_SECRET.length < 32) {
    t.skip('needs the server JWT_SECRET in env JWT_SECRET to forge tokens with one bad claim');
    return false;
  }
  return true;
}

test('a token forged with the real secret is accepted (control for the next tests)', async (t) => {
  if (!needSecret(t)) return;
  const u = await newUser('control');
  const { header, payload } = decodeJwt(u.access);
  const token = signHs256(header, { ...payload, iat: nowSecs(), exp: nowSecs() + 300 }, JWT_SECRET);
  const me = expectJson(await get('/v1/me', { token }), 200);
  assert.equal(me.id, u.user.id);
});

test('expired token is rejected', async (t) => {
  if (!needSecret(t)) return;
  const u = await newUser('expired');
  const { header, payload } = decodeJwt(u.access);
  const token = signHs256(header, { ...payload, iat: nowSecs() - 7200, exp: nowSecs() - 3600 }, JWT_SECRET);
  await assertRejected(token, 'expired');
  await assertNoProjects(u);
});

test('token without exp is rejected', async (t) => {
  if (!needSecret(t)) return;
  const u = await newUser('noexp');
  const { header, payload } = decodeJwt(u.access);
  const { exp, ...rest } = payload;
  void exp;
  await assertRejected(signHs256(header, rest, JWT_SECRET), 'no exp');
});

test('wrong issuer is rejected', async (t) => {
  if (!needSecret(t)) return;
  const u = await newUser('iss');
  const { header, payload } = decodeJwt(u.access);
  for (const iss of ['https://evil.example.com/', '', `${payload.iss ?? 'everjust'}x`]) {
    await assertRejected(signHs256(header, { ...payload, iss }, JWT_SECRET), `iss ${JSON.stringify(iss)}`);
  }
  if (payload.iss !== undefined) {
    const { iss, ...rest } = payload;
    void iss;
    await assertRejected(signHs256(header, rest, JWT_SECRET), 'missing iss');
  }
});

test('wrong audience is rejected', async (t) => {
  if (!needSecret(t)) return;
  const u = await newUser('aud');
  const { header, payload } = decodeJwt(u.access);
  for (const aud of ['someone-else', ['someone-else'], '']) {
    await assertRejected(signHs256(header, { ...payload, aud }, JWT_SECRET), `aud ${JSON.stringify(aud)}`);
  }
  if (payload.aud !== undefined) {
    const { aud, ...rest } = payload;
    void aud;
    await assertRejected(signHs256(header, rest, JWT_SECRET), 'missing aud');
  }
});

test('token for a user that does not exist is rejected', async (t) => {
  if (!needSecret(t)) return;
  const u = await newUser('ghost');
  const { header, payload } = decodeJwt(u.access);
  const token = signHs256(header, { ...payload, sub: 'usr_00000000000000000000000000' }, JWT_SECRET);
  const res = await get('/v1/me', { token });
  expectProblem(res, 401, ['invalid_token', 'unauthorized']);
});
