// Projects: templates, CRUD, pagination, and isolation between users.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  createProject,
  del,
  expectJson,
  expectProblem,
  expectStatus,
  fileUrl,
  get,
  listFiles,
  listProjects,
  missingId,
  newUser,
  patch,
  post,
  put,
  putFile,
  request,
  sha256,
} from './lib/client.mjs';

function assertProject(p) {
  assert.equal(typeof p.id, 'string');
  assert.equal(typeof p.name, 'string');
  assert.ok('description' in p, 'project has description');
  assert.ok('template' in p, 'project has template');
  assert.ok(!Number.isNaN(Date.parse(p.created_at)), `created_at: ${p.created_at}`);
  assert.ok(!Number.isNaN(Date.parse(p.updated_at)), `updated_at: ${p.updated_at}`);
}

const templatePath = (f) => (typeof f === 'string' ? f : f.path);

test('templates list the built-in starters', async () => {
  const body = expectJson(await get('/v1/templates'), 200);
  const ids = body.items.map((t) => t.id);
  for (const id of ['blank', 'static-html', 'vite-react']) assert.ok(ids.includes(id), `template ${id} listed`);
  for (const t of body.items) {
    assert.equal(typeof t.name, 'string');
    assert.equal(typeof t.description, 'string');
    assert.ok(Array.isArray(t.files), `template ${t.id} lists files`);
  }
  const vite = body.items.find((t) => t.id === 'vite-react');
  assert.ok(vite.files.map(templatePath).includes('package.json'), 'vite-react has a package.json');
  const html = body.items.find((t) => t.id === 'static-html');
  assert.ok(html.files.map(templatePath).includes('index.html'), 'static-html has an index.html');
});

test('project from a template holds its files with correct sha256', async () => {
  const { items } = expectJson(await get('/v1/templates'), 200);
  const u = await newUser('tpl');
  for (const template of items) {
    const project = await createProject(u.access, { name: `from ${template.id}`, template: template.id });
    assert.equal(project.template, template.id);
    const files = await listFiles(u.access, project.id);
    assert.deepEqual([...files.keys()].sort(), template.files.map(templatePath).sort(), `files of ${template.id}`);
    for (const [path, entry] of files) {
      const res = expectStatus(await get(fileUrl(project.id, path), { token: u.access }), 200);
      assert.equal(entry.sha256, sha256(res.body), `sha256 of ${template.id}/${path}`);
      assert.equal(entry.size, res.body.length, `size of ${template.id}/${path}`);
      assert.ok(res.body.length > 0 || path.endsWith('.gitkeep'), `${template.id}/${path} has content`);
    }
    // one project at a time: a tier may allow only a few
    expectStatus(await del(`/v1/projects/${project.id}`, { token: u.access }), 204);
  }
});

test('unknown template is rejected and creates nothing', async () => {
  const u = await newUser('tplbad');
  for (const template of ['nope', '../blank', 'BLANK ', '']) {
    expectProblem(await post('/v1/projects', { name: 'x', template }, { token: u.access }), 400, 'unknown_template');
  }
  assert.deepEqual(await listProjects(u.access), []);
});

