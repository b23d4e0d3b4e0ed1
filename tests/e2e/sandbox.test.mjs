// Sandboxes end to end against the Daytona fake (tests/fakes/daytona.mjs): start with file upload and
// a working preview link, an unchanged restart that uploads nothing, commands over their time limit,
// streamed exec whose output arrives while the command runs,
// other users' projects, webhooks that change state (and forged, stale, replayed, unsigned ones that
// do not), idle auto-stop through the job route, the compute quota, archived restores, the tier's
// sandbox size (with DAYTONA_IMAGE on the server) and its cap on running sandboxes.
//
// The server must run with DAYTONA_API_URL=<fake>/api, DAYTONA_API_KEY and DAYTONA_WEBHOOK_SECRET equal
// to the fake's (defaults: daytona-fake-key and the fake's DEFAULT_SECRET), else these tests skip.
// Environment: DAYTONA_FAKE_URL (default http://127.0.0.1:${DAYTONA_FAKE_PORT:-8793}); JOBS_SECRET (the
// server's, for the idle job route; those tests skip without it); E2E_ADMIN_EMAIL (an address in the
// server's ADMIN_EMAILS, for tier overrides; those tests skip without it) and E2E_ADMIN_PASSWORD.

import assert from 'node:assert/strict';
import { before, test } from 'node:test';

import { daytonaControls } from '../fakes/daytona.mjs';
import { COMMAND_FILE } from '../fakes/scenarios.mjs';
import { checkNativeRun, fakeRequests, natives, newSession, scenario, sendMessage, textOf } from './lib/chat.mjs';
import { openApiDocument } from './lib/openapi.mjs';
import {
  ADMIN_EMAIL,
  adminToken,
  BASE_URL,
  createProject,
  del,
  expectJson,
  expectProblem,
  get,
  newUser,
  patch,
  post,
  putFile,
  request,
} from './lib/client.mjs';

const FAKE = daytonaControls(process.env.DAYTONA_FAKE_URL || `http://127.0.0.1:${process.env.DAYTONA_FAKE_PORT || 8793}`);
const JOBS_SECRET = process.env.JOBS_SECRET || '';
const DIR = '/home/daytona/project';
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

let skipReason = '';

before(async () => {
  if (!(await FAKE.reachable())) {
    skipReason = `the Daytona fake is not reachable at ${FAKE.url}`;
    return;
  }
  const u = await newUser('sbx-probe');
  const p = await createProject(u.access);
  const doc = expectJson(await get(`/v1/projects/${p.id}/sandbox`, { token: u.access }), 200);
  if (doc.provider !== 'daytona') {
    skipReason = `the server uses the ${doc.provider} sandbox provider (set DAYTONA_API_URL to the fake)`;
    return;
  }
  // Daytona delivers every state change to the server, as a configured webhook endpoint would get it.
  await FAKE.webhooks(`${BASE_URL}/webhooks/daytona`);
});

/** A user with a project made from a template: { token, user, project }. */
async function setup(t, template = 'static-html') {
  if (skipReason) {
    t.skip(skipReason);
    return null;
  }
  const u = await newUser('sbx');
  const project = await createProject(u.access, { template });
  return { token: u.access, user: u.user, project };
}

const start = (s, query = '') => post(`/v1/projects/${s.project.id}/sandbox${query}`, undefined, { token: s.token });
// What the OpenAPI document says the sandbox routes answer; the answers below are checked against it.
const api = await openApiDocument();
const state = async (s) => {
  const doc = expectJson(await get(`/v1/projects/${s.project.id}/sandbox`, { token: s.token }), 200);
  api.answers('get', '/v1/projects/{id}/sandbox', 200, doc);
  return doc;
};
const exec = (s, body) => post(`/v1/projects/${s.project.id}/sandbox/exec`, body, { token: s.token });

/** Polls GET until the state is one of `want`; returns the last document. */
async function waitFor(s, want, ms = 20000) {
  const until = Date.now() + ms;
  let doc;
  while (Date.now() < until) {
    doc = await state(s);
    if (want.includes(doc.state)) return doc;
    await sleep(150);
  }
  assert.fail(`sandbox stayed ${doc?.state}, wanted ${want.join('|')}`);
}

async function uploadsOf(project) {
  const { calls } = await FAKE.calls(project);
  return calls.filter((c) => c.path.endsWith('/files/bulk-upload')).length;
}

