// Log in and sign up.

import { signIn } from '../api.js';
import { h, mount, showError } from '../dom.js';
import { issuerHost, oidcInfo, startOidcLogin } from '../oidc.js';

/**
 * @param {any} ctx
 * @param {'login' | 'signup'} kind
 * @param {string} note  a message to show first (e.g. "session ended")
 * @param {any} [failure]  an error to show in the error box (a failed OIDC login)
 */
export function authView(ctx, kind, note, failure) {
  const signup = kind === 'signup';
  const email = h('input', { id: 'email', name: 'email', type: 'email', autocomplete: 'username', required: true, inputmode: 'email' });
  const password = h('input', {
    id: 'password',
    name: 'password',
    type: 'password',
    autocomplete: signup ? 'new-password' : 'current-password',
    required: true,
    minlength: signup ? '10' : null,
    'aria-describedby': signup ? 'password-hint' : null,
  });
  const error = h('div', { class: 'error', role: 'alert', hidden: true });
  const submit = h('button', { type: 'submit', class: 'primary' }, signup ? 'Create account' : 'Log in');
  const form = h(
    'form',
    { class: 'stack', novalidate: true },
    h('label', { for: 'email' }, 'Email'),
    email,
    h('label', { for: 'password' }, 'Password'),
    password,
    signup ? h('p', { id: 'password-hint', class: 'hint' }, 'At least 10 characters; not a common password.') : null,
    error,
    submit,
  );
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    showError(error, null);
    if (!email.value.trim() || !password.value) {
      showError(error, { detail: 'Enter your email and password.' });
      (email.value.trim() ? password : email).focus();
      return;
    }
    submit.disabled = true;
    submit.textContent = signup ? 'Creating account…' : 'Logging in…';
    try {
      await signIn(kind, email.value.trim(), password.value);
      await ctx.onSignedIn(signup ? 'Welcome! Create your first project.' : '');
    } catch (err) {
      showError(error, err);
      submit.disabled = false;
      submit.textContent = signup ? 'Create account' : 'Log in';
      const field = /password/.test(err.code || '') ? password : email;
      field.focus();
    }
  });
  // "Log in with <issuer>" when the server has an OIDC client configured.
  const external = h('div', { class: 'stack oidc', hidden: true });
  if (!signup) {
    oidcInfo().then((info) => {
      if (!info || !external.isConnected) return;
      const button = h('button', { type: 'button', class: 'oidc-login' }, `Log in with ${issuerHost(info)}`);
      button.addEventListener('click', async () => {
        showError(error, null);
        button.disabled = true;
        try {
          await startOidcLogin(info);
        } catch (err) {
          showError(error, err);
          button.disabled = false;
        }
      });
      external.replaceChildren(h('p', { class: 'hint center' }, 'or'), button);
      external.hidden = false;
    });
  }
  if (failure) showError(error, failure);
  mount(
    ctx.main,
    h(
      'section',
      { class: 'auth card', 'aria-labelledby': 'auth-title' },
      h('h1', { id: 'auth-title' }, signup ? 'Create your account' : 'Log in'),
      note ? h('p', { class: 'notice', role: 'status' }, note) : null,
      form,
      external,
      h(
        'p',
        { class: 'switch' },
        signup ? 'Already have an account? ' : 'New here? ',
        h('a', { href: signup ? '#/login' : '#/signup' }, signup ? 'Log in' : 'Create an account'),
      ),
    ),
  );
  email.focus();
}
