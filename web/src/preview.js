// The live preview of a project in a sandboxed iframe (allow-scripts without
// allow-same-origin: the project's code runs in an opaque origin and never
// sees this page's tokens or storage).
//
// Preferred: the API's preview link (GET /v1/projects/{id}/sandbox ->
// preview_url, a capability URL the frame can load without a bearer token).
// Fallback, for servers without it: the iframe loads /preview-host.html (a
// static page with a CSP of its own that lets project code run; srcdoc or
// blob: documents would inherit this app's strict CSP), and this module
// posts it index.html and the local files it references, read through the
// files API.

import { filePath, json, request } from './api.js';

const HOST = '/preview-host.html';

const TYPES = {
  css: 'text/css',
  js: 'text/javascript',
  mjs: 'text/javascript',
  jsx: 'text/javascript',
  svg: 'image/svg+xml',
  png: 'image/png',
  jpg: 'image/jpeg',
  jpeg: 'image/jpeg',
  gif: 'image/gif',
  webp: 'image/webp',
  ico: 'image/x-icon',
  json: 'application/json',
  woff2: 'font/woff2',
  woff: 'font/woff',
};

const EMPTY =
  '<!doctype html><html><body style="font:16px system-ui;color:#666;display:grid;place-items:center;height:90vh;margin:0"><p>No index.html yet. Ask the assistant to build something.</p></body></html>';

let loads = 0;

/**
 * Shows the project's index.html in frame. Resolves to false when there is none.
 * @param {HTMLIFrameElement} frame
 * @param {string} projectId
 * @param {Array<{path: string}>} files the project's file list
 */
export async function showPreview(frame, projectId, files) {
  const paths = new Set(files.map((f) => f.path));
  if (!paths.has('index.html')) {
    await render(frame, EMPTY, {});
    return false;
  }
  const link = await previewLink(projectId);
  if (link) {
    const url = new URL(link, location.href);
    url.searchParams.set('v', String(++loads));
    frame.src = url.href;
    return true;
  }
  return showFromFiles(frame, projectId, paths);
}

/** @type {Map<string, {url: string, at: number}>} */
const links = new Map();
let noLinks = false;

/** The API's preview URL for the project, or '' when the server has none. */
async function previewLink(projectId) {
  if (noLinks) return '';
  const cached = links.get(projectId);
  if (cached && Date.now() - cached.at < 3600e3) return cached.url;
  try {
    const doc = await json(`/v1/projects/${encodeURIComponent(projectId)}/sandbox`);
    if (!doc || !doc.preview_url) throw new Error('no preview_url');
    links.set(projectId, { url: doc.preview_url, at: Date.now() });
    return doc.preview_url;
  } catch (e) {
    // No such route on this server (or no link): use the files API instead.
    if (e && e.code !== 'network') noLinks = true;
    return '';
  }
}

async function showFromFiles(frame, projectId, paths) {
  const html = await (await request(filePath(projectId, 'index.html'))).text();
  // Find the local files index.html references (parsing runs no code).
  const doc = new DOMParser().parseFromString(html, 'text/html');
  const wanted = new Set();
  for (const el of doc.querySelectorAll('[src], link[href]')) {
    const ref = el.getAttribute(el.hasAttribute('src') ? 'src' : 'href');
    if (!ref || /^([a-z][a-z0-9+.-]*:|\/\/|#)/i.test(ref)) continue;
    const clean = ref.split(/[?#]/)[0].replace(/^\.\//, '').replace(/^\//, '');
    if (paths.has(clean)) wanted.add(clean);
  }
  const out = {};
  await Promise.all(
    [...wanted].map(async (path) => {
      const res = await request(filePath(projectId, path));
      const ext = path.split('.').pop().toLowerCase();
      out[path] = { type: TYPES[ext] || res.headers.get('content-type') || 'application/octet-stream', bytes: await res.arrayBuffer() };
    }),
  );
  await render(frame, html, out);
  return true;
}

/** Loads a fresh host page into frame and hands it the document. */
function render(frame, html, files) {
  return new Promise((resolve, reject) => {
    const n = ++loads;
    const onMessage = (e) => {
      if (e.source !== frame.contentWindow || !e.data || e.data.type !== 'preview-ready') return;
      cleanup();
      if (n !== loads) return resolve(); // a newer load took over
      const transfer = Object.values(files).map((f) => f.bytes);
      frame.contentWindow.postMessage({ type: 'render', html, files }, '*', transfer);
      resolve();
    };
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error('The preview did not load.'));
    }, 15000);
    const cleanup = () => {
      clearTimeout(timer);
      removeEventListener('message', onMessage);
    };
    addEventListener('message', onMessage);
    frame.src = `${HOST}?n=${n}`;
  });
}
