// Project files: raw bodies, hashes, ETags, content types, sizes, and paths
// that must never escape the project. Paths are sent raw (node:http), so the
// client does not normalize them; a server-side URL parser may still resolve
// literal `..` and `%2e%2e` segments, for which a 404 is as good as a 400.

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
  newUser,
  putFile,
  randomBytes,
  request,
  sha256,
} from './lib/client.mjs';

const MiB = 1024 * 1024;

/** The server's limits from GET /v1/me (env MAX_FILE_BYTES / MAX_PROJECT_BYTES, then the contract's defaults). */
async function limits(token) {
  const me = expectJson(await get('/v1/me', { token }), 200);
  return {
    file: Number(me.limits?.max_file_bytes ?? process.env.MAX_FILE_BYTES ?? 5 * MiB),
    project: Number(me.limits?.max_project_bytes ?? process.env.MAX_PROJECT_BYTES ?? 100 * MiB),
  };
}

function assertFileMeta(meta, path, content) {
  assert.equal(meta.path, path);
  assert.equal(meta.size, content.length);
  assert.equal(meta.sha256, sha256(content));
  assert.ok(!Number.isNaN(Date.parse(meta.updated_at)), `updated_at: ${meta.updated_at}`);
}

async function setup(tag) {
  const u = await newUser(tag);
  const project = await createProject(u.access, { name: `files ${tag}` });
  return { u, project, token: u.access };
}

test('file put, get, replace, list and delete', async () => {
  const { project, token } = await setup('crud');
  const v1 = Buffer.from('<h1>v1</h1>\n');
  const created = expectJson(await putFile(token, project.id, 'index.html', v1), 201);
  assertFileMeta(created, 'index.html', v1);

  const got = expectStatus(await get(fileUrl(project.id, 'index.html'), { token }), 200);
  assert.deepEqual(got.body, v1);
  assert.equal(got.headers.etag, `"${sha256(v1)}"`);
  assert.match(String(got.headers['content-type']), /^text\/html/);

  const v2 = Buffer.from('<h1>v2</h1>\n');
  const replaced = expectJson(await putFile(token, project.id, 'index.html', v2), 200);
  assertFileMeta(replaced, 'index.html', v2);
  const got2 = expectStatus(await get(fileUrl(project.id, 'index.html'), { token }), 200);
  assert.deepEqual(got2.body, v2);
  assert.equal(got2.headers.etag, `"${sha256(v2)}"`, 'the ETag follows the content');

  const files = await listFiles(token, project.id);
  assert.deepEqual([...files.keys()], ['index.html']);
  assert.equal(files.get('index.html').sha256, sha256(v2));
  assert.equal(files.get('index.html').size, v2.length);

  const res = await del(fileUrl(project.id, 'index.html'), { token });
  expectStatus(res, 204);
  assert.equal(res.body.length, 0);
  expectProblem(await get(fileUrl(project.id, 'index.html'), { token }), 404, 'not_found');
  expectProblem(await del(fileUrl(project.id, 'index.html'), { token }), 404, 'not_found');
  assert.equal((await listFiles(token, project.id)).size, 0);
});

test('a matching If-None-Match is 304 without a body', async () => {
  const { project, token } = await setup('etag');
  const content = Buffer.from('cache me');
  expectJson(await putFile(token, project.id, 'c.txt', content), 201);
  const etag = `"${sha256(content)}"`;
  const res = await get(fileUrl(project.id, 'c.txt'), { token, headers: { 'if-none-match': etag } });
  expectStatus(res, 304);
  assert.equal(res.body.length, 0);
  assert.equal(res.headers.etag, etag);
  const stale = await get(fileUrl(project.id, 'c.txt'), { token, headers: { 'if-none-match': '"0000"' } });
  assert.deepEqual(expectStatus(stale, 200).body, content);
  // after a change the old ETag no longer matches
  expectJson(await putFile(token, project.id, 'c.txt', 'changed'), 200);
  const fresh = await get(fileUrl(project.id, 'c.txt'), { token, headers: { 'if-none-match': etag } });
  assert.equal(expectStatus(fresh, 200).text, 'changed');
});

