// Helpers of the browser tests: Chromium through playwright-core, the app's
// flows (sign up, create a project, send a message), and what kind of
// server this is (demo model or the model fake; live rooms or not).
//
// Environment:
//   BASE_URL        the server (default http://127.0.0.1:8787)
//   MODEL_FAKE_URL  the model fake the server was started with
//                   (ANTHROPIC_BASE_URL); unset: probed, else the demo model
//   CHROMIUM        the browser binary (default /usr/bin/chromium)
//   HEADFUL=1       show the browser

import assert from 'node:assert/strict';
import { existsSync, mkdirSync } from 'node:fs';
import net from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

export const BASE_URL = (process.env.BASE_URL || 'http://127.0.0.1:8787').replace(/\/+$/, '');
export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
export const ARTIFACTS = join(dirname(fileURLToPath(import.meta.url)), '..', 'artifacts');
export const PASSWORD = 'correct horse battery staple';
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

let counter = 0;
export const uniqueEmail = (tag = 'web') =>
  `${tag}-${Date.now().toString(36)}-${process.pid}-${counter++}@example.com`;

export async function launch() {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`${CHROMIUM} is missing: run tests/browser/ensure-chromium.sh (apt-get install -y chromium)`);
  }
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: process.env.HEADFUL !== '1',
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--no-first-run',
      '--disable-dev-shm-usage',
    ],
  });
}

/** A new context + page that records console errors and failed page loads. */
export async function newPage(browser, { width = 1280, height = 800, ...opts } = {}) {
  const context = await browser.newContext({ viewport: { width, height }, baseURL: BASE_URL, ...opts });
  const page = await context.newPage();
  page.errors = [];
  page.on('pageerror', (e) => page.errors.push(`pageerror: ${e.message}`));
  // Failed requests are recorded with their URL below; the console's copy has none.
  page.on('console', (m) => {
    if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) page.errors.push(`console: ${m.text()}`);
  });
  page.badResponses = [];
  page.on('response', (r) => {
    if (r.status() >= 400) page.badResponses.push(`${r.status()} ${r.request().method()} ${new URL(r.url()).pathname}`);
  });
  page.on('dialog', (d) => d.accept());
  return { context, page };
}

export function artifactPath(name) {
  mkdirSync(ARTIFACTS, { recursive: true });
  return join(ARTIFACTS, name);
}

// --- API (for setup and checks; the flows under test go through the UI) ---

export async function api(path, { method = 'GET', token, json, headers = {} } = {}) {
  const h = { ...headers };
  if (token) h.authorization = `Bearer ${token}`;
  let body;
  if (json !== undefined) {
    h['content-type'] = 'application/json';
    body = JSON.stringify(json);
  }
  const res = await fetch(`${BASE_URL}${path}`, { method, headers: h, body, signal: AbortSignal.timeout(30000) });
  const text = await res.text();
  let doc = null;
  try {
    doc = text ? JSON.parse(text) : null;
  } catch {
    doc = text;
  }
  return { status: res.status, doc, headers: res.headers };
}

export async function apiUser(tag = 'api') {
  const email = uniqueEmail(tag);
  const r = await api('/v1/auth/signup', { method: 'POST', json: { email, password: PASSWORD } });
  assert.equal(r.status, 201, JSON.stringify(r.doc));
  return { email, token: r.doc.access_token, user: r.doc.user };
}

// --- what kind of server ---

let modeOnce = null;
/**
 * { model: 'fake' | 'demo', rooms: boolean }: whether runs go to the model
 * fake (scenario markers work) or the keyless demo model, and whether the
 * server has live rooms (WebSocket presence).
 */
export function serverMode() {
  if (!modeOnce) modeOnce = probe();
  return modeOnce;
}

