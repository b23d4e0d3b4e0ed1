// "Log in with OIDC" in Chromium against a running server (BASE_URL) whose
// OIDC_ISSUER is the fake provider tests/fakes/oidc.mjs (OIDC_FAKE_URL) with
// OIDC_CLIENT_ID=everjust-web (run.sh starts and configures both). The
// fake's authorize endpoint approves at once and redirects back with a code;
// its token endpoint checks the PKCE verifier. Skipped when the server has
// no OIDC login configured.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { api, launch, newPage } from './lib.mjs';

const FAKE = (process.env.OIDC_FAKE_URL || '').replace(/\/+$/, '');
let browser;
let off = '';
before(async () => {
  const r = await api('/v1/auth/oidc');
  if (r.status !== 200) off = `the server has no OIDC login (${r.status} ${r.doc && r.doc.code}): set OIDC_ISSUER, OIDC_AUDIENCE and OIDC_CLIENT_ID (tests/browser/run.sh does)`;
  else if (!FAKE) off = 'OIDC_FAKE_URL (tests/fakes/oidc.mjs the server trusts) is not set';
  browser = await launch();
});
after(async () => {
  await browser?.close();
});

async function stats() {
  return (await fetch(`${FAKE}/_fake/stats`)).json();
}

describe('log in with OIDC', () => {
  test('the button goes to the provider and back, signed in, with a clean URL and a working session', async (t) => {
    if (off) return t.skip(off);
    const { context, page } = await newPage(browser, { width: 360, height: 780 });
    const before = await stats();
    await page.goto('/#/login');
    const host = new URL(FAKE).host;
    const button = page.getByRole('button', { name: `Log in with ${host}` });
    await button.click();
    await page.getByRole('heading', { name: 'Projects', level: 1 }).waitFor({ timeout: 20000 });
    const url = new URL(page.url());
    assert.equal(url.search, '', `the code is gone from the URL: ${page.url()}`);
    assert.equal(await page.evaluate(() => sessionStorage.getItem('everjust.oidc')), null);
    assert.match(await page.locator('#account .email').textContent(), /@example\.com$/);
    const after = await stats();
    assert.equal(after.redeemed, before.redeemed + 1);
    assert.equal(after.refused, before.refused);
    // Our own session: a reload refreshes it (refresh token) and stays signed in.
    await page.reload();
    await page.getByRole('heading', { name: 'Projects', level: 1 }).waitFor();
    // The back button does not replay the code.
    assert.ok(!(await page.evaluate(() => location.href)).includes('code='));
    assert.deepEqual(page.errors, []);
    await context.close();
  });

  test('a redirect back with a state this tab did not start shows an error and signs nobody in', async (t) => {
    if (off) return t.skip(off);
    const { context, page } = await newPage(browser, { width: 360, height: 780 });
    const before = await stats();
    await page.goto('/?code=forged&state=not-mine');
    const alert = page.locator('.auth .error[role="alert"]');
    await alert.waitFor();
    assert.match(await alert.textContent(), /did not start here/);
    assert.equal(new URL(page.url()).search, '');
    assert.equal((await stats()).redeemed, before.redeemed, 'nothing was sent to the provider');
    await page.getByRole('heading', { name: 'Log in', exact: true }).waitFor();
    await context.close();
  });

  test('a code the provider refuses shows the server’s problem in the error box', async (t) => {
    if (off) return t.skip(off);
    const { context, page } = await newPage(browser, { width: 360, height: 780 });
    await page.goto('/#/login');
    // A login started here, but the code that comes back is not one the provider issued.
    await page.evaluate(() =>
      sessionStorage.setItem('everjust.oidc', JSON.stringify({ state: 's-1', nonce: 'n-1', verifier: 'v'.repeat(43) })),
    );
    await page.goto('/?code=never-issued&state=s-1');
    const alert = page.locator('.auth .error[role="alert"]');
    await alert.waitFor();
    assert.match(await alert.textContent(), /oidc_code_rejected/);
    assert.equal(new URL(page.url()).search, '');
    await context.close();
  });
});
