// EverJust web client: routing (#/login, #/signup, #/, #/p/<id>, #/account),
// the account bar, and the views.

import { hasSession, json, setSignedOutHandler, signOut, refresh, NetworkError } from './api.js';
import { h, mount } from './dom.js';
import { authView } from './views/auth.js';
import { projectsView } from './views/projects.js';
import { projectView } from './views/project.js';
import { accountView } from './views/account.js';
import { finishOidcLogin, isOidcReturn } from './oidc.js';
import { githubArrivalKind, hasGithubArrival, isGithubReturn, receiveGithubReturn } from './github.js';

const main = /** @type {HTMLElement} */ (document.getElementById('main'));
const account = /** @type {HTMLElement} */ (document.getElementById('account'));
const toastEl = /** @type {HTMLElement} */ (document.getElementById('toast'));

/** @type {{id: string, email: string, tier: string, role: string, limits?: object} | null} */
let me = null;
/** @type {(() => void) | null} */
let cleanup = null;
let flash = '';
/** A failed OIDC login, shown in the login view's error box once. */
let authFailure = null;

export function toast(text) {
  toastEl.textContent = text;
  toastEl.hidden = !text;
  clearTimeout(toast.t);
  if (text) toast.t = setTimeout(() => (toastEl.hidden = true), 6000);
}
toast.t = 0;

setSignedOutHandler((reason) => {
  me = null;
  flash = reason;
  renderAccount();
  if (!location.hash.startsWith('#/login') && !location.hash.startsWith('#/signup')) go('#/login');
  else route();
});

export function go(hash) {
  if (location.hash === hash) route();
  else location.hash = hash;
}

async function loadMe() {
  me = await json('/v1/me');
  renderAccount();
  // Usage is a separate, optional endpoint.
  json('/v1/usage')
    .then((u) => renderAccount(u))
    .catch(() => {});
  return me;
}

function renderAccount(usage) {
  if (!me) {
    account.replaceChildren();
    return;
  }
  const tier = h('span', { class: 'tier', title: 'Your tier' }, me.tier || 'free');
  let meter = null;
  const limits = (usage && usage.limits) || me.limits || {};
  if (usage && usage.totals && limits.model_tokens_month) {
    const used = usage.totals.tokens || 0;
    const pct = Math.min(100, Math.round((used / limits.model_tokens_month) * 100));
    meter = h(
      'span',
      { class: 'usage', title: `${used.toLocaleString()} of ${limits.model_tokens_month.toLocaleString()} tokens this month` },
      h('meter', { min: '0', max: '100', value: String(pct), 'aria-label': 'Tokens used this month' }),
      h('span', { class: 'usage-text' }, `${compact(used)} / ${compact(limits.model_tokens_month)} tokens`),
    );
  }
  const out = h(
    'button',
    {
      type: 'button',
      class: 'link',
      onclick: async () => {
        await signOut();
        me = null;
        renderAccount();
        flash = 'You are logged out.';
        go('#/login');
      },
    },
    'Log out',
  );
  account.replaceChildren(
    tier,
    meter || '',
    h('span', { class: 'email', title: me.email }, me.email || ''),
    h('a', { href: '#/account', class: 'account-link' }, 'Account'),
    out,
  );
}

function compact(n) {
  if (n >= 1e6) return `${(n / 1e6).toFixed(n % 1e6 ? 1 : 0)}M`;
  if (n >= 1e3) return `${Math.round(n / 1e3)}k`;
  return String(n);
}

async function route() {
  if (cleanup) {
    cleanup();
    cleanup = null;
  }
  const hash = location.hash || '#/';
  const ctx = {
    main,
    toast,
    go,
    me: () => me,
    onSignedIn: async (note) => {
      await loadMe();
      flash = note || '';
      // Back from GitHub while logged out: the account page finishes the link.
      go(hasGithubArrival() ? '#/account' : '#/');
    },
    setCleanup: (fn) => {
      cleanup = fn;
    },
    refreshUsage: () => {
      if (me) json('/v1/usage').then((u) => renderAccount(u)).catch(() => {});
    },
  };
  const note = flash;
  flash = '';
  if (hash.startsWith('#/login') || hash.startsWith('#/signup')) {
    if (me) return go('#/');
    document.title = hash.startsWith('#/signup') ? 'Sign up · EverJust' : 'Log in · EverJust';
    const failure = authFailure;
    authFailure = null;
    authView(ctx, hash.startsWith('#/signup') ? 'signup' : 'login', note || githubNote(), failure);
    focusMain();
    return;
  }
  if (!me) {
    if (!hasSession()) return go('#/login');
    mount(main, h('p', { class: 'muted center' }, 'Loading…'));
    try {
      if (!(await refresh())) return go('#/login');
      // A project page starts its own requests while /v1/me is on its way.
      const meP = loadMe();
      if (!hash.startsWith('#/p/')) await meP;
      else meP.catch(() => {});
    } catch (e) {
      if (e instanceof NetworkError) {
        mount(
          main,
          h('div', { class: 'error', role: 'alert' }, e.message),
          h('button', { type: 'button', onclick: () => route() }, 'Try again'),
        );
        return;
      }
      flash = (e && e.detail) || '';
      return go('#/login');
    }
  }
  const m = /^#\/p\/([^/?#]+)/.exec(hash);
  if (m) {
    projectView(ctx, decodeURIComponent(m[1]));
  } else if (hash === '#/account') {
    document.title = 'Account · EverJust';
    accountView(ctx);
  } else {
    document.title = 'Projects · EverJust';
    projectsView(ctx, note);
  }
  focusMain();
}

/** What the login page says while a redirect back from GitHub waits for a login. */
function githubNote() {
  const kind = githubArrivalKind();
  if (kind === 'link' || kind === 'authorize') return 'Log in to finish linking your GitHub installation.';
  if (kind === 'error') return 'Log in to see how linking GitHub went.';
  return '';
}

function focusMain() {
  // Move focus to the new view for keyboard and screen reader users, unless
  // the view already put it somewhere useful.
  if (!main.contains(document.activeElement)) main.focus({ preventScroll: true });
}

// The skip link must not change the hash: the hash is the route.
document.querySelector('.skip')?.addEventListener('click', (e) => {
  e.preventDefault();
  main.focus();
});
addEventListener('hashchange', route);
addEventListener('unhandledrejection', (e) => {
  const err = e.reason;
  toast((err && (err.detail || err.message)) || 'Something went wrong.');
});

/**
 * A redirect back to this page: GitHub's (an App installation or
 * authorization, see github.js) goes to the account page, which finishes
 * the link (after a login, when logged out: the page asks for one); the
 * identity provider's (`/?code=…&state=…`) finishes that login first.
 */
async function start() {
  if (isGithubReturn()) {
    // Kept in sessionStorage (a login with OIDC leaves the page) until the account page uses it.
    receiveGithubReturn();
    if (!hasSession()) history.replaceState(null, '', `${location.pathname}#/login`);
    return route();
  }
  if (!isOidcReturn()) return route();
  mount(main, h('p', { class: 'muted center', role: 'status' }, 'Logging in…'));
  try {
    await finishOidcLogin();
    await loadMe();
    // Back from GitHub while logged out, before this login: the account page finishes the link.
    go(hasGithubArrival() ? '#/account' : '#/');
  } catch (e) {
    authFailure = e;
    go('#/login');
  }
}
start();
