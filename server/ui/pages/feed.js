// Live feed: a tail of GET /feed/live (Server-Sent Events) with type and stream-prefix filters,
// pause and resume. The browser's EventSource reconnects by itself with Last-Event-ID after the
// stream ends (a server restart); when it gives up (an error answer, such as 503 while the server
// shuts down), the page opens a new stream after the last position it showed.
import { api, query, unauthorized } from '../api.js';
import { h, fill, fmtNumber, fmtTime, payload } from '../dom.js';

const MAX_ROWS = 500;
const BACKLOG = 20; // events before the head shown when the page opens

export function render(root, route) {
  const types = route.params.get('type') || '';
  const prefix = route.params.get('prefix') || '';
  const shard = route.params.get('shard') || ''; // a store of several feed shards: the one followed
  const typeIn = h('input', { type: 'text', name: 'type', placeholder: 'Event types, comma-separated', value: types, class: 'grow' });
  const prefixIn = h('input', { type: 'text', name: 'prefix', placeholder: 'Stream prefix, e.g. order-', value: prefix, class: 'grow' });
  const shardIn = h('select', { name: 'shard', class: 'hidden', title: 'Feed shard' });
  const status = h('span', { class: 'badge', id: 'feed-status' }, 'connecting…');
  const pauseBtn = h('button', { type: 'button', id: 'feed-pause' }, 'Pause');
  const counter = h('span', { class: 'muted', id: 'feed-count' }, '');
  const rows = h('tbody', { id: 'feed-rows' });
  const note = h('p', { class: 'empty', id: 'feed-empty' }, 'Waiting for events…');
  root.append(
    h('div', { class: 'page-head' }, h('h1', {}, 'Live feed'), status),
    h('div', { class: 'toolbar' },
      h('form', { class: 'inline grow', onsubmit: (e) => {
        e.preventDefault();
        location.hash = '#/feed' + query({ type: typeIn.value.trim(), prefix: prefixIn.value, shard: shardIn.value === '0' ? '' : shardIn.value });
      } }, typeIn, prefixIn, shardIn, h('button', { type: 'submit' }, 'Apply')),
      pauseBtn, counter),
    h('table', { class: 'grid feed' },
      h('thead', {}, h('tr', {}, ['Position', 'Stream', 'Version', 'Type', 'Recorded', 'Dispatched'].map((x) => h('th', {}, x)))),
      rows),
    note);

  const typeList = types.split(',').map((t) => t.trim()).filter(Boolean);
  let es = null, retry = null, paused = false, stopped = false;
  let last = null; // the last position shown (null: not started)
  let shown = 0;

  const setStatus = (text, cls) => { fill(status, text); status.className = 'badge ' + (cls || ''); };

  const addRow = (ev) => {
    const detail = h('tr', { class: 'detail hidden' }, h('td', { colspan: 6 }, payload('Data', ev.data, ev.dataBase64), payload('Metadata', ev.metadata)));
    const row = h('tr', { class: 'ev-row', dataset: { position: ev.position }, onclick: () => detail.classList.toggle('hidden') },
      h('td', { class: 'num' }, fmtNumber(ev.position)),
      h('td', {}, h('a', { href: '#/stream/' + encodeURIComponent(ev.stream), class: 'stream-link', onclick: (e) => e.stopPropagation() }, ev.stream)),
      h('td', { class: 'num' }, fmtNumber(ev.version)),
      h('td', { class: 'ev-type' }, ev.type),
      h('td', {}, fmtTime(ev.recordedAt)),
      h('td', {}, fmtTime(ev.dispatchedAt)));
    rows.prepend(row, detail);
    while (rows.children.length > 2 * MAX_ROWS) rows.lastElementChild.remove();
    shown++;
    note.classList.add('hidden');
    fill(counter, `${fmtNumber(shown)} event${shown === 1 ? '' : 's'} received`);
  };

  const open = () => {
    if (stopped || paused) return;
    clearTimeout(retry);
    es = new EventSource('/feed/live' + query({ after: last, type: typeList, prefix, shard }));
    es.onopen = () => setStatus('live', 'ok');
    es.onmessage = (m) => {
      let ev;
      try { ev = JSON.parse(m.data); } catch { return; }
      last = ev.position;
      addRow(ev);
    };
    es.onerror = (m) => {
      if (stopped || paused) return;
      if (m.data) { // the server's own "event: error" (storage failing); the stream ends next
        try { setStatus('error: ' + JSON.parse(m.data).message, 'bad'); } catch { /* keep the status */ }
        return;
      }
      if (es.readyState === EventSource.CLOSED) {
        // The browser gave up (an error answer): start again after the last event shown. A
        // session that expired shows as a 401 to an ordinary call, which brings the login form.
        es.close();
        retry = setTimeout(() => api('/auth/session').then((st) => (st.authenticated ? open() : unauthorized()), open), 2000);
      }
      setStatus('reconnecting…', 'warn');
    };
  };

  const close = () => { clearTimeout(retry); if (es) { es.close(); es = null; } };

  pauseBtn.addEventListener('click', () => {
    paused = !paused;
    fill(pauseBtn, paused ? 'Resume' : 'Pause');
    if (paused) { close(); setStatus('paused', 'muted'); } else { setStatus('connecting…'); open(); }
  });

  // A store of several feed shards: each has its own positions; the page follows one.
  api('/healthz').then((hz) => {
    const n = hz.feedShards || 1;
    if (n < 2) return;
    for (let i = 0; i < n; i++) shardIn.append(h('option', { value: String(i), selected: String(i) === (shard || '0') }, `shard ${i}`));
    shardIn.classList.remove('hidden');
  }).catch(() => { /* one shard, as far as the page knows */ });

  // Start a little before the head, so that the page shows the latest events at once.
  api('/feed' + query({ after: '4611686018427387904', limit: 1, shard })).then((res) => {
    last = Math.max(0, (res.head || 0) - BACKLOG);
  }).catch(() => { last = 0; }).finally(open);

  return () => { stopped = true; close(); };
}
