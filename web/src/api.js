// The API client: JSON requests with the bearer token, one refresh on 401,
// problem+json turned into ApiError. The access token lives in memory only;
// the refresh token in localStorage so a reload stays signed in.

const RT_KEY = 'everjust.refresh_token';

export class ApiError extends Error {
  /**
   * @param {number} status
   * @param {string} code
   * @param {string} detail
   * @param {string} [requestId]
   * @param {any} [doc]  the whole problem document (some carry more, e.g. a sync's report)
   */
  constructor(status, code, detail, requestId, doc) {
    super(detail);
    this.status = status;
    this.code = code;
    this.detail = detail;
    this.requestId = requestId || '';
    this.doc = doc && typeof doc === 'object' ? doc : null;
  }
}

/** A network failure (offline, connection refused, reset). */
export class NetworkError extends Error {
  constructor(cause) {
    super('Could not reach the server. Check your connection; we will retry.');
    this.cause = cause;
    this.code = 'network';
  }
}

let accessToken = '';
/** @type {Promise<boolean> | null} */
let refreshing = null;
/** @type {(reason: string) => void} */
let onSignedOut = () => {};

export function setSignedOutHandler(fn) {
  onSignedOut = fn;
}

export function hasSession() {
  return Boolean(accessToken || readRefresh());
}

function readRefresh() {
  try {
    return localStorage.getItem(RT_KEY) || '';
  } catch {
    return '';
  }
}

function writeRefresh(token) {
  try {
    if (token) localStorage.setItem(RT_KEY, token);
    else localStorage.removeItem(RT_KEY);
  } catch {
    /* private mode: the session lasts as long as the page */
  }
}

/** Stores a token pair from signup, login or refresh. */
export function adoptTokens(doc) {
  accessToken = doc.access_token || '';
  writeRefresh(doc.refresh_token || '');
}

export function clearTokens() {
  accessToken = '';
  writeRefresh('');
}

/** Reads a problem+json (or any error body) into an ApiError. */
export async function problem(res) {
  let doc = null;
  try {
    doc = await res.json();
  } catch {
    /* not JSON */
  }
  const detail =
    (doc && (doc.detail || doc.title)) ||
    `The server answered ${res.status} ${res.statusText || ''}`.trim() + '.';
  return new ApiError(res.status, (doc && doc.code) || `http_${res.status}`, detail, doc && doc.request_id, doc);
}

/**
 * Rotates the refresh token once, shared by every caller that hit a 401 at
 * the same time (a second rotation of the same token would revoke the whole
 * family). Across tabs a Web Lock serialises it, and the token is re-read
 * inside the lock so a tab uses what another tab just stored.
 */
export function refresh() {
  if (!refreshing) {
    const run = async () => {
      const token = readRefresh();
      if (!token) return false;
      let res;
      try {
        res = await fetch('/v1/auth/refresh', {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ refresh_token: token }),
        });
      } catch (e) {
        throw new NetworkError(e);
      }
      if (res.ok) {
        adoptTokens(await res.json());
        return true;
      }
      if (res.status === 400 || res.status === 401) {
        clearTokens();
        return false;
      }
      throw await problem(res);
    };
    const locked =
      typeof navigator !== 'undefined' && navigator.locks
        ? navigator.locks.request('everjust-refresh', run)
        : run();
    refreshing = locked.finally(() => {
      refreshing = null;
    });
  }
  return refreshing;
}

/**
 * fetch() with the bearer token; on 401 refreshes once and retries.
 * Returns the Response when it is ok, else throws ApiError / NetworkError.
 * @param {string} path
 * @param {RequestInit & {json?: unknown}} [init]
 */
export async function request(path, init = {}) {
  const headers = new Headers(init.headers || {});
  let body = init.body;
  if (init.json !== undefined) {
    headers.set('content-type', 'application/json');
    body = JSON.stringify(init.json);
  }
  const send = async () => {
    if (accessToken) headers.set('authorization', `Bearer ${accessToken}`);
    try {
      return await fetch(path, { ...init, headers, body });
    } catch (e) {
      if (e && e.name === 'AbortError') throw e;
      throw new NetworkError(e);
    }
  };
  if (!accessToken && readRefresh()) await refresh();
  let res = await send();
  if (res.status === 401 && readRefresh()) {
    const renewed = await refresh();
    if (renewed) res = await send();
  }
  if (res.status === 401) {
    const err = await problem(res);
    if (err.code === 'unauthorized' || err.code === 'invalid_token') {
      clearTokens();
      onSignedOut('Your session has ended. Please log in again.');
    }
    throw err;
  }
  if (!res.ok) throw await problem(res);
  return res;
}

/** A JSON request; resolves to the parsed body (null for 204). */
export async function json(path, init = {}) {
  const res = await request(path, init);
  if (res.status === 204) return null;
  return res.json();
}

export async function signIn(kind, email, password) {
  let res;
  try {
    res = await fetch(`/v1/auth/${kind}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ email, password }),
    });
  } catch (e) {
    throw new NetworkError(e);
  }
  if (!res.ok) throw await problem(res);
  const doc = await res.json();
  adoptTokens(doc);
  return doc.user;
}

export async function signOut() {
  const token = readRefresh();
  clearTokens();
  if (token) {
    try {
      await fetch('/v1/auth/logout', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ refresh_token: token }),
      });
    } catch {
      /* the token is forgotten here either way */
    }
  }
}

/** Path segments of a project file, each percent-encoded. */
export function filePath(projectId, path) {
  return `/v1/projects/${encodeURIComponent(projectId)}/files/${path.split('/').map(encodeURIComponent).join('/')}`;
}

/** Every page of a cursor-paginated list. */
export async function all(path, limit = 100) {
  const items = [];
  let cursor = '';
  for (let i = 0; i < 1000; i++) {
    const sep = path.includes('?') ? '&' : '?';
    const doc = await json(`${path}${sep}limit=${limit}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`);
    items.push(...(doc.items || []));
    if (!doc.next_cursor) break;
    cursor = doc.next_cursor;
  }
  return items;
}
