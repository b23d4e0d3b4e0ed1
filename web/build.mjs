// Builds the web client: web/src -> web/public (app.js, app.css, index.html,
// favicon.svg, preview-host.html/js, _headers). Deterministic: the same sources and esbuild version give
// the same bytes, so the output is committed and `--check` verifies it.
//
//   node web/build.mjs            build into web/public
//   node web/build.mjs --check    build into a temp dir; exit 1 if web/public differs
//   node web/build.mjs --out DIR  build into DIR

import { createHash } from 'node:crypto';
import { mkdtempSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';

const here = dirname(fileURLToPath(import.meta.url));
const src = join(here, 'src');
const publicDir = join(here, 'public');
const args = process.argv.slice(2);
const check = args.includes('--check');
const outArg = args.indexOf('--out');
const out = check ? mkdtempSync(join(tmpdir(), 'everjust-web-')) : outArg >= 0 ? args[outArg + 1] : publicDir;

let esbuild;
try {
  esbuild = await import('esbuild');
} catch {
  console.error('error: esbuild is not installed: run `npm ci` (or `npm install`) at the repository root.');
  process.exit(1);
}

const common = {
  bundle: true,
  minify: true,
  write: false,
  legalComments: 'none',
  charset: 'utf8',
  logLevel: 'warning',
};
const js = await esbuild.build({
  ...common,
  entryPoints: [join(src, 'main.js')],
  format: 'esm',
  target: ['es2020', 'chrome100', 'firefox100', 'safari15'],
});
const css = await esbuild.build({
  ...common,
  entryPoints: [join(src, 'styles.css')],
  target: ['chrome100', 'firefox100', 'safari15'],
});
const host = await esbuild.build({
  ...common,
  entryPoints: [join(src, 'preview-host.js')],
  format: 'iife',
  target: ['es2017'],
});
const hostText = host.outputFiles[0].contents;
const jsText = js.outputFiles[0].contents;
const cssText = css.outputFiles[0].contents;
const hash = (b) => createHash('sha256').update(b).digest('hex').slice(0, 12);
const html = readFileSync(join(src, 'index.html'), 'utf8')
  .replace('%JS_HASH%', hash(jsText))
  .replace('%CSS_HASH%', hash(cssText));

const files = {
  'app.js': jsText,
  'app.css': cssText,
  'index.html': Buffer.from(html),
  'favicon.svg': readFileSync(join(src, 'favicon.svg')),
  'preview-host.html': Buffer.from(readFileSync(join(src, 'preview-host.html'), 'utf8').replace('%HOST_HASH%', hash(hostText))),
  'preview-host.js': hostText,
  _headers: readFileSync(join(src, '_headers')),
};
mkdirSync(out, { recursive: true });
for (const [name, bytes] of Object.entries(files)) writeFileSync(join(out, name), bytes);

const gz = (b) => gzipSync(b, { level: 9 }).length;
const total = gz(jsText) + gz(cssText);
const line = (name, b) => `  ${name.padEnd(12)} ${String(b.length).padStart(7)} B  ${String(gz(b)).padStart(6)} B gzip`;
console.log(`web client -> ${check ? 'temp dir (check)' : out}`);
console.log(line('app.js', jsText));
console.log(line('app.css', cssText));
console.log(`  JS+CSS gzip total: ${total} B (budget 153600 B)`);

if (total > 150 * 1024) {
  console.error('error: the page JS+CSS is over the 150 KB gzip budget.');
  process.exit(1);
}

if (check) {
  const stale = [];
  for (const [name, bytes] of Object.entries(files)) {
    const have = join(publicDir, name);
    if (!existsSync(have) || !readFileSync(have).equals(Buffer.from(bytes))) stale.push(name);
  }
  const extra = readdirSync(publicDir).filter((f) => !(f in files));
  rmSync(out, { recursive: true, force: true });
  if (stale.length || extra.length) {
    console.error(
      `error: web/public is not the build of web/src (${[...stale.map((s) => `${s} differs`), ...extra.map((e) => `${e} is extra`)].join(', ')}). Run scripts/build-web and commit web/public.`,
    );
    process.exit(1);
  }
  console.log('web/public is up to date with web/src.');
}