test('project over its total size is 413 and keeps its files', async (t) => {
  const { project, token } = await setup('projlimit');
  const lim = await limits(token);
  if (lim.project > 12 * MiB || lim.project < 2) {
    t.skip(`max_project_bytes is ${lim.project}; start the server with MAX_PROJECT_BYTES <= 12 MiB to test it`);
    return;
  }
  const chunk = Math.min(lim.file, lim.project);
  let written = 0;
  for (let i = 0; written + chunk <= lim.project; i++) {
    expectStatus(await putFile(token, project.id, `part-${i}.bin`, Buffer.alloc(chunk, i)), 201);
    written += chunk;
  }
  const before = await listFiles(token, project.id);
  const over = await putFile(token, project.id, 'straw.bin', Buffer.alloc(lim.project - written + 1, 1));
  expectProblem(over, 413, 'project_too_large');
  assert.deepEqual(await listFiles(token, project.id), before);
});

test('missing file is not found', async () => {
  const { project, token } = await setup('missing');
  expectProblem(await get(fileUrl(project.id, 'nope.txt'), { token }), 404, 'not_found');
  expectProblem(await del(fileUrl(project.id, 'dir/nope.txt'), { token }), 404, 'not_found');
});

test('nested files list with their full paths', async () => {
  const { project, token } = await setup('nested');
  const paths = ['src/main.tsx', 'src/components/App.tsx', 'public/favicon.svg', 'README.md'];
  for (const p of paths) expectStatus(await putFile(token, project.id, p, `// ${p}`), 201);
  const files = await listFiles(token, project.id);
  assert.deepEqual([...files.keys()].sort(), [...paths].sort());
  for (const p of paths) assert.equal(files.get(p).sha256, sha256(Buffer.from(`// ${p}`)));
});

test('empty file is stored', async () => {
  const { project, token } = await setup('empty');
  const meta = expectJson(await putFile(token, project.id, '.gitkeep', Buffer.alloc(0)), 201);
  assertFileMeta(meta, '.gitkeep', Buffer.alloc(0));
  const got = expectStatus(await get(fileUrl(project.id, '.gitkeep'), { token }), 200);
  assert.equal(got.body.length, 0);
});

test('file content type follows the extension', async () => {
  const { project, token } = await setup('ctype');
  const cases = [
    ['page.html', /^text\/html/],
    ['style.css', /^text\/css/],
    ['app.js', /^(text|application)\/javascript/],
    ['data.json', /^application\/json/],
    ['image.png', /^image\/png/],
    ['icon.svg', /^image\/svg\+xml/],
    ['blob.bin', /^application\/octet-stream/],
    ['noextension', /^(application\/octet-stream|text\/plain)/],
  ];
  for (const [path, type] of cases) {
    expectStatus(await putFile(token, project.id, path, 'x', { 'content-type': 'text/html' }), 201);
    const res = expectStatus(await get(fileUrl(project.id, path), { token }), 200);
    assert.match(String(res.headers['content-type']), type, `content type of ${path}`);
    assert.equal(res.headers['x-content-type-options'], 'nosniff');
  }
});

test('binary file round trip is byte exact', async () => {
  const { project, token } = await setup('binary');
  const all = Buffer.alloc(256);
  for (let i = 0; i < 256; i++) all[i] = i;
  const content = Buffer.concat([
    all,
    Buffer.from([0xff, 0xfe, 0x00, 0x00, 0xc3, 0x28, 0xed, 0xa0, 0x80, 0x0d, 0x0a, 0x1a]), // BOMs, invalid UTF-8, CRLF, ^Z
    randomBytes(200_000),
    all,
  ]);
  const meta = expectJson(await putFile(token, project.id, 'assets/blob.bin', content), 201);
  assertFileMeta(meta, 'assets/blob.bin', content);
  const got = expectStatus(await get(fileUrl(project.id, 'assets/blob.bin'), { token }), 200);
  assert.equal(got.body.length, content.length);
  assert.ok(got.body.equals(content), 'bytes are identical');
  assert.equal(got.headers.etag, `"${sha256(content)}"`);
});

