// The live preview of a project in a sandboxed iframe (no allow-same-origin:
// the project's code never sees this page's tokens).
//
// Today the page is index.html read through the files API and shown via
// srcdoc, with its local scripts, styles and images turned into blob: URLs
// (a srcdoc document inherits this page's CSP, so inline code cannot run;
// blob: sources are allowed). When the API serves
// GET /v1/projects/{id}/preview/{path}, switch showPreview() to previewUrl().

import { filePath, request } from './api.js';

/** The preview route, once the API has it. */
export function previewUrl(projectId, path = 'index.html') {
  return `/v1/projects/${encodeURIComponent(projectId)}/preview/${path.split('/').map(encodeURIComponent).join('/')}`;
}

const TYPES = {
  css: 'text/css',
  js: 'text/javascript',
  mjs: 'text/javascript',
  svg: 'image/svg+xml',
  png: 'image/png',
  jpg: 'image/jpeg',
  jpeg: 'image/jpeg',
  gif: 'image/gif',
  webp: 'image/webp',
  ico: 'image/x-icon',
  json: 'application/json',
  woff2: 'font/woff2',
};

/** @type {WeakMap<HTMLIFrameElement, string[]>} */
const blobsOf = new WeakMap();

/**
 * Shows the project's index.html in frame. Returns false when there is none.
 * @param {HTMLIFrameElement} frame
 * @param {string} projectId
 * @param {Array<{path: string}>} files
 */
export async function showPreview(frame, projectId, files) {
  return showFromFiles(frame, projectId, files);
}

async function showFromFiles(frame, projectId, files) {
  const paths = new Set(files.map((f) => f.path));
  if (!paths.has('index.html')) {
    setDoc(frame, [], '<!doctype html><meta charset="utf-8"><p style="font:16px system-ui;color:#555;padding:1rem">No index.html yet.</p>');
    return false;
  }
  const blobs = [];
  const cache = new Map();
  const blobFor = async (path, text) => {
    if (text !== undefined) {
      const url = URL.createObjectURL(new Blob([text], { type: 'text/javascript' }));
      blobs.push(url);
      return url;
    }
    if (!cache.has(path)) {
      cache.set(
        path,
        (async () => {
          const res = await request(filePath(projectId, path));
          const ext = path.split('.').pop().toLowerCase();
          const blob = new Blob([await res.arrayBuffer()], { type: TYPES[ext] || res.headers.get('content-type') || '' });
          const url = URL.createObjectURL(blob);
          blobs.push(url);
          return url;
        })(),
      );
    }
    return cache.get(path);
  };
  const res = await request(filePath(projectId, 'index.html'));
  const html = await res.text();
  const doc = new DOMParser().parseFromString(html, 'text/html');
  const jobs = [];
  const local = (ref) => {
    if (!ref || /^([a-z][a-z0-9+.-]*:|\/\/|#)/i.test(ref)) return '';
    const clean = ref.split(/[?#]/)[0].replace(/^\.\//, '').replace(/^\//, '');
    return paths.has(clean) ? clean : '';
  };
  for (const el of doc.querySelectorAll('[src], link[href]')) {
    const attr = el.hasAttribute('src') ? 'src' : 'href';
    const path = local(el.getAttribute(attr));
    if (path) jobs.push(blobFor(path).then((u) => el.setAttribute(attr, u)));
  }
  for (const s of doc.querySelectorAll('script:not([src])')) {
    const type = (s.getAttribute('type') || '').toLowerCase();
    if (type && !['module', 'text/javascript', 'application/javascript'].includes(type)) continue;
    jobs.push(blobFor('', s.textContent).then((u) => {
      s.setAttribute('src', u);
      s.textContent = '';
    }));
  }
  for (const st of doc.querySelectorAll('style')) {
    const url = URL.createObjectURL(new Blob([st.textContent], { type: 'text/css' }));
    blobs.push(url);
    const link = doc.createElement('link');
    link.rel = 'stylesheet';
    link.href = url;
    st.replaceWith(link);
  }
  await Promise.all(jobs);
  setDoc(frame, blobs, `<!doctype html>\n${doc.documentElement.outerHTML}`);
  return true;
}

function setDoc(frame, blobs, html) {
  const old = blobsOf.get(frame) || [];
  blobsOf.set(frame, blobs);
  frame.removeAttribute('src');
  frame.srcdoc = html;
  // Give the new document time to load its blobs before the old ones go.
  setTimeout(() => old.forEach((u) => URL.revokeObjectURL(u)), 10000);
}
