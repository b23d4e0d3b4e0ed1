// The GitHub screens in Chromium against a running server (BASE_URL) whose GitHub App is the fake
// tests/fakes/github.mjs (GITHUB_FAKE_URL; run.sh starts and configures both, with the App's slug):
// "Link GitHub" on the account page goes to the App's install page at the fake (install_url), which
// installs the App and sends the browser back with installation_id, code and state; the installation is listed; a project is
// connected to a repository of it from the project page, pushed, and the commits are checked in the
// fake's repository. A redirect back with a state this tab did not send is refused, visibly, and
// links nothing. Skipped when there is no fake or the server has no GitHub App configured.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';

import { BASE_URL, PASSWORD, api, apiUser, createProject, launch, newPage, signUp } from './lib.mjs';

const FAKE = (process.env.GITHUB_FAKE_URL || '').replace(/\/+$/, '');
const CALLBACK = `${BASE_URL}/`;
let browser;
let off = '';
let seq = Number(BigInt(`0x${randomBytes(4).toString('hex')}`) % 1_000_000n) * 100 + 7_000_000;
const nonce = () => randomBytes(4).toString('hex');

async function fake(method, path, body) {
  const res = await fetch(`${FAKE}${path}`, {
    method,
    headers: body ? { 'content-type': 'application/json' } : {},
    body: body ? JSON.stringify(body) : undefined,
    signal: AbortSignal.timeout(30_000),
  });
  const text = await res.text();
  let doc = null;
  try {
    doc = JSON.parse(text);
  } catch {
    doc = text;
  }
  return { status: res.status, doc };
}