let adminTokenHeld = null;
async function admin(t) {
  if (!ADMIN_EMAIL) {
    t.skip('E2E_ADMIN_EMAIL is not set (an address in the server ADMIN_EMAILS)');
    return null;
  }
  adminTokenHeld ??= await adminToken();
  return adminTokenHeld;
}

async function setLimits(t, userId, limits) {
  const token = await admin(t);
  if (!token) return false;
  expectJson(await patch(`/v1/admin/users/${userId}`, { limits }, { token }), 200);
  return true;
}

test('starting a sandbox uploads the files and returns a working preview link', async (t) => {
  const s = await setup(t);
  if (!s) return;
  const began = Date.now();
  const doc = expectJson(await start(s), 200);
  const ms = Date.now() - began;
  assert.equal(doc.provider, 'daytona');
  assert.equal(doc.state, 'started');
  assert.equal(doc.uploaded_files, 3);
  assert.equal(doc.sandbox_preview, true);
  assert.ok(doc.preview_url.startsWith(FAKE.url), doc.preview_url);
  assert.match(doc.static_preview_url, /\/preview\/~t\./);
  // The sandbox's preview serves what was uploaded.
  const page = await fetch(doc.preview_url);
  assert.equal(page.status, 200);
  assert.match(await page.text(), /<html/i);
  const [sb] = await FAKE.sandboxes(s.project.id);
  assert.deepEqual(Object.keys(sb.files).sort(), [`${DIR}/app.js`, `${DIR}/index.html`, `${DIR}/style.css`]);
  assert.equal(sb.labels.everjust_project, s.project.id);
  t.diagnostic(`start to preview URL: ${ms} ms (fake create ${300} ms)`);
});

test('a restart of an unchanged project uploads nothing; a changed file goes over alone', async (t) => {
  const s = await setup(t);
  if (!s) return;
  api.answers('post', '/v1/projects/{id}/sandbox', 200, expectJson(await start(s), 200));
  assert.equal(await uploadsOf(s.project.id), 1);
  const stopping = expectJson(await del(`/v1/projects/${s.project.id}/sandbox`, { token: s.token }), 202);
  api.answers('delete', '/v1/projects/{id}/sandbox', 202, stopping);
  assert.ok(['stopping', 'stopped'].includes(stopping.state), stopping.state);
  await waitFor(s, ['stopped']);
  const again = expectJson(await start(s), 200);
  assert.equal(again.uploaded_files, 0);
  assert.equal(await uploadsOf(s.project.id), 1, 'no upload request on the second start');
  // Written through the files API, then read by a command: only that file is sent.
  expectJson(await putFile(s.token, s.project.id, 'notes/hello.txt', 'hello from the files API'), 201);
  const r = expectJson(await exec(s, { command: 'cat notes/hello.txt' }), 200);
  api.answers('post', '/v1/projects/{id}/sandbox/exec', 200, r);
  assert.equal(r.output, 'hello from the files API');
  assert.equal(r.exit_code, 0);
  assert.equal(r.uploaded_files, 1);
  assert.equal(await uploadsOf(s.project.id), 2);
});

test('commands run in the project directory and report exit code and output', async (t) => {
  const s = await setup(t);
  if (!s) return;
  let r = expectJson(await exec(s, { command: 'pwd' }), 200);
  assert.deepEqual([r.exit_code, r.output, r.timed_out], [0, `${DIR}\n`, false]);
  r = expectJson(await exec(s, { command: 'ls' }), 200);
  assert.equal(r.output, 'app.js\nindex.html\nstyle.css\n');
  r = expectJson(await exec(s, { command: 'node --version' }), 200);
  assert.match(r.output, /^v\d+\./);
  r = expectJson(await exec(s, { command: 'cat nope.txt' }), 200);
  assert.equal(r.exit_code, 1);
  r = expectJson(await exec(s, { command: 'rm -rf /' }), 200);
  assert.equal(r.exit_code, 127, 'the fake runs only its allow-list');
  expectProblem(await exec(s, { command: '' }), 400, 'invalid_command');
  expectProblem(await exec(s, { command: 'ls', cwd: '../../etc' }), 400, 'invalid_path');
  expectProblem(await exec(s, { command: 'ls', env: { A: '1' } }), 400, 'invalid_body');
});

