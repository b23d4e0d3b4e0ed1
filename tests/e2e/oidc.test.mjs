// OIDC bearer tokens from an outside issuer. The issuer is the fake in
// oidc-issuer.mjs, which the runner starts at a fixed address and configures
// the server with (OIDC_ISSUER, OIDC_AUDIENCE, OIDC_JWKS_URL). Skipped when
// env OIDC_ISSUER is not set.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  b64urlJson,
  decodeJwt,
  expectJson,
  expectProblem,
  get,
  newUser,
  nowSecs,
  post,
  randomUUID,
} from './lib/client.mjs';

const ISSUER = process.env.OIDC_ISSUER || '';
const FAKE_URL = (process.env.OIDC_FAKE_URL || ISSUER).replace(/\/+$/, '');
const AUDIENCE = process.env.OIDC_AUDIENCE || 'everjust-e2e';

function needOidc(t) {
  if (!ISSUER) {
    t.skip('OIDC_ISSUER is not set: start tests/e2e/oidc-issuer.mjs and configure the server with it (see tests/e2e/README.md)');
    return false;
  }
  return true;
}

/**
 * Asks the fake issuer for a token; see oidc-issuer.mjs for the spec. Tokens carry an `nbf` in the
 * past unless the claims say otherwise (`nbf: null` removes it), so that each rejection test differs
 * from an accepted token in one property only.
 */
async function sign(spec = {}) {
  const claims = { iss: ISSUER, aud: AUDIENCE, nbf: nowSecs() - 30, ...(spec.claims || {}) };
  const res = await fetch(`${FAKE_URL}/sign`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ ...spec, claims }),
  });
  assert.equal(res.status, 200, `fake issuer /sign: ${await res.clone().text()}`);
  return res.json();
}

async function assertRejected(token, what) {
  const res = await get('/v1/me', { token });
  assert.equal(res.status, 401, `${what} must be rejected: ${res.show()}`);
  expectProblem(res, 401, 'invalid_token');
}

const newSub = () => `fake|${randomUUID()}`;
const newEmail = () => `oidc-${randomUUID().slice(0, 12)}@example.com`;

test('RS256 token of the issuer creates the user on first sight', async (t) => {
  if (!needOidc(t)) return;
  const sub = newSub();
  const email = newEmail();
  const first = await sign({ key: 'rsa', claims: { sub, email } });
  const me = expectJson(await get('/v1/me', { token: first.token }), 200);
  assert.equal(me.email, email);
  assert.equal(me.role, 'user');
  assert.equal(typeof me.id, 'string');
  // second sight, a new token: the same user
  const second = await sign({ key: 'rsa', claims: { sub, email, jti: randomUUID() } });
  const again = expectJson(await get('/v1/me', { token: second.token }), 200);
  assert.equal(again.id, me.id);
  // the user can work with the API
  const project = expectJson(await post('/v1/projects', { name: 'oidc project' }, { token: second.token }), 201);
  const got = expectJson(await get(`/v1/projects/${project.id}`, { token: first.token }), 200);
  assert.equal(got.name, 'oidc project');
});

test('ES256 token of the issuer is accepted', async (t) => {
  if (!needOidc(t)) return;
  const sub = newSub();
  const { token } = await sign({ key: 'ec', claims: { sub, email: newEmail() } });
  const me = expectJson(await get('/v1/me', { token }), 200);
  const again = expectJson(await get('/v1/me', { token: (await sign({ key: 'ec', claims: { sub } })).token }), 200);
  assert.equal(again.id, me.id);
});

test('the same subject signed with either key is the same user', async (t) => {
  if (!needOidc(t)) return;
  const sub = newSub();
  const email = newEmail();
  const a = expectJson(await get('/v1/me', { token: (await sign({ key: 'rsa', claims: { sub, email } })).token }), 200);
  const b = expectJson(await get('/v1/me', { token: (await sign({ key: 'ec', claims: { sub, email } })).token }), 200);
  assert.equal(a.id, b.id);
});

test('OIDC token without nbf is accepted', async (t) => {
  if (!needOidc(t)) return;
  // nbf is optional (RFC 7519 4.1.5) and Auth0, Google and others do not send it
  const sub = newSub();
  const { token } = await sign({ claims: { sub, email: newEmail(), nbf: null } });
  const me = expectJson(await get('/v1/me', { token }), 200);
  const again = expectJson(await get('/v1/me', { token: (await sign({ claims: { sub, nbf: null } })).token }), 200);
  assert.equal(again.id, me.id);
});

test('two subjects are two users', async (t) => {
  if (!needOidc(t)) return;
  const a = expectJson(await get('/v1/me', { token: (await sign({ claims: { sub: newSub(), email: newEmail() } })).token }), 200);
  const b = expectJson(await get('/v1/me', { token: (await sign({ claims: { sub: newSub(), email: newEmail() } })).token }), 200);
  assert.notEqual(a.id, b.id);
});

