// The account page: tier and this month's usage, the linked GitHub App
// installations ("Install the GitHub App" and "Already installed?
// Authorize", or "Link GitHub", and the end of a link when GitHub sends the
// browser back: see github.js), and the bring-your-own provider keys
// (listed by provider and last four characters only; the key itself is
// never shown again once sent).

import { ApiError, json } from '../api.js';
import { errorBox, formatDate, h, mount, showError } from '../dom.js';
import {
  githubLinkOptions,
  installationLabel,
  listInstallations,
  startGithubLink,
  takeGithubArrival,
} from '../github.js';

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
      githubSection(ctx),
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

function githubSection(ctx) {
  const list = h('ul', { class: 'installations', 'aria-label': 'Your linked GitHub installations' });
  const status = h('p', { class: 'muted', role: 'status' }, 'Loading GitHub installations…');
  const done = h('p', { class: 'notice', role: 'status', hidden: true });
  const error = h('div', { class: 'error', role: 'alert', hidden: true });
  // An installation made at GitHub, to finish linking (with a click: it leaves for GitHub).
  const finish = h('button', { type: 'button', class: 'primary', hidden: true });
  // The ways to link, once the server said which it offers (githubLinkOptions).
  const actions = h('div', { class: 'stack github-link' });

  let items = [];
  const render = () => {
    status.hidden = items.length > 0;
    status.textContent = items.length ? '' : 'No GitHub installation linked yet.';
    mount(
      list,
      items.map((inst) =>
        h(
          'li',
          { class: 'installation card', dataset: { installationId: String(inst.installation_id) } },
          h('span', { class: 'installation-name' }, inst.account),
          h('span', { class: 'muted small' }, inst.account_type === 'Organization' ? 'organisation' : 'personal account'),
          h('span', { class: 'muted small' }, `installation ${inst.installation_id}`),
          inst.suspended ? h('span', { class: 'badge warn' }, 'suspended on GitHub') : null,
        ),
      ),
    );
  };
  const load = () =>
    listInstallations()
      .then((found) => {
        items = found;
        render();
        return found;
      })
      .catch((e) => {
        status.hidden = true;
        showError(error, e);
        return null;
      });

  /** Undoes what `begin` showed while leaving for GitHub. */
  let restore = () => {};
  /** Leaves for GitHub; `button` says so meanwhile. */
  const begin = async (button, how) => {
    showError(error, null);
    done.hidden = true;
    const buttons = [finish, ...actions.querySelectorAll('button')];
    const label = button.textContent;
    for (const b of buttons) b.disabled = true;
    button.textContent = 'Going to GitHub…';
    restore = () => {
      for (const b of buttons) b.disabled = false;
      button.textContent = label;
      restore = () => {};
    };
    try {
      await startGithubLink(how);
    } catch (e) {
      showError(error, e);
      restore();
    }
  };
  // Back from GitHub with the browser's back button, this page may be the
  // one kept in memory: its buttons are usable again.
  const onShow = (e) => {
    if (e.persisted) restore();
  };
  addEventListener('pageshow', onShow);
  ctx.setCleanup(() => removeEventListener('pageshow', onShow));

  /**
   * "Install the GitHub App" (with install_url) and the authorization, which
   * links every installation of the App the user's GitHub account controls.
   */
  const showActions = (install) => {
    const authorize = h(
      'button',
      { type: 'button', class: install ? 'secondary' : 'primary', 'aria-describedby': 'github-authorize-hint' },
      install ? 'Already installed? Authorize' : 'Link GitHub',
    );
    authorize.addEventListener('click', () => begin(authorize, { via: 'authorize' }));
    const authorizePart = [
      authorize,
      h(
        'p',
        { id: 'github-authorize-hint', class: 'hint' },
        install
          ? 'Installed the App already? GitHub’s install page then only offers to configure it: authorize the App instead. You come back here with its installations on your account and on organisations you administer linked.'
          : 'You go to GitHub to authorize the EverJust GitHub App, then come back here with its installations on your account and on organisations you administer linked.',
      ),
    ];
    const parts = [];
    if (install) {
      const go = h('button', { type: 'button', class: 'primary', 'aria-describedby': 'github-install-hint' }, 'Install the GitHub App');
      go.addEventListener('click', () => begin(go, { via: 'install' }));
      parts.push(
        go,
        h(
          'p',
          { id: 'github-install-hint', class: 'hint' },
          'You go to GitHub to install the EverJust GitHub App on your account or an organisation you administer, and come back here with it linked. Then connect a project to a repository from the project’s page.',
        ),
      );
    }
    mount(actions, parts, authorizePart);
  };

  githubLinkOptions()
    .then((o) => showActions(o.install))
    .catch((e) => {
      if (e instanceof ApiError && e.status === 503) {
        // GitHub is not set up on this server: say so, offer nothing.
        mount(actions, h('p', { class: 'muted' }, e.detail));
      } else {
        showActions(false);
      }
    });

  // Back from GitHub: finish what it brought, then list what the server has.
  const arrival = takeGithubArrival();
  if (arrival && arrival.error) {
    showError(error, arrival.error);
    load();
  } else if (arrival && arrival.authorize) {
    // Installed at GitHub: confirm the GitHub account (authorize) with a state of ours, when the user says so.
    const id = arrival.authorize;
    load().then((found) => {
      if (found && found.some((i) => String(i.installation_id) === id)) {
        done.hidden = false;
        done.textContent = 'That GitHub installation is linked to your account already.';
        return;
      }
      done.hidden = false;
      done.textContent = `GitHub installed the App (installation ${id}). To link it to your account, GitHub first confirms who you are there.`;
      finish.textContent = `Finish linking installation ${id}`;
      finish.hidden = false;
    });
    finish.addEventListener('click', () => begin(finish, { via: 'authorize', installationId: id }));
  } else if (arrival && arrival.link) {
    status.textContent = arrival.link.installation_id ? 'Linking your GitHub installation…' : 'Linking your GitHub installations…';
    json('/v1/github/installations', { method: 'POST', json: arrival.link })
      .then((doc) => {
        // One installation (the redirect back named it), or {items}: every one the user controls.
        const linked = doc && Array.isArray(doc.items) ? doc.items : [doc];
        done.hidden = false;
        done.textContent = `Linked ${linked.map(installationLabel).join(', ')}. Connect a project to one of its repositories from the project’s page.`;
        ctx.toast(`Linked GitHub: ${linked.map((i) => i.account).join(', ')}.`);
      })
      .catch((e) => showError(error, e))
      .finally(load);
  } else {
    load();
  }

  return h(
    'section',
    { class: 'card stack', id: 'github', 'aria-labelledby': 'github-title' },
    h('h2', { id: 'github-title' }, 'GitHub'),
    status,
    list,
    done,
    error,
    finish,
    actions,
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
