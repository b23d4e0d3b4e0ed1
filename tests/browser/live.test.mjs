// Live behaviour: a stream cut by the network resumes without losing or
// repeating text, a message typed offline is sent once when back online,
// and two tabs in one session see each other (presence) and the same run.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import {
  PASSWORD,
  api,
  chatReady,
  createProject,
  cutProxy,
  finishedRun,
  launch,
  logIn,
  newPage,
  sendMessage,
  serverMode,
  signUp,
  sleep,
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

const slowText = (n) => Array.from({ length: n }, (_, i) => `w${i} `).join('');

async function tokenFor(email) {
  const r = await api('/v1/auth/login', { method: 'POST', json: { email, password: PASSWORD } });
  assert.equal(r.status, 200, JSON.stringify(r.doc));
  return r.doc.access_token;
}

describe('network cuts', () => {
  // Chromium's offline emulation flips navigator.onLine but leaves open
  // streams alone, so a TCP proxy in front of the server really cuts them.
  for (const offline of [false, true]) {
    const name = offline
      ? 'offline mid-stream: the answer arrives exactly once, and a message typed offline is sent once when back'
      : 'a dropped stream shows "reconnecting", resumes after the last event and finishes exactly once';
    test(name, async (t) => {
      if (mode.model !== 'fake') return t.skip('needs the model fake (a slow stream): start the server with ANTHROPIC_BASE_URL at tests/fakes/anthropic.mjs and set MODEL_FAKE_URL');
      const proxy = await cutProxy();
      const { context, page } = await newPage(browser, { width: 360, height: 740, baseURL: proxy.url });
      try {
        const resumes = [];
        page.on('request', (r) => {
          if (/\/v1\/sessions\/[^/]+\/events/.test(r.url())) resumes.push(r.headers()['last-event-id']);
        });
        const email = await signUp(page);
        await createProject(page, 'Cut', 'Blank');
        const n = 150;
        await sendMessage(page, `[scenario:slow:${n}:20] count slowly`);
        const run = page.locator('.msg.assistant').first();
        await run.getByText('w20 ', { exact: false }).waitFor({ timeout: 30000 });

        if (offline) await context.setOffline(true);
        proxy.cut();
        const conn = page.locator(offline ? '.conn[data-kind="offline"]' : '.conn[data-kind="reconnecting"]');
        await conn.waitFor({ timeout: 10000 });
        assert.match(await conn.textContent(), offline ? /offline/i : /reconnecting/i);
        if (offline) {
          // A message typed while offline is queued, not lost and not sent twice.
          await sendMessage(page, '[scenario:text] sent after the network came back');
          await page.locator('.msg.user[data-state="queued"]').waitFor();
          assert.match(await page.locator('.conn').textContent(), /1 message queued/);
        }
        await sleep(1500);
        proxy.restore();
        if (offline) await context.setOffline(false);

        const first = await finishedRun(page, 0, 60000);
        assert.equal(first.status, 'complete');
        assert.equal(first.text.join(''), slowText(n), 'every delta exactly once, in order');
        assert.ok(resumes.length >= 1, 'the client resumed with GET /events');
        assert.ok(resumes.every((id) => Number(id) > 20), `resumed after the last event seen (Last-Event-ID ${resumes.join()})`);

        if (offline) {
          const second = await finishedRun(page, 1, 60000);
          assert.equal(second.status, 'complete');
          assert.match(second.text.join(''), /Hello from the fake model/);
          assert.equal(await page.locator('.msg.user').count(), 2);
        }
        assert.equal(await page.locator('.msg.user[data-state="queued"], .msg.user[data-state="failed"]').count(), 0);
        await page.locator('.conn[hidden]').waitFor({ state: 'attached', timeout: 10000 });

        // The server agrees, and a reload shows the same conversation.
        const token = await tokenFor(email);
        const sessionId = await page.locator('.project-page').getAttribute('data-session-id');
        const msgs = await api(`/v1/sessions/${sessionId}/messages?limit=50`, { token });
        assert.equal(msgs.doc.items.filter((m) => m.role === 'user').length, offline ? 2 : 1);
        await page.reload();
        await page.locator('.msg.assistant').nth(offline ? 1 : 0).waitFor();
        assert.equal((await page.locator('.msg.assistant').first().locator('.text').allTextContents()).join(''), slowText(n));
      } finally {
        await context.close();
        await proxy.close();
      }
    });
  }
});

describe('two tabs in one session', () => {
  test('see each other in presence and the same streamed run', async (t) => {
    if (!mode.rooms) return t.skip('the server has no live rooms (the WebSocket route answers 501)');
    const a = await newPage(browser, { width: 1280, height: 800 });
    const email = await signUp(a.page);
    await createProject(a.page, 'Together', 'Blank');
    const url = a.page.url();

    const b = await newPage(browser, { width: 360, height: 740 });
    await logIn(b.page, email);
    await b.page.goto(url);
    await chatReady(b.page);

    await a.page.locator('.presence[data-connections="2"]').waitFor({ timeout: 20000 });
    await b.page.locator('.presence[data-connections="2"]').waitFor({ timeout: 20000 });
    assert.match(await a.page.locator('.presence').textContent(), new RegExp(email.replace(/[.+]/g, '\\$&')));

    const msg = mode.model === 'fake' ? '[scenario:slow:40:25] shared stream' : writePageMessage(mode, 'Shared page').text;
    await sendMessage(a.page, msg);
    const seenByA = await finishedRun(a.page, 0);
    const seenByB = await finishedRun(b.page, 0);
    assert.equal(seenByA.status, 'complete');
    assert.deepEqual(seenByB.text, seenByA.text);
    assert.deepEqual(seenByB.tools, seenByA.tools);
    // B shows the message A sent.
    await b.page.locator('.msg.user', { hasText: msg.slice(0, 12) }).waitFor();

    await b.context.close();
    await a.page.locator('.presence[data-connections="1"]').waitFor({ timeout: 20000 });
    await a.context.close();
  });
});

describe('without live rooms', () => {
  test('presence stays hidden and another tab still gets the run from the event log', async () => {
    // Refuse every WebSocket, as a server without rooms does (501): the client falls back to polling.
    const a = await newPage(browser, { width: 1280, height: 800 });
    const b = await newPage(browser, { width: 360, height: 740 });
    for (const c of [a.context, b.context]) {
      await c.routeWebSocket(/\/v1\/sessions\/[^/]+\/ws/, (ws) => ws.close({ code: 1011, reason: 'no rooms' }));
    }
    const email = await signUp(a.page);
    await createProject(a.page, 'Solo rooms', 'Blank');
    await logIn(b.page, email);
    await b.page.goto(a.page.url());
    await chatReady(b.page);
    await sleep(500);
    assert.equal(await a.page.locator('.presence').isVisible(), false);
    assert.equal(await b.page.locator('.presence').isVisible(), false);

    const msg = writePageMessage(mode, 'Polled page').text;
    await sendMessage(a.page, msg);
    const seenByA = await finishedRun(a.page, 0);
    const seenByB = await finishedRun(b.page, 0, 30000);
    assert.deepEqual(seenByB.text, seenByA.text);
    await b.page.locator('.msg.user', { hasText: msg.slice(0, 12) }).waitFor();
    assert.deepEqual([...a.page.errors, ...b.page.errors].filter((e) => !/WebSocket/.test(e)), []);
    await a.context.close();
    await b.context.close();
  });
});
