// The account page in Chromium against a running server (BASE_URL): usage
// and tier, and the bring-your-own provider key form at 360 px: a key is
// added and listed by its last four characters only (never the key), keys
// the server refuses show its problem+json detail, a key is replaced and
// deleted.
//
// Storing a key needs KEYS_ENCRYPTION_KEY on the server (run.sh sets one)
// and the model fake answering GET /v1/models (the server checks a key with
// it; a key containing "rejected" is refused there): skipped otherwise.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';

import { PASSWORD, api, apiUser, launch, newPage, serverMode, signUp } from './lib.mjs';

let browser;
let mode;
/** Why keys cannot be stored on this server, or '' when they can. */
let keysOff = '';
before(async () => {
  mode = await serverMode();
  if (mode.model !== 'fake') {
    keysOff = 'needs the model fake (the server checks a key with GET /v1/models): start the server with ANTHROPIC_BASE_URL at tests/fakes/anthropic.mjs and set MODEL_FAKE_URL';
  } else {
    const u = await apiUser('keys-probe');
    const r = await api('/v1/keys/anthropic', { method: 'PUT', token: u.token, json: { api_key: `sk-ant-probe-${randomBytes(6).toString('hex')}` } });
    if (r.status !== 200) keysOff = `the server does not store keys (${r.status} ${r.doc && r.doc.code}): set KEYS_ENCRYPTION_KEY`;
  }
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

/** An access token for the page's account, for API checks. */
async function token(page) {
  const email = await page.locator('#account .email').textContent();
  const r = await api('/v1/auth/login', { method: 'POST', json: { email, password: PASSWORD } });
  return r.doc.access_token;
}

describe('the account page', () => {
  test('usage and tier are shown, from the account bar', async () => {
    const { context, page } = await newPage(browser, { width: 360, height: 780 });
    await signUp(page);
    await page.getByRole('link', { name: 'Account' }).click();
    await page.getByRole('heading', { name: 'Account', level: 1 }).waitFor();
    const usage = page.getByRole('region', { name: 'Usage this month' });
    await usage.locator('dl.facts').waitFor();
    assert.match(await usage.textContent(), /Tier/);
    assert.match(await usage.textContent(), /Tokens/);
    assert.deepEqual(page.errors, []);
    await context.close();
  });

  test('bring your own key: add, listed without the secret, refused keys show the server’s detail, replace, delete', async (t) => {
    if (keysOff) return t.skip(keysOff);
    const { context, page } = await newPage(browser, { width: 360, height: 780 });
    await signUp(page);
    await page.goto('/#/account');
    const keys = page.getByRole('region', { name: 'Your provider keys' });
    await keys.getByText('No keys stored').waitFor();
    const provider = page.getByLabel('Provider', { exact: true });
    const secret = page.getByLabel('API key', { exact: true });
    const save = page.getByRole('button', { name: 'Save key' });
    const formAlert = page.locator('.key-form [role="alert"]');

    // Refused by the server's own check: its detail and code are shown.
    await provider.selectOption('anthropic');
    await secret.fill('short');
    await save.click();
    await formAlert.and(page.locator(':not([hidden])')).waitFor();
    assert.match(await formAlert.textContent(), /does not look like an API key/);
    assert.match(await formAlert.textContent(), /invalid_key/);
    assert.equal(await save.isEnabled(), true);

    // Refused by the provider (the fake answers 401 to a key containing "rejected").
    await secret.fill('sk-ant-rejected-0000');
    await save.click();
    await page.waitForFunction(() => /key_rejected/.test(document.querySelector('.key-form [role="alert"]')?.textContent || ''));
    assert.match(await formAlert.textContent(), /anthropic rejected this key/);
    assert.equal(await page.locator('.keys li').count(), 0, 'nothing stored');

    // A good key: listed by provider and last four characters, never in full.
    const good = `sk-ant-browser-${randomBytes(12).toString('hex')}-WXYZ`;
    await secret.fill(good);
    await save.click();
    const item = page.locator('.keys li[data-provider="anthropic"]');
    await item.waitFor();
    assert.match(await item.textContent(), /Anthropic/);
    assert.match(await item.textContent(), /WXYZ/);
    assert.equal(await formAlert.isHidden(), true, 'the earlier error is cleared');
    assert.equal(await secret.inputValue(), '', 'the field is emptied');
    assert.ok(!(await page.content()).includes(good), 'the key is not in the page');
    assert.ok(!(await page.evaluate(() => document.body.innerText)).includes(good.slice(0, 20)), 'not even partly');
    assert.ok(!(await page.evaluate(() => JSON.stringify({ ...localStorage, ...sessionStorage }))).includes(good), 'nor stored in the browser');
    const listed = await api('/v1/keys', { token: await token(page) });
    assert.deepEqual(listed.doc.items.map((k) => [k.provider, k.last4]), [['anthropic', 'WXYZ']]);

    // Saving again replaces it; a reload lists what the server has.
    await secret.fill(`sk-ant-browser-${randomBytes(12).toString('hex')}-ABCD`);
    await save.click();
    await item.getByText('ABCD').waitFor();
    await page.reload();
    await item.getByText('ABCD').waitFor();
    assert.equal(await page.locator('.keys li').count(), 1);

    // No sideways scrolling at 360 px.
    assert.ok(await page.evaluate(() => document.documentElement.scrollWidth <= innerWidth), 'fits 360 px');

    // Delete (confirm() is accepted).
    await page.getByRole('button', { name: 'Delete Anthropic key' }).click();
    await item.waitFor({ state: 'detached' });
    await keys.getByText('No keys stored').waitFor();
    const gone = await api('/v1/keys', { token: await token(page) });
    assert.deepEqual(gone.doc.items, []);

    assert.deepEqual(page.errors, []);
    assert.ok(page.badResponses.includes('400 PUT /v1/keys/anthropic'), page.badResponses.join());
    await context.close();
  });
});
