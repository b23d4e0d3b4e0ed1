#!/usr/bin/env node
// A fake of the GitHub REST API for the end-to-end tests and benchmarks: exactly the endpoints the
// server uses, with state (installations, tokens, repositories, refs, commits, trees, blobs), real git
// blob ids (sha1 of "blob <len>\0<content>"), and signed webhook deliveries to the server.
// Test-only: never deploy it.
//
// GitHub API (on 127.0.0.1 only):
//   GET   /app/installations/{id}                    app JWT (RS256, iss = app id, exp - iat <= 10 min)
//   POST  /app/installations/{id}/access_tokens      app JWT -> {token, expires_at} (1 hour)
//   GET   /repos/{owner}/{repo}                      installation token (only repositories of that installation)
//   POST  /orgs/{org}/repos                          installation token of an Organization installation
//   GET   /repos/{o}/{r}/git/ref/heads/{branch}      409 "Git Repository is empty." on an empty repository
//   GET   /repos/{o}/{r}/git/commits/{sha}
//   GET   /repos/{o}/{r}/git/trees/{sha}?recursive=1 blobs and their directories
//   GET   /repos/{o}/{r}/git/blobs/{sha}             base64
//   POST  /repos/{o}/{r}/git/blobs                   {content, encoding: base64|utf-8}
//   POST  /repos/{o}/{r}/git/trees                   {base_tree?, tree: [{path, mode, type, sha|null}]}
//   POST  /repos/{o}/{r}/git/commits                 {message, tree, parents, author}
//   PATCH /repos/{o}/{r}/git/refs/heads/{branch}     {sha, force}: 422 "Update is not a fast forward"
//   POST  /repos/{o}/{r}/git/refs                    {ref, sha}: 422 when it exists
//   PUT   /repos/{o}/{r}/contents/{path}             {message, content, branch}: creates a file (the first
//                                                    commit of an empty repository)
//   GET   /user/installations?per_page=&page=        user-to-server token -> {total_count, installations}
//                                                    (the installations that token's user reaches)
//   GET   /user                                      user-to-server token -> {id, login}
//   DELETE /applications/{client_id}/token           Basic client_id:client_secret, {access_token} -> 204
//                                                    (the user-to-server token revoked), 404 if unknown
//   GET   /user/memberships/orgs/{org}               user-to-server token -> {state, role}; 404 when not a member
// GitHub's OAuth (github.com in production, GITHUB_OAUTH_URL = this fake in tests):
//   POST  /login/oauth/access_token                  {client_id, client_secret, code} (JSON or form) ->
//                                                    {access_token, token_type, scope}; a wrong, used or
//                                                    10-minute-old code: 200 {error: "bad_verification_code"}
// GitHub's pages (what a browser is sent to; the user is the one set with POST /_fake/browser):
//   GET   /login/oauth/authorize?client_id=&state=[&redirect_uri=]  the App's authorization: approves at
//                                                    once and redirects (302) to the App's callback URL with
//                                                    a new OAuth code and the state; with `install` set, the
//                                                    user installs the App on the way, as GitHub does with
//                                                    "Request user authorization (OAuth) during installation":
//                                                    installation_id and setup_action=install are added (once:
//                                                    the next visit finds the App installed).
//                                                    `deny: true`: ?error=access_denied&state= instead
//   GET   /apps/{app}/installations/new?state=       the App's install page: redirects to the callback with
//                                                    installation_id (`install`), setup_action=install, a code
//                                                    and the state when one was given; with nothing to install
//                                                    (no `install`: the App is installed already) a 200 HTML
//                                                    page that offers "Configure" and does not send the browser
//                                                    back, as GitHub's (recorded with redirect: null)
// Every answer carries x-ratelimit-limit / -remaining / -reset (5000 per installation per hour, or
// GITHUB_FAKE_RATE_LIMIT); past it, 403 "API rate limit exceeded" until the window resets.
// Every ref change (ours or the server's) is delivered as a signed `push` webhook to the hook target
// when one is set, the way GitHub does it.
//
// Test controls (JSON in, JSON out):
//   POST /_fake/installations {id, login, type: User|Organization}
//   POST /_fake/oauth-codes {installations: [id], controls?: [id]}  -> {code}: what GitHub sends the
//                                                    App's callback URL after a user installs or authorizes
//                                                    the App. The user reaches `installations` and controls
//                                                    `controls` (default: the same): a User installation's
//                                                    account is theirs, an Organization's they administer;
//                                                    the others' organisations they are a plain member of
//   POST /_fake/repos {installation, owner, name, default_branch?, files?: {path: text}}  (files: an
//        initial commit; without: an empty repository)
//   POST /_fake/hooks {url, secret?}                 where webhooks go (default env GITHUB_FAKE_WEBHOOK_URL)
//   POST /_fake/push {owner, name, branch?, files: {path: text|null}, modes?: {path: mode},
//        message?, pusher?, deliver?: true}          an outside push; answers {commit, delivery:{id, status,
//                                                    body, ms}} after the webhook was answered
//   POST /_fake/deliver {event, payload, id?, signature?: good|bad|none|sha1, alter?: bool}
//                                                    any delivery, signed (or not) as asked
//   POST /_fake/fail {path?: substring, method?, status, times?: 1, headers?: {}, body?}  the next matching
//                                                    calls answer this (GitHub down, rate limits); with
//                                                    delay_ms and no status they are only that slow
//   POST /_fake/race {owner, name, branch, files}    before the next ref update of that branch, someone
//                                                    else pushes these files (a non-fast-forward)
//   POST /_fake/browser {installations, controls?, install?: id, callback_url?, deny?}  the GitHub user
//                                                    signed in to the pages above: the installations they
//                                                    reach and control (as oauth-codes), the one they install
//                                                    on the way, and the App's callback URL (default env
//                                                    GITHUB_FAKE_CALLBACK_URL); {} signs them out
//   GET  /_fake/authorizations                       {authorizations: [{page, app, client_id, state, redirect}]}
//   GET  /_fake/repos/{owner}/{name}?ref=branch      {head, files: {path: text}, modes, branches}
//   GET  /_fake/commits/{sha}                        {tree, parents, message, author}
//   GET  /_fake/calls?since=N&repo=owner/name        {total, calls: [{method, path}]}
//   GET  /health
//
// Standalone: `node tests/fakes/github.mjs` listens on GITHUB_FAKE_PORT (default 8792). The app id is
// GITHUB_FAKE_APP_ID (default 4242), the app key GITHUB_FAKE_APP_KEY_FILE (default
// tests/fakes/github-app-test-key.pem, a TEST-ONLY key), the webhook secret GITHUB_FAKE_WEBHOOK_SECRET
// (default "github-fake-webhook-secret"). Configure the server with the same values:
//   GITHUB_APP_ID=4242 GITHUB_APP_PRIVATE_KEY="$(cat tests/fakes/github-app-test-key.pem)"
//   GITHUB_WEBHOOK_SECRET=github-fake-webhook-secret GITHUB_API_URL=http://127.0.0.1:8792
//   GITHUB_CLIENT_ID=Iv1.fakeclient GITHUB_CLIENT_SECRET=github-fake-oauth-secret
//   GITHUB_OAUTH_URL=http://127.0.0.1:8792          (GITHUB_FAKE_CLIENT_ID / _SECRET change them)
// Imported: `await startGithubFake({ port: 0, ... })` -> { url, port, state, close() }.