test('project crud', async () => {
  const u = await newUser('crud');
  const created = expectJson(await post('/v1/projects', { name: 'My app', description: 'first' }, { token: u.access }), 201);
  assertProject(created);
  assert.equal(created.name, 'My app');
  assert.equal(created.description, 'first');

  const got = expectJson(await get(`/v1/projects/${created.id}`, { token: u.access }), 200);
  assert.deepEqual(got, created);

  const list = expectJson(await get('/v1/projects', { token: u.access }), 200);
  assert.deepEqual(list.items.map((p) => p.id), [created.id]);
  assert.ok(list.next_cursor === null || list.next_cursor === undefined, 'one page');

  const renamed = expectJson(await patch(`/v1/projects/${created.id}`, { name: 'Renamed' }, { token: u.access }), 200);
  assert.equal(renamed.name, 'Renamed');
  assert.equal(renamed.description, 'first', 'PATCH keeps what it does not name');
  assert.ok(Date.parse(renamed.updated_at) >= Date.parse(created.updated_at));
  const described = expectJson(await patch(`/v1/projects/${created.id}`, { description: 'second' }, { token: u.access }), 200);
  assert.equal(described.name, 'Renamed');
  assert.equal(described.description, 'second');
  assert.deepEqual(expectJson(await get(`/v1/projects/${created.id}`, { token: u.access }), 200), described);

  const res = await del(`/v1/projects/${created.id}`, { token: u.access });
  expectStatus(res, 204);
  assert.equal(res.body.length, 0);
  expectProblem(await get(`/v1/projects/${created.id}`, { token: u.access }), 404, 'not_found');
  expectProblem(await del(`/v1/projects/${created.id}`, { token: u.access }), 404, 'not_found');
  assert.deepEqual(await listProjects(u.access), []);
});

test('project without description or template', async () => {
  const u = await newUser('minimal');
  const p = expectJson(await post('/v1/projects', { name: 'bare' }, { token: u.access }), 201);
  assertProject(p);
  assert.ok(p.template === null || p.template === 'blank', `template of a bare project: ${p.template}`);
});

test('invalid project names are rejected and change nothing', async () => {
  const u = await newUser('badname');
  for (const name of ['', '   ', 'x'.repeat(10_000)]) {
    expectProblem(await post('/v1/projects', { name }, { token: u.access }), 400, 'invalid_name');
  }
  // A NUL is refused in any JSON body, before its fields are read.
  expectProblem(await post('/v1/projects', { name: 'nul\u0000byte' }, { token: u.access }), 400, 'invalid_body');
  assert.deepEqual(await listProjects(u.access), []);
  const p = await createProject(u.access, { name: 'good' });
  for (const name of ['', 'x'.repeat(10_000)]) {
    expectProblem(await patch(`/v1/projects/${p.id}`, { name }, { token: u.access }), 400, 'invalid_name');
  }
  assert.deepEqual(expectJson(await get(`/v1/projects/${p.id}`, { token: u.access }), 200), p);
});

test('project bodies with missing or unknown fields are invalid_body', async () => {
  const u = await newUser('projbody');
  expectProblem(await post('/v1/projects', {}, { token: u.access }), 400, 'invalid_body');
  expectProblem(await post('/v1/projects', { name: 42 }, { token: u.access }), 400, 'invalid_body');
  expectProblem(await post('/v1/projects', { name: 'x', owner_id: 'usr_x' }, { token: u.access }), 400, 'invalid_body');
  expectProblem(await request('POST', '/v1/projects', { token: u.access, body: '{"name":', headers: { 'content-type': 'application/json' } }), 400, 'invalid_body');
  expectProblem(await request('POST', '/v1/projects', { token: u.access, body: '{"name":"x"}', headers: { 'content-type': 'text/plain' } }), 415, 'unsupported_media_type');
  assert.deepEqual(await listProjects(u.access), []);
  const p = await createProject(u.access);
  expectProblem(await patch(`/v1/projects/${p.id}`, { name: 'y', id: 'prj_other' }, { token: u.access }), 400, 'invalid_body');
  expectProblem(await patch(`/v1/projects/${p.id}`, { template: 'vite-react' }, { token: u.access }), 400, 'invalid_body');
  assert.deepEqual(expectJson(await get(`/v1/projects/${p.id}`, { token: u.access }), 200), p);
});

test('SQL metacharacters in project names are stored verbatim', async () => {
  const u = await newUser('sqlname');
  const names = [
    "Robert'); DROP TABLE projects;--",
    `" OR "1"="1`,
    "x' OR '1'='1",
    '%_\\%',
    '$1 $$ $$; --',
  ];
  // stored by INSERT ...
  const p = await createProject(u.access, { name: names[0], description: `${names[0]} /* */` });
  assert.equal(p.name, names[0]);
  // ... and by UPDATE
  for (const name of names) {
    const patched = expectJson(await patch(`/v1/projects/${p.id}`, { name, description: `${name} /* */` }, { token: u.access }), 200);
    assert.equal(patched.name, name);
    const got = expectJson(await get(`/v1/projects/${p.id}`, { token: u.access }), 200);
    assert.equal(got.name, name);
    assert.equal(got.description, `${name} /* */`);
  }
  const list = await listProjects(u.access);
  assert.deepEqual(list.map((x) => x.name), [names[names.length - 1]]);
});

