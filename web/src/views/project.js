// One project: chat, files and preview. On narrow screens they are tabs; on
// wide screens side by side.

import { all, json } from '../api.js';
import { Chat } from '../chat.js';
import { errorBox, h, mount } from '../dom.js';
import { Files } from '../files.js';
import { githubPanel } from '../github-panel.js';
import { showPreview } from '../preview.js';

export function projectView(ctx, projectId) {
  const title = h('h1', { class: 'project-name' }, 'Project');
  const presence = h(
    'div',
    { class: 'presence', hidden: true, 'aria-label': 'Who is here' },
    h('span', { class: 'presence-label' }, 'Here now:'),
    h('ul', null),
  );
  // --- GitHub (a panel under the head, opened by its button) ---
  let projectName = '';
  let onGithubSync = () => {};
  const github = githubPanel(ctx, projectId, { projectName: () => projectName, onSynced: (report) => onGithubSync(report) });
  const head = h(
    'div',
    { class: 'project-head' },
    h('a', { href: '#/', class: 'back' }, '← Projects'),
    title,
    presence,
    github.toggle,
  );

  // --- tabs (narrow screens) ---
  const tabNames = ['chat', 'files', 'preview'];
  const labels = { chat: 'Chat', files: 'Files', preview: 'Preview' };
  const tabs = tabNames.map((t, i) =>
    h(
      'button',
      {
        type: 'button',
        role: 'tab',
        id: `tab-${t}`,
        'aria-controls': `pane-${t}`,
        'aria-selected': String(i === 0),
        tabindex: i === 0 ? '0' : '-1',
      },
      labels[t],
    ),
  );
  const tablist = h('div', { class: 'tabs', role: 'tablist', 'aria-label': 'Project views' }, tabs);

  // --- chat ---
  const log = h('div', { class: 'log', role: 'log', 'aria-label': 'Conversation', tabindex: '0' });
  const status = h('p', { class: 'conn', role: 'status', hidden: true });
  const input = h('textarea', {
    id: 'message',
    name: 'message',
    rows: '2',
    placeholder: 'Describe what to build…',
    'aria-describedby': 'composer-hint',
    disabled: true,
  });
  const send = h('button', { type: 'submit', class: 'primary', disabled: true }, 'Send');
  const stop = h('button', { type: 'button', class: 'secondary', hidden: true }, 'Stop');
  const composer = h(
    'form',
    { class: 'composer' },
    h('label', { for: 'message', class: 'visually-hidden' }, 'Message'),
    input,
    h('div', { class: 'composer-actions' }, stop, send),
    h('p', { id: 'composer-hint', class: 'hint' }, 'Enter sends, Shift+Enter adds a line.'),
  );
  const chatPane = h(
    'section',
    { id: 'pane-chat', class: 'pane chat', role: 'tabpanel', 'aria-labelledby': 'tab-chat' },
    log,
    status,
    composer,
  );

  // --- files ---
  const tree = h('nav', { class: 'tree', 'aria-label': 'Project files' }, h('p', { class: 'muted' }, 'Loading files…'));
  const viewer = h('section', { class: 'viewer', hidden: true, 'aria-label': 'File viewer' });
  const filesPane = h(
    'section',
    { id: 'pane-files', class: 'pane files', role: 'tabpanel', 'aria-labelledby': 'tab-files' },
    h('h2', { class: 'pane-title' }, 'Files'),
    tree,
    viewer,
  );

  // --- preview ---
  const frame = h('iframe', {
    class: 'preview-frame',
    title: 'Preview of the project',
    sandbox: 'allow-scripts allow-forms allow-modals',
    referrerpolicy: 'no-referrer',
  });
  const reload = h('button', { type: 'button', class: 'secondary small' }, 'Reload');
  const previewNote = h('span', { class: 'muted small', role: 'status' });
  const previewPane = h(
    'section',
    { id: 'pane-preview', class: 'pane preview', role: 'tabpanel', 'aria-labelledby': 'tab-preview' },
    h('div', { class: 'pane-bar' }, h('h2', { class: 'pane-title' }, 'Preview'), previewNote, reload),
    frame,
  );

  const panes = { chat: chatPane, files: filesPane, preview: previewPane };
  const select = (name, focus) => {
    tabNames.forEach((t, i) => {
      const on = t === name;
      tabs[i].setAttribute('aria-selected', String(on));
      tabs[i].tabIndex = on ? 0 : -1;
      panes[t].classList.toggle('active', on);
    });
    if (focus) tabs[tabNames.indexOf(name)].focus();
  };
  tabs.forEach((t, i) => {
    t.addEventListener('click', () => select(tabNames[i]));
    t.addEventListener('keydown', (e) => {
      const d = e.key === 'ArrowRight' ? 1 : e.key === 'ArrowLeft' ? -1 : 0;
      if (e.key === 'Home') select(tabNames[0], true);
      else if (e.key === 'End') select(tabNames[tabNames.length - 1], true);
      else if (d) select(tabNames[(i + d + tabNames.length) % tabNames.length], true);
      else return;
      e.preventDefault();
    });
  });
  select('chat');

  const page = h(
    'div',
    { class: 'project-page' },
    head,
    github.panel,
    tablist,
    h('div', { class: 'panes' }, chatPane, filesPane, previewPane),
  );
  mount(ctx.main, page);

  const files = new Files(projectId, tree, viewer);
  let chat = null;
  let closed = false;
  let previewSeq = 0;
  const refreshPreview = async () => {
    const mine = ++previewSeq;
    previewNote.textContent = 'Updating…';
    try {
      const had = await showPreview(frame, projectId, files.items);
      if (mine === previewSeq) previewNote.textContent = had ? '' : '';
      frame.dataset.version = String(mine);
    } catch (e) {
      if (mine === previewSeq) previewNote.textContent = (e && e.detail) || 'Could not load the preview.';
    }
  };
  reload.addEventListener('click', refreshPreview);

  let filesTimer = 0;
  const filesChanged = () => {
    clearTimeout(filesTimer);
    filesTimer = setTimeout(() => files.load().catch(() => {}), 200);
  };

  // A sync that took GitHub's changes into the project changed its files.
  onGithubSync = (report) => {
    if (report && ((report.pulled || []).length || (report.deleted || []).length)) {
      files
        .load()
        .then(refreshPreview)
        .catch(() => {});
    }
  };

  ctx.setCleanup(() => {
    closed = true;
    github.close();
    clearTimeout(filesTimer);
    if (chat) chat.close();
  });

  const sendNow = () => {
    const text = input.value.trim();
    if (!text || !chat) return;
    input.value = '';
    chat.send(text);
  };
  composer.addEventListener('submit', (e) => {
    e.preventDefault();
    sendNow();
  });
  input.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      sendNow();
    }
  });
  stop.addEventListener('click', () => {
    if (chat) chat.cancel().catch((e) => ctx.toast(e.detail || e.message));
  });

  (async () => {
    // Project, files and sessions load in parallel; the chat waits for the project to exist.
    const pid = encodeURIComponent(projectId);
    const sessionsP = all(`/v1/projects/${pid}/sessions`, 100);
    const filesP = files.load();
    sessionsP.catch(() => {});
    filesP.catch(() => {});
    let project;
    try {
      project = await json(`/v1/projects/${pid}`);
    } catch (e) {
      if (closed) return;
      mount(ctx.main, h('div', { class: 'project-page' }, h('a', { href: '#/', class: 'back' }, '← Projects'), errorBox(e)));
      return;
    }
    if (closed) return;
    title.textContent = project.name;
    projectName = project.name;
    document.title = `${project.name} · EverJust`;
    filesP.then(refreshPreview).catch((e) => mount(tree, errorBox(e)));
    try {
      const sessions = await sessionsP;
      sessions.sort((a, b) => (b.updated_at || '').localeCompare(a.updated_at || ''));
      const session =
        sessions[0] || (await json(`/v1/projects/${encodeURIComponent(projectId)}/sessions`, { method: 'POST', json: {} }));
      if (closed) return;
      chat = new Chat({
        session,
        log,
        status,
        presence,
        userId: () => (ctx.me() || {}).id || '',
        onFilesChanged: filesChanged,
        onRunFinished: async (changed) => {
          ctx.refreshUsage();
          if (changed) github.refresh();
          clearTimeout(filesTimer);
          let differs = false;
          try {
            differs = await files.load();
          } catch {
            /* the tree keeps its last state */
          }
          if (changed || differs) refreshPreview();
        },
        onBusy: (busy) => {
          stop.hidden = !busy;
        },
      });
      page.dataset.sessionId = session.id;
      await chat.start();
      input.disabled = false;
      send.disabled = false;
      performance.mark('everjust:chat-ready');
      if (!closed) input.focus({ preventScroll: true });
    } catch (e) {
      if (closed) return;
      log.append(errorBox(e));
    }
  })();
}
