// Dispatcher: who holds the lease, the feed head, the backlog and the commit-to-feed lag over the
// last minutes, and the dispatcher's errors. From GET /healthz and GET /admin/stats, both from the
// server's memory (no storage request), every 5 seconds.
import { api } from '../api.js';
import { h, fill, fmtNumber, fmtSeconds, fmtTime, stat, lineChart, barChart, legend, table, errorBox, chartWidth, statsAxis } from '../dom.js';

const REFRESH = 5000;

export function render(root) {
  const cards = h('div', { class: 'stats', id: 'dispatcher-cards' }, h('p', { class: 'muted' }, 'Loading…'));
  const lag = h('div', { class: 'chart-box' });
  const events = h('div', { class: 'chart-box' });
  const shards = h('div', {});
  const errors = h('div', {});
  root.append(
    h('div', { class: 'page-head' }, h('h1', {}, 'Dispatcher'), h('span', { class: 'muted' }, 'refreshed every 5 s')),
    cards,
    h('div', { class: 'two' },
      h('section', { class: 'card' }, h('h2', {}, 'Lag'), legend([{ name: 'oldest pending append', cls: 's1' }, { name: 'slowest commit-to-feed', cls: 's2' }]), lag),
      h('section', { class: 'card' }, h('h2', {}, 'Events dispatched'), legend([{ name: 'events per 5 s', cls: 's3' }, { name: 'backlog', cls: 's4' }]), events)),
    h('section', { class: 'card' }, h('h2', {}, 'Feed shards'), shards),
    h('section', { class: 'card' }, h('h2', {}, 'Errors'), errors));

  let timer = null, stopped = false;
  const load = async () => {
    try {
      const [hz, st] = await Promise.all([api('/healthz'), api('/admin/stats')]);
      if (stopped) return;
      draw(hz, st);
    } catch (e) {
      if (!stopped) fill(cards, errorBox(e));
    }
    if (!stopped) timer = setTimeout(load, REFRESH);
  };

  const draw = (hz, st) => {
    const shardList = hz.shards || [];
    const d = hz.dispatcher || {};
    const held = hz.leaseHeld ?? shardList.some((s) => s.leaseHeld);
    const head = hz.feedHead ?? (shardList.length ? shardList.reduce((a, s) => a + s.feedHead, 0) : null);
    const pending = d.pendingStreams ?? shardList.reduce((a, s) => a + s.pendingStreams, 0);
    const oldest = d.oldestPendingSeconds ?? Math.max(0, ...shardList.map((s) => s.oldestPendingSeconds));
    const state = d.state || (held ? 'leading' : shardList.some((s) => s.running) ? 'standby' : 'none');
    // The lease holder by name when the server tells it (with credentials), else whether it is us.
    const holder = d.leaseHolder || (held ? 'this server' : d.leaseHolder === '' ? 'nobody' : '—');
    const here = d.owner && d.leaseHolder === d.owner;
    const lastErr = d.lastError || (st.errors.length ? st.errors[st.errors.length - 1].error : null);
    fill(cards,
      stat('Lease holder', h('span', { id: 'lease-holder', class: 'name', title: holder }, holder),
        state === 'leading' ? (here ? 'this server is dispatching' : 'this server holds a lease') : `this server: ${state}${d.owner ? ` (${d.owner})` : ''}`),
      stat('Feed head', h('span', { id: 'feed-head' }, fmtNumber(head)), shardList.length > 1 ? `${shardList.length} shards` : 'highest position'),
      stat('Backlog', fmtNumber(pending), `stream${pending === 1 ? '' : 's'} with appends not yet in the feed`),
      stat('Oldest pending', fmtSeconds(oldest), 'since its dirty marker was found'),
      stat('Last error', lastErr ? h('span', { class: 'error' }, 'yes') : h('span', { class: 'ok' }, 'none'), lastErr || 'the last step succeeded'));
    const smp = [...st.samples, st.current];
    const t = smp.map((s) => Date.parse(s.time));
    fill(lag, lineChart([
      { cls: 's1', points: smp.map((s, i) => [t[i], s.oldestPendingSeconds]) },
      { cls: 's2', points: smp.map((s, i) => [t[i], s.maxLagSeconds]) }], { unit: ' s', width: chartWidth(lag), ...statsAxis(st) }));
    fill(events, barChart(t, [{ cls: 's3', values: smp.map((s) => s.events) }, { cls: 's4', values: smp.map((s) => s.backlog) }], { width: chartWidth(events), ...statsAxis(st) }));
    fill(shards, table(['Shard', 'Running', 'Lease', 'Feed head', 'Pending streams', 'Oldest pending'],
      shardList.map((s) => [s.shard, s.running ? 'yes' : 'no', s.leaseHeld ? h('span', { class: 'ok' }, 'held here') : 'elsewhere',
        fmtNumber(s.feedHead), fmtNumber(s.pendingStreams), fmtSeconds(s.oldestPendingSeconds)]),
      { empty: 'This server runs no dispatcher.' }));
    fill(errors, table(['Last seen', 'Shard', 'Error'], st.errors.slice().reverse().map((e) => [fmtTime(e.time), e.shard, h('code', { class: 'wrap' }, e.error)]),
      { empty: 'No dispatch step failed in the last 15 minutes.' }));
  };

  load();
  return () => { stopped = true; clearTimeout(timer); };
}