test('utf-8 project names round trip', async () => {
  const u = await newUser('utf8');
  const name = 'Café ✓ 日本語のアプリ 🚀 Ünïcødé';
  const p = await createProject(u.access, { name });
  assert.equal(p.name, name);
  assert.equal(expectJson(await get(`/v1/projects/${p.id}`, { token: u.access }), 200).name, name);
});

/** How many projects the user's tier allows (GET /v1/me limits.projects), at most `want`. */
async function projectsAllowed(token, want) {
  const me = expectJson(await get('/v1/me', { token }), 200);
  const quota = Number(me.limits?.projects ?? Infinity);
  return Math.min(want, quota);
}

test('pagination walks every project once', async () => {
  const u = await newUser('pages');
  // 5 projects paged by 2; a tier that allows fewer gets pages of 1
  const n = await projectsAllowed(u.access, 5);
  assert.ok(n >= 2, `the tier allows ${n} projects`);
  const pageSize = n >= 5 ? 2 : 1;
  const created = [];
  for (let i = 0; i < n; i++) created.push((await createProject(u.access, { name: `page ${i}` })).id);
  const seen = [];
  let cursor = null;
  const sizes = [];
  for (let i = 0; i < 10; i++) {
    const q = `?limit=${pageSize}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`;
    const body = expectJson(await get(`/v1/projects${q}`, { token: u.access }), 200);
    assert.ok(body.items.length <= pageSize, 'limit honoured');
    sizes.push(body.items.length);
    seen.push(...body.items.map((p) => p.id));
    cursor = body.next_cursor;
    if (!cursor) break;
  }
  assert.ok(!cursor, 'the walk ends');
  assert.equal(new Set(seen).size, seen.length, `no duplicates: ${seen}`);
  assert.deepEqual([...seen].sort(), [...created].sort(), 'every project seen');
  assert.deepEqual(sizes, Array.from({ length: Math.ceil(n / pageSize) }, (_, i) => Math.min(pageSize, n - i * pageSize)), 'full pages, then the rest');
  // the default page holds them all
  const all = expectJson(await get('/v1/projects', { token: u.access }), 200);
  assert.equal(all.items.length, n);
  assert.ok(all.next_cursor === null || all.next_cursor === undefined);
});

test('invalid limit is rejected', async () => {
  const u = await newUser('limit');
  for (const limit of ['0', '-1', 'abc', '1.5', '1e3', '99999999999999999999']) {
    expectProblem(await get(`/v1/projects?limit=${encodeURIComponent(limit)}`, { token: u.access }), 400, 'invalid_limit');
  }
});

test('invalid cursor is rejected', async () => {
  const u = await newUser('cursor');
  await createProject(u.access);
  for (const cursor of ['garbage', '!!!', 'AAAA', `${'z'.repeat(300)}`, "' OR 1=1 --"]) {
    expectProblem(await get(`/v1/projects?cursor=${encodeURIComponent(cursor)}`, { token: u.access }), 400, 'invalid_cursor');
  }
});

