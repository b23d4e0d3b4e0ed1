// The web client in Chromium against a running server (BASE_URL): sign up,
// projects (template, rename, delete), a chat run streamed into the page
// with its tool call, the written file in the tree and the preview, errors
// shown from problem+json, log out / log in, and a 360 px screenshot.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import {
  PASSWORD,
  api,
  artifactPath,
  createProject,
  finishedRun,
  launch,
  logIn,
  newPage,
  sendMessage,
  serverMode,
  signUp,
  uniqueEmail,
  writePageMessage,
} from './lib.mjs';

let browser;
let mode;
before(async () => {
  mode = await serverMode();
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

describe('accounts', () => {
  test('a weak password shows the server’s detail, and the form stays usable', async () => {
    const { context, page } = await newPage(browser);
    await page.goto('/#/signup');
    await page.getByLabel('Email').fill(uniqueEmail('weak'));
    await page.getByLabel('Password').fill('short');
    await page.getByRole('button', { name: 'Create account' }).click();
    const alert = page.getByRole('alert');
    await alert.waitFor();
    assert.match(await alert.textContent(), /password/i);
    assert.match(await alert.textContent(), /weak_password/);
    assert.equal(await page.getByRole('button', { name: 'Create account' }).isEnabled(), true);
    await context.close();
  });

  test('sign up, reload stays signed in (refresh token), log out, wrong password, log in', async () => {
    const { context, page } = await newPage(browser);
    const email = await signUp(page);
    assert.equal(await page.locator('#account .email').textContent(), email);
    assert.match(await page.locator('#account .tier').textContent(), /\w+/);
    const stored = await page.evaluate(() => localStorage.getItem('everjust.refresh_token'));
    assert.match(stored, /^rt_/);

    await page.reload();
    await page.getByRole('heading', { name: 'Projects', level: 1 }).waitFor();
    const rotated = await page.evaluate(() => localStorage.getItem('everjust.refresh_token'));
    assert.notEqual(rotated, stored, 'the refresh token was rotated on reload');

    await page.getByRole('button', { name: 'Log out' }).click();
    await page.getByRole('heading', { name: 'Log in', exact: true }).waitFor();
    assert.equal(await page.evaluate(() => localStorage.getItem('everjust.refresh_token')), null);
    // The old token is revoked on the server.
    const r = await api('/v1/auth/refresh', { method: 'POST', json: { refresh_token: rotated } });
    assert.equal(r.status, 401);

    await page.getByLabel('Email').fill(email);
    await page.getByLabel('Password').fill('not the password');
    await page.getByRole('button', { name: 'Log in', exact: true }).click();
    const alert = page.getByRole('alert');
    await alert.waitFor();
    assert.match(await alert.textContent(), /invalid_credentials/);

    await logIn(page, email);
    assert.deepEqual(page.errors.filter((e) => !/401|Failed to load resource/.test(e)), []);
    await context.close();
  });

  test('an expired access token is refreshed on 401 without the user noticing', async () => {
    const { context, page } = await newPage(browser);
    await signUp(page);
    // Force the next API call to carry a bad access token: the client must refresh and retry.
    let refreshed = 0;
    page.on('request', (req) => {
      if (req.url().endsWith('/v1/auth/refresh')) refreshed++;
    });
    // (The reload itself refreshes once: the access token lived in memory only.)
    let tampered = false;
    await page.route(
      (url) => url.pathname === '/v1/projects',
      (route, req) => {
        if (tampered) return route.continue();
        tampered = true;
        return route.continue({ headers: { ...req.headers(), authorization: 'Bearer expired.garbage.token' } });
      },
    );
    await page.reload();
    await page.getByRole('heading', { name: 'Projects', level: 1 }).waitFor();
    await page.getByRole('heading', { name: 'New project' }).waitFor();
    await page.waitForFunction(() => !document.querySelector('.projects-page [role="status"]')?.textContent?.includes('Loading'));
    assert.equal(await page.locator('.projects-page .error:not([hidden])').count(), 0, 'no error shown');
    assert.ok(tampered, 'the projects request carried a bad token');
    assert.ok(refreshed >= 2, `the client refreshed its token after the 401 (${refreshed} refreshes)`);
    assert.ok(page.badResponses.includes('401 GET /v1/projects'), page.badResponses.join());
    await context.close();
  });
});

describe('projects', () => {
  test('create from a template, rename, delete; errors show the detail', async () => {
    const { context, page } = await newPage(browser, { width: 390, height: 844 });
    await signUp(page);
    // Templates come from GET /v1/templates, filled in after the page shows.
    await page.locator('input[type=radio][value="static-html"]').waitFor();
    const templates = await page.getByRole('radio').evaluateAll((els) => els.map((e) => e.value));
    assert.ok(templates.includes('static-html') && templates.includes('blank'), templates.join());

    // An empty name is refused before the server.
    await page.getByRole('button', { name: 'Create project' }).click();
    assert.match(await page.getByRole('alert').textContent(), /name/i);

    const id = await createProject(page, 'Tmpl app', 'Static HTML');
    assert.match(id, /^prj_/);
    // The template's files are in the tree.
    await page.getByRole('tab', { name: 'Files' }).click();
    await page.locator('.tree .file[data-path="index.html"]').waitFor();
    await page.locator('.tree .file[data-path="style.css"]').waitFor();

    await page.getByRole('link', { name: '← Projects' }).click();
    const card = page.locator(`.project[data-id="${id}"]`);
    await card.waitFor();
    await card.getByRole('button', { name: /^Rename/ }).click();
    const input = page.getByLabel('New name');
    await input.fill('Renamed app');
    await input.press('Enter');
    await card.getByRole('link', { name: 'Renamed app' }).waitFor();
    const got = await api(`/v1/projects/${id}`, { token: await token(page) });
    assert.equal(got.doc.name, 'Renamed app');

    // Renaming to something invalid shows the server's detail.
    await card.getByRole('button', { name: /^Rename/ }).click();
    await page.getByLabel('New name').fill('   ');
    await page.getByLabel('New name').press('Enter');
    const alert = card.getByRole('alert');
    await alert.waitFor();
    assert.match(await alert.textContent(), /invalid_name/);
    await page.getByLabel('New name').press('Escape');

    await card.getByRole('button', { name: /^Delete/ }).click(); // confirm() is accepted
    await card.waitFor({ state: 'detached' });
    const gone = await api(`/v1/projects/${id}`, { token: await token(page) });
    assert.equal(gone.status, 404);
    await context.close();
  });

  test('an unknown project shows the not-found detail, not a blank page', async () => {
    const { context, page } = await newPage(browser);
    await signUp(page);
    await page.goto('/#/p/prj_doesnotexist');
    const alert = page.getByRole('alert');
    await alert.waitFor();
    assert.match(await alert.textContent(), /not_found/);
    assert.ok(await page.getByRole('link', { name: '← Projects' }).isVisible());
    await context.close();
  });
});

/** The current access token, for API checks: log in again through the API with the page's account. */
async function token(page) {
  const email = await page.locator('#account .email').textContent();
  const r = await api('/v1/auth/login', { method: 'POST', json: { email, password: PASSWORD } });
  return r.doc.access_token;
}

describe('a chat run', () => {
  test('streams text, shows the tool call and the written file in the tree and preview (360 px)', async () => {
    const { context, page } = await newPage(browser, { width: 360, height: 740, deviceScaleFactor: 2, isMobile: true, hasTouch: true });
    await signUp(page);
    await createProject(page, 'Chat app', 'Blank');
    const msg = writePageMessage(mode, 'A page about otters');
    // Record every state the assistant's text goes through, to see it stream.
    await page.evaluate(() => {
      window.__texts = [];
      new MutationObserver(() => {
        const t = document.querySelector('.msg.assistant .blocks')?.textContent || '';
        if (t && window.__texts.at(-1) !== t) window.__texts.push(t);
      }).observe(document.querySelector('.log'), { subtree: true, childList: true, characterData: true });
    });
    await sendMessage(page, msg.text);
    // The user's message shows at once.
    await page.locator('.msg.user', { hasText: 'otters' }).waitFor();
    const run = await finishedRun(page, 0);
    assert.equal(run.status, 'complete');
    const write = run.tools.find((t) => t.tool === 'write_file');
    assert.ok(write, JSON.stringify(run.tools));
    assert.equal(write.path, 'index.html');
    assert.equal(write.state, 'done');
    assert.ok(run.text.join('').length > 10, run.text.join('|'));
    const states = await page.evaluate(() => window.__texts.length);
    assert.ok(states >= 2, `the answer grew in steps (saw ${states} states)`);
    assert.match(await page.locator('.tool[data-tool="write_file"]').textContent(), /Wrote index\.html/);

    // Files tab: index.html is in the tree, and the viewer shows it.
    await page.getByRole('tab', { name: 'Files' }).click();
    await page.locator('.tree .file[data-path="index.html"]').click();
    const code = page.locator('.viewer pre code');
    await code.waitFor();
    assert.match(await code.textContent(), /<h1/);

    // Preview tab: the sandboxed frame shows the page.
    await page.getByRole('tab', { name: 'Preview' }).click();
    const frame = page.frameLocator('iframe.preview-frame');
    await frame.locator('h1').waitFor({ timeout: 20000 });
    assert.equal((await frame.locator('h1').textContent()).trim(), msg.h1);
    assert.equal(await page.locator('iframe.preview-frame').getAttribute('sandbox'), 'allow-scripts allow-forms allow-modals');

    await page.getByRole('tab', { name: 'Chat' }).click();
    await page.screenshot({ path: artifactPath('project-360.png') });
    // Nothing overflows sideways at 360 px.
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
    assert.ok(overflow <= 0, `page is ${overflow}px wider than the viewport`);
    assert.deepEqual(page.errors, []);
    // No failed request, except a server without the preview link route (the client falls back).
    assert.deepEqual(page.badResponses.filter((r) => !/^404 GET \/v1\/projects\/[^/]+\/sandbox$/.test(r)), []);
    await context.close();
  });

  test('history, the tree and the preview are there after a reload; desktop layout shows all panes', async () => {
    const { context, page } = await newPage(browser, { width: 1366, height: 800 });
    await signUp(page);
    await createProject(page, 'Reload app', 'Blank');
    const msg = writePageMessage(mode, 'Reload me');
    await sendMessage(page, msg.text);
    await finishedRun(page, 0);
    await page.reload();
    await page.locator('.msg.assistant[data-status="complete"]').waitFor();
    assert.equal(await page.locator('.msg.user').count(), 1);
    assert.equal(await page.locator('.msg.assistant').count(), 1);
    assert.ok(await page.locator('.tree .file[data-path="index.html"]').isVisible(), 'files pane visible on desktop');
    const frame = page.frameLocator('iframe.preview-frame');
    await frame.locator('h1').waitFor({ timeout: 20000 });
    await page.screenshot({ path: artifactPath('project-desktop.png') });
    await context.close();
  });

  test('keyboard only: tab to the composer, send with Enter, tabs switch with arrow keys', async () => {
    const { context, page } = await newPage(browser, { width: 360, height: 740 });
    await signUp(page);
    await createProject(page, 'Keys', 'Blank');
    // The composer has focus after the page loads.
    assert.equal(await page.evaluate(() => document.activeElement?.id), 'message');
    await page.keyboard.type(writePageMessage(mode, 'keyboard page').text);
    await page.keyboard.press('Enter');
    await finishedRun(page, 0);
    await page.getByRole('tab', { name: 'Chat' }).focus();
    await page.keyboard.press('ArrowRight');
    assert.equal(await page.evaluate(() => document.activeElement?.textContent), 'Files');
    assert.equal(await page.getByRole('tab', { name: 'Files' }).getAttribute('aria-selected'), 'true');
    assert.ok(await page.locator('#pane-files').isVisible());
    await context.close();
  });

  test('Stop cancels a running turn; a refused message says why', async (t) => {
    const { context, page } = await newPage(browser, { width: 360, height: 740 });
    await signUp(page);
    await createProject(page, 'Stop', 'Blank');
    assert.ok(await page.locator('.log .empty').isVisible(), 'an empty chat says what to do');

    // Too large for the server (64 KiB): the bubble shows the server's detail.
    await page.locator('#message').fill('x'.repeat(70 * 1024));
    await page.getByRole('button', { name: 'Send' }).click();
    const failed = page.locator('.msg.user[data-state="failed"]');
    await failed.waitFor();
    assert.match(await failed.locator('.state').textContent(), /Not sent: .*(bytes|large)/i);

    if (mode.model !== 'fake') return t.skip('cancel needs a slow stream from the model fake');
    await sendMessage(page, '[scenario:slow:400:25] take your time');
    const stop = page.getByRole('button', { name: 'Stop' });
    await page.locator('.msg.assistant').getByText('w5 ', { exact: false }).waitFor();
    await stop.click();
    const run = await finishedRun(page, 0, 30000);
    assert.equal(run.status, 'cancelled');
    assert.match(await page.locator('.msg.assistant .state').textContent(), /Cancelled/);
    await stop.waitFor({ state: 'hidden' });
    assert.ok(!run.text.join('').includes('w399 '), 'the stream stopped early');
    await context.close();
  });
});
