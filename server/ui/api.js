// The console's calls to the Estuite HTTP API (docs/http-api.md). Same origin only: a server run
// with a token authenticates them by its session cookie (POST /auth/session), never by a token
// kept in the page.

export class ApiError extends Error {
  constructor(status, code, message, body) {
    super(message || code || `HTTP ${status}`);
    this.status = status;
    this.code = code || '';
    this.body = body || {};
  }
}

const listeners = new Set();

// onUnauthorized registers f, called when any call is answered 401.
export function onUnauthorized(f) { listeners.add(f); }

// unauthorized tells the listeners that the browser has no valid credentials (a live stream
// refused, a session expired).
export function unauthorized() { listeners.forEach((f) => f()); }

// api calls the API: method and path, an optional JSON body. It resolves to the decoded JSON
// (null for 204) and rejects with an ApiError.
export async function api(path, { method = 'GET', body, signal } = {}) {
  const init = { method, credentials: 'same-origin', headers: { Accept: 'application/json' }, signal };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new ApiError(0, 'network', 'the server cannot be reached');
  }
  if (res.status === 204) return null;
  let data = null;
  const text = await res.text();
  if (text) {
    try { data = JSON.parse(text); } catch { data = null; }
  }
  if (!res.ok) {
    if (res.status === 401) unauthorized();
    throw new ApiError(res.status, data && data.error, data && data.message, data);
  }
  return data;
}

// enc percent-encodes a stream or group name as one path segment (docs/http-api.md, "Stream
// names in URLs"): "." and ".." too.
export function enc(name) {
  if (name === '.' || name === '..') return name.replace(/\./g, '%2E');
  return encodeURIComponent(name);
}

// query builds a query string from an object; arrays repeat their parameter, empty values are
// left out.
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (Array.isArray(v)) v.forEach((x) => q.append(k, x));
    else if (v !== undefined && v !== null && v !== '') q.set(k, String(v));
  }
  const s = q.toString();
  return s ? '?' + s : '';
}
