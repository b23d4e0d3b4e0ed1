// GitHub two-way sync end to end against the GitHub fake (tests/fakes/github.mjs). The server must run
// with GITHUB_APP_ID=4242, GITHUB_APP_PRIVATE_KEY = tests/fakes/github-app-test-key.pem (test-only),
// GITHUB_WEBHOOK_SECRET = the fake's (GITHUB_FAKE_WEBHOOK_SECRET, default github-fake-webhook-secret)
// and GITHUB_API_URL = the fake's address (GITHUB_FAKE_URL, default http://127.0.0.1:8792).
// Without a fake or a configured server the tests skip, saying why.
//
// Covered: linking an installation (checked with GitHub), connect (first commit of an empty
// repository), an agent run's files committed with the right tree, an outside push coming back by
// webhook (answered at once, applied after), a change on both sides (conflict branch, then resolve),
// a non-fast-forward retried, replayed and badly signed deliveries, pushes elsewhere ignored, files
// that break our rules skipped and reported, GitHub down or rate-limited.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { before, describe, test } from 'node:test';

import { BASE_URL, createProject, del, expectJson, expectProblem, get, listFiles, newUser, post, putFile } from './lib/client.mjs';
import { newSession, sendMessage, waitFor } from './lib/chat.mjs';
import { openApiDocument } from './lib/openapi.mjs';

const FAKE = (process.env.GITHUB_FAKE_URL || `http://127.0.0.1:${process.env.GITHUB_FAKE_PORT || 8792}`).replace(/\/+$/, '');
const HOOK = `${BASE_URL}/webhooks/github`;

async function fake(method, path, body) {
  const res = await fetch(`${FAKE}${path}`, {
    method,
    headers: body ? { 'content-type': 'application/json' } : {},
    body: body ? JSON.stringify(body) : undefined,
    signal: AbortSignal.timeout(60_000),
  });
  const text = await res.text();
  let json = null;
  try {
    json = JSON.parse(text);
  } catch {}
  return { status: res.status, json, text };
}

// What the OpenAPI document says the GitHub routes answer; the answers below are checked against it.
const api = await openApiDocument();

// Is there a fake, and is the server configured for it?
let skip = false;
try {
  const h = await fetch(`${FAKE}/health`, { signal: AbortSignal.timeout(3000) });
  if (!h.ok) skip = `the GitHub fake at ${FAKE} answers ${h.status}`;
} catch {
  skip = `no GitHub fake at ${FAKE} (start tests/fakes/github.mjs)`;
}
if (!skip) {
  const probe = await post('/webhooks/github', { zen: 'probe' }, { headers: { 'x-github-event': 'ping', 'x-github-delivery': `probe-${Date.now()}` } });
  if (probe.status === 503) skip = 'the server has no GitHub App configured (GITHUB_APP_ID, ...)';
}

let seq = Number(BigInt(`0x${randomBytes(4).toString('hex')}`) % 1_000_000n) * 100;
const nonce = () => randomBytes(4).toString('hex');

/**
 * A user with a linked installation on a fresh account (an organisation by default), a project and an
 * empty repository `site` of that installation: { user, token, installation, owner, project }.
 */
/**
 * The OAuth code GitHub would send the App's callback URL for a user who reaches `installations` and
 * controls `controls` (by default the same).
 */
async function oauthCode(installations, controls = installations) {
  const r = await fake('POST', '/_fake/oauth-codes', { installations, controls });
  assert.equal(r.status, 201);
  return r.json.code;
}

/** The state a user sends to GitHub to start a link (`POST /v1/github/link-state`). */
async function linkState(token) {
  const started = expectJson(await post('/v1/github/link-state', {}, { token }), 200);
  api.answers('post', '/v1/github/link-state', 200, started);
  return started.state;
}

/** `POST /v1/github/installations` with a state the caller started. */
const linkInstallation = async (body, opts) => post('/v1/github/installations', { ...body, state: await linkState(opts.token) }, opts);