test('an empty project gets a working directory too', async (t) => {
  const s = await setup(t, 'blank');
  if (!s) return;
  const r = expectJson(await exec(s, { command: 'pwd' }), 200);
  assert.deepEqual([r.exit_code, r.output], [0, `${DIR}\n`]);
});

test('long output comes back cut in the middle with a marker', async (t) => {
  const s = await setup(t);
  if (!s) return;
  const r = expectJson(await exec(s, { command: 'seq 200000' }), 200);
  api.answers('post', '/v1/projects/{id}/sandbox/exec', 200, r);
  assert.equal(r.truncated, true);
  assert.ok(r.output.startsWith('1\n2\n3\n'));
  assert.ok(r.output.endsWith('199999\n200000\n'));
  assert.match(r.output, /bytes of output cut/);
  assert.ok(Buffer.byteLength(r.output) < 66 * 1024);
});

test('commands over the time limit are killed and reported', async (t) => {
  const s = await setup(t);
  if (!s) return;
  const began = Date.now();
  const r = expectJson(await exec(s, { command: 'sleep 5', timeout_secs: 1 }), 200);
  api.answers('post', '/v1/projects/{id}/sandbox/exec', 200, r);
  assert.deepEqual([r.timed_out, r.exit_code, r.timeout_secs], [true, 124, 1]);
  assert.match(r.output, /killed: the command ran longer than its time limit of 1 s/);
  assert.ok(Date.now() - began < 4500, 'killed at the limit, not at the end');
});

test('streamed exec sends start, output and exit events', async (t) => {
  const s = await setup(t);
  if (!s) return;
  const res = await request('POST', `/v1/projects/${s.project.id}/sandbox/exec`, {
    token: s.token,
    json: { command: 'echo streamed' },
    headers: { accept: 'text/event-stream' },
  });
  assert.equal(res.status, 200, res.show());
  assert.match(res.headers['content-type'], /^text\/event-stream/);
  const events = res.text.split('\n').filter((l) => l.startsWith('event: ')).map((l) => l.slice(7));
  assert.deepEqual(events, ['start', 'output', 'exit'], res.text);
  // Each event as the document describes it: its name, and its data an ExecEvent.
  const stream = api.doc.paths['/v1/projects/{id}/sandbox/exec'].post.responses['200'].content['text/event-stream'];
  for (const block of res.text.split('\n\n').filter((b) => b.startsWith('event: '))) {
    const [name, data] = block.split('\n').map((l) => l.slice(l.indexOf(': ') + 2));
    assert.ok(stream['x-itemSchema'].properties.event.enum.includes(name), name);
    api.conforms('/components/schemas/ExecEvent', JSON.parse(data), `the ${name} event`);
  }
  assert.match(res.text, /"text":"streamed\\n"/);
});

test('streamed exec relays output as the command prints it, well before its exit', async (t) => {
  const s = await setup(t);
  if (!s) return;
  // Started first, so the timing below is the command's alone.
  assert.equal((await start(s, '?wait=20')).status, 200);
  const began = Date.now();
  const res = await fetch(`${BASE_URL}/v1/projects/${s.project.id}/sandbox/exec`, {
    method: 'POST',
    headers: { authorization: `Bearer ${s.token}`, 'content-type': 'application/json', accept: 'text/event-stream' },
    body: JSON.stringify({ command: 'slow-echo 4 700' }),
    signal: AbortSignal.timeout(30000),
  });
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type'), /^text\/event-stream/);
  // Read the body as it comes; note when each event arrives.
  const events = [];
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buf = '';
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    buf += decoder.decode(value, { stream: true });
    let i;
    while ((i = buf.indexOf('\n\n')) !== -1) {
      const block = buf.slice(0, i);
      buf = buf.slice(i + 2);
      const name = block.split('\n').find((l) => l.startsWith('event: '))?.slice(7);
      const data = block.split('\n').find((l) => l.startsWith('data: '))?.slice(6);
      if (name) events.push({ name, data: JSON.parse(data), at: Date.now() - began });
    }
  }
  const names = events.map((e) => e.name);
  assert.equal(names[0], 'start', JSON.stringify(events));
  assert.equal(names.at(-1), 'exit', JSON.stringify(events));
  assert.ok(names.slice(1, -1).every((n) => n === 'output'), JSON.stringify(events));
  const outputs = events.filter((e) => e.name === 'output');
  assert.equal(outputs.map((e) => e.data.text).join(''), 'line 1\nline 2\nline 3\nline 4\n');
  assert.ok(outputs.length >= 2, `output came in pieces: ${JSON.stringify(events)}`);
  const first = outputs.find((e) => e.data.text.includes('line 1'));
  const exit = events.at(-1);
  assert.equal(exit.data.exit_code, 0);
  assert.equal(exit.data.timed_out, false);
  // The command takes 2.1 s from its first line to its exit: the first line must not wait for it.
  assert.ok(exit.at - first.at >= 1200, `first line at ${first.at} ms, exit at ${exit.at} ms`);
  // The session it ran in is gone.
  const calls = await FAKE.calls(s.project.id);
  assert.ok(
    calls.calls.some((c) => c.method === 'DELETE' && /\/process\/session\/[^/]+$/.test(c.path)),
    'the session was deleted',
  );
});

