#!/usr/bin/env node
// A fake OpenID Connect provider for the browser tests' "Log in with OIDC".
// Test-only: never deploy it. On 127.0.0.1 it serves:
//   GET  /.well-known/openid-configuration  {issuer, authorization_endpoint, token_endpoint, jwks_uri, ...}
//   GET  /.well-known/jwks.json             the public RSA key (kid fake-1, RS256)
//   GET  /authorize                         auto-approves: 302 to redirect_uri?code=…&state=… (no login page);
//                                           checks response_type=code, client_id, redirect_uri (http(s)),
//                                           code_challenge_method=S256 and a challenge; ?login_hint=EMAIL picks the user
//   POST /token                             authorization_code grant (form): the code once, the same client_id and
//                                           redirect_uri, base64url(sha256(code_verifier)) = the challenge; answers an
//                                           RS256 id_token {iss, aud: client_id, sub, email, email_verified, nonce, azp}
//                                           else 400 {"error": "invalid_grant"}
//   GET  /health                            {"status":"ok"}
//   GET  /_fake/stats                       {authorized, redeemed, refused}
// Standalone: `node tests/fakes/oidc.mjs` listens on OIDC_FAKE_PORT (default 8792); the client id is
// OIDC_FAKE_CLIENT_ID (default everjust-web). The issuer is http://127.0.0.1:<port>/.

import { createHash, generateKeyPairSync, randomBytes, sign } from 'node:crypto';
import http from 'node:http';
import { fileURLToPath } from 'node:url';

const b64url = (buf) => Buffer.from(buf).toString('base64url');

export function startOidcFake({
  port = Number(process.env.OIDC_FAKE_PORT || 8792),
  host = '127.0.0.1',
  clientId = process.env.OIDC_FAKE_CLIENT_ID || 'everjust-web',
} = {}) {
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = { ...publicKey.export({ format: 'jwk' }), kid: 'fake-1', alg: 'RS256', use: 'sig' };
  /** code -> {challenge, redirectUri, nonce, email} */
  const codes = new Map();
  const stats = { authorized: 0, redeemed: 0, refused: 0 };
  let issuer = '';

  function idToken({ nonce, email }) {
    const now = Math.floor(Date.now() / 1000);
    const header = { alg: 'RS256', typ: 'JWT', kid: jwk.kid };
    const claims = {
      iss: issuer,
      aud: clientId,
      azp: clientId,
      sub: `fake|${createHash('sha256').update(email).digest('hex').slice(0, 16)}`,
      email,
      email_verified: true,
      iat: now,
      exp: now + 300,
      ...(nonce ? { nonce } : {}),
    };
    const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
    return `${input}.${b64url(sign('sha256', Buffer.from(input), privateKey))}`;
  }

  const sendJson = (res, status, obj) => {
    res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
    res.end(JSON.stringify(obj));
  };

  const server = http.createServer((req, res) => {
    const url = new URL(req.url, issuer);
    if (req.method === 'GET' && url.pathname === '/health') return sendJson(res, 200, { status: 'ok' });
    if (req.method === 'GET' && url.pathname === '/_fake/stats') return sendJson(res, 200, stats);
    if (req.method === 'GET' && url.pathname === '/.well-known/openid-configuration') {
      return sendJson(res, 200, {
        issuer,
        authorization_endpoint: `${issuer}authorize`,
        token_endpoint: `${issuer}token`,
        jwks_uri: `${issuer}.well-known/jwks.json`,
        response_types_supported: ['code'],
        subject_types_supported: ['public'],
        id_token_signing_alg_values_supported: ['RS256'],
        code_challenge_methods_supported: ['S256'],
        token_endpoint_auth_methods_supported: ['none', 'client_secret_basic', 'client_secret_post'],
      });
    }
    if (req.method === 'GET' && url.pathname === '/.well-known/jwks.json') return sendJson(res, 200, { keys: [jwk] });
    if (req.method === 'GET' && url.pathname === '/authorize') {
      const q = url.searchParams;
      const redirectUri = q.get('redirect_uri') || '';
      const problems = [];
      if (q.get('response_type') !== 'code') problems.push('response_type must be code');
      if (q.get('client_id') !== clientId) problems.push(`unknown client_id ${q.get('client_id')}`);
      if (!/^https?:\/\//.test(redirectUri)) problems.push('redirect_uri must be an http(s) URL');
      if (q.get('code_challenge_method') !== 'S256' || !q.get('code_challenge')) problems.push('PKCE S256 is required');
      if (!(q.get('scope') || '').split(' ').includes('openid')) problems.push('scope must include openid');
      if (problems.length) {
        res.writeHead(400, { 'content-type': 'text/plain' });
        return res.end(problems.join('\n'));
      }
      const code = b64url(randomBytes(18));
      codes.set(code, {
        challenge: q.get('code_challenge'),
        redirectUri,
        nonce: q.get('nonce'),
        email: q.get('login_hint') || `oidc-${b64url(randomBytes(4)).toLowerCase()}@example.com`,
      });
      stats.authorized++;
      const back = new URL(redirectUri);
      back.searchParams.set('code', code);
      if (q.has('state')) back.searchParams.set('state', q.get('state'));
      res.writeHead(302, { location: back.toString(), 'cache-control': 'no-store' });
      return res.end();
    }
    if (req.method === 'POST' && url.pathname === '/token') {
      let body = '';
      req.on('data', (c) => (body += c));
      req.on('end', () => {
        const f = new URLSearchParams(body);
        let client = f.get('client_id');
        const basic = /^Basic (.+)$/i.exec(req.headers.authorization || '');
        if (basic) client = decodeURIComponent(Buffer.from(basic[1], 'base64').toString().split(':')[0]);
        const grant = codes.get(f.get('code') || '');
        codes.delete(f.get('code') || '');
        const verifier = f.get('code_verifier') || '';
        const ok =
          f.get('grant_type') === 'authorization_code' &&
          grant &&
          client === clientId &&
          f.get('redirect_uri') === grant.redirectUri &&
          b64url(createHash('sha256').update(verifier).digest()) === grant.challenge;
        if (!ok) {
          stats.refused++;
          return sendJson(res, 400, { error: 'invalid_grant' });
        }
        stats.redeemed++;
        sendJson(res, 200, { access_token: b64url(randomBytes(16)), token_type: 'Bearer', expires_in: 300, id_token: idToken(grant) });
      });
      return;
    }
    sendJson(res, 404, { error: 'not_found' });
  });

  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      issuer = `http://${host}:${server.address().port}/`;
      resolve({ server, issuer, clientId, stats, close: () => new Promise((r) => server.close(r)) });
    });
  });
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const fake = await startOidcFake();
  console.log(`fake OIDC provider on ${fake.issuer} (client ${fake.clientId})`);
}
