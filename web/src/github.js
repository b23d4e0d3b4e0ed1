// Linking a GitHub App installation to the account. The server gives a
// `state` for the link (POST /v1/github/link-state, good for 20 minutes and
// one link), GitHub's authorization URL for the App with that state
// (`authorize_url`) and, when it knows the App's name (GITHUB_APP_SLUG), the
// App's install page with it (`install_url`). The browser goes to one of
// them and GitHub sends it back to the App's callback URL (this page) with
// `code` and the same `state`, and `installation_id` and
// `setup_action=install` when the App was installed on the way. The state
// this tab sent is kept in sessionStorage until the redirect back: a state
// that is not it is refused here, before anything is sent (the server checks
// it again). Then POST /v1/github/installations {installation_id, code,
// state} links that installation, or, when the redirect back names none,
// {code, state} links every installation of the App the user's GitHub
// account controls (their own account, organisations they administer) and
// no other user of ours holds, answered {items} (the account page does it,
// from what takeGithubArrival() hands it).
//
// Two ways to start, both offered on the account page: "Install the GitHub
// App" (install_url), for a user who has not installed it; and the
// authorization (authorize_url: "Already installed? Authorize", or "Link
// GitHub" when the server has no install_url), for an App installed
// already. GitHub's install page does not come back for an App that is
// installed (it offers to configure it), and its authorization does not say
// which installation: the server finds them (the user never gives a number).
// An installation made at GitHub comes back with `installation_id` and no
// state: the account page offers to finish that link, through the
// authorization with a new state of ours (the number kept with the state).
//
// What the redirect back brought, checked, is kept in sessionStorage (not
// in memory) for 10 minutes, the life of GitHub's code, until the account
// page uses it: a user sent back while logged out may log in with OIDC,
// which leaves the page and comes back.
//
// OIDC login's redirect back also carries `code` and `state` (oidc.js):
// isGithubReturn tells the two apart by which pending state matches.

import { json } from './api.js';
import { pendingOidcLogin } from './oidc.js';

const KEY = 'everjust.github';
const ARRIVAL_KEY = 'everjust.github.arrival';
/** How long a redirect back waits for the account page: GitHub's codes live 10 minutes. */
const ARRIVAL_TTL_MS = 10 * 60 * 1000;
const INSTALLATION_ID = /^[1-9]\d{0,18}$/;

function readJson(key) {
  try {
    const v = JSON.parse(sessionStorage.getItem(key) || 'null');
    return v && typeof v === 'object' ? v : null;
  } catch {
    return null;
  }
}

function writeJson(key, value) {
  try {
    if (value) sessionStorage.setItem(key, JSON.stringify(value));
    else sessionStorage.removeItem(key);
    return true;
  } catch {
    return false;
  }
}

const readPending = () => readJson(KEY);
const writePending = (value) => writeJson(KEY, value);

/** The arrival, when this browser keeps no session storage (it then lasts as long as the page). */
let arrivalInMemory = null;

/**
 * Keeps what GitHub's redirect back brought, checked, for the account page:
 * {link: {installation_id?, code, state}} | {authorize: installationId}
 * | {error: {detail, code}}.
 */
function keepArrival(a) {
  const value = { ...a, at: Date.now() };
  arrivalInMemory = writeJson(ARRIVAL_KEY, value) ? null : value;
}

/** The arrival kept, if it is younger than ARRIVAL_TTL_MS; an older one is forgotten. */
function readArrival() {
  const a = readJson(ARRIVAL_KEY) || arrivalInMemory;
  if (!a) return null;
  const age = Date.now() - Number(a.at || 0);
  if (!(age >= 0 && age < ARRIVAL_TTL_MS) || !(a.link || a.authorize || a.error)) {
    forgetArrival();
    return null;
  }
  return a;
}

function forgetArrival() {
  arrivalInMemory = null;
  writeJson(ARRIVAL_KEY, null);
}

const fail = (detail, code) => Object.assign(new Error(detail), { detail, code });