test('foreign project is not found', async () => {
  const owner = await newUser('owner');
  const intruder = await newUser('intruder');
  const created = await createProject(owner.access, { name: 'owned', description: 'mine' });
  expectStatus(await putFile(owner.access, created.id, 'src/secret.txt', 'owner secret'), 201);
  const project = expectJson(await get(`/v1/projects/${created.id}`, { token: owner.access }), 200);
  const before = await listFiles(owner.access, project.id);
  const tok = { token: intruder.access };
  const base = `/v1/projects/${project.id}`;

  const attempts = [
    await get(base, tok),
    await patch(base, { name: 'pwned' }, tok),
    await get(`${base}/files`, tok),
    await get(fileUrl(project.id, 'src/secret.txt'), tok),
    await put(fileUrl(project.id, 'src/secret.txt'), Buffer.from('overwritten'), tok),
    await put(fileUrl(project.id, 'src/new.txt'), Buffer.from('planted'), tok),
    await del(fileUrl(project.id, 'src/secret.txt'), tok),
    await del(base, tok),
  ];
  for (const res of attempts) {
    const p = expectProblem(res, 404, 'not_found');
    assert.ok(!res.text.includes('owner secret'), 'no content leaks');
    assert.ok(!JSON.stringify(p).includes(owner.user.id), 'no owner id leaks');
  }
  // the intruder does not see it
  assert.ok(!(await listProjects(intruder.access)).some((p) => p.id === project.id));
  // the owner sees it unchanged
  assert.deepEqual(expectJson(await get(base, { token: owner.access }), 200), project);
  assert.deepEqual(await listFiles(owner.access, project.id), before);
  const content = expectStatus(await get(fileUrl(project.id, 'src/secret.txt'), { token: owner.access }), 200);
  assert.equal(content.text, 'owner secret');
});

test('missing project is not found on every route', async () => {
  const u = await newUser('missing');
  const tok = { token: u.access };
  for (const id of [missingId('prj'), 'nope', 'prj_', '123', '00000000-0000-0000-0000-000000000000']) {
    const base = `/v1/projects/${id}`;
    for (const res of [
      await get(base, tok),
      await patch(base, { name: 'x' }, tok),
      await del(base, tok),
      await get(`${base}/files`, tok),
      await get(`${base}/files/a.txt`, tok),
      await put(`${base}/files/a.txt`, Buffer.from('x'), tok),
      await del(`${base}/files/a.txt`, tok),
    ]) {
      expectProblem(res, 404, 'not_found');
    }
  }
  assert.deepEqual(await listProjects(u.access), []);
});

test('project routes require authentication', async () => {
  const u = await newUser('anon');
  const p = await createProject(u.access);
  for (const res of [
    await get('/v1/projects'),
    await post('/v1/projects', { name: 'anon' }),
    await get(`/v1/projects/${p.id}`),
    await patch(`/v1/projects/${p.id}`, { name: 'anon' }),
    await del(`/v1/projects/${p.id}`),
    await get(`/v1/projects/${p.id}/files`),
    await put(fileUrl(p.id, 'a.txt'), Buffer.from('x')),
  ]) {
    expectProblem(res, 401, 'unauthorized');
  }
  assert.deepEqual(expectJson(await get(`/v1/projects/${p.id}`, { token: u.access }), 200), p);
  assert.equal((await listFiles(u.access, p.id)).size, 0);
});

test('projects of other users are not listed', async () => {
  const a = await newUser('lista');
  const b = await newUser('listb');
  const pa = await createProject(a.access);
  const pb = await createProject(b.access);
  assert.deepEqual((await listProjects(a.access)).map((p) => p.id), [pa.id]);
  assert.deepEqual((await listProjects(b.access)).map((p) => p.id), [pb.id]);
});

test('a cursor of another user reveals nothing', async () => {
  const a = await newUser('cura');
  const b = await newUser('curb');
  const n = await projectsAllowed(a.access, 3);
  for (let i = 0; i < n; i++) await createProject(a.access, { name: `a${i}` });
  const first = expectJson(await get('/v1/projects?limit=1', { token: a.access }), 200);
  assert.ok(first.next_cursor, 'a has more pages');
  const res = await get(`/v1/projects?limit=1&cursor=${encodeURIComponent(first.next_cursor)}`, { token: b.access });
  if (res.status === 200) assert.deepEqual(res.json.items, [], "b sees none of a's projects");
  else expectProblem(res, 400, 'invalid_cursor');
});
