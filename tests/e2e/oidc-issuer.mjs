#!/usr/bin/env node
// A fake OpenID Connect issuer for the end-to-end tests. Test-only: never
// deploy it. It serves, on 127.0.0.1 only:
//   GET  /.well-known/openid-configuration   {issuer, jwks_uri}
//   GET  /.well-known/jwks.json              the public RSA (kid rsa-1, RS256) and EC P-256 (kid ec-1, ES256) keys
//   POST /sign                               test-only: signs a token, body below, answers {token}
//   GET  /stats                              {jwks_requests}
// POST /sign body (every member optional):
//   claims      object merged over the defaults {iss, aud, sub (random), email, email_verified: true, iat, exp: now+300}
//               (a member set to null is removed)
//   key         "rsa" (default) | "ec" | "other-rsa" | "other-ec" (keys of another issuer, never published)
//   alg         default RS256 for rsa keys, ES256 for ec keys; "HS256" with hmac_secret; "none" (no signature)
//   kid         header kid; default the key's published kid (the other-* keys pretend to be rsa-1 / ec-1); null omits it
//   hmac_secret "rsa-public-pem" | "rsa-public-pkcs1-pem" | "rsa-jwk-json" | "ec-public-pem" | any other string (used as is)
//   header      object merged over the JOSE header
// Run standalone: `node tests/e2e/oidc-issuer.mjs` (port from OIDC_FAKE_PORT, default 8790;
// audience default from OIDC_AUDIENCE, default everjust-e2e). Keys are never printed; standalone, they are
// kept in tests/artifacts/oidc-fake-keys.json (gitignored; OIDC_FAKE_KEYS_FILE overrides, empty = fresh keys
// each start) so that a server caching the JWKS keeps accepting the tokens of a restarted fake.

import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { createHmac, createPrivateKey, createPublicKey, generateKeyPairSync, randomUUID, sign as cryptoSign } from 'node:crypto';
import http from 'node:http';
import { fileURLToPath } from 'node:url';

const KEY_NAMES = { rsa: 'rsa', ec: 'ec', otherRsa: 'rsa', otherEc: 'ec' };

// Keys are generated, or loaded from keysFile (and written there when it does not exist yet) so that a
// server that caches the JWKS across runs keeps verifying the tokens of a restarted fake.
function loadOrGenerate(keysFile) {
  if (keysFile && existsSync(keysFile)) {
    const saved = JSON.parse(readFileSync(keysFile, 'utf8'));
    return Object.fromEntries(
      Object.keys(KEY_NAMES).map((k) => {
        const privateKey = createPrivateKey(saved[k]);
        return [k, { privateKey, publicKey: createPublicKey(privateKey) }];
      }),
    );
  }
  const out = {};
  for (const [k, type] of Object.entries(KEY_NAMES)) {
    out[k] = type === 'rsa' ? generateKeyPairSync('rsa', { modulusLength: 2048 }) : generateKeyPairSync('ec', { namedCurve: 'P-256' });
  }
  if (keysFile) {
    mkdirSync(dirname(keysFile), { recursive: true });
    const pems = Object.fromEntries(Object.entries(out).map(([k, v]) => [k, v.privateKey.export({ type: 'pkcs8', format: 'pem' })]));
    writeFileSync(keysFile, JSON.stringify(pems), { mode: 0o600 });
  }
  return out;
}

function makeKeys(keysFile) {
  const { rsa, ec, otherRsa, otherEc } = loadOrGenerate(keysFile);
  return {
    rsa: { ...rsa, kid: 'rsa-1', alg: 'RS256' },
    ec: { ...ec, kid: 'ec-1', alg: 'ES256' },
    'other-rsa': { ...otherRsa, kid: 'rsa-1', alg: 'RS256' },
    'other-ec': { ...otherEc, kid: 'ec-1', alg: 'ES256' },
  };
}

function jwk(key) {
  return { ...key.publicKey.export({ format: 'jwk' }), kid: key.kid, alg: key.alg, use: 'sig' };
}

const b64url = (buf) => Buffer.from(buf).toString('base64url');

