// The GitHub screens in Chromium against a running server (BASE_URL) whose GitHub App is the fake
// tests/fakes/github.mjs (GITHUB_FAKE_URL; run.sh starts and configures both, with the App's slug):
// "Install the GitHub App" on the account page goes to the App's install page at the fake
// (install_url; "Link GitHub" and the authorization, on a server without GITHUB_APP_SLUG), which
// installs the App and sends the browser back with installation_id, code and state; the installation
// is listed; a project is connected to a repository of it from the project page, pushed, and the
// commits are checked in the fake's repository. An App installed already (whose install page at
// GitHub does not come back) is linked through "Already installed? Authorize", with no number asked:
// every installation the user's GitHub account controls is linked (a user who controls none is
// told so); one installed at GitHub comes back without a state and is linked with a click. A return while logged
// out waits for a login (with a password, or with OIDC, which leaves the page). A redirect back with
// a state this tab did not send, or GitHub's denial, is refused visibly and links nothing. A push
// that ends in a conflict shows it at once. Skipped when there is no fake or the server has no GitHub
// App configured.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';

import { BASE_URL, PASSWORD, api, apiUser, createProject, launch, logIn, newPage, signUp, uniqueEmail } from './lib.mjs';

const FAKE = (process.env.GITHUB_FAKE_URL || '').replace(/\/+$/, '');
const CALLBACK = `${BASE_URL}/`;
let browser;
let off = '';
/** Whether the server offers the App's install page (install_url: GITHUB_APP_SLUG), and the App's slug. */
let offersInstall = false;
let slug = 'everjust-test';
/** The server's OIDC login, when it is the OIDC fake: its authorization endpoint and button name. */
let oidc = null;
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
    else if (r.doc.install_url) {
      // A server with GITHUB_APP_SLUG: "Install the GitHub App" and "Already installed? Authorize".
      offersInstall = true;
      slug = new URL(r.doc.install_url).pathname.split('/')[2];
    }
  }
  const o = await api('/v1/auth/oidc');
  if (o.status === 200 && process.env.OIDC_FAKE_URL) {
    oidc = { endpoint: o.doc.authorization_endpoint, button: `Log in with ${new URL(o.doc.issuer).host}` };
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

/** The pages of GitHub's a browser is sent to: the App's authorization and its install page. */
const githubPage = (u) => u.origin === FAKE && /^\/(login\/oauth\/authorize|apps\/[^/]+\/installations\/new)$/.test(u.pathname);

/** The fake's record of its pages' visits: [{page, app, state, redirect}]. */
const visits = async () => (await fake('GET', '/_fake/authorizations')).doc.authorizations;

/** The account page's button that starts a link of an App not installed yet, and the page it goes to. */
const startButton = (section) => section.getByRole('button', { name: offersInstall ? 'Install the GitHub App' : 'Link GitHub', exact: true });
const startPage = () => (offersInstall ? 'install' : 'authorize');
/** The button that authorizes an App installed already. */
const authorizeButton = (section) => section.getByRole('button', { name: offersInstall ? 'Already installed? Authorize' : 'Link GitHub', exact: true });

/** Holds the browser at GitHub's page: the redirect back GitHub answered is recorded, not followed. */
async function holdAtGithub(page) {
  const held = [];
  await page.route(githubPage, async (route) => {
    const res = await fetch(route.request().url(), { redirect: 'manual' });
    held.push(res.headers.get('location'));
    await route.fulfill({ status: 200, contentType: 'text/html', body: '<!doctype html><title>GitHub (held)</title><h1>At GitHub</h1>' });
  });
  return held;
}

/** The tab's session ends (its refresh token is gone), the tab and its sessionStorage stay. */
async function loseSession(page) {
  await page.goto(`${BASE_URL}/#/login`);
  await page.evaluate(() => localStorage.removeItem('everjust.refresh_token'));
}

const visible = (page, locator) => locator.and(page.locator(':not([hidden])'));

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

    // --- account page: nothing linked, then "Install the GitHub App" goes to GitHub and back
    await page.getByRole('link', { name: 'Account' }).click();
    const section = page.getByRole('region', { name: 'GitHub' });
    await section.getByText('No GitHub installation linked yet.').waitFor();
    // With an install page, both ways are offered: install, or authorize an App installed already.
    if (offersInstall) await authorizeButton(section).waitFor();
    await startButton(section).click();
    const item = section.locator(`.installation[data-installation-id="${inst.id}"]`);
    await item.waitFor({ timeout: 20000 });
    assert.match(await item.textContent(), new RegExp(inst.owner));
    assert.match(await item.textContent(), /personal account/);
    await section.getByText(`Linked ${inst.owner}`).waitFor();
    // GitHub was given the state the server made, and it came back with the installation.
    const visit = (await visits()).at(-1);
    if (offersInstall) {
      assert.equal(visit.page, 'install', "the App's install page (install_url)");
      assert.equal(visit.app, slug, 'the App the server named (GITHUB_APP_SLUG)');
    } else {
      assert.equal(visit.page, 'authorize', 'without GITHUB_APP_SLUG, the authorization (authorize_url)');
    }
    assert.ok(visit.state && visit.state.length > 20, JSON.stringify(visit));
    assert.match(visit.redirect, new RegExp(`installation_id=${inst.id}`));
    // The code and state are gone from the address bar, and the tab's pending state and the
    // redirect back it kept are spent.
    assert.equal(new URL(page.url()).search, '');
    assert.equal(new URL(page.url()).hash, '#/account');
    assert.equal(await page.evaluate(() => sessionStorage.getItem('everjust.github')), null);
    assert.equal(await page.evaluate(() => sessionStorage.getItem('everjust.github.arrival')), null);
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
    const named = [];
    await page.route(githubPage, async (route) => {
      const res = await fetch(route.request().url(), { redirect: 'manual' });
      const back = new URL(res.headers.get('location'));
      named.push(back.searchParams.get('installation_id'));
      back.searchParams.set('state', `${back.searchParams.get('state').slice(0, -4)}AAAA`);
      await route.fulfill({ status: 302, headers: { location: back.toString() } });
    });
    await page.goto('/#/account');
    const section = page.getByRole('region', { name: 'GitHub' });
    await section.getByText('No GitHub installation linked yet.').waitFor();
    await startButton(section).click();
    const alert = section.locator('.error[role="alert"]');
    await visible(page, alert).waitFor({ timeout: 20000 });
    assert.deepEqual(named, [String(inst.id)], 'GitHub sent the browser back with the installation');
    assert.match(await alert.textContent(), /did not start in this tab/);
    assert.match(await alert.textContent(), /github_state_mismatch/);
    await section.getByText('No GitHub installation linked yet.').waitFor();
    assert.equal(new URL(page.url()).search, '', 'the code is gone from the address bar');
    assert.equal(await page.evaluate(() => sessionStorage.getItem('everjust.github')), null);
    await page.unroute(githubPage);

    // Another account's state, while this tab has a link of its own pending: refused the same way.
    // The link starts, and the browser comes back from GitHub's page without finishing it.
    await page.route(githubPage, (route) => route.fulfill({ status: 302, headers: { location: `${BASE_URL}/?held=1#/account` } }));
    await startButton(section).click();
    await page.waitForURL(/[?]held=1/);
    const pending = JSON.parse(await page.evaluate(() => sessionStorage.getItem('everjust.github')));
    assert.ok(pending && pending.state, 'a link of this tab is pending');
    const code = (await fake('POST', '/_fake/oauth-codes', { installations: [inst.id] })).doc.code;
    const other = await apiUser('gh-other');
    const theirs = (await api('/v1/github/link-state', { method: 'POST', token: other.token, json: {} })).doc.state;
    assert.notEqual(theirs, pending.state);
    await page.goto(`/?installation_id=${inst.id}&setup_action=install&code=${code}&state=${encodeURIComponent(theirs)}`);
    await visible(page, alert).waitFor();
    assert.match(await alert.textContent(), /did not start in this tab/);
    assert.equal(new URL(page.url()).search, '');
    assert.equal(await page.evaluate(() => sessionStorage.getItem('everjust.github')), null, 'the pending link is spent too');

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

  test('GitHub’s denial (error=access_denied) is shown, links nothing, and leaves a clean URL', async (t) => {
    if (off) return t.skip(off);
    const { context, page } = await newPage(browser, { width: 1280, height: 800 });
    const links = recordRequests(page, /^\/v1\/github\/installations$/);
    await signUp(page);
    const inst = await installation();
    // The GitHub user cancels at GitHub.
    await fake('POST', '/_fake/browser', { install: inst.id, installations: [inst.id], callback_url: CALLBACK, deny: true });
    await page.goto('/#/account');
    const section = page.getByRole('region', { name: 'GitHub' });
    const alert = section.locator('.error[role="alert"]');
    await section.getByText('No GitHub installation linked yet.').waitFor();
    const denied = async (what) => {
      await visible(page, alert).waitFor({ timeout: 20000 });
      const text = await alert.textContent();
      assert.match(text, /GitHub did not authorize the App/, what);
      assert.match(text, /denied/, what);
      assert.match(text, /Nothing was linked/, what);
      assert.match(text, /github_denied/, what);
      const visit = (await visits()).at(-1);
      assert.match(visit.redirect, /error=access_denied/, what);
      assert.equal(new URL(page.url()).search, '', `${what}: the answer is gone from the address bar`);
      assert.ok(!(await page.evaluate(() => location.href)).includes('error='), what);
      assert.equal(new URL(page.url()).hash, '#/account');
      assert.equal(await page.evaluate(() => sessionStorage.getItem('everjust.github')), null, what);
      assert.equal(await page.evaluate(() => sessionStorage.getItem('everjust.github.arrival')), null, what);
      await section.getByText('No GitHub installation linked yet.').waitFor();
    };
    // Denied on the way that installs it ...
    await startButton(section).click();
    await denied(`denied at ${startPage()}`);
    // ... and on the authorization of an App installed already.
    await authorizeButton(section).click();
    await denied('denied at authorize');
    assert.equal((await visits()).at(-1).page, 'authorize');

    assert.deepEqual(links.filter((l) => l.startsWith('POST')), [], 'nothing was sent to link');
    assert.deepEqual((await api('/v1/github/installations', { token: await token(page) })).doc.items, []);
    assert.deepEqual(page.errors, []);
    await context.close();
  });

  test('an App installed already is linked through the authorization, no number asked: every installation the user controls (its install page at GitHub does not come back)', async (t) => {
    if (off) return t.skip(off);
    const { context, page } = await newPage(browser, { width: 1280, height: 800 });
    // What the page sends to link.
    const sent = [];
    page.on('request', (r) => {
      const u = new URL(r.url());
      if (u.origin === BASE_URL && u.pathname === '/v1/github/installations' && r.method() === 'POST') sent.push(r.postDataJSON());
    });
    await signUp(page);
    const inst = await installation();
    // The App is on an organisation the user administers too, and on one they are a plain member of.
    const org = { id: ++seq, owner: `web-org-${nonce()}` };
    const other = { id: ++seq, owner: `web-other-${nonce()}` };
    for (const o of [org, other]) {
      assert.equal((await fake('POST', '/_fake/installations', { id: o.id, login: o.owner, type: 'Organization' })).status, 201);
    }
    await page.getByRole('link', { name: 'Account' }).click();
    const section = page.getByRole('region', { name: 'GitHub' });
    const alert = section.locator('.error[role="alert"]');
    const item = (i) => section.locator(`.installation[data-installation-id="${i.id}"]`);
    await section.getByText('No GitHub installation linked yet.').waitFor();
    await authorizeButton(section).waitFor();
    assert.equal(await section.locator('input').count(), 0, 'no installation number is asked');

    // A GitHub user who reaches only the organisation they are a plain member of: nothing to link, said so.
    await fake('POST', '/_fake/browser', { installations: [other.id], controls: [], callback_url: CALLBACK });
    await authorizeButton(section).click();
    await visible(page, alert).waitFor({ timeout: 20000 });
    assert.match(await alert.textContent(), /github_installation_mismatch/);
    assert.equal(new URL(page.url()).search, '');
    await section.getByText('No GitHub installation linked yet.').waitFor();

    // The GitHub user installed the App on their account and their organisation before: there is nothing to install.
    await fake('POST', '/_fake/browser', { installations: [inst.id, org.id, other.id], controls: [inst.id, org.id], callback_url: CALLBACK });
    if (offersInstall) {
      // "Install the GitHub App" leads to GitHub's page for an App installed already: a dead end.
      await section.getByRole('button', { name: 'Install the GitHub App' }).click();
      await page.waitForURL((u) => u.origin === FAKE);
      await page.getByRole('heading', { name: `Install ${slug}` }).waitFor();
      assert.match(await page.locator('body').textContent(), /already installed/);
      const visit = (await visits()).at(-1);
      assert.equal(visit.page, 'install');
      assert.equal(visit.redirect, null, 'GitHub did not send the browser back');
      // Back here, the other way is there, and usable.
      await page.goBack();
      await section.getByText('No GitHub installation linked yet.').waitFor();
    }
    await authorizeButton(section).click();
    await item(inst).waitFor({ timeout: 20000 });
    await item(org).waitFor();
    assert.match(await item(org).textContent(), /organisation/);
    assert.equal(await item(other).count(), 0, 'not an organisation the user administers');
    const done = section.locator('.notice');
    await visible(page, done).waitFor();
    assert.match(await done.textContent(), new RegExp(`^Linked (?=.*${inst.owner} \\(personal account\\))(?=.*${org.owner} \\(organisation\\))`));
    assert.doesNotMatch(await done.textContent(), new RegExp(other.owner));
    const visit = (await visits()).at(-1);
    assert.equal(visit.page, 'authorize', 'the App’s authorization (authorize_url)');
    assert.ok(visit.state, 'with our state');
    assert.doesNotMatch(visit.redirect, /installation_id/, 'GitHub did not name the installation');
    // Both links were sent with the code and state only: no installation number.
    assert.equal(sent.length, 2);
    for (const body of sent) assert.deepEqual(Object.keys(body).sort(), ['code', 'state']);
    assert.equal(new URL(page.url()).search, '');
    const listed = (await api('/v1/github/installations', { token: await token(page) })).doc.items.map((i) => i.installation_id);
    assert.deepEqual(listed.sort(), [inst.id, org.id].sort());
    assert.deepEqual(page.errors, []);
    await context.close();
  });

  test('an App installed at GitHub (the callback comes without a state) is linked with a click, after authorizing with a state of ours', async (t) => {
    if (off) return t.skip(off);
    const { context, page } = await newPage(browser, { width: 1280, height: 800 });
    await signUp(page);
    const inst = await installation();
    await fake('POST', '/_fake/browser', { install: inst.id, installations: [inst.id], callback_url: CALLBACK });
    const section = page.getByRole('region', { name: 'GitHub' });
    const finish = section.getByRole('button', { name: `Finish linking installation ${inst.id}` });
    // A bare installation_id (no code, no state) does not send the browser to GitHub by itself.
    let before = (await visits()).length;
    await page.goto(`/?installation_id=${inst.id}`);
    await finish.waitFor();
    assert.equal(new URL(page.url()).origin, BASE_URL);
    assert.equal(new URL(page.url()).search, '');
    assert.equal((await visits()).length, before, 'nobody was sent to GitHub');
    // The user installs the App from its page on GitHub: back here with installation_id and a code, no state.
    before = (await visits()).length;
    await page.goto(`${FAKE}/apps/${slug}/installations/new`);
    await finish.waitFor({ timeout: 20000 });
    assert.equal(new URL(page.url()).origin, BASE_URL);
    assert.deepEqual((await visits()).slice(before).map((v) => v.page), ['install'], 'only the install so far: the authorization waits for the click');
    await finish.click();
    const item = section.locator(`.installation[data-installation-id="${inst.id}"]`);
    await item.waitFor({ timeout: 20000 });
    await section.getByText(`Linked ${inst.owner}`).waitFor();
    const seen = (await visits()).slice(before);
    assert.deepEqual(seen.map((v) => v.page), ['install', 'authorize']);
    assert.equal(seen[0].state, null);
    assert.ok(seen[1].state, 'the authorization carried our state');
    assert.doesNotMatch(seen[1].redirect, /installation_id/, 'the kept installation id was used');
    assert.equal(new URL(page.url()).search, '');
    assert.ok(!(await finish.isVisible()), 'the button is gone once linked');
    assert.deepEqual(page.errors, []);
    await context.close();
  });

  test('back from GitHub while logged out: the link waits (across page loads) for a password login, then finishes', async (t) => {
    if (off) return t.skip(off);
    const { context, page } = await newPage(browser, { width: 360, height: 780 });
    const email = await signUp(page);
    const inst = await installation();
    await fake('POST', '/_fake/browser', { install: inst.id, installations: [inst.id], callback_url: CALLBACK });
    const held = await holdAtGithub(page);
    await page.goto('/#/account');
    const section = page.getByRole('region', { name: 'GitHub' });
    await startButton(section).click();
    await page.waitForURL((u) => u.origin === FAKE);
    assert.equal(held.length, 1);
    // Meanwhile the session ended; GitHub's redirect back arrives logged out.
    await loseSession(page);
    await page.goto(held[0]);
    const note = page.getByText('Log in to finish linking your GitHub installation.');
    await note.waitFor();
    assert.equal(new URL(page.url()).search, '', 'the code is gone from the address bar');
    assert.equal(new URL(page.url()).hash, '#/login');
    assert.equal(await page.evaluate(() => sessionStorage.getItem('everjust.github')), null);
    const kept = JSON.parse(await page.evaluate(() => sessionStorage.getItem('everjust.github.arrival')));
    assert.equal(kept.link.installation_id, inst.id, 'the checked redirect back is kept in the tab');
    // A page load before the login (as a login elsewhere would make) keeps it.
    await page.reload();
    await note.waitFor();
    await page.getByLabel('Email').fill(email);
    await page.getByLabel('Password').fill(PASSWORD);
    await page.getByRole('button', { name: 'Log in', exact: true }).click();
    const item = section.locator(`.installation[data-installation-id="${inst.id}"]`);
    await item.waitFor({ timeout: 20000 });
    await section.getByText(`Linked ${inst.owner}`).waitFor();
    assert.equal(new URL(page.url()).hash, '#/account');
    assert.equal(await page.evaluate(() => sessionStorage.getItem('everjust.github.arrival')), null, 'used, then removed');
    // Used once: the account page does not link it again.
    await page.reload();
    await item.waitFor();
    assert.ok(!(await section.getByText(`Linked ${inst.owner}`).isVisible()));
    assert.deepEqual(page.errors, []);
    await context.close();
  });

  test('back from GitHub while logged out, then a login with OIDC (which leaves the page): the link finishes', async (t) => {
    if (off) return t.skip(off);
    if (!oidc) return t.skip('the server has no OIDC login with the OIDC fake (OIDC_FAKE_URL)');
    const { context, page } = await newPage(browser, { width: 1280, height: 800 });
    // The provider logs in the same person each time (the fake's login_hint).
    const email = uniqueEmail('gh-oidc');
    await page.route(
      (u) => u.href.startsWith(oidc.endpoint),
      async (route) => {
        const u = new URL(route.request().url());
        u.searchParams.set('login_hint', email);
        const res = await fetch(u, { redirect: 'manual' });
        await route.fulfill({ status: 302, headers: { location: res.headers.get('location') } });
      },
    );
    await page.goto('/#/login');
    await page.getByRole('button', { name: oidc.button }).click();
    await page.getByRole('heading', { name: 'Projects', level: 1 }).waitFor({ timeout: 20000 });
    assert.equal(await page.locator('#account .email').textContent(), email);
    const inst = await installation();
    await fake('POST', '/_fake/browser', { install: inst.id, installations: [inst.id], callback_url: CALLBACK });
    const held = await holdAtGithub(page);
    await page.getByRole('link', { name: 'Account' }).click();
    const section = page.getByRole('region', { name: 'GitHub' });
    await startButton(section).click();
    await page.waitForURL((u) => u.origin === FAKE);
    await loseSession(page);
    await page.goto(held[0]);
    await page.getByText('Log in to finish linking your GitHub installation.').waitFor();
    // Log in with OIDC: the browser goes to the provider and back (/?code&state of the login).
    await page.getByRole('button', { name: oidc.button }).click();
    const item = section.locator(`.installation[data-installation-id="${inst.id}"]`);
    await item.waitFor({ timeout: 20000 });
    await section.getByText(`Linked ${inst.owner}`).waitFor();
    assert.equal(await page.locator('#account .email').textContent(), email);
    assert.equal(new URL(page.url()).search, '');
    assert.equal(await page.evaluate(() => sessionStorage.getItem('everjust.github.arrival')), null);
    assert.deepEqual(page.errors, []);
    await context.close();
  });

  test('a push that ends in a conflict shows the conflict and takes GitHub’s other changes at once', async (t) => {
    if (off) return t.skip(off);
    // Set up through the API: a user with a linked installation and a project connected to a repository.
    const u = await apiUser('gh-clash');
    const inst = await installation();
    const code = (await fake('POST', '/_fake/oauth-codes', { installations: [inst.id] })).doc.code;
    const state = (await api('/v1/github/link-state', { method: 'POST', token: u.token, json: {} })).doc.state;
    const linked = await api('/v1/github/installations', { method: 'POST', token: u.token, json: { installation_id: inst.id, code, state } });
    assert.equal(linked.status, 201, JSON.stringify(linked.doc));
    assert.equal((await fake('POST', '/_fake/repos', { installation: inst.id, owner: inst.owner, name: 'clash' })).status, 201);
    const project = await api('/v1/projects', { method: 'POST', token: u.token, json: { name: 'Clash' } });
    assert.equal(project.status, 201, JSON.stringify(project.doc));
    const pid = project.doc.id;
    const put = async (path, body) => {
      const r = await fetch(`${BASE_URL}/v1/projects/${pid}/files/${path}`, { method: 'PUT', headers: { authorization: `Bearer ${u.token}`, 'content-type': 'text/plain' }, body });
      assert.ok(r.ok, `PUT ${path}: ${r.status}`);
    };
    await put('index.html', '<!doctype html><title>Clash</title>\n');
    const connected = await api(`/v1/projects/${pid}/github`, { method: 'POST', token: u.token, json: { installation_id: inst.id, repository: 'clash' } });
    assert.equal(connected.status, 201, JSON.stringify(connected.doc));
    // Both sides write NOTES.md, differently; GitHub also gets a file of its own.
    await put('NOTES.md', 'ours\n');
    const pushed = await fake('POST', '/_fake/push', { owner: inst.owner, name: 'clash', files: { 'NOTES.md': 'theirs\n', 'THEIRS.md': 'from GitHub\n' }, deliver: false });
    assert.equal(pushed.status, 200, JSON.stringify(pushed.doc));

    const { context, page } = await newPage(browser, { width: 1280, height: 900 });
    await logIn(page, u.email);
    await page.goto(`/#/p/${pid}`);
    await page.getByRole('button', { name: 'GitHub', exact: true }).click();
    const panel = page.getByRole('region', { name: 'GitHub' });
    await panel.locator('.github-repo').waitFor();
    assert.doesNotMatch(await panel.textContent(), /Conflict/);
    await page.locator('.tree .file[data-path="NOTES.md"]').waitFor({ state: 'attached' });
    assert.equal(await page.locator('.tree .file[data-path="THEIRS.md"]').count(), 0);
    await panel.getByRole('button', { name: 'Push now' }).click();
    // The server's problem, and the status it recorded: no reload.
    const alert = panel.locator('.error[role="alert"]');
    await visible(page, alert).waitFor({ timeout: 30000 });
    assert.match(await alert.textContent(), /changed both here and on GitHub/);
    assert.match(await alert.textContent(), /github_conflict/);
    await panel.locator('.github-facts dt', { hasText: 'Conflict' }).waitFor();
    assert.match(await panel.locator('.github-facts').textContent(), /Conflict1 file changed on both sides: NOTES\.md/);
    await panel.getByText('Took 1 change from GitHub into the project.').waitFor();
    // GitHub's other change is in the project's files already (what a push that succeeds does).
    await page.locator('.tree .file[data-path="THEIRS.md"]').waitFor({ state: 'attached', timeout: 10000 });
    // The panel is usable again.
    assert.ok(await panel.getByRole('button', { name: 'Push now' }).isEnabled());
    assert.deepEqual(page.errors, []);
    assert.deepEqual(page.badResponses.filter((r) => r.startsWith('5')), []);
    await context.close();
  });
});