import { createHash, createHmac, createPrivateKey, createPublicKey, createVerify, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { readBody as readBodyUpTo } from './wire.mjs';

const here = dirname(fileURLToPath(import.meta.url));
export const DEFAULT_KEY_FILE = join(here, 'github-app-test-key.pem');
export const DEFAULT_APP_ID = '4242';
export const DEFAULT_CLIENT_ID = 'Iv1.fakeclient';
export const DEFAULT_CLIENT_SECRET = 'github-fake-oauth-secret';
export const DEFAULT_SECRET = 'github-fake-webhook-secret';
// GitHub allows an installation 5000 calls an hour; GITHUB_FAKE_RATE_LIMIT changes it (benchmarks).
const RATE_LIMIT = Number(process.env.GITHUB_FAKE_RATE_LIMIT || 5000);

const sha1 = (...parts) => {
  const h = createHash('sha1');
  for (const p of parts) h.update(p);
  return h.digest('hex');
};
/** The git object id of a blob. */
export const gitBlobSha = (buf) => sha1(`blob ${buf.length}\0`, buf);
export const signBody = (secret, body) => `sha256=${createHmac('sha256', secret).update(body).digest('hex')}`;

// The fake reads bodies of any size.
const readBody = (req) => readBodyUpTo(req, Infinity);

function b64url(s) {
  return Buffer.from(s, 'base64url');
}

export function newState() {
  return {
    installations: new Map(), // id -> {id, login, type, suspended_at}
    tokens: new Map(), // token -> {installation, expires}
    codes: new Map(), // OAuth code -> {installations, expires}
    userTokens: new Map(), // user-to-server token -> {installations, expires}
    repos: new Map(), // "owner/name" lowercased -> repo
    repoSeq: 5000,
    blobs: new Map(), // sha -> Buffer
    trees: new Map(), // sha -> Map(path -> {mode, sha})
    commits: new Map(), // sha -> {tree, parents, message, author, committer}
    calls: [], // {method, path, repo, at}
    failures: [], // {path, method, status, times, headers, body}
    races: [], // {repo, branch, files}
    remaining: new Map(), // installation -> {left, reset} of its hourly window
    hook: { url: process.env.GITHUB_FAKE_WEBHOOK_URL || '', secret: null },
    deliveries: [], // {id, event, status, ms}
    browser: null, // the user signed in to GitHub's pages: {installations, controls, install, callbackUrl, deny}
    authorizations: [], // {page, client_id, state, redirect, at}: visits of those pages
  };
}

function putTree(state, entries) {
  const sorted = [...entries.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  const id = sha1('tree\0', JSON.stringify(sorted));
  state.trees.set(id, new Map(sorted));
  return id;
}

function putCommit(state, { tree, parents, message, author }) {
  const date = author?.date || new Date().toISOString();
  const who = author || { name: 'Fake Committer', email: 'fake@github.test', date };
  const id = sha1('commit\0', tree, parents.join(','), message, JSON.stringify(who), String(state.commits.size), randomUUID());
  state.commits.set(id, { tree, parents, message, author: who, committer: who });
  return id;
}

function treeOf(state, commit) {
  return commit ? state.trees.get(state.commits.get(commit).tree) : new Map();
}

/** A commit on `branch` with `files` ({path: text|Buffer|null}); returns {before, after}. */
function outsideCommit(state, repo, branch, files, { message = 'Outside change', modes = {}, author } = {}) {
  const head = repo.refs.get(branch);
  const entries = new Map(treeOf(state, head));
  for (const [path, content] of Object.entries(files)) {
    if (content === null) {
      entries.delete(path);
    } else {
      const buf = Buffer.isBuffer(content) ? content : Buffer.from(content, 'utf8');
      const sha = gitBlobSha(buf);
      state.blobs.set(sha, buf);
      entries.set(path, { mode: modes[path] || '100644', sha });
    }
  }
  const tree = putTree(state, entries);
  const commit = putCommit(state, { tree, parents: head ? [head] : [], message, author: author || { name: 'Octo Cat', email: 'octocat@example.com', date: new Date().toISOString() } });
  repo.refs.set(branch, commit);
  return { before: head || '0'.repeat(40), after: commit };
}

function repoJson(repo) {
  return {
    id: repo.id,
    node_id: `R_${repo.id}`,
    name: repo.name,
    full_name: `${repo.owner}/${repo.name}`,
    private: repo.private,
    owner: { login: repo.owner, name: repo.owner, id: repo.installation * 10, type: repo.ownerType },
    default_branch: repo.default_branch,
    html_url: `https://github.test/${repo.owner}/${repo.name}`,
  };
}

/** The `push` webhook payload GitHub sends for a ref change. */
function pushPayload(state, repo, branch, before, after, pusher) {
  const old = before && !/^0+$/.test(before) ? treeOf(state, before) : new Map();
  const now = treeOf(state, after);
  const added = [];
  const modified = [];
  const removed = [];
  for (const [p, e] of now) {
    if (!old.has(p)) added.push(p);
    else if (old.get(p).sha !== e.sha) modified.push(p);
  }
  for (const p of old.keys()) if (!now.has(p)) removed.push(p);
  const c = state.commits.get(after);
  const commit = {
    id: after,
    tree_id: c.tree,
    distinct: true,
    message: c.message,
    timestamp: c.author.date,
    url: `https://github.test/${repo.owner}/${repo.name}/commit/${after}`,
    author: { name: c.author.name, email: c.author.email },
    committer: { name: c.committer.name, email: c.committer.email },
    added,
    removed,
    modified,
  };
  return {
    ref: `refs/heads/${branch}`,
    before: before || '0'.repeat(40),
    after,
    created: !before || /^0+$/.test(before),
    deleted: false,
    forced: false,
    base_ref: null,
    compare: `https://github.test/${repo.owner}/${repo.name}/compare/${(before || '').slice(0, 12)}...${after.slice(0, 12)}`,
    commits: [commit],
    head_commit: commit,
    repository: repoJson(repo),
    pusher: pusher || { name: 'octocat', email: 'octocat@example.com' },
    sender: { login: pusher?.name || 'octocat', id: 583231, type: 'User' },
    installation: { id: repo.installation, node_id: `I_${repo.installation}` },
  };
}

/** Sends one webhook delivery; resolves {id, status, body, ms}. */
export async function deliver(state, { url, secret, event, payload, id = randomUUID(), signature = 'good', alter = false, raw }) {
  const target = url || state.hook.url;
  if (!target) return { id, status: 0, body: 'no hook target', ms: 0 };
  let body = raw !== undefined ? Buffer.from(raw) : Buffer.from(JSON.stringify(payload));
  const headers = {
    'content-type': 'application/json',
    'user-agent': 'GitHub-Hookshot/fake',
    'x-github-event': event,
    'x-github-delivery': id,
    'x-github-hook-id': '1',
    'x-github-hook-installation-target-type': 'integration',
  };
  const key = secret || state.hook.secret;
  if (signature === 'good' || signature === 'sha1' || signature === 'both') {
    headers['x-hub-signature'] = `sha1=${createHmac('sha1', key).update(body).digest('hex')}`;
  }
  if (signature === 'good' || signature === 'both') headers['x-hub-signature-256'] = signBody(key, body);
  if (signature === 'bad') headers['x-hub-signature-256'] = signBody(`${key}-wrong`, body);
  if (alter) body = Buffer.from(body.toString('utf8').replace(/"/, ' "'));
  const started = performance.now();
  try {
    const res = await fetch(target, { method: 'POST', headers, body, signal: AbortSignal.timeout(30_000) });
    const text = await res.text();
    const ms = performance.now() - started;
    state.deliveries.push({ id, event, status: res.status, ms });
    return { id, status: res.status, body: text, ms };
  } catch (e) {
    return { id, status: 0, body: String(e), ms: performance.now() - started };
  }
}

function verifyJwt(token, publicKey, appId) {
  const parts = token.split('.');
  if (parts.length !== 3) return 'not a JWT';
  let header;
  let claims;
  try {
    header = JSON.parse(b64url(parts[0]).toString('utf8'));
    claims = JSON.parse(b64url(parts[1]).toString('utf8'));
  } catch {
    return 'undecodable';
  }
  if (header.alg !== 'RS256') return `alg ${header.alg}`;
  const ok = createVerify('RSA-SHA256').update(`${parts[0]}.${parts[1]}`).verify(publicKey, b64url(parts[2]));
  if (!ok) return 'bad signature';
  const now = Math.floor(Date.now() / 1000);
  if (String(claims.iss) !== String(appId)) return `iss ${claims.iss}`;
  if (typeof claims.iat !== 'number' || typeof claims.exp !== 'number') return 'iat and exp required';
  if (claims.iat > now + 60) return 'iat in the future';
  if (claims.exp <= now) return 'expired';
  if (claims.exp - claims.iat > 600) return "'Expiration time' claim ('exp') is too far in the future";
  return null;
}

/** Handles one request; resolves [status, body, headers]. */
async function route(state, opts, req, url, body) {
  const json = () => {
    try {
      return body.length ? JSON.parse(body.toString('utf8')) : {};
    } catch {
      return null;
    }
  };
  const err = (status, message, headers = {}) => [status, { message, documentation_url: 'https://docs.github.com/rest', status: String(status) }, headers];
  const segs = url.pathname.split('/').slice(1).map(decodeURIComponent);
  const method = req.method;

  // ---------------------------------------------------------------- test controls
  if (segs[0] === 'health') return [200, { status: 'ok' }];
  if (segs[0] === '_fake') {
    const b = json() || {};
    const what = segs[1];
    if (method === 'POST' && what === 'installations') {
      state.installations.set(Number(b.id), { id: Number(b.id), login: b.login, type: b.type || 'User', suspended_at: null });
      return [201, { id: Number(b.id) }];
    }
    if (method === 'POST' && what === 'oauth-codes') {
      const code = randomUUID().replace(/-/g, '').slice(0, 20);
      const installations = (b.installations || []).map(Number);
      state.codes.set(code, { installations, controls: (b.controls || installations).map(Number), expires: Date.now() + 600_000 });
      return [201, { code }];
    }
    if (method === 'POST' && what === 'repos') {
      const inst = state.installations.get(Number(b.installation));
      if (!inst) return err(404, 'no such installation');
      const repo = {
        id: ++state.repoSeq,
        owner: b.owner || inst.login,
        ownerType: inst.type,
        name: b.name,
        private: b.private !== false,
        installation: inst.id,
        default_branch: b.default_branch || 'main',
        refs: new Map(),
      };
      state.repos.set(`${repo.owner}/${repo.name}`.toLowerCase(), repo);
      if (b.files && Object.keys(b.files).length) outsideCommit(state, repo, repo.default_branch, b.files, { message: 'Initial commit' });
      return [201, repoJson(repo)];
    }
    if (method === 'POST' && what === 'hooks') {
      state.hook = { url: b.url || '', secret: b.secret || state.defaultSecret };
      return [200, { url: state.hook.url }];
    }
    if (method === 'POST' && what === 'push') {
      const repo = state.repos.get(`${b.owner}/${b.name}`.toLowerCase());
      if (!repo) return err(404, 'no such repository');
      const branch = b.branch || repo.default_branch;
      const { before, after } = outsideCommit(state, repo, branch, b.files || {}, { message: b.message, modes: b.modes });
      let delivery = null;
      if (b.deliver !== false) {
        const payload = pushPayload(state, repo, branch, before, after, b.pusher);
        delivery = await deliver(state, { url: b.url, event: 'push', payload, id: b.delivery_id });
        delivery.payload = b.return_payload ? payload : undefined;
      }
      return [200, { before, commit: after, delivery }];
    }
    if (method === 'POST' && what === 'payload') {
      // A push payload for the current head, without delivering it.
      const repo = state.repos.get(`${b.owner}/${b.name}`.toLowerCase());
      if (!repo) return err(404, 'no such repository');
      const branch = b.branch || repo.default_branch;
      const head = repo.refs.get(branch);
      if (!head) return err(404, 'no such branch');
      const c = state.commits.get(head);
      return [200, pushPayload(state, repo, branch, c.parents[0] || null, head, b.pusher)];
    }
    if (method === 'POST' && what === 'deliver') {
      const r = await deliver(state, { url: b.url, secret: b.secret, event: b.event, payload: b.payload, id: b.id || undefined, signature: b.signature || 'good', alter: !!b.alter, raw: b.raw });
      return [200, r];
    }
    if (method === 'POST' && what === 'fail') {
      // With delay_ms (and no status) the calls are only slow, then answered as usual.
      const delay = b.delay_ms || 0;
      state.failures.push({ path: b.path || '', method: b.method || null, status: delay && !b.status ? null : b.status || 503, delay, times: b.times ?? 1, headers: b.headers || {}, body: b.body || { message: 'Service unavailable (fake)' } });
      return [200, { queued: state.failures.length }];
    }
    if (method === 'POST' && what === 'clear-failures') {
      state.failures = [];
      return [200, {}];
    }
    if (method === 'POST' && what === 'race') {
      state.races.push({ repo: `${b.owner}/${b.name}`.toLowerCase(), branch: b.branch || 'main', files: b.files || {} });
      return [200, {}];
    }
    if (method === 'GET' && what === 'repos') {
      const repo = state.repos.get(`${segs[2]}/${segs[3]}`.toLowerCase());
      if (!repo) return err(404, 'no such repository');
      const branch = url.searchParams.get('ref') || repo.default_branch;
      const head = repo.refs.get(branch) || null;
      const files = {};
      const modes = {};
      for (const [p, e] of treeOf(state, head)) {
        files[p] = state.blobs.get(e.sha).toString('utf8');
        modes[p] = e.mode;
      }
      return [200, { id: repo.id, head, files, modes, branches: Object.fromEntries(repo.refs) }];
    }
    if (method === 'GET' && what === 'commits') {
      const c = state.commits.get(segs[2]);
      return c ? [200, c] : err(404, 'no such commit');
    }
    if (method === 'POST' && what === 'browser') {
      if (!b.installations && !b.install) {
        state.browser = null;
        return [200, { browser: null }];
      }
      const installations = (b.installations || [b.install]).map(Number);
      state.browser = {
        installations,
        controls: (b.controls || installations).map(Number),
        install: b.install ? Number(b.install) : null,
        callbackUrl: b.callback_url || process.env.GITHUB_FAKE_CALLBACK_URL || '',
        deny: !!b.deny,
      };
      return [200, { browser: state.browser }];
    }
    if (method === 'GET' && what === 'authorizations') return [200, { authorizations: state.authorizations }];
    if (method === 'GET' && what === 'calls') {
      const since = Number(url.searchParams.get('since') || 0);
      const repo = (url.searchParams.get('repo') || '').toLowerCase();
      const calls = state.calls.slice(since).filter((c) => !repo || c.repo === repo);
      return [200, { total: state.calls.length, calls }];
    }
    return err(404, 'unknown control');
  }

  // ---------------------------------------------------------------- GitHub's pages (a browser's)
  const authorizePage = segs[0] === 'login' && segs[1] === 'oauth' && segs[2] === 'authorize' && segs.length === 3;
  const installPage = segs[0] === 'apps' && segs[2] === 'installations' && segs[3] === 'new' && segs.length === 4;
  if (method === 'GET' && (authorizePage || installPage)) {
    const q = url.searchParams;
    const user = state.browser;
    if (authorizePage && q.get('client_id') !== opts.clientId) return err(404, 'Not Found (no such OAuth client_id)');
    if (!user) return err(401, 'Nobody is signed in to the GitHub fake (POST /_fake/browser)');
    const callback = q.get('redirect_uri') || user.callbackUrl;
    if (!callback) return err(400, 'The App has no callback URL (POST /_fake/browser {callback_url})');
    const given = q.get('state');
    if (installPage && !user.install) {
      // Nothing to install: the App is installed where this user could put it. GitHub then shows
      // the installations with "Configure" and does not send the browser back: a dead end.
      state.authorizations.push({ page: 'install', app: segs[1], client_id: null, state: given, redirect: null, at: Date.now() });
      const html = `<!doctype html><meta charset="utf-8"><title>Install ${escapeHtml(segs[1])} · GitHub (fake)</title>
<h1>Install ${escapeHtml(segs[1])}</h1><p>${escapeHtml(segs[1])} is already installed on your account. <a href="#configure">Configure</a></p>`;
      return [200, html, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' }];
    }
    const back = new URL(callback);
    if (user.deny) {
      back.searchParams.set('error', 'access_denied');
      back.searchParams.set('error_description', 'The user has denied your application access.');
    } else {
      const code = randomUUID().replace(/-/g, '').slice(0, 20);
      state.codes.set(code, { installations: user.installations, controls: user.controls, expires: Date.now() + 600_000 });
      if (user.install) {
        // Installed once: later authorizations come back with a code and the state only.
        back.searchParams.set('installation_id', String(user.install));
        back.searchParams.set('setup_action', 'install');
        user.install = null;
      }
      back.searchParams.set('code', code);
    }
    if (given !== null) back.searchParams.set('state', given);
    state.authorizations.push({ page: authorizePage ? 'authorize' : 'install', app: installPage ? segs[1] : null, client_id: q.get('client_id'), state: given, redirect: back.toString(), at: Date.now() });
    return [302, { redirect: back.toString() }, { location: back.toString(), 'cache-control': 'no-store' }];
  }

  // ---------------------------------------------------------------- the API
  const repoKey = segs[0] === 'repos' && segs.length >= 3 ? `${segs[1]}/${segs[2]}`.toLowerCase() : '';
  state.calls.push({ method, path: url.pathname + url.search, repo: repoKey, at: Date.now() });
  const failure = state.failures.find((f) => url.pathname.includes(f.path) && (!f.method || f.method === method));
  if (failure) {
    if (--failure.times <= 0) state.failures.splice(state.failures.indexOf(failure), 1);
    if (failure.delay) await new Promise((res) => setTimeout(res, failure.delay));
    if (failure.status != null) return [failure.status, failure.body, failure.headers];
  }
  const auth = String(req.headers.authorization || '');
  const token = auth.replace(/^(Bearer|token)\s+/i, '');
  if (!req.headers['user-agent']) return err(403, 'Request forbidden by administrative rules. Please make sure your request has a User-Agent header');

  if (segs[0] === 'login' && segs[1] === 'oauth' && segs[2] === 'access_token' && method === 'POST') {
    const form = String(req.headers['content-type'] || '').startsWith('application/x-www-form-urlencoded');
    const b = form ? Object.fromEntries(new URLSearchParams(body.toString('utf8'))) : json() || {};
    if (b.client_id !== opts.clientId || b.client_secret !== opts.clientSecret) {
      return [200, { error: 'incorrect_client_credentials', error_description: 'The client_id and/or client_secret passed are incorrect.' }];
    }
    const grant = state.codes.get(String(b.code || ''));
    state.codes.delete(String(b.code || ''));
    if (!grant || grant.expires < Date.now()) {
      return [200, { error: 'bad_verification_code', error_description: 'The code passed is incorrect or expired.' }];
    }
    const t = `ghu_${randomUUID().replace(/-/g, '')}`;
    state.userTokens.set(t, { installations: grant.installations, controls: grant.controls, expires: Date.now() + 8 * 3600_000 });
    return [200, { access_token: t, expires_in: 28800, token_type: 'bearer', scope: '' }];
  }
  if (segs[0] === 'applications' && segs[2] === 'token' && method === 'DELETE') {
    const basic = `Basic ${Buffer.from(`${opts.clientId}:${opts.clientSecret}`).toString('base64')}`;
    if (segs[1] !== opts.clientId || auth !== basic) return err(401, 'Bad credentials');
    const t = String((json() || {}).access_token || '');
    if (!state.userTokens.delete(t)) return err(404, 'Not Found');
    state.revoked = (state.revoked || 0) + 1;
    return [204, null];
  }
  if (segs[0] === 'user' && method === 'GET' && (segs.length === 1 || segs[1] === 'memberships')) {
    const user = state.userTokens.get(token);
    if (!user || user.expires < Date.now()) return err(401, 'Bad credentials');
    const accounts = (ids, type) => ids.map((id) => state.installations.get(id)).filter((i) => i && i.type === type);
    if (segs.length === 1) {
      const own = accounts(user.controls, 'User')[0];
      return [200, own ? { id: own.id * 10, login: own.login, type: 'User' } : { id: 424242, login: 'someone-else', type: 'User' }];
    }
    const org = String(segs[3] || '').toLowerCase();
    const has = (ids) => accounts(ids, 'Organization').some((i) => i.login.toLowerCase() === org);
    if (has(user.controls)) return [200, { state: 'active', role: 'admin', organization: { login: segs[3] } }];
    if (has(user.installations)) return [200, { state: 'active', role: 'member', organization: { login: segs[3] } }];
    return err(404, 'Not Found');
  }
  if (segs[0] === 'user' && segs[1] === 'installations' && segs.length === 2 && method === 'GET') {
    const user = state.userTokens.get(token);
    if (!user || user.expires < Date.now()) return err(401, 'Bad credentials');
    const all = user.installations.map((id) => state.installations.get(id)).filter(Boolean);
    const perPage = Math.min(100, Number(url.searchParams.get('per_page') || 30));
    const page = Math.max(1, Number(url.searchParams.get('page') || 1));
    const installations = all.slice((page - 1) * perPage, page * perPage).map((inst) => ({
      id: inst.id,
      account: { login: inst.login, id: inst.id * 10, type: inst.type },
      target_type: inst.type,
      app_id: Number(opts.appId),
      suspended_at: inst.suspended_at,
    }));
    return [200, { total_count: all.length, installations }];
  }

  if (segs[0] === 'app' && segs[1] === 'installations') {
    const why = verifyJwt(token, opts.publicKey, opts.appId);
    if (why) return err(401, `A JSON web token could not be decoded (${why})`);
    const inst = state.installations.get(Number(segs[2]));
    if (!inst) return err(404, 'Not Found');
    if (method === 'GET' && segs.length === 3) {
      return [200, { id: inst.id, account: { login: inst.login, id: inst.id * 10, type: inst.type }, target_type: inst.type, app_id: Number(opts.appId), suspended_at: inst.suspended_at, permissions: { contents: 'write', metadata: 'read' } }];
    }
    if (method === 'POST' && segs[3] === 'access_tokens') {
      if (inst.suspended_at) return err(403, 'This installation has been suspended');
      const t = `ghs_${randomUUID().replace(/-/g, '')}`;
      const expires = Date.now() + 3600_000;
      state.tokens.set(t, { installation: inst.id, expires });
      return [201, { token: t, expires_at: new Date(expires).toISOString().replace(/\.\d+Z$/, 'Z'), permissions: { contents: 'write' }, repository_selection: 'selected' }];
    }
    return err(404, 'Not Found');
  }

  const tok = state.tokens.get(token);
  if (!tok || tok.expires < Date.now()) return err(401, 'Bad credentials');
  const inst = state.installations.get(tok.installation);
  if (!inst) return err(401, 'Bad credentials');
  // Primary rate limit per installation, in hourly windows.
  const nowSecs = Math.floor(Date.now() / 1000);
  let win = state.remaining.get(inst.id);
  if (!win || win.reset <= nowSecs) win = { left: RATE_LIMIT, reset: nowSecs + 3600 };
  win.left -= 1;
  state.remaining.set(inst.id, win);
  const { left, reset } = win;
  const rl = { 'x-ratelimit-limit': String(RATE_LIMIT), 'x-ratelimit-remaining': String(Math.max(0, left)), 'x-ratelimit-reset': String(reset), 'x-ratelimit-resource': 'core' };
  if (left < 0) return err(403, 'API rate limit exceeded for installation.', rl);
  const ok = (status, doc) => [status, doc, rl];

  if (segs[0] === 'orgs' && segs[2] === 'repos' && method === 'POST') {
    const b = json();
    if (!b || !b.name) return err(422, 'Validation Failed', rl);
    if (inst.type !== 'Organization' || inst.login.toLowerCase() !== segs[1].toLowerCase()) return err(403, 'Resource not accessible by integration', rl);
    const key = `${inst.login}/${b.name}`.toLowerCase();
    if (state.repos.has(key)) return err(422, 'Repository creation failed: name already exists on this account', rl);
    const repo = { id: ++state.repoSeq, owner: inst.login, ownerType: inst.type, name: b.name, private: b.private !== false, installation: inst.id, default_branch: 'main', refs: new Map() };
    state.repos.set(key, repo);
    return ok(201, repoJson(repo));
  }
  if (segs[0] !== 'repos' || segs.length < 3) return err(404, 'Not Found', rl);
  const repo = state.repos.get(repoKey);
  if (!repo || repo.installation !== inst.id) return err(404, 'Not Found', rl);
  const rest = segs.slice(3);
  const empty = repo.refs.size === 0;
  const is = (m, ...p) => method === m && p.every((x, i) => x === '*' || rest[i] === x);

  if (is('GET') && rest.length === 0) return ok(200, repoJson(repo));

  if (is('PUT', 'contents')) {
    const b = json();
    const path = rest.slice(1).join('/');
    if (!b || typeof b.content !== 'string' || typeof b.message !== 'string' || !path) return err(422, 'Invalid request.', rl);
    const branch = b.branch || repo.default_branch;
    const head = repo.refs.get(branch);
    if (head && treeOf(state, head).has(path) && !b.sha) return err(422, 'Invalid request.\n\n"sha" wasn\'t supplied.', rl);
    if (!head && !empty) return err(404, `Branch ${branch} not found`, rl);
    const buf = Buffer.from(b.content, 'base64');
    const author = b.author ? { ...b.author, date: b.author.date || new Date().toISOString() } : undefined;
    const { before, after } = outsideCommit(state, repo, branch, { [path]: buf }, { message: b.message, author });
    const sha = gitBlobSha(buf);
    const c = state.commits.get(after);
    hookPush(state, repo, branch, before, after);
    return ok(201, { content: { name: path.split('/').pop(), path, sha, size: buf.length }, commit: { sha: after, tree: { sha: c.tree }, parents: c.parents.map((p) => ({ sha: p })), message: c.message } });
  }
  if (empty && rest[0] === 'git') return err(409, 'Git Repository is empty.', rl);

  if (is('GET', 'git', 'ref', 'heads')) {
    const branch = rest.slice(3).join('/');
    const sha = repo.refs.get(branch);
    if (!sha) return err(404, 'Not Found', rl);
    return ok(200, { ref: `refs/heads/${branch}`, node_id: 'REF', object: { sha, type: 'commit' } });
  }
  if (is('GET', 'git', 'commits', '*')) {
    const c = state.commits.get(rest[2]);
    if (!c) return err(404, 'Not Found', rl);
    return ok(200, { sha: rest[2], tree: { sha: c.tree }, parents: c.parents.map((p) => ({ sha: p })), message: c.message, author: c.author, committer: c.committer });
  }
  if (is('GET', 'git', 'trees', '*')) {
    const t = state.trees.get(rest[2]);
    if (!t) return err(404, 'Not Found', rl);
    const recursive = url.searchParams.has('recursive');
    const out = [];
    const dirs = new Set();
    for (const [p, e] of t) {
      const parts = p.split('/');
      for (let i = 1; i < parts.length; i++) dirs.add(parts.slice(0, i).join('/'));
      if (!recursive && parts.length > 1) continue;
      const isLink = e.mode === '160000';
      out.push({ path: p, mode: e.mode, type: isLink ? 'commit' : 'blob', sha: e.sha, ...(isLink ? {} : { size: state.blobs.get(e.sha)?.length ?? 0 }) });
    }
    for (const d of dirs) if (recursive || !d.includes('/')) out.push({ path: d, mode: '040000', type: 'tree', sha: sha1('dir', rest[2], d) });
    out.sort((a, b) => (a.path < b.path ? -1 : 1));
    return ok(200, { sha: rest[2], tree: out, truncated: false });
  }
  if (is('GET', 'git', 'blobs', '*')) {
    const buf = state.blobs.get(rest[2]);
    if (!buf) return err(404, 'Not Found', rl);
    // GitHub wraps base64 at 60 characters.
    const b64 = buf.toString('base64').replace(/(.{60})/g, '$1\n');
    return ok(200, { sha: rest[2], size: buf.length, content: b64, encoding: 'base64' });
  }
  if (is('POST', 'git', 'blobs')) {
    const b = json();
    if (!b || typeof b.content !== 'string') return err(422, 'Invalid request.', rl);
    const buf = b.encoding === 'base64' ? Buffer.from(b.content, 'base64') : Buffer.from(b.content, 'utf8');
    const sha = gitBlobSha(buf);
    state.blobs.set(sha, buf);
    return ok(201, { sha, url: `/repos/${repo.owner}/${repo.name}/git/blobs/${sha}` });
  }
  if (is('POST', 'git', 'trees')) {
    const b = json();
    if (!b || !Array.isArray(b.tree)) return err(422, 'Invalid tree', rl);
    let entries = new Map();
    if (b.base_tree) {
      const base = state.trees.get(b.base_tree);
      if (!base) return err(422, 'base_tree is not a valid tree', rl);
      entries = new Map(base);
    }
    for (const e of b.tree) {
      if (typeof e.path !== 'string' || !e.path || e.path.startsWith('/') || e.path.split('/').some((s) => s === '' || s === '.' || s === '..')) {
        return err(422, `tree.path contains a malformed path component`, rl);
      }
      if (!['100644', '100755', '120000', '160000', '040000'].includes(e.mode)) return err(422, `tree.mode ${e.mode} is invalid`, rl);
      if (e.sha === null) {
        if (!entries.has(e.path)) return err(422, `GitRPC::BadObjectState: ${e.path} is not in the base tree`, rl);
        entries.delete(e.path);
        continue;
      }
      if (!state.blobs.has(e.sha)) return err(422, `tree.sha ${e.sha} is not a valid blob`, rl);
      entries.set(e.path, { mode: e.mode, sha: e.sha });
    }
    const sha = putTree(state, entries);
    return ok(201, { sha, truncated: false });
  }
  if (is('POST', 'git', 'commits')) {
    const b = json();
    if (!b || typeof b.message !== 'string' || !state.trees.has(b.tree)) return err(422, 'Invalid tree or message', rl);
    const parents = Array.isArray(b.parents) ? b.parents : [];
    for (const p of parents) if (!state.commits.has(p)) return err(422, `Parent ${p} does not exist`, rl);
    const author = b.author && b.author.name && b.author.email ? { ...b.author, date: b.author.date || new Date().toISOString() } : undefined;
    const sha = putCommit(state, { tree: b.tree, parents, message: b.message, author });
    return ok(201, { sha, tree: { sha: b.tree }, parents: parents.map((p) => ({ sha: p })), message: b.message, author: state.commits.get(sha).author });
  }
  if (is('PATCH', 'git', 'refs', 'heads')) {
    const b = json();
    const branch = rest.slice(3).join('/');
    // Someone else pushed just before us.
    const race = state.races.findIndex((r) => r.repo === repoKey && r.branch === branch);
    if (race >= 0) {
      const [r] = state.races.splice(race, 1);
      const { before, after } = outsideCommit(state, repo, branch, r.files, { message: 'Concurrent outside change' });
      hookPush(state, repo, branch, before, after);
    }
    const cur = repo.refs.get(branch);
    if (!cur) return err(422, 'Reference does not exist', rl);
    if (!b || !state.commits.has(b.sha)) return err(422, 'Object does not exist', rl);
    if (!b.force && !isAncestor(state, cur, b.sha)) return err(422, 'Update is not a fast forward', rl);
    repo.refs.set(branch, b.sha);
    hookPush(state, repo, branch, cur, b.sha);
    return ok(200, { ref: `refs/heads/${branch}`, object: { sha: b.sha, type: 'commit' } });
  }
  if (is('POST', 'git', 'refs')) {
    const b = json();
    const branch = typeof b?.ref === 'string' && b.ref.startsWith('refs/heads/') ? b.ref.slice('refs/heads/'.length) : null;
    if (!branch || !state.commits.has(b.sha)) return err(422, 'Invalid ref or sha', rl);
    if (repo.refs.has(branch)) return err(422, 'Reference already exists', rl);
    repo.refs.set(branch, b.sha);
    hookPush(state, repo, branch, null, b.sha);
    return ok(201, { ref: b.ref, object: { sha: b.sha, type: 'commit' } });
  }
  return err(404, 'Not Found', rl);
}

const escapeHtml = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function isAncestor(state, ancestor, of) {
  const seen = new Set();
  const todo = [of];
  while (todo.length) {
    const c = todo.pop();
    if (c === ancestor) return true;
    if (seen.has(c)) continue;
    seen.add(c);
    todo.push(...(state.commits.get(c)?.parents || []));
  }
  return false;
}

/** GitHub tells the hook about every ref change, the server's own pushes included. */
function hookPush(state, repo, branch, before, after) {
  if (!state.hook.url) return;
  const payload = pushPayload(state, repo, branch, before, after, { name: 'everjust[bot]', email: 'bot@everjust.test' });
  setTimeout(() => deliver(state, { event: 'push', payload }), 5);
}

export async function startGithubFake({
  port = Number(process.env.GITHUB_FAKE_PORT || 8792),
  appId = process.env.GITHUB_FAKE_APP_ID || DEFAULT_APP_ID,
  keyFile = process.env.GITHUB_FAKE_APP_KEY_FILE || DEFAULT_KEY_FILE,
  secret = process.env.GITHUB_FAKE_WEBHOOK_SECRET || DEFAULT_SECRET,
  clientId = process.env.GITHUB_FAKE_CLIENT_ID || DEFAULT_CLIENT_ID,
  clientSecret = process.env.GITHUB_FAKE_CLIENT_SECRET || DEFAULT_CLIENT_SECRET,
  hookUrl,
} = {}) {
  const publicKey = createPublicKey(createPrivateKey(readFileSync(keyFile)));
  const state = newState();
  state.hook.secret = secret;
  state.defaultSecret = secret;
  if (hookUrl) state.hook.url = hookUrl;
  const opts = { publicKey, appId, clientId, clientSecret };
  const server = http.createServer(async (req, res) => {
    try {
      const url = new URL(req.url, 'http://127.0.0.1');
      const body = await readBody(req);
      const [status, doc, headers = {}] = await route(state, opts, req, url, body);
      // A page (GitHub's, for a browser) is text; the rest JSON.
      const out = status === 204 ? Buffer.alloc(0) : Buffer.from(typeof doc === 'string' ? doc : JSON.stringify(doc));
      res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': String(out.length), 'x-github-request-id': randomUUID(), ...headers });
      res.end(out);
    } catch (e) {
      res.writeHead(500, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ message: `fake error: ${e.message}` }));
    }
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, '127.0.0.1', resolve);
  });
  const actual = server.address().port;
  return {
    url: `http://127.0.0.1:${actual}`,
    port: actual,
    state,
    close: () => new Promise((r) => server.close(r)),
  };
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const fake = await startGithubFake();
  console.log(`github fake on ${fake.url}`);
  const stop = () => fake.close().then(() => process.exit(0));
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}
