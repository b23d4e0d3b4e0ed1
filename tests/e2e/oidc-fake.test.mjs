// The fake OIDC issuer itself: its tokens verify against its own JWKS with
// node:crypto, so a rejection in oidc.test.mjs is the server's doing, not the fake's.
// Needs no server.

import assert from 'node:assert/strict';
import { createHmac, createPublicKey, verify } from 'node:crypto';
import { after, before, test } from 'node:test';

import { startIssuer } from './oidc-issuer.mjs';

let fake;
before(async () => {
  fake = await startIssuer({ port: 0, audience: 'aud-x' });
});
after(async () => {
  await fake.close();
});

async function jwks() {
  const res = await fetch(fake.jwksUrl);
  assert.equal(res.status, 200);
  return (await res.json()).keys;
}

function check(token, keys) {
  const [h, p, s] = token.split('.');
  const header = JSON.parse(Buffer.from(h, 'base64url'));
  const jwk = keys.find((k) => k.kid === header.kid);
  if (!jwk) return false;
  const key = createPublicKey({ key: jwk, format: 'jwk' });
  const data = Buffer.from(`${h}.${p}`);
  const sig = Buffer.from(s, 'base64url');
  if (header.alg === 'RS256') return verify('sha256', data, key, sig);
  if (header.alg === 'ES256') return verify('sha256', data, { key, dsaEncoding: 'ieee-p1363' }, sig);
  return false;
}

async function signed(spec) {
  const res = await fetch(`${fake.issuer}sign`, { method: 'POST', body: JSON.stringify(spec) });
  assert.equal(res.status, 200);
  return res.json();
}

test('fake issuer publishes an RSA and an EC key', async () => {
  const keys = await jwks();
  assert.deepEqual(keys.map((k) => [k.kid, k.kty, k.alg]), [
    ['rsa-1', 'RSA', 'RS256'],
    ['ec-1', 'EC', 'ES256'],
  ]);
  for (const k of keys) assert.equal(k.d, undefined, 'no private part in the JWKS');
});

test('fake issuer tokens verify with its JWKS and carry the default claims', async () => {
  const keys = await jwks();
  for (const key of ['rsa', 'ec']) {
    const { token, claims } = await signed({ key });
    assert.ok(check(token, keys), `${key} token verifies`);
    assert.equal(claims.iss, fake.issuer);
    assert.equal(claims.aud, 'aud-x');
    assert.ok(claims.exp > claims.iat);
  }
});

test('fake issuer foreign keys do not verify with its JWKS', async () => {
  const keys = await jwks();
  for (const key of ['other-rsa', 'other-ec']) {
    const { token } = await signed({ key });
    assert.equal(check(token, keys), false, `${key} must not verify`);
  }
});

test('fake issuer HS256 confusion tokens are keyed with the public key', async () => {
  const { token } = await signed({ alg: 'HS256', hmac_secret: 'rsa-public-pem' });
  const [h, p, s] = token.split('.');
  const keys = await jwks();
  const pem = createPublicKey({ key: keys[0], format: 'jwk' }).export({ type: 'spki', format: 'pem' });
  assert.equal(createHmac('sha256', pem).update(`${h}.${p}`).digest('base64url'), s);
});

test('fake issuer claims can be removed and overridden', async () => {
  const { claims, header } = await signed({ claims: { exp: null, aud: 'other' }, kid: null });
  assert.equal(claims.exp, undefined);
  assert.equal(claims.aud, 'other');
  assert.equal(header.kid, undefined);
});
