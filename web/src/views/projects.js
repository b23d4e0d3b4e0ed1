// The project list: create (with a template), rename, delete.

import { all, json } from '../api.js';
import { errorBox, formatBytes, formatDate, h, mount, showError } from '../dom.js';

/** Templates change rarely: one request per page load. */
let templatesOnce = null;
function templates() {
  if (!templatesOnce) {
    templatesOnce = json('/v1/templates').then(
      (d) => d.items || [],
      (e) => {
        templatesOnce = null;
        throw e;
      },
    );
  }
  return templatesOnce;
}

export function projectsView(ctx, note) {
  const list = h('ul', { class: 'projects', 'aria-label': 'Your projects' });
  const listError = h('div', { class: 'error', role: 'alert', hidden: true });
  const status = h('p', { class: 'muted', role: 'status' }, 'Loading projects…');

  // --- new project ---
  const name = h('input', { id: 'new-name', name: 'name', required: true, maxlength: '100', autocomplete: 'off', placeholder: 'My app' });
  const picker = h('div', { class: 'templates', role: 'radiogroup', 'aria-labelledby': 'tpl-legend' }, h('p', { class: 'muted' }, 'Loading templates…'));
  const createError = h('div', { class: 'error', role: 'alert', hidden: true });
  const create = h('button', { type: 'submit', class: 'primary' }, 'Create project');
  const form = h(
    'form',
    { class: 'new-project card stack', 'aria-labelledby': 'new-title', novalidate: true },
    h('h2', { id: 'new-title' }, 'New project'),
    h('label', { for: 'new-name' }, 'Name'),
    name,
    h('fieldset', null, h('legend', { id: 'tpl-legend' }, 'Template'), picker),
    createError,
    create,
  );
  templates()
    .then((items) => {
      mount(
        picker,
        items.map((t, i) =>
          h(
            'label',
            { class: 'template' },
            h('input', { type: 'radio', name: 'template', value: t.id, checked: i === 0 || t.id === 'static-html' ? true : null }),
            h('span', { class: 'tpl-name' }, t.name),
            h('span', { class: 'tpl-desc' }, t.description || ''),
          ),
        ),
      );
      const pref = picker.querySelector('input[value="static-html"]');
      if (pref) pref.checked = true;
    })
    .catch((e) => mount(picker, errorBox(e)));

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    showError(createError, null);
    if (!name.value.trim()) {
      showError(createError, { detail: 'Give the project a name.' });
      name.focus();
      return;
    }
    const tpl = form.querySelector('input[name="template"]:checked');
    create.disabled = true;
    try {
      const p = await json('/v1/projects', {
        method: 'POST',
        json: { name: name.value.trim(), ...(tpl ? { template: tpl.value } : {}) },
      });
      ctx.go(`#/p/${encodeURIComponent(p.id)}`);
    } catch (err) {
      showError(createError, err);
      create.disabled = false;
      name.focus();
    }
  });

  const item = (p) => {
    const li = h('li', { class: 'project card', dataset: { id: p.id } });
    const show = () => {
      const rename = h('button', { type: 'button', class: 'secondary', 'aria-label': `Rename ${p.name}` }, 'Rename');
      const del = h('button', { type: 'button', class: 'danger', 'aria-label': `Delete ${p.name}` }, 'Delete');
      const err = h('div', { class: 'error', role: 'alert', hidden: true });
      rename.addEventListener('click', () => edit());
      del.addEventListener('click', async () => {
        if (!confirm(`Delete “${p.name}” and all its files? This cannot be undone.`)) return;
        del.disabled = true;
        try {
          await json(`/v1/projects/${encodeURIComponent(p.id)}`, { method: 'DELETE' });
          const next = li.nextElementSibling || li.previousElementSibling;
          li.remove();
          ctx.toast(`Deleted ${p.name}.`);
          if (!list.children.length) status.textContent = 'No projects yet.';
          const target = next && next.querySelector('a');
          (target || name).focus();
        } catch (e) {
          del.disabled = false;
          showError(err, e);
        }
      });
      mount(
        li,
        h('a', { class: 'title', href: `#/p/${encodeURIComponent(p.id)}` }, p.name),
        h(
          'p',
          { class: 'meta muted' },
          [p.template || 'blank', p.total_bytes != null ? formatBytes(p.total_bytes) : null, `updated ${formatDate(p.updated_at)}`]
            .filter(Boolean)
            .join(' · '),
        ),
        h('div', { class: 'actions' }, rename, del),
        err,
      );
    };
    const edit = () => {
      const input = h('input', { value: p.name, 'aria-label': 'New name', maxlength: '100', required: true });
      const err = h('div', { class: 'error', role: 'alert', hidden: true });
      const f = h(
        'form',
        { class: 'rename' },
        input,
        h('button', { type: 'submit', class: 'primary' }, 'Save'),
        h('button', { type: 'button', class: 'secondary', onclick: () => (show(), li.querySelector('.actions button').focus()) }, 'Cancel'),
        err,
      );
      f.addEventListener('keydown', (e) => {
        if (e.key === 'Escape') {
          show();
          li.querySelector('.actions button').focus();
        }
      });
      f.addEventListener('submit', async (e) => {
        e.preventDefault();
        try {
          const updated = await json(`/v1/projects/${encodeURIComponent(p.id)}`, { method: 'PATCH', json: { name: input.value.trim() } });
          Object.assign(p, updated);
          show();
          li.querySelector('a').focus();
        } catch (e2) {
          showError(err, e2);
          input.focus();
        }
      });
      mount(li, f);
      input.focus();
      input.select();
    };
    show();
    return li;
  };

  all('/v1/projects', 100)
    .then((items) => {
      items.sort((a, b) => (b.updated_at || '').localeCompare(a.updated_at || ''));
      status.textContent = items.length ? '' : 'No projects yet. Create one above.';
      status.hidden = !items.length ? false : true;
      mount(list, items.map(item));
    })
    .catch((e) => {
      status.hidden = true;
      showError(listError, e);
    });

  mount(
    ctx.main,
    h(
      'div',
      { class: 'projects-page' },
      h('h1', null, 'Projects'),
      note ? h('p', { class: 'notice', role: 'status' }, note) : null,
      form,
      h('h2', { class: 'list-title' }, 'Your projects'),
      status,
      listError,
      list,
    ),
  );
}