test('identical content twice is stored once with the same sha256', async () => {
  const { project, token } = await setup('dedupe');
  const content = randomBytes(4096);
  const a = expectJson(await putFile(token, project.id, 'a/copy1.bin', content), 201);
  const b = expectJson(await putFile(token, project.id, 'b/copy2.bin', content), 201);
  assert.equal(a.sha256, b.sha256);
  assert.equal(a.sha256, sha256(content));
  // same content at the same path again is a replace, nothing else changes
  const again = expectJson(await putFile(token, project.id, 'a/copy1.bin', content), 200);
  assert.equal(again.sha256, a.sha256);
  const files = await listFiles(token, project.id);
  assert.deepEqual([...files.keys()].sort(), ['a/copy1.bin', 'b/copy2.bin']);
  // deleting one copy keeps the other intact
  expectStatus(await del(fileUrl(project.id, 'a/copy1.bin'), { token }), 204);
  const got = expectStatus(await get(fileUrl(project.id, 'b/copy2.bin'), { token }), 200);
  assert.ok(got.body.equals(content));
  // the same content in another user's project is independent of this one
  const other = await setup('dedupe-other');
  expectJson(await putFile(other.token, other.project.id, 'x.bin', content), 201);
  expectStatus(await del(fileUrl(other.project.id, 'x.bin'), { token: other.token }), 204);
  assert.ok(expectStatus(await get(fileUrl(project.id, 'b/copy2.bin'), { token }), 200).body.equals(content));
});

test('SQL metacharacters in file contents are stored verbatim', async () => {
  const { project, token } = await setup('sqlfile');
  const content = Buffer.from(
    "'; DROP TABLE files; --\n\" OR 1=1 --\n$1 $$body$$ \\x00 \\\\ E'\\n' %s %d {{}} ${x}\n\u0000 after NUL\n",
  );
  const meta = expectJson(await putFile(token, project.id, 'query.sql', content), 201);
  assertFileMeta(meta, 'query.sql', content);
  const got = expectStatus(await get(fileUrl(project.id, 'query.sql'), { token }), 200);
  assert.ok(got.body.equals(content));
  assert.equal((await listFiles(token, project.id)).size, 1);
});

test('utf-8 file paths round trip', async () => {
  const { project, token } = await setup('utf8path');
  const paths = ['docs/naïve-日本語.md', 'emoji/🚀.txt', 'Ünïcødé/файл.txt'];
  for (const p of paths) {
    const meta = expectJson(await putFile(token, project.id, p, p), 201);
    assert.equal(meta.path, p);
    const got = expectStatus(await get(fileUrl(project.id, p), { token }), 200);
    assert.equal(got.text, p);
  }
  const files = await listFiles(token, project.id);
  assert.deepEqual([...files.keys()].sort(), [...paths].sort());
});

test('file over the size limit is 413 and not stored', async () => {
  const { project, token } = await setup('big');
  const MAX_FILE_BYTES = (await limits(token)).file;
  const before = await listFiles(token, project.id);
  const res = await putFile(token, project.id, 'big.bin', Buffer.alloc(MAX_FILE_BYTES + 1, 7));
  expectProblem(res, 413, 'file_too_large');
  assert.deepEqual(await listFiles(token, project.id), before);
  expectProblem(await get(fileUrl(project.id, 'big.bin'), { token }), 404, 'not_found');
  // far over the limit too (an adapter that stops reading early must still answer 413)
  expectProblem(await putFile(token, project.id, 'huge.bin', Buffer.alloc(MAX_FILE_BYTES * 4, 7)), 413, 'file_too_large');
  assert.deepEqual(await listFiles(token, project.id), before);
  // an oversized replacement keeps the old content
  expectStatus(await putFile(token, project.id, 'keep.txt', 'old'), 201);
  expectProblem(await putFile(token, project.id, 'keep.txt', Buffer.alloc(MAX_FILE_BYTES + 1, 7)), 413, 'file_too_large');
  assert.equal(expectStatus(await get(fileUrl(project.id, 'keep.txt'), { token }), 200).text, 'old');
});