export function startIssuer({ port = 8790, host = '127.0.0.1', audience = 'everjust-e2e', keysFile = null } = {}) {
  const keys = makeKeys(keysFile);
  const state = { jwksRequests: 0 };
  let issuer = `http://${host}:${port}/`;

  function hmacSecret(name) {
    switch (name) {
      case 'rsa-public-pem':
        return keys.rsa.publicKey.export({ type: 'spki', format: 'pem' });
      case 'rsa-public-pkcs1-pem':
        return keys.rsa.publicKey.export({ type: 'pkcs1', format: 'pem' });
      case 'rsa-jwk-json':
        return JSON.stringify(jwk(keys.rsa));
      case 'ec-public-pem':
        return keys.ec.publicKey.export({ type: 'spki', format: 'pem' });
      default:
        return String(name ?? '');
    }
  }

  function signToken(spec = {}) {
    const keyName = spec.key || 'rsa';
    const key = keys[keyName];
    if (!key) throw new Error(`unknown key ${keyName}`);
    const alg = spec.alg || key.alg;
    const now = Math.floor(Date.now() / 1000);
    const claims = {
      iss: issuer,
      aud: audience,
      sub: `fake|${randomUUID()}`,
      email: `oidc-${randomUUID().slice(0, 8)}@example.com`,
      email_verified: true,
      iat: now,
      exp: now + 300,
      ...(spec.claims || {}),
    };
    for (const [k, v] of Object.entries(claims)) if (v === null) delete claims[k];
    const header = { alg, typ: 'JWT', kid: spec.kid === undefined ? key.kid : spec.kid, ...(spec.header || {}) };
    if (header.kid === null) delete header.kid;
    const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
    let sig;
    if (alg === 'none') sig = Buffer.alloc(0);
    else if (alg === 'HS256') sig = createHmac('sha256', hmacSecret(spec.hmac_secret)).update(input).digest();
    else if (alg === 'RS256') sig = cryptoSign('sha256', Buffer.from(input), key.privateKey);
    else if (alg === 'ES256') sig = cryptoSign('sha256', Buffer.from(input), { key: key.privateKey, dsaEncoding: 'ieee-p1363' });
    else throw new Error(`unsupported alg ${alg}`);
    return { token: `${input}.${b64url(sig)}`, claims, header };
  }

  const server = http.createServer((req, res) => {
    const send = (status, obj) => {
      const body = JSON.stringify(obj);
      res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
      res.end(body);
    };
    const url = new URL(req.url, 'http://fake');
    if (req.method === 'GET' && url.pathname === '/.well-known/jwks.json') {
      state.jwksRequests++;
      return send(200, { keys: [jwk(keys.rsa), jwk(keys.ec)] });
    }
    if (req.method === 'GET' && url.pathname === '/.well-known/openid-configuration') {
      return send(200, { issuer, jwks_uri: `${issuer}.well-known/jwks.json`, id_token_signing_alg_values_supported: ['RS256', 'ES256'] });
    }
    if (req.method === 'GET' && url.pathname === '/stats') {
      return send(200, { jwks_requests: state.jwksRequests });
    }
    if (req.method === 'POST' && url.pathname === '/sign') {
      const chunks = [];
      req.on('data', (c) => chunks.push(c));
      req.on('end', () => {
        try {
          const spec = chunks.length ? JSON.parse(Buffer.concat(chunks).toString('utf8')) : {};
          send(200, signToken(spec));
        } catch (e) {
          send(400, { error: String(e.message || e) });
        }
      });
      return undefined;
    }
    return send(404, { error: 'not found' });
  });

  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      const actual = server.address().port;
      issuer = `http://${host}:${actual}/`;
      resolve({
        server,
        get issuer() {
          return issuer;
        },
        jwksUrl: `${issuer}.well-known/jwks.json`,
        signToken,
        close: () => new Promise((r) => server.close(() => r())),
      });
    });
  });
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const port = Number(process.env.OIDC_FAKE_PORT || 8790);
  const audience = process.env.OIDC_AUDIENCE || 'everjust-e2e';
  // Stable keys across restarts by default (gitignored); OIDC_FAKE_KEYS_FILE= (empty) for fresh keys.
  const defaultKeys = resolve(dirname(fileURLToPath(import.meta.url)), '../artifacts/oidc-fake-keys.json');
  const keysFile = process.env.OIDC_FAKE_KEYS_FILE ?? defaultKeys;
  const fake = await startIssuer({ port, audience, keysFile: keysFile || null });
  console.log(`oidc fake issuer listening: issuer ${fake.issuer} jwks ${fake.jwksUrl}`);
  const stop = () => fake.close().then(() => process.exit(0));
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}