async function probe() {
  const u = await apiUser('probe');
  const p = await api('/v1/projects', { method: 'POST', token: u.token, json: { name: 'probe' } });
  assert.equal(p.status, 201, JSON.stringify(p.doc));
  const s = await api(`/v1/projects/${p.doc.id}/sessions`, { method: 'POST', token: u.token, json: {} });
  assert.equal(s.status, 201, JSON.stringify(s.doc));
  // Which provider answers: the first event of a run names it.
  const res = await fetch(`${BASE_URL}/v1/sessions/${s.doc.id}/messages`, {
    method: 'POST',
    headers: { authorization: `Bearer ${u.token}`, 'content-type': 'application/json', accept: 'text/event-stream' },
    body: JSON.stringify({ content: '[scenario:text] probe' }),
    signal: AbortSignal.timeout(30000),
  });
  const text = await res.text();
  const m = /"provider":"([a-z]+)"/.exec(text);
  const model = m && m[1] !== 'demo' ? 'fake' : 'demo';
  // Live rooms: a WebSocket upgrade answers 101, not 501.
  const t = await api(`/v1/sessions/${s.doc.id}/ws-ticket`, { method: 'POST', token: u.token });
  let rooms = false;
  if (t.status === 201) {
    const { default: WebSocket } = await import('ws');
    rooms = await new Promise((resolve) => {
      const ws = new WebSocket(`${BASE_URL.replace(/^http/, 'ws')}${t.doc.url}`);
      const done = (v) => {
        try {
          ws.terminate();
        } catch {
          /* closed */
        }
        resolve(v);
      };
      ws.on('open', () => done(true));
      ws.on('unexpected-response', () => done(false));
      ws.on('error', () => done(false));
      setTimeout(() => done(false), 10000);
    });
  }
  return { model, rooms };
}

// --- UI flows ---

export async function signUp(page, email = uniqueEmail()) {
  await page.goto('/#/signup');
  await page.getByLabel('Email').fill(email);
  await page.getByLabel('Password').fill(PASSWORD);
  await page.getByRole('button', { name: 'Create account' }).click();
  await page.getByRole('heading', { name: 'Projects', level: 1 }).waitFor();
  return email;
}

export async function logIn(page, email) {
  await page.goto('/#/login');
  await page.getByLabel('Email').fill(email);
  await page.getByLabel('Password').fill(PASSWORD);
  await page.getByRole('button', { name: 'Log in', exact: true }).click();
  await page.getByRole('heading', { name: 'Projects', level: 1 }).waitFor();
}

/** Creates a project through the form; resolves on its page with the chat ready. */
export async function createProject(page, name, template) {
  await page.getByLabel('Name', { exact: true }).fill(name);
  if (template) await page.getByRole('radio', { name: new RegExp(template, 'i') }).check();
  await page.getByRole('button', { name: 'Create project' }).click();
  await page.waitForURL(/#\/p\/prj_/);
  await chatReady(page);
  return page.url().split('#/p/')[1];
}

export async function chatReady(page) {
  await page.locator('#message:not([disabled])').waitFor({ timeout: 30000 });
}

export async function sendMessage(page, text) {
  await page.locator('#message').fill(text);
  await page.locator('#message').press('Enter');
}

/** The text of the assistant message of the n-th run (0-based), once finished. */
export async function finishedRun(page, n = 0, timeout = 60000) {
  const run = page.locator('.msg.assistant').nth(n);
  await run.and(page.locator(':not([data-status="running"])')).waitFor({ timeout });
  return {
    status: await run.getAttribute('data-status'),
    text: await run.locator('.blocks > .text').allTextContents(),
    tools: await run.locator('.tool').evaluateAll((els) => els.map((e) => ({ tool: e.dataset.tool, path: e.dataset.path, state: e.dataset.state }))),
  };
}

/** A message that makes the model write index.html, and what the page's h1 will say. */
export function writePageMessage(mode, words) {
  if (mode.model === 'fake') return { text: `[scenario:tool-fragments] ${words}`, h1: 'Héllo 👋 from the fake model' };
  return { text: words, h1: words };
}

/**
 * A TCP proxy in front of BASE_URL whose connections the test can cut, like
 * a network that drops: cut() destroys every open connection (streams,
 * WebSockets) and refuses new ones until restore().
 * @returns {Promise<{url: string, cut: () => void, restore: () => void, close: () => Promise<void>, connections: () => number}>}
 */
export function cutProxy() {
  const target = new URL(BASE_URL);
  const sockets = new Set();
  let down = false;
  const server = net.createServer((client) => {
    if (down) {
      client.destroy();
      return;
    }
    const upstream = net.connect(Number(target.port || 80), target.hostname);
    sockets.add(client);
    sockets.add(upstream);
    const drop = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on('error', drop).on('close', drop);
    upstream.on('error', drop).on('close', drop);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      resolve({
        url: `http://127.0.0.1:${port}`,
        cut() {
          down = true;
          for (const s of sockets) s.destroy();
          sockets.clear();
        },
        restore() {
          down = false;
        },
        connections: () => sockets.size / 2,
        close() {
          this.cut();
          return new Promise((r) => server.close(() => r()));
        },
      });
    });
  });
}