/** A number GitHub gives an installation ("12345678"), as the client checks it. */
function isInstallationId(s) {
  return INSTALLATION_ID.test(String(s || ''));
}

/**
 * The ways this server offers to link: {install: true} when it knows the
 * App's install page (install_url), else {install: false}. Asks for a link
 * state to find out (a signed token: nothing is stored for it). Rejects
 * with an ApiError (e.g. 503 github_not_configured).
 */
export async function githubLinkOptions() {
  const doc = await json('/v1/github/link-state', { method: 'POST', json: {} });
  return { install: Boolean(doc && doc.install_url) };
}

/**
 * Starts a link: asks the server for a state, keeps it in this tab, and
 * leaves for GitHub: its install page (`via: 'install'`, when the server
 * gave one) or the App's authorization (`via: 'authorize'`).
 * `installationId`: the installation to link when GitHub's redirect back
 * does not name one (an App installed at GitHub: "Finish linking
 * installation N"); without it, such a redirect back links every
 * installation the user controls.
 * Rejects with an ApiError (e.g. 503 github_not_configured) or an Error.
 */
export async function startGithubLink({ via = 'authorize', installationId } = {}) {
  const doc = await json('/v1/github/link-state', { method: 'POST', json: {} });
  let target;
  try {
    target = new URL(via === 'install' && doc.install_url ? doc.install_url : doc.authorize_url);
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
  keepArrival(checkReturn(q, readPending()));
  writePending(null);
}

function checkReturn(q, pending) {
  const named = q.get('installation_id') || '';
  const refused = (detail, code) => ({ error: { detail, code } });
  if (!q.has('state')) {
    // Installed (or its repositories changed) at GitHub, not from here:
    // without a state of ours the code cannot be used. The account page
    // offers to authorize with one.
    return isInstallationId(named)
      ? { authorize: named }
      : refused('GitHub sent you back without saying which installation to link. Link GitHub again.', 'github_no_installation');
  }
  if (!pending || !pending.state || pending.state !== q.get('state')) {
    return refused(
      'This GitHub link did not start in this tab, or it was used already: nothing was linked. Start the link again.',
      'github_state_mismatch',
    );
  }
  if (q.has('error')) {
    const why = String(q.get('error_description') || q.get('error')).replace(/[.\s]+$/, '');
    return refused(`GitHub did not authorize the App (${why}). Nothing was linked.`, q.get('error') === 'access_denied' ? 'github_denied' : 'github_error');
  }
  const code = q.get('code') || '';
  const installation = named || pending.installation_id || '';
  if (!code) {
    return refused('GitHub sent you back without an authorization code. Start the link again.', 'github_no_code');
  }
  if (!installation) {
    // Authorized without naming an installation (an App installed already):
    // the server links every one the user's GitHub account controls.
    return { link: { code, state: pending.state } };
  }
  if (!isInstallationId(installation)) {
    return refused(
      'GitHub sent you back with an installation this page does not recognise: nothing was linked. Link GitHub again.',
      'github_no_installation',
    );
  }
  return { link: { installation_id: Number(installation), code, state: pending.state } };
}

/**
 * What a redirect back from GitHub left for the account page, not taken
 * yet: 'link' | 'authorize' | 'error', or null.
 */
export function githubArrivalKind() {
  const a = readArrival();
  return a ? (a.link ? 'link' : a.authorize ? 'authorize' : 'error') : null;
}

/** True while a redirect back from GitHub waits for the account page. */
export function hasGithubArrival() {
  return githubArrivalKind() !== null;
}

/** The redirect back's outcome, once: {link} | {authorize} | {error}, or null. */
export function takeGithubArrival() {
  const a = readArrival();
  forgetArrival();
  if (!a) return null;
  if (a.link) return { link: a.link };
  if (a.authorize) return { authorize: String(a.authorize) };
  return { error: fail(String((a.error && a.error.detail) || 'Linking GitHub failed.'), (a.error && a.error.code) || 'github_error') };
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
