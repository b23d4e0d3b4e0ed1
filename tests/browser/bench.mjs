// Figures of the web client (scripts/bench-web, or tests/browser/run.sh --bench):
//   1. gzip size of the page's JS+CSS (web/public)
//   2. time from navigation to an interactive chat (the composer enabled), signed in, p50 of
//      cold (new browser context) and warm (reload) loads of a project page
//   3. time from a token leaving the model (at the server's door) to its paint in the page,
//      p50/p95 over a 500-delta stream. Needs the model fake behind tests/browser/model-tap.mjs:
//      MODEL_TAP_URL (run.sh --bench sets it up); otherwise skipped.
// Prints a table and writes tests/artifacts/bench-web.json.

import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';

import { PASSWORD, api, apiUser, artifactPath, createProject, launch, newPage, sendMessage, serverMode, signUp, BASE_URL } from './lib.mjs';

const RUNS = Number(process.env.BENCH_RUNS || 10);
const DELTAS = Number(process.env.BENCH_DELTAS || 500);
const DELTA_MS = Number(process.env.BENCH_DELTA_MS || 10);
const TAP = (process.env.MODEL_TAP_URL || '').replace(/\/+$/, '');

const pct = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] : NaN;
};
const ms = (x) => (Number.isFinite(x) ? `${x.toFixed(1)} ms` : 'n/a');

const results = {};

// 1. Sizes.
const pub = join(import.meta.dirname, '..', '..', 'web', 'public');
const sizes = {};
for (const f of ['app.js', 'app.css']) {
  const b = readFileSync(join(pub, f));
  sizes[f] = { bytes: b.length, gzip: gzipSync(b, { level: 9 }).length };
}
results.size = { ...sizes, total_gzip: sizes['app.js'].gzip + sizes['app.css'].gzip };

