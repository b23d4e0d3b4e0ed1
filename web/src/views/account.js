// The account page: tier and this month's usage, and the bring-your-own
// provider keys (listed by provider and last four characters only; the
// key itself is never shown again once sent).

import { json } from '../api.js';
import { errorBox, formatDate, h, mount, showError } from '../dom.js';

/** The providers PUT /v1/keys/{provider} accepts. */
const PROVIDERS = [
  ['anthropic', 'Anthropic'],
  ['openai', 'OpenAI'],
];
const providerName = (id) => (PROVIDERS.find(([p]) => p === id) || [id, id])[1];

export function accountView(ctx) {
  const usage = h('div', { class: 'usage-summary' }, h('p', { class: 'muted', role: 'status' }, 'Loading usage…'));
  json('/v1/usage')
    .then((u) => mount(usage, usageList(u, ctx.me())))
    .catch((e) => mount(usage, errorBox(e)));

  mount(
    ctx.main,
    h(
      'div',
      { class: 'account-page' },
      h('a', { href: '#/', class: 'back' }, '← Projects'),
      h('h1', null, 'Account'),
      h('section', { class: 'card', 'aria-labelledby': 'usage-title' }, h('h2', { id: 'usage-title' }, 'Usage this month'), usage),
      keysSection(ctx),
    ),
  );
}

function usageList(u, me) {
  const t = u.totals || {};
  const limits = u.limits || {};
  const row = (label, value) => [h('dt', null, label), h('dd', null, value)];
  const n = (x) => Number(x || 0).toLocaleString();
  return h(
    'dl',
    { class: 'facts' },
    row('Tier', h('span', { class: 'tier' }, u.tier || (me && me.tier) || 'free')),
    row('Tokens', limits.model_tokens_month ? `${n(t.tokens)} of ${n(limits.model_tokens_month)}` : n(t.tokens)),
    t.billable_tokens !== t.tokens ? row('Billable tokens', `${n(t.billable_tokens)} (your own keys’ use is not counted)`) : null,
    row('Model calls', n(t.model_calls)),
    row('Compute', `${n(t.compute_minutes)} min`),
  );
}

function keysSection(ctx) {
  const list = h('ul', { class: 'keys', 'aria-label': 'Your stored provider keys' });
  const status = h('p', { class: 'muted', role: 'status' }, 'Loading keys…');
  const listError = h('div', { class: 'error', role: 'alert', hidden: true });

  const provider = h(
    'select',
    { id: 'key-provider', name: 'provider' },
    PROVIDERS.map(([id, name]) => h('option', { value: id }, name)),
  );
  const secret = h('input', {
    id: 'key-value',
    name: 'api_key',
    type: 'password',
    autocomplete: 'off',
    spellcheck: 'false',
    autocapitalize: 'off',
    required: true,
    maxlength: '512',
    'aria-describedby': 'key-hint',
  });
  const formError = h('div', { class: 'error', role: 'alert', hidden: true });
  const save = h('button', { type: 'submit', class: 'primary' }, 'Save key');
  const form = h(
    'form',
    { class: 'stack key-form', 'aria-labelledby': 'key-form-title', novalidate: true },
    h('h3', { id: 'key-form-title' }, 'Add or replace a key'),
    h('label', { for: 'key-provider' }, 'Provider'),
    provider,
    h('label', { for: 'key-value' }, 'API key'),
    secret,
    h(
      'p',
      { id: 'key-hint', class: 'hint' },
      'The key is checked with the provider, stored encrypted and never shown again. Your runs use it instead of the shared key; saving replaces the one you stored before.',
    ),
    formError,
    save,
  );

  let stored = [];
  const render = () => {
    status.hidden = stored.length > 0;
    status.textContent = stored.length ? '' : 'No keys stored: runs use the server’s shared keys.';
    mount(list, stored.map(item));
  };
  const load = () =>
    json('/v1/keys')
      .then((doc) => {
        showError(listError, null);
        stored = doc.items || [];
        render();
      })
      .catch((e) => {
        status.hidden = true;
        showError(listError, e);
      });

  const item = (k) => {
    const name = providerName(k.provider);
    const err = h('div', { class: 'error', role: 'alert', hidden: true });
    const del = h('button', { type: 'button', class: 'danger small', 'aria-label': `Delete ${name} key` }, 'Delete');
    const li = h(
      'li',
      { class: 'key card', dataset: { provider: k.provider } },
      h('span', { class: 'key-name' }, name),
      h('span', { class: 'key-last4', 'aria-label': `key ending in ${k.last4}` }, `•••• ${k.last4}`),
      k.updated_at ? h('span', { class: 'muted small' }, `saved ${formatDate(k.updated_at)}`) : null,
      del,
      err,
    );
    del.addEventListener('click', async () => {
      if (!confirm(`Delete your ${name} key? Runs will use the server’s shared key, if any.`)) return;
      del.disabled = true;
      try {
        await json(`/v1/keys/${encodeURIComponent(k.provider)}`, { method: 'DELETE' });
        stored = stored.filter((x) => x.provider !== k.provider);
        render();
        ctx.toast(`Deleted your ${name} key.`);
        provider.focus();
      } catch (e) {
        del.disabled = false;
        showError(err, e);
      }
    });
    return li;
  };

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    showError(formError, null);
    const key = secret.value.trim();
    if (!key) {
      showError(formError, { detail: 'Paste the API key from your provider’s console.' });
      secret.focus();
      return;
    }
    save.disabled = true;
    save.textContent = 'Checking key…';
    try {
      const k = await json(`/v1/keys/${encodeURIComponent(provider.value)}`, { method: 'PUT', json: { api_key: key } });
      secret.value = '';
      stored = [...stored.filter((x) => x.provider !== k.provider), { ...k, updated_at: new Date().toISOString() }].sort((a, b) =>
        a.provider.localeCompare(b.provider),
      );
      render();
      ctx.toast(`Saved your ${providerName(k.provider)} key.`);
    } catch (err) {
      showError(formError, err);
      secret.focus();
    } finally {
      save.disabled = false;
      save.textContent = 'Save key';
    }
  });

  load();
  return h(
    'section',
    { class: 'card stack', 'aria-labelledby': 'keys-title' },
    h('h2', { id: 'keys-title' }, 'Your provider keys'),
    status,
    listError,
    list,
    form,
  );
}