test('file of exactly the size limit is accepted', async () => {
  const { project, token } = await setup('limit');
  const MAX_FILE_BYTES = (await limits(token)).file;
  const content = randomBytes(MAX_FILE_BYTES);
  const meta = expectJson(await putFile(token, project.id, 'limit.bin', content), 201);
  assertFileMeta(meta, 'limit.bin', content);
  const got = expectStatus(await get(fileUrl(project.id, 'limit.bin'), { token }), 200);
  assert.ok(got.body.equals(content));
});

// Raw suffixes after /files/ that reach the server as written: all must be 400 invalid_path.
const INVALID_PATHS = [
  ['..%2F..%2Fetc%2Fpasswd', 'encoded slash after ..'],
  ['..%2Fx.txt', '.. with encoded slash'],
  ['a%2F..%2F..%2Fx.txt', '.. in the middle, encoded slashes'],
  ['%2e%2e%2F%2e%2e%2Fetc%2Fpasswd', '%2e%2e with encoded slashes'],
  ['%2Fetc%2Fpasswd', 'absolute'],
  ['%2F%2Fetc%2Fpasswd', 'absolute with double slash'],
  ['a%5Cb.txt', 'backslash'],
  ['..%5C..%5Cwindows%5Cwin.ini', 'backslash traversal'],
  ['a%00b.txt', 'NUL'],
  ['a.txt%00.png', 'NUL before an extension'],
  ['a//b.txt', 'empty segment'],
  ['a%2F%2Fb.txt', 'encoded empty segment'],
  ['dir/', 'trailing slash'],
  ['.%2Fa.txt', '. segment (encoded slash)'],
  ['a%2F.%2Fb.txt', '. segment in the middle (encoded slashes)'],
  ['a%2F.', '. as the last segment'],
  ['x'.repeat(513), 'longer than 512 bytes'],
  ['%E6%97%A5'.repeat(171), '513 bytes of UTF-8 in 171 characters'],
  [Array.from({ length: 33 }, () => 'd').join('/'), 'deeper than 32 levels'],
  ['%FF%FE.txt', 'not UTF-8'],
];

test('invalid file paths are rejected with invalid_path and create nothing', async () => {
  const { project, token } = await setup('badpaths');
  expectStatus(await putFile(token, project.id, 'keep.txt', 'keep'), 201);
  const before = await listFiles(token, project.id);
  const base = `/v1/projects/${project.id}/files/`;
  const failures = [];
  for (const [raw, what] of INVALID_PATHS) {
    for (const method of ['PUT', 'GET', 'DELETE']) {
      const res = await request(method, base + raw, {
        token,
        body: method === 'PUT' ? Buffer.from('planted') : undefined,
        headers: method === 'PUT' ? { 'content-type': 'application/octet-stream' } : {},
      });
      try {
        expectProblem(res, 400, 'invalid_path');
      } catch (e) {
        failures.push(`${what}: ${e.message.split('\n')[0]}`);
      }
      assert.ok(!res.text.includes('root:'), 'nothing outside is read');
    }
  }
  assert.deepEqual(failures, [], 'every invalid path is a 400 invalid_path');
  assert.deepEqual(await listFiles(token, project.id), before, 'nothing was created or deleted');
});