async function setup({ type = 'Organization', files } = {}) {
  const installation = ++seq;
  const owner = `e2e-${nonce()}`;
  assert.equal((await fake('POST', '/_fake/installations', { id: installation, login: owner, type })).status, 201);
  assert.equal((await fake('POST', '/_fake/repos', { installation, owner, name: 'site', files })).status, 201);
  const user = await newUser('github');
  const linked = await linkInstallation({ installation_id: installation, code: await oauthCode([installation]) }, { token: user.access });
  api.answers('post', '/v1/github/installations', 201, expectJson(linked, 201));
  api.answers('get', '/v1/github/installations', 200, expectJson(await get('/v1/github/installations', { token: user.access }), 200));
  const project = await createProject(user.access);
  return { user, token: user.access, installation, owner, project };
}

async function connect(ctx, extra = {}) {
  const res = await post(`/v1/projects/${ctx.project.id}/github`, { installation_id: ctx.installation, repository: `${ctx.owner}/site`, ...extra }, { token: ctx.token });
  const made = expectJson(res, 201);
  api.answers('post', '/v1/projects/{id}/github', 201, made);
  return made;
}

/** Waits until the server has stopped calling GitHub about the repository for 600 ms: the webhook of
 *  the connect's own commit is handled in the background, and a test that changes the repository
 *  behind the server's back must not race that work. */
async function settle(ctx) {
  let last = -1;
  let quietSince = Date.now();
  const deadline = Date.now() + 15_000;
  while (Date.now() < deadline) {
    const total = (await fake('GET', `/_fake/calls?repo=${ctx.owner}/site`)).json.total;
    if (total !== last) {
      last = total;
      quietSince = Date.now();
    } else if (Date.now() - quietSince >= 600) {
      return;
    }
    await new Promise((res) => setTimeout(res, 100));
  }
}

async function projectFiles(ctx) {
  const out = {};
  for (const path of (await listFiles(ctx.token, ctx.project.id)).keys()) {
    const res = await get(`/v1/projects/${ctx.project.id}/files/${path.split('/').map(encodeURIComponent).join('/')}`, { token: ctx.token });
    out[path] = res.body.toString('utf8');
  }
  return out;
}

const repo = async (ctx, ref) => (await fake('GET', `/_fake/repos/${ctx.owner}/site${ref ? `?ref=${encodeURIComponent(ref)}` : ''}`)).json;
const link = async (ctx) => {
  const l = expectJson(await get(`/v1/projects/${ctx.project.id}/github`, { token: ctx.token }), 200);
  api.answers('get', '/v1/projects/{id}/github', 200, l);
  return l;
};
const push = (ctx, body = {}) => post(`/v1/projects/${ctx.project.id}/github/push`, body, { token: ctx.token });
/** An outside push to the repository, delivered to the server as GitHub would. */
const outsidePush = async (ctx, files, extra = {}) => {
  const r = await fake('POST', '/_fake/push', { owner: ctx.owner, name: 'site', files, url: HOOK, ...extra });
  assert.equal(r.status, 200, r.text);
  return r.json;
};