test('a streamed command over its time limit is killed and reported', async (t) => {
  const s = await setup(t);
  if (!s) return;
  assert.equal((await start(s, '?wait=20')).status, 200);
  const res = await request('POST', `/v1/projects/${s.project.id}/sandbox/exec`, {
    token: s.token,
    json: { command: 'slow-echo 50 200', timeout_secs: 1 },
    headers: { accept: 'text/event-stream' },
  });
  assert.equal(res.status, 200, res.show());
  // 50 lines 200 ms apart take 10 s; killed at 1 s, only the first few were printed. (Not timed
  // here: the client waits out a 429 from the shared test IP inside `request`.)
  const lines = res.text.match(/line \d+/g) || [];
  assert.ok(lines.length >= 1 && lines.length <= 15 && !lines.includes('line 50'), `killed at the limit, not at the end: ${lines.join(', ')}`);
  const events = res.text.split('\n').filter((l) => l.startsWith('event: ')).map((l) => l.slice(7));
  assert.equal(events.at(-1), 'exit', res.text);
  assert.match(res.text, /"timed_out":true/);
  assert.match(res.text, /"exit_code":124/);
  assert.match(res.text, /"text":"line 1\\n/);
  assert.match(res.text, /killed: the command ran longer than its time limit of 1 s/);
});

test('the agent writes a file and its command reads it in the sandbox; the model gets the output', async (t) => {
  const s = await setup(t);
  if (!s) return;
  const sc = scenario('command', 'notes.txt');
  if ((await fakeRequests(sc.nonce)) === null) return t.skip('the model fake is not reachable');
  const session = await newSession(s.token, s.project.id);
  const run = await sendMessage(s.token, session.id, sc.text);
  assert.equal(run.status, 200, run.text);
  const last = checkNativeRun(run.events);
  assert.equal(last.status, 'complete', JSON.stringify(last));
  const evs = natives(run.events);
  const results = evs.filter((e) => e.type === 'tool_result');
  assert.deepEqual(results.map((e) => e.is_error), [false, false], JSON.stringify(results));
  // The file the run wrote went up before its command ran, in the project directory.
  assert.match(textOf(evs), new RegExp(`Command said: [\\s\\S]*Exit code: 0\\nOutput:\\n${COMMAND_FILE}${DIR}\\n`));
  assert.equal((await state(s)).state, 'started', 'the command started the sandbox');
  const r = expectJson(await exec(s, { command: 'cat notes.txt' }), 200);
  assert.equal(r.output, COMMAND_FILE);
});

test("sandbox routes on another user's project are 404 and do nothing", async (t) => {
  const s = await setup(t);
  if (!s) return;
  const eve = await newUser('sbx-eve');
  for (const [method, suffix] of [['POST', ''], ['GET', ''], ['DELETE', ''], ['POST', '/exec']]) {
    const r = await request(method, `/v1/projects/${s.project.id}/sandbox${suffix}`, { token: eve.access, json: { command: 'ls' } });
    expectProblem(r, 404, 'not_found');
  }
  assert.deepEqual(await FAKE.sandboxes(s.project.id), [], 'no sandbox was made');
  expectProblem(await exec({ ...s, token: undefined }, { command: 'ls' }), 401, 'unauthorized');
});

test('preview paths with traversal are refused', async (t) => {
  const s = await setup(t);
  if (!s) return;
  const doc = await state(s);
  const link = doc.static_preview_url;
  for (const bad of ['..%2f..%2fetc%2fpasswd', '%2e%2e/%2e%2e/x', 'a/%2e%2e/%2e%2e/b', 'a\\..\\b']) {
    const r = await get(`${link}${bad}`);
    // A URL parser in front of the server may resolve the dots first and drop the link's token
    // segment (401) or the path (404): refused either way, and nothing is read.
    assert.ok([400, 401, 404].includes(r.status), `${bad}: ${r.show()}`);
    if (r.status === 400) expectProblem(r, 400, 'invalid_path');
    assert.doesNotMatch(r.text, /<html|root:/i);
  }
  assert.equal((await get(`${link}index.html`)).status, 200);
});

test('a webhook from Daytona updates the state; forged, stale, unsigned and replayed ones change nothing', async (t) => {
  const s = await setup(t);
  if (!s) return;
  expectJson(await start(s), 200);
  const [sb] = await FAKE.sandboxes(s.project.id);
  const body = (newState, at = new Date().toISOString()) => ({
    event: 'sandbox.state.updated',
    timestamp: at,
    id: sb.id,
    organizationId: 'org_fake',
    oldState: 'started',
    newState,
    updatedAt: at,
  });
  const later = new Date(Date.now() + 60_000).toISOString();
  for (const signature of ['bad', 'stale', 'none']) {
    const d = await FAKE.deliver({ body: body('stopped', later), signature });
    assert.equal(d.status, 401, `${signature}: ${d.status} ${d.body}`);
    assert.equal(JSON.parse(d.body).code, 'invalid_signature');
  }
  assert.equal((await state(s)).state, 'started');
  const id = `msg_e2e_${Date.now()}`;
  const ok = await FAKE.deliver({ body: body('stopped', later), id });
  assert.equal(ok.status, 200, ok.body);
  assert.equal(JSON.parse(ok.body).status, 'applied');
  assert.equal((await state(s)).state, 'stopped');
  // The same delivery again is a no-op.
  const replay = await FAKE.deliver({ body: body('archived', later), id });
  assert.equal(replay.status, 200);
  assert.equal(JSON.parse(replay.body).status, 'duplicate');
  assert.equal((await state(s)).state, 'stopped');
  // Unknown events are accepted and ignored.
  const odd = await FAKE.deliver({ body: { event: 'volume.created', id: 'vol1', whatever: [1, 2] } });
  assert.equal(odd.status, 200);
});

test("a state change at Daytona reaches the server by itself", async (t) => {
  const s = await setup(t);
  if (!s) return;
  expectJson(await start(s), 200);
  const [sb] = await FAKE.sandboxes(s.project.id);
  await FAKE.forceState(sb.id, 'stopped');
  await waitFor(s, ['stopped'], 10000);
});

test('a sandbox in error is replaced on the next start, with every file uploaded again', async (t) => {
  const s = await setup(t);
  if (!s) return;
  expectJson(await start(s), 200);
  const [old] = await FAKE.sandboxes(s.project.id);
  await FAKE.forceState(old.id, 'error', 'the runner lost its disk');
  const broken = await waitFor(s, ['error'], 10000);
  assert.equal(broken.error, 'the runner lost its disk');
  assert.match(broken.message, /again/);
  const doc = expectJson(await start(s), 200);
  assert.equal(doc.state, 'started');
  assert.equal(doc.uploaded_files, 3);
  await sleep(300);
  const now = await FAKE.sandboxes(s.project.id);
  assert.equal(now.length, 1, 'the broken one is gone');
  assert.notEqual(now[0].id, old.id);
  assert.equal(now[0].files[`${DIR}/index.html`], old.files[`${DIR}/index.html`]);
});

test('starting an archived sandbox works, slower, and says so', async (t) => {
  const s = await setup(t);
  if (!s) return;
  await FAKE.timing({ project: s.project.id, restoreMs: 2500 });
  expectJson(await start(s), 200);
  expectJson(await del(`/v1/projects/${s.project.id}/sandbox`, { token: s.token }), 202);
  await waitFor(s, ['stopped']);
  const archiving = expectJson(await del(`/v1/projects/${s.project.id}/sandbox?archive=true`, { token: s.token }), 202);
  assert.ok(['archiving', 'archived'].includes(archiving.state), archiving.state);
  await waitFor(s, ['archived']);
  const r = await start(s, '?wait=0');
  const doc = expectJson(r, 202);
  assert.equal(r.headers['retry-after'], '3');
  assert.deepEqual([doc.state, doc.restoring], ['restoring', true]);
  assert.match(doc.message, /archive/);
  assert.match(doc.preview_url, /\/preview\/~t\./, 'the static preview meanwhile');
  const up = await waitFor(s, ['started'], 15000);
  assert.equal(up.sandbox_preview, true);
  // The files were there all along.
  const out = expectJson(await exec(s, { command: 'ls' }), 200);
  assert.equal(out.output, 'app.js\nindex.html\nstyle.css\n');
});

test('the idle job stops a sandbox idle longer than its tier allows', async (t) => {
  if (!JOBS_SECRET) return t.skip('JOBS_SECRET is not set');
  const s = await setup(t);
  if (!s) return;
  if (!(await setLimits(t, s.user.id, { sandbox_idle_minutes: 0 }))) return;
  expectJson(await start(s), 200);
  // Without the secret: refused.
  expectProblem(await post('/v1/_jobs/sandbox-idle', undefined, { token: 'wrong' }), 401, 'unauthorized');
  expectProblem(await post('/v1/_jobs/sandbox-idle', undefined, { token: s.token }), 401, 'unauthorized');
  const report = expectJson(await post('/v1/_jobs/sandbox-idle', undefined, { token: JOBS_SECRET }), 200);
  api.answers('post', '/v1/_jobs/sandbox-idle', 200, report);
  assert.ok(report.stopped >= 1, JSON.stringify(report));
  await waitFor(s, ['stopped']);
  const usage = expectJson(await get('/v1/usage', { token: s.token }), 200);
  assert.ok(usage.by_day.some((d) => d.kind === 'sandbox'), JSON.stringify(usage.by_day));
});

test('a start over the month’s sandbox minutes is refused with a clear error', async (t) => {
  const s = await setup(t);
  if (!s) return;
  if (!(await setLimits(t, s.user.id, { compute_minutes_month: 0 }))) return;
  const r = await start(s);
  const p = expectProblem(r, 402, 'quota_compute_minutes');
  assert.match(p.detail, /sandbox minutes/);
  assert.ok(Number(r.headers['retry-after']) > 0);
  assert.deepEqual(await FAKE.sandboxes(s.project.id), []);
});

test('a sandbox built from an image gets its owner’s tier’s resources, and an admin override changes them', async (t) => {
  const s = await setup(t);
  if (!s) return;
  expectJson(await start(s), 200);
  const [sb] = await FAKE.sandboxes(s.project.id);
  if (sb.source !== 'image') {
    t.skip(`the server makes sandboxes from a ${sb.source} snapshot, which brings its own size (set DAYTONA_IMAGE)`);
    return;
  }
  assert.ok(sb.image, 'the build names its image');
  assert.deepEqual(sb.resources, { cpu: 1, memory: 1, disk: 3 }, 'the free tier’s size');
  if (!(await setLimits(t, s.user.id, { sandbox_cpu: 2, sandbox_memory_gib: 4, sandboxes_running: 2 }))) return;
  const other = { ...s, project: await createProject(s.token, { template: 'static-html' }) };
  expectJson(await start(other), 200);
  const [bigger] = await FAKE.sandboxes(other.project.id);
  assert.deepEqual(bigger.resources, { cpu: 2, memory: 4, disk: 3 });
});

test('a start over the tier’s running sandboxes is refused clearly and stopping one frees the slot', async (t) => {
  const s = await setup(t);
  if (!s) return;
  expectJson(await start(s), 200);
  const other = { ...s, project: await createProject(s.token, { template: 'static-html' }) };
  const p = expectProblem(await start(other), 429, 'quota_sandboxes');
  assert.equal(p.limit, 1);
  assert.deepEqual(p.running_projects, [s.project.id]);
  assert.deepEqual(await FAKE.sandboxes(other.project.id), [], 'nothing was made');
  expectJson(await del(`/v1/projects/${s.project.id}/sandbox`, { token: s.token }), 202);
  expectJson(await start(other), 200);
});
