// The project's file tree and a read-only viewer.

import { all, filePath, request } from './api.js';
import { errorBox, formatBytes, h, mount } from './dom.js';

const TEXT_EXT = /\.(html?|css|m?js|jsx|tsx?|json|md|txt|svg|xml|ya?ml|toml|csv|sh|py|rs|go|gitignore|env|lock)$/i;
const MAX_VIEW = 512 * 1024;

export class Files {
  /**
   * @param {string} projectId
   * @param {HTMLElement} treeEl
   * @param {HTMLElement} viewerEl
   */
  constructor(projectId, treeEl, viewerEl) {
    this.projectId = projectId;
    this.treeEl = treeEl;
    this.viewerEl = viewerEl;
    /** @type {Array<{path: string, size: number, sha256: string}>} */
    this.items = [];
    this.open = '';
    this.openDirs = new Set(['']);
  }

  /** Reloads the list; resolves to whether anything changed. */
  async load() {
    const items = await all(`/v1/projects/${encodeURIComponent(this.projectId)}/files`, 100);
    items.sort((a, b) => a.path.localeCompare(b.path));
    const before = this.items.map((f) => `${f.path}:${f.sha256}`).join('\n');
    const after = items.map((f) => `${f.path}:${f.sha256}`).join('\n');
    this.items = items;
    this.render();
    if (before !== after && this.open) {
      if (items.some((f) => f.path === this.open)) this.view(this.open);
      else this.closeViewer();
    }
    return before !== after;
  }

  render() {
    if (!this.items.length) {
      mount(this.treeEl, h('p', { class: 'muted' }, 'No files yet.'));
      return;
    }
    // Build nested directories from the flat path list.
    const root = { dirs: new Map(), files: [] };
    for (const f of this.items) {
      const parts = f.path.split('/');
      let node = root;
      for (const dir of parts.slice(0, -1)) {
        if (!node.dirs.has(dir)) node.dirs.set(dir, { dirs: new Map(), files: [] });
        node = node.dirs.get(dir);
      }
      node.files.push(f);
    }
    mount(this.treeEl, this.list(root, ''));
  }

  list(node, prefix) {
    const ul = h('ul', { role: prefix ? 'group' : 'tree', 'aria-label': prefix ? null : 'Files' });
    for (const [name, child] of [...node.dirs.entries()].sort()) {
      const path = prefix + name + '/';
      const det = h(
        'details',
        { open: this.openDirs.has(path) },
        h('summary', null, h('span', { class: 'icon', 'aria-hidden': 'true' }, '▸'), name),
        this.list(child, path),
      );
      det.addEventListener('toggle', () => {
        if (det.open) this.openDirs.add(path);
        else this.openDirs.delete(path);
      });
      ul.append(h('li', { class: 'dir', role: 'treeitem' }, det));
    }
    for (const f of node.files) {
      const name = f.path.slice(prefix.length);
      const btn = h(
        'button',
        {
          type: 'button',
          class: 'file',
          'aria-current': f.path === this.open ? 'true' : null,
          dataset: { path: f.path },
          onclick: () => this.view(f.path),
        },
        h('span', { class: 'name' }, name),
        h('span', { class: 'size' }, formatBytes(f.size)),
      );
      ul.append(h('li', { role: 'treeitem' }, btn));
    }
    return ul;
  }

  async view(path) {
    this.open = path;
    this.render();
    const f = this.items.find((x) => x.path === path);
    const close = h('button', { type: 'button', class: 'link', onclick: () => this.closeViewer() }, 'Close');
    const head = h('div', { class: 'viewer-head' }, h('h3', null, path), close);
    mount(this.viewerEl, head, h('p', { class: 'muted' }, 'Loading…'));
    this.viewerEl.hidden = false;
    try {
      if (f && f.size > MAX_VIEW) {
        mount(this.viewerEl, head, h('p', { class: 'muted' }, `${formatBytes(f.size)}: too large to show here.`));
        return;
      }
      const res = await request(filePath(this.projectId, path));
      const buf = await res.arrayBuffer();
      const type = res.headers.get('content-type') || '';
      let text = null;
      if (TEXT_EXT.test(path) || /^text\/|json|javascript|xml/.test(type)) {
        text = new TextDecoder().decode(buf);
      } else {
        try {
          text = new TextDecoder('utf-8', { fatal: true }).decode(buf);
        } catch {
          text = null;
        }
      }
      if (this.open !== path) return;
      const body =
        text === null
          ? h('p', { class: 'muted' }, `Binary file, ${formatBytes(buf.byteLength)}.`)
          : h('pre', { class: 'code', tabindex: '0', 'aria-label': `Contents of ${path}` }, h('code', null, text));
      mount(this.viewerEl, head, body);
      close.focus();
    } catch (e) {
      mount(this.viewerEl, head, errorBox(e));
    }
  }

  closeViewer() {
    this.open = '';
    this.viewerEl.hidden = true;
    this.viewerEl.replaceChildren();
    this.render();
  }
}