test('dot-dot segments never leave the project', async () => {
  const { project, token } = await setup('dotdot');
  const victim = await setup('dotdot-victim');
  expectStatus(await putFile(victim.token, victim.project.id, 'secret.txt', 'victim secret'), 201);
  expectStatus(await putFile(token, project.id, 'keep.txt', 'keep'), 201);
  const mine = await listFiles(token, project.id);
  const theirs = await listFiles(victim.token, victim.project.id);
  const base = `/v1/projects/${project.id}/files/`;
  const raws = [
    '../../etc/passwd',
    '../../../../../../etc/passwd',
    '%2e%2e/%2e%2e/etc/passwd',
    '%2E%2E/%2E%2E/%2E%2E/etc/passwd',
    '.%2e/.%2e/etc/passwd',
    `../../${victim.project.id}/files/secret.txt`,
    `%2e%2e/%2e%2e/${victim.project.id}/files/secret.txt`,
    'a/../../../../../etc/passwd',
    './keep.txt/../../x',
  ];
  for (const raw of raws) {
    for (const method of ['GET', 'PUT', 'DELETE']) {
      const res = await request(method, base + raw, {
        token,
        body: method === 'PUT' ? Buffer.from('planted') : undefined,
        headers: method === 'PUT' ? { 'content-type': 'application/octet-stream' } : {},
      });
      assert.ok([400, 404, 405].includes(res.status), `${method} ${raw}: 400, 404 or 405 expected: ${res.show()}`);
      expectProblem(res, res.status);
      if (res.status === 400) assert.equal(res.json.code, 'invalid_path', res.show());
      assert.ok(!res.text.includes('root:'), 'nothing outside is read');
      assert.ok(!res.text.includes('victim secret'), 'no other project is read');
    }
  }
  assert.deepEqual(await listFiles(token, project.id), mine, 'own project unchanged');
  assert.deepEqual(await listFiles(victim.token, victim.project.id), theirs, 'victim project unchanged');
  assert.equal(
    expectStatus(await get(fileUrl(victim.project.id, 'secret.txt'), { token: victim.token }), 200).text,
    'victim secret',
  );
});

test('path limits: 512 bytes and 32 levels are allowed', async () => {
  const { project, token } = await setup('limits');
  const seg = 'a'.repeat(100);
  const p512 = `${[seg, seg, seg, seg, seg].join('/')}/${'b'.repeat(7)}`;
  assert.equal(Buffer.byteLength(p512), 512);
  const p32 = Array.from({ length: 32 }, (_, i) => `d${i}`).join('/');
  for (const p of [p512, p32]) {
    const meta = expectJson(await putFile(token, project.id, p, 'deep'), 201);
    assert.equal(meta.path, p);
    assert.equal(expectStatus(await get(fileUrl(project.id, p), { token }), 200).text, 'deep');
  }
  const files = await listFiles(token, project.id);
  assert.deepEqual([...files.keys()].sort(), [p32, p512].sort());
});

test('deleting a project removes its files', async () => {
  const { u, project, token } = await setup('cascade');
  expectStatus(await putFile(token, project.id, 'a.txt', 'alpha'), 201);
  expectStatus(await putFile(token, project.id, 'dir/b.txt', 'beta'), 201);
  expectStatus(await del(`/v1/projects/${project.id}`, { token }), 204);
  expectProblem(await get(`/v1/projects/${project.id}/files`, { token }), 404, 'not_found');
  expectProblem(await get(fileUrl(project.id, 'a.txt'), { token }), 404, 'not_found');
  expectProblem(await request('PUT', fileUrl(project.id, 'c.txt'), { token, body: Buffer.from('x') }), 404, 'not_found');
  const exported = expectJson(await get('/v1/me/export', { token: u.access }), 200);
  assert.deepEqual(exported.projects, []);
  const text = JSON.stringify(exported);
  assert.ok(!text.includes(Buffer.from('alpha').toString('base64')), 'no trace of the files');
});

test('file routes require authentication', async () => {
  const { project, token } = await setup('fileanon');
  expectStatus(await putFile(token, project.id, 'a.txt', 'a'), 201);
  for (const res of [
    await get(fileUrl(project.id, 'a.txt')),
    await request('PUT', fileUrl(project.id, 'a.txt'), { body: Buffer.from('b') }),
    await del(fileUrl(project.id, 'a.txt')),
  ]) {
    expectProblem(res, 401, 'unauthorized');
  }
  assert.equal(expectStatus(await get(fileUrl(project.id, 'a.txt'), { token }), 200).text, 'a');
});
