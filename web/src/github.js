// Linking a GitHub App installation to the account. The server gives a
// `state` for the link (POST /v1/github/link-state, good for 20 minutes and
// one link) and GitHub's authorization URL for the App with that state; the
// browser goes there and GitHub sends it back to the App's callback URL
// (this page) with `code` and the same `state`, and `installation_id` and
// `setup_action=install` when the App was installed on the way. The state
// this tab sent is kept in sessionStorage until the redirect back: a state
// that is not it is refused here, before anything is sent (the server checks
// it again). Then POST /v1/github/installations {installation_id, code,
// state} links the installation (the account page does it, from what
// takeGithubArrival() hands it).
//
// "Link GitHub" goes to the App's install page with the state
// (`install_url`, when the server knows the App's name: GITHUB_APP_SLUG),
// where the user installs the App or picks an installation; else to the
// authorization URL, which links an App already installed. An installation
// made at GitHub comes back with `installation_id` and no state: it is kept,
// and the browser goes to the authorization URL with a new state of ours to
// finish the link.
//
// OIDC login's redirect back also carries `code` and `state` (oidc.js):
// isGithubReturn tells the two apart by which pending state matches.

import { json } from './api.js';
import { pendingOidcLogin } from './oidc.js';

const KEY = 'everjust.github';

/**
 * What GitHub's redirect back brought, checked and waiting for the account
 * page: {link: {installation_id, code, state}} | {authorize: installationId}
 * | {error}.
 * @type {any}
 */
let arrival = null;

function readPending() {
  try {
    const p = JSON.parse(sessionStorage.getItem(KEY) || 'null');
    return p && typeof p === 'object' ? p : null;
  } catch {
    return null;
  }
}

function writePending(value) {
  try {
    if (value) sessionStorage.setItem(KEY, JSON.stringify(value));
    else sessionStorage.removeItem(KEY);
    return true;
  } catch {
    return false;
  }
}

const fail = (detail, code) => Object.assign(new Error(detail), { detail, code });

/**
 * Starts a link: asks the server for a state, keeps it in this tab, and
 * leaves for GitHub. `installationId`: an installation GitHub already named
 * (installed at GitHub), linked when the authorization comes back.
 * Rejects with an ApiError (e.g. 503 github_not_configured) or an Error.
 */
export async function startGithubLink(installationId) {
  const doc = await json('/v1/github/link-state', { method: 'POST', json: {} });
  let target;
  try {
    target = new URL(!installationId && doc.install_url ? doc.install_url : doc.authorize_url);
  } catch {
    target = null;
  }
  if (!doc.state || !target || !/^https?:$/.test(target.protocol)) {
    throw fail('The server did not give a GitHub link to follow. Try again later.', 'github_link_unavailable');
  }
  const pending = { state: doc.state, at: Date.now() };
  if (installationId) pending.installation_id = String(installationId);
  if (!writePending(pending)) {
    throw fail('This browser does not keep session storage, which linking GitHub needs.', 'github_no_storage');
  }
  location.assign(target.toString());
}

/**
 * True when this page load is GitHub's redirect back: it names an
 * installation (`installation_id`, `setup_action`), or its `state` is the
 * one this tab sent to GitHub. A `?code&state` matching neither pending
 * state goes to whichever of the two flows this tab started last (the OIDC
 * login when it started neither), whose check then refuses it.
 */
export function isGithubReturn(q = new URLSearchParams(location.search)) {
  if (q.has('installation_id') || q.has('setup_action')) return true;
  if (!q.has('state') || !(q.has('code') || q.has('error'))) return false;
  const gh = readPending();
  const oidc = pendingOidcLogin();
  const state = q.get('state');
  if (gh && gh.state === state) return true;
  if (oidc && oidc.state === state) return false;
  if (gh && gh.state && !oidc) return true;
  if (gh && gh.state && oidc) return Number(gh.at || 0) > Number(oidc.at || 0);
  return false;
}

/**
 * Reads GitHub's redirect back: removes it from the address bar (the code
 * must not stay in the history), checks the state against the one this tab
 * sent, and keeps the outcome for the account page (takeGithubArrival).
 */
export function receiveGithubReturn() {
  const q = new URLSearchParams(location.search);
  history.replaceState(null, '', `${location.pathname}#/account`);
  const pending = readPending();
  const named = q.get('installation_id') || '';
  if (!q.has('state')) {
    // Installed (or its repositories changed) at GitHub, not from here:
    // without a state of ours the code cannot be used. Authorize again.
    writePending(null);
    arrival = /^[1-9]\d{0,18}$/.test(named)
      ? { authorize: named }
      : { error: fail('GitHub sent you back without saying which installation to link. Link GitHub again.', 'github_no_installation') };
    return;
  }
  writePending(null);
  if (!pending || !pending.state || pending.state !== q.get('state')) {
    arrival = {
      error: fail(
        'This GitHub link did not start in this tab, or it was used already: nothing was linked. Use “Link GitHub” to start again.',
        'github_state_mismatch',
      ),
    };
    return;
  }
  if (q.has('error')) {
    const why = q.get('error_description') || q.get('error');
    arrival = { error: fail(`GitHub did not authorize the App: ${why}. Nothing was linked.`, 'github_denied') };
    return;
  }
  const code = q.get('code') || '';
  const installation = named || pending.installation_id || '';
  if (!code) {
    arrival = { error: fail('GitHub sent you back without an authorization code. Use “Link GitHub” to try again.', 'github_no_code') };
  } else if (!/^[1-9]\d{0,18}$/.test(installation)) {
    arrival = {
      error: fail(
        'GitHub confirmed your account but did not say which installation of the App to link. Install the App on your GitHub account or organisation: when GitHub sends you back here, the link finishes.',
        'github_no_installation',
      ),
    };
  } else {
    arrival = { link: { installation_id: Number(installation), code, state: pending.state } };
  }
}

/** True while a redirect back from GitHub waits for the account page. */
export function hasGithubArrival() {
  return arrival !== null;
}

/** The redirect back's outcome, once (see `arrival`). */
export function takeGithubArrival() {
  const a = arrival;
  arrival = null;
  return a;
}

/** The caller's linked installations. */
export async function listInstallations() {
  const doc = await json('/v1/github/installations');
  return (doc && doc.items) || [];
}

/** "acme (organisation)" */
export function installationLabel(inst) {
  const kind = inst.account_type === 'Organization' ? 'organisation' : 'personal account';
  return `${inst.account} (${kind})`;
}