test('OIDC token with unknown kid is rejected', async (t) => {
  if (!needOidc(t)) return;
  await assertRejected((await sign({ key: 'rsa', kid: 'no-such-kid' })).token, 'unknown kid');
  await assertRejected((await sign({ key: 'other-rsa', kid: 'other-1' })).token, 'unknown kid of another key');
});

test('OIDC token signed by the key of another issuer is rejected', async (t) => {
  if (!needOidc(t)) return;
  // the foreign keys claim the published kids rsa-1 / ec-1
  await assertRejected((await sign({ key: 'other-rsa' })).token, 'foreign RSA key with a known kid');
  await assertRejected((await sign({ key: 'other-ec' })).token, 'foreign EC key with a known kid');
  await assertRejected((await sign({ key: 'other-rsa', kid: null })).token, 'foreign RSA key without kid');
});

test('RS256 to HS256 switch with the public key as HMAC secret is rejected', async (t) => {
  if (!needOidc(t)) return;
  for (const hmac_secret of ['rsa-public-pem', 'rsa-public-pkcs1-pem', 'rsa-jwk-json']) {
    await assertRejected((await sign({ key: 'rsa', alg: 'HS256', hmac_secret })).token, `HS256 keyed with ${hmac_secret}`);
  }
  await assertRejected((await sign({ key: 'ec', alg: 'HS256', hmac_secret: 'ec-public-pem' })).token, 'HS256 keyed with the EC public key');
});

test('OIDC token with alg none is rejected', async (t) => {
  if (!needOidc(t)) return;
  await assertRejected((await sign({ key: 'rsa', alg: 'none' })).token, 'alg none with the issuer claims');
});

test('OIDC token with the algorithm of the other key type is rejected', async (t) => {
  if (!needOidc(t)) return;
  // a correct RS256 signature, but the header claims ES256 for the RSA kid
  const { token } = await sign({ key: 'rsa' });
  const [, p, s] = token.split('.');
  const { header } = decodeJwt(token);
  await assertRejected(`${b64urlJson({ ...header, alg: 'ES256' })}.${p}.${s}`, 'alg header changed after signing');
  await assertRejected(`${b64urlJson({ ...header, alg: 'RS512' })}.${p}.${s}`, 'alg RS512');
});

test('expired OIDC token is rejected', async (t) => {
  if (!needOidc(t)) return;
  const now = nowSecs();
  await assertRejected((await sign({ claims: { iat: now - 7200, exp: now - 3600 } })).token, 'expired');
  await assertRejected((await sign({ claims: { exp: null } })).token, 'no exp');
  await assertRejected((await sign({ claims: { nbf: now + 3600 } })).token, 'not yet valid');
});

test('OIDC token with wrong audience is rejected', async (t) => {
  if (!needOidc(t)) return;
  await assertRejected((await sign({ claims: { aud: 'another-app' } })).token, 'wrong aud');
  await assertRejected((await sign({ claims: { aud: ['another-app'] } })).token, 'wrong aud array');
  await assertRejected((await sign({ claims: { aud: null } })).token, 'no aud');
});

test('OIDC token with audience list containing ours is accepted', async (t) => {
  if (!needOidc(t)) return;
  const { token } = await sign({ claims: { aud: ['another-app', AUDIENCE], sub: newSub(), email: newEmail() } });
  expectJson(await get('/v1/me', { token }), 200);
});

test('OIDC token with wrong issuer is rejected', async (t) => {
  if (!needOidc(t)) return;
  await assertRejected((await sign({ claims: { iss: 'https://evil.example.com/' } })).token, 'wrong iss');
  await assertRejected((await sign({ claims: { iss: ISSUER.replace(/\/$/, '') + '/x/' } })).token, 'iss with a suffix');
  await assertRejected((await sign({ claims: { iss: null } })).token, 'no iss');
});

test('OIDC token without subject is rejected', async (t) => {
  if (!needOidc(t)) return;
  await assertRejected((await sign({ claims: { sub: null } })).token, 'no sub');
  await assertRejected((await sign({ claims: { sub: '' } })).token, 'empty sub');
});

test('OIDC token with an unverified email does not take over a password account', async (t) => {
  if (!needOidc(t)) return;
  const victim = await newUser('oidc-victim');
  const { token } = await sign({ claims: { sub: newSub(), email: victim.email, email_verified: false } });
  const res = await get('/v1/me', { token });
  if (res.status === 200) {
    assert.notEqual(res.json.id, victim.user.id, 'an unverified email must not log in as the password user');
  } else {
    expectProblem(res, res.status);
    assert.ok([401, 403, 409].includes(res.status), res.show());
  }
  // the victim's account is untouched
  const me = expectJson(await get('/v1/me', { token: victim.access }), 200);
  assert.equal(me.email, victim.email);
});
