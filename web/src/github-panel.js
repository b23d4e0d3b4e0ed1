// A project's GitHub panel, opened from the "GitHub" button of the project
// page: the repository the project is connected to and how its last sync
// went (GET /v1/projects/{id}/github), "Push now" (POST …/github/push: their
// changes pulled, ours committed in one commit) and "Disconnect" (DELETE;
// the repository stays on GitHub); or, when not connected, a form that
// connects a repository of one of the user's linked installations (POST
// …/github {installation_id, repository, branch?}). Errors are shown with
// the server's problem+json detail and code. A push refused with 409 (a
// conflict: 409 github_conflict carries the sync's report, whose changes
// from GitHub were taken) or a 5xx reloads the status, so the conflict or
// the failure recorded on the link shows with the problem. Loaded when
// first opened.

import { ApiError, json } from './api.js';
import { errorBox, formatDate, h, mount, showError } from './dom.js';
import { installationLabel, listInstallations } from './github.js';

/** A repository name GitHub accepts, from a project name ("My App!" -> "my-app"). */
function repoName(name) {
  return (
    String(name || '')
      .toLowerCase()
      .replace(/[^a-z0-9._-]+/g, '-')
      .replace(/^[-.]+|[-.]+$/g, '')
      .slice(0, 100) || 'everjust-app'
  );
}

const plural = (n, one, many = `${one}s`) => `${n} ${n === 1 ? one : many}`;

/** One line on what a sync did (the `sync` of a connect, or a push's answer). */
export function syncSummary(r) {
  if (!r) return '';
  if (r.status === 'failed') return '';
  const out = [];
  const sent = (r.pushed || []).length + (r.removed || []).length;
  const took = (r.pulled || []).length + (r.deleted || []).length;
  if (sent) out.push(`Pushed ${plural(sent, 'file')} in commit ${String(r.commit || '').slice(0, 7)}.`);
  if (took) out.push(`Took ${plural(took, 'change')} from GitHub into the project.`);
  if (!sent && !took) out.push('Nothing to push: GitHub already has these files.');
  const skipped = r.skipped || [];
  if (skipped.length) {
    out.push(`${plural(skipped.length, 'file')} on GitHub not taken: ${skipped.map((s) => `${s.path} (${s.detail || s.code})`).join('; ')}.`);
  }
  return out.join(' ');
}

/**
 * @param {{toast: (t: string) => void}} ctx
 * @param {string} projectId
 * @param {{projectName: () => string, onSynced: (report: any) => void}} hooks
 */