const browser = await launch();
try {
  const mode = await serverMode();
  results.server = { base_url: BASE_URL, ...mode };

  // 2. Navigation to interactive chat. Each run has its own user (the API limits requests per
  // user and minute), with a static-html project and a session made through the API.
  const { context, page } = await newPage(browser, { width: 1280, height: 800 });
  const email = await signUp(page);
  const projectId = await createProject(page, 'Bench', 'Static HTML');
  const url = `${BASE_URL}/#/p/${projectId}`;
  await context.close();
  const freshProject = async () => {
    const u = await apiUser('bench');
    const p = await api('/v1/projects', { method: 'POST', token: u.token, json: { name: 'Bench', template: 'static-html' } });
    await api(`/v1/projects/${p.doc.id}/sessions`, { method: 'POST', token: u.token, json: {} });
    const login = await api('/v1/auth/login', { method: 'POST', json: { email: u.email, password: PASSWORD } });
    return { url: `${BASE_URL}/#/p/${p.doc.id}`, refresh: login.doc.refresh_token };
  };

  const readyAfter = async (p) => {
    try {
      await p.locator('#message:not([disabled])').waitFor({ timeout: 30000 });
    } catch (e) {
      await p.screenshot({ path: artifactPath('bench-failure.png') });
      throw new Error(`the chat did not become ready: ${p.url()} ${p.errors.join(' | ')} ${p.badResponses.join(' | ')}`, { cause: e });
    }
    return p.evaluate(() => performance.getEntriesByName('everjust:chat-ready')[0]?.startTime ?? NaN);
  };
  const cold = [];
  const warm = [];
  for (let i = 0; i < RUNS; i++) {
    // A fresh context: empty cache; signed in by logging in through the API's refresh token.
    const c = await newPage(browser, { width: 1280, height: 800 });
    const run = await freshProject();
    await c.context.addInitScript((rt) => {
      try {
        if (!sessionStorage.getItem('bench-seeded')) {
          localStorage.setItem('everjust.refresh_token', rt);
          sessionStorage.setItem('bench-seeded', '1');
        }
      } catch {
        /* the sandboxed preview frame has no storage */
      }
    }, run.refresh);
    await c.page.goto(run.url);
    cold.push(await readyAfter(c.page));
    await c.page.reload();
    warm.push(await readyAfter(c.page));
    await c.context.close();
  }
  results.chat_ready = {
    runs: RUNS,
    cold_p50_ms: pct(cold, 50),
    warm_p50_ms: pct(warm, 50),
    cold_ms: cold,
    warm_ms: warm,
  };

  // 3. Token to paint.
  if (!TAP || mode.model !== 'fake') {
    results.token_to_paint = { skipped: 'needs the model fake behind tests/browser/model-tap.mjs (MODEL_TAP_URL); run tests/browser/run.sh --bench' };
  } else {
    const b = await newPage(browser, { width: 1280, height: 800 });
    await b.page.goto(url.replace('/#/', '/#/login'));
    // Log in through the form (fresh context).
    await b.page.getByLabel('Email').fill(email);
    await b.page.getByLabel('Password').fill(PASSWORD);
    await b.page.getByRole('button', { name: 'Log in', exact: true }).click();
    await b.page.getByRole('heading', { name: 'Projects', level: 1 }).waitFor();
    await b.page.goto(url);
    await b.page.locator('#message:not([disabled])').waitFor();
    await b.page.evaluate(() => {
      // Each word `wN ` is stamped in the first animation frame after it entered the DOM.
      window.__paint = [];
      let seen = 0;
      let pending = [];
      let queued = false;
      const log = document.querySelector('.log');
      new MutationObserver(() => {
        const runs = log.querySelectorAll('.msg.assistant');
        const last = runs[runs.length - 1];
        if (!last) return;
        const words = (last.querySelector('.blocks')?.textContent || '').match(/w\d+ /g) || [];
        while (seen < words.length) pending.push(seen++);
        if (!queued && pending.length) {
          queued = true;
          requestAnimationFrame(() => {
            const t = performance.timeOrigin + performance.now();
            for (const i of pending) window.__paint[i] = t;
            pending = [];
            queued = false;
          });
        }
      }).observe(log, { subtree: true, childList: true, characterData: true });
    });
    await fetch(`${TAP}/_tap/reset`, { method: 'POST' });
    await sendMessage(b.page, `[scenario:slow:${DELTAS}:${DELTA_MS}] bench`);
    await b.page.locator('.msg.assistant[data-status="complete"]').waitFor({ timeout: 120000 });
    const paint = await b.page.evaluate(() => window.__paint);
    const sent = (await fetch(`${TAP}/_tap/deltas`).then((r) => r.json())).filter((d) => /^w\d+ $/.test(d.text));
    const lat = [];
    for (let i = 0; i < Math.min(sent.length, paint.length); i++) if (paint[i]) lat.push(paint[i] - sent[i].t);
    results.token_to_paint = {
      deltas: DELTAS,
      delta_interval_ms: DELTA_MS,
      measured: lat.length,
      p50_ms: pct(lat, 50),
      p95_ms: pct(lat, 95),
      max_ms: Math.max(...lat),
      first_token_ms: lat[0],
    };
    await b.context.close();
  }
} finally {
  await browser.close();
}

const t = results.token_to_paint;
console.log('\nweb client figures');
console.log(`  JS+CSS gzip                 ${results.size.total_gzip} B  (app.js ${results.size['app.js'].gzip} B, app.css ${results.size['app.css'].gzip} B)`);
console.log(`  navigation -> chat ready    cold p50 ${ms(results.chat_ready.cold_p50_ms)}, warm p50 ${ms(results.chat_ready.warm_p50_ms)}  (${RUNS} runs)`);
if (t.skipped) console.log(`  token -> paint              skipped: ${t.skipped}`);
else console.log(`  token -> paint              p50 ${ms(t.p50_ms)}, p95 ${ms(t.p95_ms)}, max ${ms(t.max_ms)}  (${t.measured}/${t.deltas} deltas, ${t.delta_interval_ms} ms apart; rooms: ${results.server.rooms})`);
writeFileSync(artifactPath('bench-web.json'), JSON.stringify(results, null, 2));
console.log(`  -> ${artifactPath('bench-web.json')}`);