describe('GitHub sync', { skip }, () => {
  before(async () => {
    // GitHub tells the hook about every push, the server's own too (which it must ignore).
    await fake('POST', '/_fake/hooks', { url: HOOK });
  });

  test('connect: the first commit of an empty repository, then an agent run committed with the right tree', async () => {
    const ctx = await setup();
    expectJson(await putFile(ctx.token, ctx.project.id, 'README.md', '# hello\n'), 201);
    expectJson(await putFile(ctx.token, ctx.project.id, 'src/app.js', 'console.log("hi")\n'), 201);
    const linked = await connect(ctx);
    assert.equal(linked.repository, `${ctx.owner}/site`);
    assert.equal(linked.branch, 'main');
    assert.equal(linked.sync.status, 'ok', JSON.stringify(linked.sync));
    let r = await repo(ctx);
    assert.deepEqual(r.files, { 'README.md': '# hello\n', 'src/app.js': 'console.log("hi")\n' });
    assert.equal(linked.last_synced_commit, r.head);
    const first = r.head;

    // An agent run writes a file (the model fake's tool call, or the demo model's index.html).
    const session = await newSession(ctx.token, ctx.project.id);
    const run = await sendMessage(ctx.token, session.id, `Write the page [scenario:tool-fragments:page.html] ${nonce()}`);
    assert.equal(run.status, 200);
    const local = await projectFiles(ctx);
    assert.ok(Object.keys(local).length >= 3, `the run wrote a file: ${Object.keys(local)}`);
    r = await waitFor('the run commit in the fake', async () => {
      const now = await repo(ctx);
      return now.head !== first && JSON.stringify(now.files) === JSON.stringify(Object.fromEntries(Object.entries(local).sort())) ? now : null;
    }, { timeoutMs: 30_000 });
    const commit = (await fake('GET', `/_fake/commits/${r.head}`)).json;
    assert.deepEqual(commit.parents, [first], 'one commit on top of the last one');
    assert.match(commit.message, /EverJust-Run: run_/);
    // Its push webhook came back and was recognised as ours: nothing changes.
    await new Promise((res) => setTimeout(res, 1000));
    assert.deepEqual(await projectFiles(ctx), local);
  });

  test('a run ends, and its session takes the next message, while its files are still being committed', async () => {
    const ctx = await setup();
    expectJson(await putFile(ctx.token, ctx.project.id, 'README.md', '# hi\n'), 201);
    await connect(ctx);
    await settle(ctx);
    const before = (await repo(ctx)).head;
    const session = await newSession(ctx.token, ctx.project.id);
    // The commit's first call to the repository answers after 5 s.
    await fake('POST', '/_fake/fail', { path: `/repos/${ctx.owner}/site`, delay_ms: 5000, times: 1 });
    const t0 = Date.now();
    const run = await sendMessage(ctx.token, session.id, `Write the page [scenario:tool-fragments:page.html] ${nonce()}`);
    const took = Date.now() - t0;
    assert.equal(run.status, 200);
    assert.ok(took < 4000, `the run's stream ended without waiting for the commit: ${took} ms`);
    const next = await sendMessage(ctx.token, session.id, `And now? ${nonce()}`);
    assert.equal(next.status, 200, 'the next message is not refused as a run in progress');
    await waitFor('the run commit in the fake', async () => {
      const now = await repo(ctx);
      return now.head !== before && 'page.html' in now.files ? now : null;
    }, { timeoutMs: 30_000 });
  });

  test('an outside push comes back by webhook: answered at once, the files applied after', async () => {
    const ctx = await setup();
    expectJson(await putFile(ctx.token, ctx.project.id, 'a.txt', 'a1'), 201);
    expectJson(await putFile(ctx.token, ctx.project.id, 'gone.txt', 'bye'), 201);
    await connect(ctx);
    await settle(ctx);
    const pushed = await outsidePush(ctx, { 'a.txt': 'a2', 'docs/new.md': 'new ✓', 'gone.txt': null });
    assert.equal(pushed.delivery.status, 202, pushed.delivery.body);
    const files = await waitFor('the outside push in the project', async () => {
      const f = await projectFiles(ctx);
      return f['a.txt'] === 'a2' && f['docs/new.md'] === 'new ✓' && !('gone.txt' in f) ? f : null;
    });
    assert.deepEqual(files, { 'a.txt': 'a2', 'docs/new.md': 'new ✓' });
    const l = await waitFor('the link to record the sync', async () => {
      const x = await link(ctx);
      return x.last_synced_commit === pushed.commit ? x : null;
    });
    assert.deepEqual(l.last_report.pulled.sort(), ['a.txt', 'docs/new.md']);
    // The connect's own sync may be audited as a pull too, after this one: look for the outside one.
    // Its audit row is written once the sync is done, a round trip after the link above records it.
    const pullsNow = async () =>
      expectJson(await get('/v1/audit?limit=100', { token: ctx.token }), 200).items.filter((e) => e.action === 'github.pull');
    const byPusher = await waitFor('the outside push audited', async () => (await pullsNow()).some((e) => e.detail.by === 'github:octocat'), {
      timeoutMs: 5000,
      everyMs: 100,
    }).catch(() => false);
    assert.ok(byPusher, `the outside push is audited as a pull by its pusher: ${JSON.stringify((await pullsNow()).map((e) => e.detail.by))}`);
  });

  test('a replayed delivery changes nothing', async () => {
    const ctx = await setup();
    expectJson(await putFile(ctx.token, ctx.project.id, 'a.txt', 'a1'), 201);
    await connect(ctx);
    const id = `replay-${nonce()}`;
    const pushed = await outsidePush(ctx, { 'a.txt': 'a2' }, { delivery_id: id, return_payload: true });
    assert.equal(pushed.delivery.status, 202);
    await waitFor('the push applied', async () => (await projectFiles(ctx))['a.txt'] === 'a2');
    await waitFor('the delivery done', async () => (await link(ctx)).last_synced_commit === pushed.commit);
    // The repository moves on without a webhook, and the user edits: a replay must not touch either.
    await outsidePush(ctx, { 'later.txt': 'later' }, { deliver: false });
    expectJson(await putFile(ctx.token, ctx.project.id, 'a.txt', 'mine'), 200);
    const calls = (await fake('GET', `/_fake/calls?repo=${ctx.owner}/site`)).json.total;
    const again = (await fake('POST', '/_fake/deliver', { event: 'push', id, payload: pushed.delivery.payload, url: HOOK })).json;
    assert.equal(again.status, 200, again.body);
    assert.equal(JSON.parse(again.body).status, 'duplicate');
    api.answers('post', '/webhooks/github', 200, JSON.parse(again.body));
    await new Promise((res) => setTimeout(res, 1000));
    assert.deepEqual(await projectFiles(ctx), { 'a.txt': 'mine' });
    assert.equal((await fake('GET', `/_fake/calls?repo=${ctx.owner}/site`)).json.total, calls, 'GitHub was not asked anything');
  });

  test('the same file changed on both sides: ours on a conflict branch, reported, then resolved', async () => {
    const ctx = await setup();
    expectJson(await putFile(ctx.token, ctx.project.id, 'a.txt', 'base'), 201);
    expectJson(await putFile(ctx.token, ctx.project.id, 'b.txt', 'b'), 201);
    await connect(ctx);
    await settle(ctx);
    await outsidePush(ctx, { 'a.txt': 'theirs' }, { deliver: false });
    expectJson(await putFile(ctx.token, ctx.project.id, 'a.txt', 'ours'), 200);
    expectJson(await putFile(ctx.token, ctx.project.id, 'b.txt', 'b2'), 200);
    const res = await push(ctx);
    const p = expectProblem(res, 409, 'github_conflict');
    assert.deepEqual(p.conflicts, ['a.txt']);
    assert.match(p.conflict_branch, /^everjust\/conflict-/);
    assert.deepEqual((await repo(ctx)).files, { 'a.txt': 'theirs', 'b.txt': 'b2' });
    assert.equal((await repo(ctx, p.conflict_branch)).files['a.txt'], 'ours');
    assert.equal((await projectFiles(ctx))['a.txt'], 'ours', 'the project keeps ours');
    assert.deepEqual((await link(ctx)).conflict.paths, ['a.txt']);
    const ok = await push(ctx, { resolve: 'ours', message: 'Keep ours' });
    assert.equal(ok.status, 200, ok.text);
    api.answers('post', '/v1/projects/{id}/github/push', 200, ok.json);
    assert.equal((await repo(ctx)).files['a.txt'], 'ours');
    assert.equal((await link(ctx)).conflict, null);
  });

  test('a push that loses a race re-reads the branch and commits on top', async () => {
    const ctx = await setup();
    expectJson(await putFile(ctx.token, ctx.project.id, 'a.txt', 'a1'), 201);
    await connect(ctx);
    await fake('POST', '/_fake/race', { owner: ctx.owner, name: 'site', branch: 'main', files: { 'z.txt': 'elsewhere' } });
    expectJson(await putFile(ctx.token, ctx.project.id, 'a.txt', 'a2'), 200);
    const res = await push(ctx);
    const body = expectJson(res, 200);
    api.answers('post', '/v1/projects/{id}/github/push', 200, body);
    assert.equal(body.attempts, 2);
    assert.deepEqual((await repo(ctx)).files, { 'a.txt': 'a2', 'z.txt': 'elsewhere' });
    assert.equal((await projectFiles(ctx))['z.txt'], 'elsewhere');
  });

  test('unsigned, wrongly signed, sha1-only and altered deliveries are refused and change nothing', async () => {
    const ctx = await setup();
    expectJson(await putFile(ctx.token, ctx.project.id, 'a.txt', 'a1'), 201);
    await connect(ctx);
    await outsidePush(ctx, { 'a.txt': 'evil' }, { deliver: false });
    const payload = (await fake('POST', '/_fake/payload', { owner: ctx.owner, name: 'site' })).json;
    const id = `bad-${nonce()}`;
    for (const how of [{ signature: 'none' }, { signature: 'bad' }, { signature: 'sha1' }, { signature: 'good', alter: true }]) {
      const r = (await fake('POST', '/_fake/deliver', { event: 'push', id, payload, url: HOOK, ...how })).json;
      assert.equal(r.status, 401, `${JSON.stringify(how)}: ${r.body}`);
      assert.equal(JSON.parse(r.body).code, 'invalid_signature');
    }
    await new Promise((res) => setTimeout(res, 500));
    assert.equal((await projectFiles(ctx))['a.txt'], 'a1');
    // Nothing was recorded: the same delivery id, signed, is processed.
    const good = (await fake('POST', '/_fake/deliver', { event: 'push', id, payload, url: HOOK })).json;
    assert.equal(good.status, 202, good.body);
    api.answers('post', '/webhooks/github', 202, JSON.parse(good.body));
    await waitFor('the signed delivery applied', async () => (await projectFiles(ctx))['a.txt'] === 'evil');
  });

  test('pushes to another branch or an unknown repository are answered and ignored', async () => {
    const ctx = await setup();
    expectJson(await putFile(ctx.token, ctx.project.id, 'a.txt', 'a1'), 201);
    await connect(ctx);
    const other = await outsidePush(ctx, { 'a.txt': 'feature' }, { branch: 'feature' });
    assert.equal(other.delivery.status, 202);
    const unknown = `e2e-${nonce()}`;
    await fake('POST', '/_fake/installations', { id: ++seq, login: unknown, type: 'User' });
    await fake('POST', '/_fake/repos', { installation: seq, owner: unknown, name: 'elsewhere' });
    const r = await fake('POST', '/_fake/push', { owner: unknown, name: 'elsewhere', files: { 'a.txt': 'x' }, url: HOOK });
    assert.ok(r.json.delivery.status >= 200 && r.json.delivery.status < 300, r.json.delivery.body);
    await new Promise((res) => setTimeout(res, 1000));
    assert.deepEqual(await projectFiles(ctx), { 'a.txt': 'a1' });
  });

  test('files that break our path or size rules are skipped and reported; the rest is applied', async () => {
    const ctx = await setup();
    const me = expectJson(await get('/v1/me', { token: ctx.token }), 200);
    const max = me.limits.max_file_bytes;
    expectJson(await putFile(ctx.token, ctx.project.id, 'a.txt', 'a1'), 201);
    await connect(ctx);
    const deep = `${Array.from({ length: 40 }, (_, i) => `d${i}`).join('/')}/f.txt`;
    const pushed = await outsidePush(ctx, { 'ok.txt': 'fine', 'a.txt': 'a2', 'back\\slash.txt': 'no', [deep]: 'too deep', 'big.bin': 'x'.repeat(max + 1), link: 'ok.txt' }, { modes: { link: '120000' } });
    assert.equal(pushed.delivery.status, 202);
    const l = await waitFor('the sync report', async () => {
      const x = await link(ctx);
      return x.last_synced_commit === pushed.commit ? x : null;
    });
    assert.deepEqual(await projectFiles(ctx), { 'a.txt': 'a2', 'ok.txt': 'fine' });
    const skipped = Object.fromEntries(l.last_report.skipped.map((s) => [s.path, s.code]));
    assert.deepEqual(skipped, { 'back\\slash.txt': 'invalid_path', [deep]: 'invalid_path', 'big.bin': 'file_too_large', link: 'unsupported_file' });
  });

  test('an installation that is not the user\'s is not linked', async () => {
    const ctx = await setup();
    const theirs = ++seq;
    await fake('POST', '/_fake/installations', { id: theirs, login: `e2e-${nonce()}`, type: 'Organization' });
    // Naming an installation (and its account) proves nothing: the code's GitHub user must reach it.
    expectProblem(await linkInstallation({ installation_id: theirs, code: await oauthCode([ctx.installation]) }, { token: ctx.token }), 403, 'github_installation_mismatch');
    expectProblem(await linkInstallation({ installation_id: 999_999_999, code: await oauthCode([]) }, { token: ctx.token }), 403, 'github_installation_mismatch');
    // Reaching it (a collaborator on one repository, a plain member) is not controlling it.
    expectProblem(await linkInstallation({ installation_id: theirs, code: await oauthCode([theirs], []) }, { token: ctx.token }), 403, 'github_installation_mismatch');
    expectProblem(await linkInstallation({ installation_id: theirs, account: `e2e-${nonce()}` }, { token: ctx.token }), 400, 'invalid_body');
    // A code works once, and a made-up one not at all.
    const code = await oauthCode([theirs]);
    const other = await newUser('github-other');
    const since = (await fake('GET', '/_fake/calls?since=0')).json.total;
    expectJson(await linkInstallation({ installation_id: theirs, code }, { token: other.access }), 201);
    // The user's GitHub token was revoked once used (after the answer).
    await waitFor('the user token revoked', async () => {
      const { calls } = (await fake('GET', `/_fake/calls?since=${since}`)).json;
      return calls.some((c) => c.method === 'DELETE' && c.path.startsWith('/applications/')) || null;
    });
    expectProblem(await linkInstallation({ installation_id: theirs, code }, { token: other.access }), 400, 'invalid_github_code');
    expectProblem(await linkInstallation({ installation_id: theirs, code: 'not a code' }, { token: other.access }), 400, 'invalid_github_code');
    const eve = await newUser('github-eve');
    // Held by another user: not found, whatever the code reaches.
    expectProblem(await linkInstallation({ installation_id: ctx.installation, code: await oauthCode([ctx.installation]) }, { token: eve.access }), 404, 'not_found');
    const evesProject = await createProject(eve.access);
    expectProblem(await post(`/v1/projects/${evesProject.id}/github`, { installation_id: ctx.installation, repository: `${ctx.owner}/site` }, { token: eve.access }), 404, 'not_found');
    assert.deepEqual(expectJson(await get('/v1/github/installations', { token: eve.access }), 200).items, []);
    expectProblem(await get(`/v1/projects/${evesProject.id}/github`, { token: eve.access }), 404, 'github_not_connected');
    // Nor can eve reach the owner's project.
    expectProblem(await post(`/v1/projects/${ctx.project.id}/github/push`, {}, { token: eve.access }), 404, 'not_found');
  });

  test('without an installation id (an App installed already), a link takes every installation the user controls', async () => {
    const user = await newUser('github-noid');
    const [own, admin, member] = [++seq, ++seq, ++seq];
    for (const id of [own, admin, member]) {
      assert.equal((await fake('POST', '/_fake/installations', { id, login: `e2e-${nonce()}`, type: 'Organization' })).status, 201);
    }
    const byId = (a, b) => a - b;
    const linked = expectJson(await linkInstallation({ code: await oauthCode([own, admin, member], [own, admin]) }, { token: user.access }), 201);
    api.answers('post', '/v1/github/installations', 201, linked);
    assert.deepEqual(linked.items.map((i) => i.installation_id).sort(byId), [own, admin].sort(byId));
    const listed = expectJson(await get('/v1/github/installations', { token: user.access }), 200).items;
    assert.deepEqual(listed.map((i) => i.installation_id).sort(byId), [own, admin].sort(byId));
    // None controlled: refused, nothing linked.
    const other = await newUser('github-noid-other');
    expectProblem(await linkInstallation({ code: await oauthCode([member], []) }, { token: other.access }), 403, 'github_installation_mismatch');
    // Only ones another user holds: not found.
    expectProblem(await linkInstallation({ code: await oauthCode([own]) }, { token: other.access }), 404, 'not_found');
    assert.deepEqual(expectJson(await get('/v1/github/installations', { token: other.access }), 200).items, []);
  });

  test('a link takes the state its caller started, so an attacker\'s callback link links nothing', async () => {
    const victim = await newUser('github-victim');
    const attacker = await newUser('github-attacker');
    const theirs = ++seq;
    await fake('POST', '/_fake/installations', { id: theirs, login: `e2e-${nonce()}`, type: 'Organization' });
    // The attacker's own code and state, in a callback link the victim opens.
    const code = await oauthCode([theirs]);
    const attackersState = await linkState(attacker.access);
    const since = (await fake('GET', '/_fake/calls?since=0')).json.total;
    for (const state of [attackersState, undefined, 'not-a-state', victim.access]) {
      const body = { installation_id: theirs, code, ...(state === undefined ? {} : { state }) };
      expectProblem(await post('/v1/github/installations', body, { token: victim.access }), 400, 'invalid_github_state');
    }
    assert.equal((await fake('GET', `/_fake/calls?since=${since}`)).json.calls.length, 0, 'GitHub was not asked');
    assert.deepEqual(expectJson(await get('/v1/github/installations', { token: victim.access }), 200).items, []);
    // The attacker's own link, with the attacker's state, works.
    expectJson(await post('/v1/github/installations', { installation_id: theirs, code, state: attackersState }, { token: attacker.access }), 201);
  });

  test('a personal account cannot get a repository created; an organisation can', async () => {
    const personal = await setup({ type: 'User' });
    expectProblem(await post(`/v1/projects/${personal.project.id}/github`, { installation_id: personal.installation, repository: 'brand-new' }, { token: personal.token }), 422, 'github_cannot_create');
    const org = await setup();
    expectJson(await putFile(org.token, org.project.id, 'index.html', '<p>x</p>'), 201);
    const made = expectJson(await post(`/v1/projects/${org.project.id}/github`, { installation_id: org.installation, repository: 'brand-new' }, { token: org.token }), 201);
    api.answers('post', '/v1/projects/{id}/github', 201, made);
    assert.equal(made.repository, `${org.owner}/brand-new`);
    assert.deepEqual((await fake('GET', `/_fake/repos/${org.owner}/brand-new`)).json.files, { 'index.html': '<p>x</p>' });
  });

  test('GitHub down or rate-limited: a clear error, nothing changed, fine afterwards', async () => {
    const ctx = await setup();
    expectJson(await putFile(ctx.token, ctx.project.id, 'a.txt', 'a1'), 201);
    await connect(ctx);
    await outsidePush(ctx, { 'b.txt': 'theirs' }, { deliver: false });
    expectJson(await putFile(ctx.token, ctx.project.id, 'a.txt', 'a2'), 200);
    const before = await projectFiles(ctx);
    const head = (await repo(ctx)).head;
    await fake('POST', '/_fake/fail', { path: `/repos/${ctx.owner}/site/`, status: 503, times: 4 });
    const down = await push(ctx);
    expectProblem(down, 503, 'github_unavailable');
    assert.deepEqual(await projectFiles(ctx), before);
    assert.equal((await repo(ctx)).head, head);
    await fake('POST', '/_fake/clear-failures');
    await fake('POST', '/_fake/fail', { path: `/repos/${ctx.owner}/site/`, status: 403, headers: { 'retry-after': '2' }, body: { message: 'You have exceeded a secondary rate limit.' } });
    const limited = await push(ctx);
    expectProblem(limited, 429, 'github_rate_limited');
    assert.equal(limited.headers['retry-after'], '2');
    assert.deepEqual(await projectFiles(ctx), before);
    await new Promise((res) => setTimeout(res, 2500));
    const ok = expectJson(await push(ctx), 200);
    assert.deepEqual(ok.pulled, ['b.txt']);
    assert.deepEqual((await repo(ctx)).files, { 'a.txt': 'a2', 'b.txt': 'theirs' });
  });

  test('disconnect forgets the link; push then says so', async () => {
    const ctx = await setup();
    await connect(ctx);
    assert.equal((await del(`/v1/projects/${ctx.project.id}/github`, { token: ctx.token })).status, 204);
    expectProblem(await push(ctx), 409, 'github_not_connected');
  });
});