export function githubPanel(ctx, projectId, hooks) {
  const base = `/v1/projects/${encodeURIComponent(projectId)}/github`;
  const toggle = h(
    'button',
    { type: 'button', class: 'secondary small github-toggle', 'aria-expanded': 'false', 'aria-controls': 'github-panel' },
    // A dot once connected; not part of the button's name.
    h('span', { class: 'github-dot', 'aria-hidden': 'true' }),
    'GitHub',
  );
  const close = h('button', { type: 'button', class: 'link small', 'aria-label': 'Close the GitHub panel' }, 'Close');
  const body = h('div', { class: 'stack' }, h('p', { class: 'muted', role: 'status' }, 'Loading GitHub…'));
  const panel = h(
    'section',
    { id: 'github-panel', class: 'github-panel card', hidden: true, 'aria-labelledby': 'github-panel-title' },
    h('div', { class: 'pane-bar' }, h('h2', { id: 'github-panel-title', class: 'pane-title' }, 'GitHub'), close),
    body,
  );

  let loaded = false;
  let seq = 0;
  let closed = false;

  const setOpen = (open) => {
    panel.hidden = !open;
    toggle.setAttribute('aria-expanded', String(open));
    if (open && !loaded) {
      loaded = true;
      load();
    }
  };
  toggle.addEventListener('click', () => setOpen(panel.hidden));
  close.addEventListener('click', () => {
    setOpen(false);
    toggle.focus();
  });

  /**
   * Shows the connected repository, or the connect form; `note` is a result
   * line to show first, `problem` an error to show with it.
   */
  async function load(note, problem) {
    const mine = ++seq;
    let link = null;
    let failure = null;
    try {
      link = await json(base);
    } catch (e) {
      if (!(e instanceof ApiError && e.status === 404 && e.code === 'github_not_connected')) failure = e;
    }
    if (closed || mine !== seq) return;
    toggle.dataset.state = link ? 'connected' : failure ? 'error' : 'disconnected';
    if (failure) {
      mount(body, errorBox(failure), h('button', { type: 'button', class: 'secondary small', onclick: () => load() }, 'Try again'));
    } else if (link) {
      showLink(link, note, problem);
    } else {
      await showConnect(note, problem);
    }
  }

  function showLink(link, note, problem) {
    const row = (label, value) => [h('dt', null, label), h('dd', null, value)];
    const repoUrl = `https://github.com/${encodeURIComponent(link.owner)}/${encodeURIComponent(link.name)}`;
    const result = h('p', { class: 'notice', role: 'status', hidden: !note }, note || '');
    const error = h('div', { class: 'error', role: 'alert', hidden: true });
    const push = h('button', { type: 'button', class: 'primary' }, 'Push now');
    const disconnect = h('button', { type: 'button', class: 'danger small' }, 'Disconnect');
    const conflict = link.conflict && (Array.isArray(link.conflict) ? link.conflict : link.conflict.paths);
    const conflictBranch = link.conflict && link.conflict.branch ? `; our version is on the branch ${link.conflict.branch}` : '';
    mount(
      body,
      h(
        'dl',
        { class: 'facts github-facts' },
        row('Repository', h('a', { href: repoUrl, target: '_blank', rel: 'noopener noreferrer', class: 'github-repo' }, link.repository)),
        row('Branch', link.branch),
        row('Status', h('span', { class: `github-status status-${link.status}` }, link.status === 'active' ? 'connected' : link.status)),
        row('Last sync', link.last_sync_at ? formatDate(link.last_sync_at) : 'not yet'),
        link.last_synced_commit ? row('Commit', h('code', null, String(link.last_synced_commit).slice(0, 7))) : null,
        conflict && conflict.length ? row('Conflict', `${plural(conflict.length, 'file')} changed on both sides: ${conflict.join(', ')}${conflictBranch}`) : null,
      ),
      link.last_error ? h('div', { class: 'error github-last-error' }, `The last sync failed: ${link.last_error}`) : null,
      result,
      error,
      h('div', { class: 'actions' }, push, disconnect),
      h('p', { class: 'hint' }, 'Push now commits the project’s files in one commit (changes made on GitHub are taken in first). Runs of the agent that change files are committed by themselves.'),
    );
    if (problem) {
      showError(error, problem);
      error.scrollIntoView({ block: 'nearest' });
    }
    push.addEventListener('click', async () => {
      showError(error, null);
      result.hidden = true;
      push.disabled = true;
      disconnect.disabled = true;
      push.textContent = 'Pushing…';
      try {
        const report = await json(`${base}/push`, { method: 'POST', json: {} });
        hooks.onSynced(report);
        ctx.toast('Pushed to GitHub.');
        await load(syncSummary(report));
      } catch (e) {
        if (e instanceof ApiError && (e.status === 409 || e.status >= 500)) {
          // A conflict (or a failure the server recorded on the link): it
          // may have taken changes from GitHub, and the link's status moved
          // on (the conflict, the last error). Show both, and the problem.
          const report = e.code === 'github_conflict' && e.doc && Array.isArray(e.doc.pulled) ? e.doc : null;
          if (report) hooks.onSynced(report);
          await load(report ? syncSummary(report) : undefined, e);
          return;
        }
        showError(error, e);
        error.scrollIntoView({ block: 'nearest' });
        push.disabled = false;
        disconnect.disabled = false;
        push.textContent = 'Push now';
      }
    });
    disconnect.addEventListener('click', async () => {
      if (!confirm(`Disconnect ${link.repository}? The repository stays on GitHub; the project’s changes are no longer committed to it.`)) return;
      showError(error, null);
      disconnect.disabled = true;
      push.disabled = true;
      try {
        await json(base, { method: 'DELETE' });
        ctx.toast(`Disconnected ${link.repository}.`);
        await load(`Disconnected ${link.repository}; it stays on GitHub.`);
      } catch (e) {
        showError(error, e);
        disconnect.disabled = false;
        push.disabled = false;
      }
    });
  }

  async function showConnect(note, problem) {
    let installations;
    try {
      installations = await listInstallations();
    } catch (e) {
      mount(body, errorBox(e), h('button', { type: 'button', class: 'secondary small', onclick: () => load() }, 'Try again'));
      return;
    }
    if (closed) return;
    const result = h('p', { class: 'notice', role: 'status', hidden: !note }, note || '');
    const error = h('div', { class: 'error', role: 'alert', hidden: true });
    if (problem) showError(error, problem);
    if (!installations.length) {
      mount(
        body,
        result,
        error,
        h('p', null, 'This project is not connected to GitHub, and no GitHub account is linked to yours yet.'),
        h('a', { href: '#/account', class: 'button-link' }, 'Link GitHub on your account page'),
      );
      return;
    }
    const inst = h(
      'select',
      { id: 'github-installation', name: 'installation_id' },
      installations.map((i) => h('option', { value: String(i.installation_id), disabled: i.suspended }, `${installationLabel(i)}${i.suspended ? ' (suspended)' : ''}`)),
    );
    const repo = h('input', {
      id: 'github-repository',
      name: 'repository',
      type: 'text',
      required: true,
      autocomplete: 'off',
      spellcheck: 'false',
      autocapitalize: 'off',
      maxlength: '140',
      value: repoName(hooks.projectName()),
      'aria-describedby': 'github-repository-hint',
    });
    const branch = h('input', {
      id: 'github-branch',
      name: 'branch',
      type: 'text',
      autocomplete: 'off',
      spellcheck: 'false',
      autocapitalize: 'off',
      maxlength: '200',
      placeholder: 'the repository’s default branch',
    });
    const submit = h('button', { type: 'submit', class: 'primary' }, 'Connect repository');
    const form = h(
      'form',
      { class: 'stack github-connect', novalidate: true },
      result,
      h('p', { class: 'muted small' }, 'Connect this project to a repository: its files are committed there, and pushes to it come back here.'),
      h('label', { for: 'github-installation' }, 'GitHub account'),
      inst,
      h('label', { for: 'github-repository' }, 'Repository'),
      repo,
      h(
        'p',
        { id: 'github-repository-hint', class: 'hint' },
        'A name (on the account above) or owner/name. In an organisation a missing repository is created (private). On a personal account, create it on GitHub first (empty is fine) and give the EverJust App access to it.',
      ),
      h('label', { for: 'github-branch' }, 'Branch (optional)'),
      branch,
      error,
      submit,
    );
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      showError(error, null);
      result.hidden = true;
      const name = repo.value.trim();
      if (!name) {
        showError(error, { detail: 'Enter the repository’s name, or owner/name.' });
        repo.focus();
        return;
      }
      const payload = { installation_id: Number(inst.value), repository: name };
      if (branch.value.trim()) payload.branch = branch.value.trim();
      submit.disabled = true;
      submit.textContent = 'Connecting…';
      try {
        const made = await json(base, { method: 'POST', json: payload });
        const sync = made.sync || {};
        hooks.onSynced(sync);
        ctx.toast(`Connected ${made.repository}.`);
        if (sync.status === 'failed') {
          await load(`Connected ${made.repository}, but the first sync failed: ${sync.detail || sync.code}. Use Push now to try again.`);
        } else {
          await load(`Connected ${made.repository}. ${syncSummary(sync)}`);
        }
      } catch (err) {
        showError(error, err);
        error.scrollIntoView({ block: 'nearest' });
        submit.disabled = false;
        submit.textContent = 'Connect repository';
        repo.focus();
      }
    });
    mount(body, form);
  }

  return {
    toggle,
    panel,
    /** After an agent run: its files may have been committed; show the new state if open. */
    refresh() {
      if (loaded && !panel.hidden) load();
    },
    close() {
      closed = true;
    },
  };
}