before(async () => {
  if (!FAKE) {
    off = 'GITHUB_FAKE_URL (tests/fakes/github.mjs, the server’s GitHub App) is not set';
  } else {
    try {
      const h = await fetch(`${FAKE}/health`, { signal: AbortSignal.timeout(3000) });
      if (!h.ok) off = `the GitHub fake at ${FAKE} answers ${h.status}`;
    } catch {
      off = `no GitHub fake at ${FAKE}`;
    }
  }
  if (!off) {
    const u = await apiUser('gh-probe');
    const r = await api('/v1/github/link-state', { method: 'POST', token: u.token, json: {} });
    if (r.status !== 200) off = `the server cannot link GitHub installations (${r.status} ${r.doc && r.doc.code}): set GITHUB_APP_ID, GITHUB_CLIENT_ID, ... (tests/browser/run.sh does)`;
    else if (!r.doc.authorize_url.startsWith(`${FAKE}/`)) off = `the server's GITHUB_OAUTH_URL is not the fake at ${FAKE} (${r.doc.authorize_url})`;
  }
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

/** A new installation of the App on a fresh personal account, which the browser's GitHub user installs. */
async function installation() {
  const id = ++seq;
  const owner = `web-${nonce()}`;
  assert.equal((await fake('POST', '/_fake/installations', { id, login: owner, type: 'User' })).status, 201);
  return { id, owner };
}

/** Every request the page sends to `path` (method and path). */
function recordRequests(page, pattern) {
  const seen = [];
  page.on('request', (r) => {
    const u = new URL(r.url());
    if (u.origin === BASE_URL && pattern.test(u.pathname)) seen.push(`${r.method()} ${u.pathname}`);
  });
  return seen;
}

/** An access token for the page's account, for API checks. */
async function token(page) {
  const email = await page.locator('#account .email').textContent();
  const r = await api('/v1/auth/login', { method: 'POST', json: { email, password: PASSWORD } });
  assert.equal(r.status, 200, JSON.stringify(r.doc));
  return r.doc.access_token;
}

const repoState = async (owner, name) => (await fake('GET', `/_fake/repos/${owner}/${name}`)).doc;

describe('GitHub', () => {
  test('link GitHub, see the installation, connect a project to a repository, push: the commits reach GitHub', async (t) => {
    if (off) return t.skip(off);
    const { context, page } = await newPage(browser, { width: 1280, height: 900 });
    const links = recordRequests(page, /^\/v1\/github\/installations$/);
    await signUp(page);
    const inst = await installation();
    // The GitHub user in this browser installs the App on their own account, and authorizes it.
    await fake('POST', '/_fake/browser', { install: inst.id, installations: [inst.id], callback_url: CALLBACK });

    // --- account page: nothing linked, then "Link GitHub" goes to GitHub and back
    await page.getByRole('link', { name: 'Account' }).click();
    const section = page.getByRole('region', { name: 'GitHub' });
    await section.getByText('No GitHub installation linked yet.').waitFor();
    await section.getByRole('button', { name: 'Link GitHub' }).click();
    const item = section.locator(`.installation[data-installation-id="${inst.id}"]`);
    await item.waitFor({ timeout: 20000 });
    assert.match(await item.textContent(), new RegExp(inst.owner));
    assert.match(await item.textContent(), /personal account/);
    await section.getByText(`Linked ${inst.owner}`).waitFor();
    // GitHub was given the state the server made, and it came back with the installation.
    const visits = (await fake('GET', '/_fake/authorizations')).doc.authorizations;
    const visit = visits.at(-1);
    assert.equal(visit.page, 'install', 'the App\'s install page (install_url)');
    assert.equal(visit.app, 'everjust-test', 'the App the server named (GITHUB_APP_SLUG)');
    assert.ok(visit.state && visit.state.length > 20, JSON.stringify(visit));
    assert.match(visit.redirect, new RegExp(`installation_id=${inst.id}`));
    // The code and state are gone from the address bar, and the tab's pending state is spent.
    assert.equal(new URL(page.url()).search, '');
    assert.equal(new URL(page.url()).hash, '#/account');
    assert.equal(await page.evaluate(() => sessionStorage.getItem('everjust.github')), null);
    assert.ok(!(await page.evaluate(() => location.href)).includes('code='));
    assert.deepEqual(links.filter((l) => l.startsWith('POST')), ['POST /v1/github/installations']);
    const tok = await token(page);
    const listed = await api('/v1/github/installations', { token: tok });
    assert.deepEqual(listed.doc.items.map((i) => [i.installation_id, i.account]), [[inst.id, inst.owner]]);
    // A reload lists what the server has.
    await page.reload();
    await item.waitFor();

    // --- project page: connect a repository of that installation
    await page.goto('/#/');
    const projectId = await createProject(page, 'Otter site', 'Static HTML');
    const toggle = page.getByRole('button', { name: 'GitHub', exact: true });
    await toggle.click();
    assert.equal(await toggle.getAttribute('aria-expanded'), 'true');
    const panel = page.getByRole('region', { name: 'GitHub' });
    const account = panel.getByLabel('GitHub account');
    await account.waitFor();
    assert.equal(await account.inputValue(), String(inst.id));
    const repository = panel.getByLabel('Repository');
    assert.equal(await repository.inputValue(), 'otter-site', 'the repository name is suggested from the project name');

    // A repository that does not exist on a personal account: the server's problem is shown.
    await repository.fill('no-such-repo');
    await panel.getByRole('button', { name: 'Connect repository' }).click();
    const alert = panel.locator('.github-connect [role="alert"]');
    await alert.and(page.locator(':not([hidden])')).waitFor();
    assert.match(await alert.textContent(), /cannot create repositories on a personal account/);
    assert.match(await alert.textContent(), /github_cannot_create/);

    // The user creates it on GitHub (empty) and connects it: the first sync commits the files.
    assert.equal((await fake('POST', '/_fake/repos', { installation: inst.id, owner: inst.owner, name: 'otter-site' })).status, 201);
    await repository.fill('otter-site');
    await panel.getByRole('button', { name: 'Connect repository' }).click();
    await panel.locator('.github-repo').waitFor({ timeout: 30000 });
    assert.equal(await panel.locator('.github-repo').textContent(), `${inst.owner}/otter-site`);
    const note = panel.locator('.notice');
    assert.match(await note.textContent(), /Connected .*otter-site\. Pushed 3 files in commit [0-9a-f]{7}\./);
    assert.equal(await toggle.getAttribute('data-state'), 'connected');
    let repo = await repoState(inst.owner, 'otter-site');
    assert.deepEqual(Object.keys(repo.files).sort(), ['app.js', 'index.html', 'style.css']);
    const first = repo.head;
    assert.ok(first);
    assert.match(await panel.textContent(), new RegExp(`Commit${first.slice(0, 7)}`));

    // --- Push now: a file changed in the project arrives as one commit on top of the first.
    const content = `# Otters\n\n${nonce()}\n`;
    const put = await fetch(`${BASE_URL}/v1/projects/${projectId}/files/NOTES.md`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${tok}`, 'content-type': 'text/markdown' },
      body: content,
    });
    assert.ok(put.ok, `PUT NOTES.md: ${put.status}`);
    await page.getByRole('button', { name: 'Push now' }).click();
    await panel.getByText(/Pushed 1 file in commit [0-9a-f]{7}\./).waitFor({ timeout: 30000 });
    repo = await repoState(inst.owner, 'otter-site');
    assert.notEqual(repo.head, first);
    assert.equal(repo.files['NOTES.md'], content);
    const commit = (await fake('GET', `/_fake/commits/${repo.head}`)).doc;
    assert.deepEqual(commit.parents, [first], 'one commit on top of the last one');
    assert.match(await note.textContent(), new RegExp(repo.head.slice(0, 7)));
    // Pushing again with nothing new says so.
    await page.getByRole('button', { name: 'Push now' }).click();
    await panel.getByText('Nothing to push: GitHub already has these files.').waitFor({ timeout: 30000 });
    assert.equal((await repoState(inst.owner, 'otter-site')).head, repo.head);

    // --- the panel shows the same after a reload (GET /v1/projects/{id}/github)
    await page.reload();
    await toggle.click();
    await panel.locator('.github-repo').waitFor();
    assert.match(await panel.textContent(), new RegExp(`Commit${repo.head.slice(0, 7)}`));

    // --- Disconnect (confirm() is accepted): the form comes back, the repository stays.
    await panel.getByRole('button', { name: 'Disconnect' }).click();
    await panel.getByRole('button', { name: 'Connect repository' }).waitFor();
    await panel.getByText(`Disconnected ${inst.owner}/otter-site`).waitFor();
    assert.equal((await api(`/v1/projects/${projectId}/github`, { token: tok })).status, 404);
    assert.equal((await repoState(inst.owner, 'otter-site')).head, repo.head);

    assert.ok(await page.evaluate(() => document.documentElement.scrollWidth <= innerWidth), 'no sideways scrolling');
    assert.deepEqual(page.errors, []);
    assert.deepEqual(page.badResponses.filter((r) => r.startsWith('5')), []);
    await context.close();
  });

  test('a redirect back with a state this tab did not send is refused with a visible error, and nothing is linked', async (t) => {
    if (off) return t.skip(off);
    const { context, page } = await newPage(browser, { width: 360, height: 780 });
    const links = recordRequests(page, /^\/v1\/github\/installations$/);
    await signUp(page);
    const inst = await installation();
    await fake('POST', '/_fake/browser', { install: inst.id, installations: [inst.id], callback_url: CALLBACK });
    // Someone changes the state on the way back (GitHub's real redirect, with a real code).
    const githubPage = (u) => u.origin === FAKE && /^\/(login\/oauth\/authorize|apps\/[^/]+\/installations\/new)$/.test(u.pathname);
    await page.route(githubPage, async (route) => {
      const res = await fetch(route.request().url(), { redirect: 'manual' });
      const back = new URL(res.headers.get('location'));
      assert.equal(back.searchParams.get('installation_id'), String(inst.id));
      back.searchParams.set('state', `${back.searchParams.get('state').slice(0, -4)}AAAA`);
      await route.fulfill({ status: 302, headers: { location: back.toString() } });
    });
    await page.goto('/#/account');
    const section = page.getByRole('region', { name: 'GitHub' });
    await section.getByText('No GitHub installation linked yet.').waitFor();
    await section.getByRole('button', { name: 'Link GitHub' }).click();
    const alert = section.locator('.error[role="alert"]');
    await alert.and(page.locator(':not([hidden])')).waitFor({ timeout: 20000 });
    assert.match(await alert.textContent(), /did not start in this tab/);
    assert.match(await alert.textContent(), /github_state_mismatch/);
    await section.getByText('No GitHub installation linked yet.').waitFor();
    assert.equal(new URL(page.url()).search, '', 'the code is gone from the address bar');
    assert.equal(await page.evaluate(() => sessionStorage.getItem('everjust.github')), null);

    // A link made elsewhere (another account's state, or none started here) is refused the same way.
    const code = (await fake('POST', '/_fake/oauth-codes', { installations: [inst.id] })).doc.code;
    const other = await apiUser('gh-other');
    const theirs = (await api('/v1/github/link-state', { method: 'POST', token: other.token, json: {} })).doc.state;
    await page.goto(`/?installation_id=${inst.id}&setup_action=install&code=${code}&state=${encodeURIComponent(theirs)}`);
    await alert.and(page.locator(':not([hidden])')).waitFor();
    assert.match(await alert.textContent(), /did not start in this tab/);
    assert.equal(new URL(page.url()).search, '');

    // Nothing was sent to the server, and nothing is linked.
    assert.deepEqual(links.filter((l) => l.startsWith('POST')), []);
    const listed = await api('/v1/github/installations', { token: await token(page) });
    assert.deepEqual(listed.doc.items, []);
    // Without an installation, a project's GitHub panel sends the user to link one.
    await page.goto('/#/');
    await createProject(page, 'Unlinked', 'Blank');
    await page.getByRole('button', { name: 'GitHub', exact: true }).click();
    await page.getByRole('link', { name: 'Link GitHub on your account page' }).waitFor();
    assert.deepEqual(page.errors, []);
    await context.close();
  });

  test('an App installed at GitHub (the callback comes without a state) is linked after authorizing with a state of ours', async (t) => {
    if (off) return t.skip(off);
    const { context, page } = await newPage(browser, { width: 1280, height: 800 });
    await signUp(page);
    const inst = await installation();
    await fake('POST', '/_fake/browser', { install: inst.id, installations: [inst.id], callback_url: CALLBACK });
    // The user installs the App from its page on GitHub: back here with installation_id and a code, no state.
    await page.goto(`${FAKE}/apps/everjust-test/installations/new`);
    const section = page.getByRole('region', { name: 'GitHub' });
    const item = section.locator(`.installation[data-installation-id="${inst.id}"]`);
    await item.waitFor({ timeout: 20000 });
    await section.getByText(`Linked ${inst.owner}`).waitFor();
    const visits = (await fake('GET', '/_fake/authorizations')).doc.authorizations.slice(-2);
    assert.deepEqual(visits.map((v) => v.page), ['install', 'authorize']);
    assert.equal(visits[0].state, null);
    assert.ok(visits[1].state, 'the authorization carried our state');
    assert.doesNotMatch(visits[1].redirect, /installation_id/, 'the kept installation id was used');
    assert.equal(new URL(page.url()).search, '');
    assert.deepEqual(page.errors, []);
    await context.close();
  });
});
