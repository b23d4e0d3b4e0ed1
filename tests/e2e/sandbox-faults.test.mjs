// Sandboxes when Daytona misbehaves (tests/fakes/daytona.mjs outage switch): a down provider gives a
// retryable problem with Retry-After and loses no project file; a short blip is absorbed by retries;
// an answer slower than the client's timeout is retried; commands are never sent twice.
// Outages are scoped to the test's own project, so other tests running at the same time are unaffected.
// The server must be configured for the fake (see sandbox.test.mjs), else these tests skip.

import assert from 'node:assert/strict';
import { before, test } from 'node:test';

import { daytonaControls } from '../fakes/daytona.mjs';
import { createProject, del, expectJson, expectProblem, get, listFiles, newUser, post } from './lib/client.mjs';

const FAKE = daytonaControls(process.env.DAYTONA_FAKE_URL || `http://127.0.0.1:${process.env.DAYTONA_FAKE_PORT || 8793}`);
let skipReason = '';

before(async () => {
  if (!(await FAKE.reachable())) {
    skipReason = `the Daytona fake is not reachable at ${FAKE.url}`;
    return;
  }
  const u = await newUser('sbx-probe');
  const p = await createProject(u.access);
  const doc = expectJson(await get(`/v1/projects/${p.id}/sandbox`, { token: u.access }), 200);
  if (doc.provider !== 'daytona') skipReason = `the server uses the ${doc.provider} sandbox provider`;
});

async function setup(t) {
  if (skipReason) {
    t.skip(skipReason);
    return null;
  }
  const u = await newUser('sbx-fault');
  const project = await createProject(u.access, { template: 'static-html' });
  return { token: u.access, project };
}

const start = (s) => post(`/v1/projects/${s.project.id}/sandbox`, undefined, { token: s.token });
const exec = (s, body) => post(`/v1/projects/${s.project.id}/sandbox/exec`, body, { token: s.token });

async function callsTo(project, suffix) {
  const { calls } = await FAKE.calls(project);
  return calls.filter((c) => c.path.endsWith(suffix)).length;
}

test('a down provider gives sandbox_unavailable with Retry-After, and the files stay', async (t) => {
  const s = await setup(t);
  if (!s) return;
  await FAKE.outage({ mode: 'down', project: s.project.id, status: 503 });
  try {
    const r = await start(s);
    const p = expectProblem(r, 503, 'sandbox_unavailable');
    assert.equal(p.retryable, true);
    assert.ok(Number(r.headers['retry-after']) > 0);
    assert.ok((await callsTo(s.project.id, '/api/sandbox')) >= 3, 'the create was retried with backoff');
    expectProblem(await exec(s, { command: 'ls' }), 503, 'sandbox_unavailable');
    // The project store is the truth: every file is still there.
    const files = await listFiles(s.token, s.project.id);
    assert.deepEqual([...files.keys()].sort(), ['app.js', 'index.html', 'style.css']);
  } finally {
    await FAKE.outage({ mode: 'off', project: s.project.id });
  }
  const doc = expectJson(await start(s), 200);
  assert.deepEqual([doc.state, doc.uploaded_files], ['started', 3]);
});

test('a short blip is absorbed by retries', async (t) => {
  const s = await setup(t);
  if (!s) return;
  await FAKE.outage({ mode: 'down', project: s.project.id, status: 502, times: 2 });
  const doc = expectJson(await start(s), 200);
  assert.equal(doc.state, 'started');
});

test('an answer slower than the timeout is given up on and retried', async (t) => {
  const s = await setup(t);
  if (!s) return;
  await FAKE.outage({ mode: 'slow', project: s.project.id, ms: 17000, times: 1 });
  const began = Date.now();
  const doc = expectJson(await start(s), 200);
  assert.equal(doc.state, 'started');
  const secs = (Date.now() - began) / 1000;
  assert.ok(secs >= 14 && secs < 40, `took ${secs} s`);
});

test('a command is never sent twice, even when the provider fails', async (t) => {
  const s = await setup(t);
  if (!s) return;
  expectJson(await start(s), 200);
  const before = await callsTo(s.project.id, '/process/execute');
  await FAKE.outage({ mode: 'down', project: s.project.id, path: '/process/execute', status: 503, times: 1 });
  expectProblem(await exec(s, { command: 'echo once' }), 503, 'sandbox_unavailable');
  assert.equal((await callsTo(s.project.id, '/process/execute')) - before, 1);
  const ok = expectJson(await exec(s, { command: 'echo twice' }), 200);
  assert.equal(ok.output, 'twice\n');
});

test('stopping during an outage fails clearly and the sandbox can be stopped later', async (t) => {
  const s = await setup(t);
  if (!s) return;
  expectJson(await start(s), 200);
  await FAKE.outage({ mode: 'down', project: s.project.id });
  try {
    expectProblem(await del(`/v1/projects/${s.project.id}/sandbox`, { token: s.token }), 503, 'sandbox_unavailable');
  } finally {
    await FAKE.outage({ mode: 'off', project: s.project.id });
  }
  const doc = expectJson(await del(`/v1/projects/${s.project.id}/sandbox`, { token: s.token }), 202);
  assert.ok(['stopping', 'stopped'].includes(doc.state));
});
