// "Log in with OIDC": the authorization code flow with PKCE (S256). The
// browser only navigates to the issuer and back; the server fetches the
// issuer's discovery document and exchanges the code (so the page's CSP
// stays connect-src 'self' and a client secret never reaches the browser).
// state, nonce and the PKCE verifier live in sessionStorage between the
// two page loads, one login at a time, and are removed when used.

import { adoptTokens, NetworkError, problem } from './api.js';

const KEY = 'everjust.oidc';

/** The server's OIDC login settings, or null when it has none (404) or cannot say. */
export async function oidcInfo() {
  try {
    const res = await fetch('/v1/auth/oidc', { headers: { accept: 'application/json' } });
    if (!res.ok) return null;
    const doc = await res.json();
    return doc && doc.authorization_endpoint && doc.client_id ? doc : null;
  } catch {
    return null;
  }
}

/** The issuer's host, for the button ("Log in with accounts.example.com"). */
export function issuerHost(info) {
  try {
    return new URL(info.issuer).host;
  } catch {
    return info.issuer;
  }
}

function b64url(bytes) {
  let s = '';
  for (const b of new Uint8Array(bytes)) s += String.fromCharCode(b);
  return btoa(s).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

function random() {
  return b64url(crypto.getRandomValues(new Uint8Array(32)));
}

function redirectUri() {
  return `${location.origin}/`;
}

/** Starts a login: remembers state, nonce and verifier, then leaves for the issuer. */
export async function startOidcLogin(info) {
  const pending = { state: random(), nonce: random(), verifier: random(), at: Date.now() };
  const challenge = b64url(await crypto.subtle.digest('SHA-256', new TextEncoder().encode(pending.verifier)));
  try {
    sessionStorage.setItem(KEY, JSON.stringify(pending));
  } catch {
    throw new Error('This browser does not keep session storage, which logging in with your provider needs.');
  }
  const url = new URL(info.authorization_endpoint);
  const params = {
    response_type: 'code',
    client_id: info.client_id,
    redirect_uri: redirectUri(),
    scope: (info.scopes || ['openid']).join(' '),
    state: pending.state,
    nonce: pending.nonce,
    code_challenge: challenge,
    code_challenge_method: 'S256',
  };
  for (const [k, v] of Object.entries(params)) url.searchParams.set(k, v);
  location.assign(url.toString());
}

/** The login this tab started and has not finished ({state, at}), or null: read, not removed. */
export function pendingOidcLogin() {
  try {
    const pending = JSON.parse(sessionStorage.getItem(KEY) || 'null');
    return pending && pending.state ? pending : null;
  } catch {
    return null;
  }
}

/** True when this page load is the issuer's redirect back (?code or ?error, with state). */
export function isOidcReturn() {
  const q = new URLSearchParams(location.search);
  return q.has('state') && (q.has('code') || q.has('error'));
}

/**
 * Completes a login on the issuer's redirect back: checks state, posts the
 * code with the verifier and nonce, and stores our own session. Always
 * cleans the URL and forgets the pending login. Resolves to the user;
 * rejects with an ApiError, a NetworkError or an Error with `detail`.
 */
export async function finishOidcLogin() {
  const q = new URLSearchParams(location.search);
  let pending = null;
  try {
    pending = JSON.parse(sessionStorage.getItem(KEY) || 'null');
    sessionStorage.removeItem(KEY);
  } catch {
    pending = null;
  }
  // The code must not stay in the address bar or the history.
  history.replaceState(null, '', `${location.pathname}#/login`);
  const fail = (detail, code) => Object.assign(new Error(detail), { detail, code });
  if (!pending || !pending.state || pending.state !== q.get('state')) {
    throw fail('This login did not start here or has already been used. Try again.', 'oidc_state_mismatch');
  }
  if (q.has('error')) {
    const why = q.get('error_description') || q.get('error');
    throw fail(`Your identity provider did not log you in: ${why}.`, 'oidc_denied');
  }
  let res;
  try {
    res = await fetch('/v1/auth/oidc/callback', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        code: q.get('code'),
        code_verifier: pending.verifier,
        redirect_uri: redirectUri(),
        nonce: pending.nonce,
      }),
    });
  } catch (e) {
    throw new NetworkError(e);
  }
  if (!res.ok) throw await problem(res);
  const doc = await res.json();
  adoptTokens(doc);
  return doc.user;
}
