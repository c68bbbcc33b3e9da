// Streams: the list (GET /streams, prefix search, paged by cursor) and one stream's events
// (GET /streams/{stream}/events, paged both ways, newest first).
import { api, enc, query } from '../api.js';
import { h, fill, fmtNumber, fmtTime, payload, table, errorBox } from '../dom.js';

const PAGE = 20; // events a page of a stream
const LIST = 50; // streams a page of the list

// pages remembers the cursors of the list's pages before the one shown, for one prefix.
const pages = { prefix: '', back: [] };

export function render(root, route) {
  return route.page === 'stream' ? renderStream(root, route) : renderList(root, route);
}

function renderList(root, route) {
  const prefix = route.params.get('prefix') || '';
  const after = route.params.get('after') || '';
  // The cursors of the pages before this one, kept in memory (a stream name may hold any
  // character, so they stay out of the URL): "Previous" goes back through them.
  if (!after || pages.prefix !== prefix) { pages.prefix = prefix; pages.back = []; }
  const back = pages.back;
  const search = h('input', { type: 'search', name: 'prefix', placeholder: 'Stream name prefix, e.g. order-', value: prefix, class: 'grow' });
  const open = h('input', { type: 'text', name: 'stream', placeholder: 'Exact stream name', class: 'grow' });
  const list = h('div', { class: 'list' }, h('p', { class: 'muted' }, 'Loading…'));
  root.append(
    h('div', { class: 'page-head' }, h('h1', {}, 'Streams')),
    h('div', { class: 'toolbar' },
      h('form', { class: 'inline grow', onsubmit: (e) => { e.preventDefault(); location.hash = '#/streams' + query({ prefix: search.value }); } },
        search, h('button', { type: 'submit' }, 'Search')),
      h('form', { class: 'inline', onsubmit: (e) => { e.preventDefault(); if (open.value) location.hash = '#/stream/' + encodeURIComponent(open.value); } },
        open, h('button', { type: 'submit' }, 'Open'))),
    list);
  const ctrl = new AbortController();
  api('/streams' + query({ prefix, after, limit: LIST }), { signal: ctrl.signal }).then((res) => {
    const rows = res.streams.map((s) => [h('a', { href: '#/stream/' + encodeURIComponent(s.stream), class: 'stream-link' }, s.stream), fmtNumber(s.version)]);
    const pager = h('div', { class: 'pager' },
      h('button', { type: 'button', disabled: !after, onclick: () => {
        location.hash = '#/streams' + query({ prefix, after: back.pop() || '' });
      } }, '← Previous'),
      h('button', { type: 'button', disabled: res.next === null || res.next === undefined, onclick: () => {
        back.push(after);
        location.hash = '#/streams' + query({ prefix, after: res.next });
      } }, 'Next →'));
    fill(list, table(['Stream', 'Version'], rows, { empty: prefix ? `No stream starts with “${prefix}”.` : 'No streams yet.' }), pager);
  }).catch((e) => {
    if (e.name === 'AbortError') return;
    fill(list, e.status === 404 && e.code === 'not_found'
      ? h('div', { class: 'alert' }, 'This server cannot list streams (GET /streams). Open a stream by its exact name above.')
      : errorBox(e));
  });
  return () => ctrl.abort();
}

function renderStream(root, route) {
  const name = route.arg;
  const from = route.params.get('from');
  const dir = route.params.get('dir') === 'forward' ? 'forward' : 'backward';
  const body = h('div', {}, h('p', { class: 'muted' }, 'Loading…'));
  root.append(
    h('div', { class: 'page-head' },
      h('div', { class: 'crumbs' }, h('a', { href: '#/streams' }, 'Streams'), ' / '),
      h('h1', { class: 'stream-name' }, name)),
    body);
  const ctrl = new AbortController();
  const go = (params) => { location.hash = '#/stream/' + encodeURIComponent(name) + query(params); };
  api(`/streams/${enc(name)}/events` + query({ direction: dir, from, limit: PAGE }), { signal: ctrl.signal }).then((res) => {
    const events = dir === 'forward' ? res.events.slice().reverse() : res.events; // newest first
    const newest = events.length ? events[0].version : 0;
    const oldest = events.length ? events[events.length - 1].version : 0;
    const pager = () => h('div', { class: 'pager' },
      h('button', { type: 'button', disabled: newest >= res.version, onclick: () => go({}) }, '⇤ Newest'),
      h('button', { type: 'button', disabled: newest >= res.version, onclick: () => go({ dir: 'forward', from: newest + 1 }) }, '← Newer'),
      h('span', { class: 'muted' }, events.length ? `versions ${fmtNumber(oldest)}–${fmtNumber(newest)} of ${fmtNumber(res.version)}` : 'no events here'),
      h('button', { type: 'button', disabled: oldest <= 1, onclick: () => go({ from: oldest - 1 }) }, 'Older →'),
      h('button', { type: 'button', disabled: oldest <= 1, onclick: () => go({ dir: 'forward', from: 1 }) }, 'Oldest ⇥'));
    fill(body,
      h('div', { class: 'summary' }, h('span', {}, 'Version ', h('strong', {}, fmtNumber(res.version)))),
      pager(),
      events.length ? h('div', { class: 'events' }, events.map(eventCard)) : h('p', { class: 'empty' }, 'No events in this range.'),
      events.length > 3 ? pager() : null);
  }).catch((e) => {
    if (e.name === 'AbortError') return;
    fill(body, e.code === 'stream_not_found' ? h('div', { class: 'alert' }, `The stream “${name}” has never been written, or was deleted.`) : errorBox(e));
  });
  return () => ctrl.abort();
}

// eventCard shows one event as KurrentDB's stream browser does: number, type, time, then the
// data and metadata.
export function eventCard(ev) {
  const open = h('details', { class: 'event', open: true },
    h('summary', {},
      h('span', { class: 'ev-version' }, `${ev.version}@${ev.stream}`),
      h('span', { class: 'ev-type' }, ev.type),
      h('span', { class: 'ev-time muted' }, fmtTime(ev.recordedAt))),
    h('dl', { class: 'ev-meta' },
      h('dt', {}, 'Event ID'), h('dd', {}, h('code', {}, ev.id)),
      h('dt', {}, 'Commit'), h('dd', {}, h('code', {}, ev.commitId)),
      ev.subject ? [h('dt', {}, 'Subject'), h('dd', {}, ev.subject)] : null),
    ev.erased ? h('p', { class: 'muted' }, 'Erased: its subject was forgotten.') : null,
    payload('Data', ev.data, ev.dataBase64),
    payload('Metadata', ev.metadata, undefined),
    !ev.erased && ev.data === undefined && ev.dataBase64 === undefined ? h('p', { class: 'muted' }, 'No data.') : null);
  return open;
}
