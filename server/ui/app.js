// The Estuite web console: hash routes, each a page module with render(root, route) that returns
// a function stopping what the page runs (timers, live streams).
import { api, onUnauthorized } from './api.js';
import { h, fill, errorBox } from './dom.js';
import * as streams from './pages/streams.js';
import * as feed from './pages/feed.js';
import * as dispatcher from './pages/dispatcher.js';
import * as subscriptions from './pages/subscriptions.js';
import * as verify from './pages/verify.js';
import * as cost from './pages/cost.js';

const pages = { streams, stream: streams, feed, dispatcher, subscriptions, group: subscriptions, verify, cost };
const nav = { stream: 'streams', group: 'subscriptions' };

const view = document.getElementById('view');
const login = document.getElementById('login');
const logout = document.getElementById('logout');
let stop = null;
let session = { required: false, authenticated: true, supported: false };

// parseRoute reads location.hash: #/page/arg?query.
function parseRoute() {
  const raw = location.hash.replace(/^#\/?/, '');
  const [pathPart, qs] = raw.split('?');
  const [page, ...rest] = pathPart.split('/');
  return { page: pages[page] ? page : 'streams', arg: rest.length ? decodeURIComponent(rest.join('/')) : '', params: new URLSearchParams(qs || '') };
}

function render() {
  if (stop) { try { stop(); } catch { /* a page that fails to stop must not block the next */ } stop = null; }
  const route = parseRoute();
  for (const a of document.querySelectorAll('#nav a')) {
    a.classList.toggle('active', a.dataset.page === (nav[route.page] || route.page));
  }
  if (session.required && !session.authenticated) {
    showLogin();
    return;
  }
  login.classList.add('hidden');
  view.classList.remove('hidden');
  const root = fill(view);
  try {
    stop = pages[route.page].render(root, route) || null;
  } catch (e) {
    fill(root, errorBox(e));
  }
}

function showLogin() {
  view.classList.add('hidden');
  login.classList.remove('hidden');
  document.getElementById('login-token').focus();
}

// loadSession asks the server whether it needs a token and whether this browser has a session.
// A server without session support (404) needs none, or is reached some other way.
async function loadSession() {
  try {
    const s = await api('/auth/session');
    session = { required: !!s.required, authenticated: !!s.authenticated, supported: true };
  } catch (e) {
    session = e.status === 401 ? { required: true, authenticated: false, supported: false }
      : { required: false, authenticated: true, supported: false };
  }
  logout.classList.toggle('hidden', !(session.supported && session.required && session.authenticated));
}

async function loadServerInfo() {
  try {
    const hz = await api('/healthz');
    const parts = [hz.version, hz.backend].filter(Boolean);
    fill(document.getElementById('server-info'), parts.join(' · '));
  } catch { /* the header line is optional */ }
}

document.getElementById('login-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const input = document.getElementById('login-token');
  const err = document.getElementById('login-error');
  err.classList.add('hidden');
  try {
    await api('/auth/session', { method: 'POST', body: { token: input.value } });
    input.value = '';
    await loadSession();
    render();
  } catch (e) {
    fill(err, e.status === 401 ? 'That token is not valid.' : e.status === 404
      ? 'This server has no browser sessions (GET /auth/session): upgrade it to use the console with a token.' : e.message);
    err.classList.remove('hidden');
  }
});

logout.addEventListener('click', async () => {
  try { await api('/auth/session', { method: 'DELETE' }); } catch { /* signed out anyway */ }
  await loadSession();
  session.authenticated = false;
  render();
});

onUnauthorized(() => {
  if (!session.required || session.authenticated) {
    session = { ...session, required: true, authenticated: false };
    render();
  }
});

window.addEventListener('hashchange', render);
await loadSession();
loadServerInfo();
render();
