// Subscriptions and consumer groups: durable subscriptions' checkpoints and their distance from
// the head (GET /subscriptions), the consumer groups (GET /groups), and one group's members,
// slots and parked events, with replay and discard (GET /groups/{group}, …/parked, POST
// …/parked/replay and …/parked/discard).
import { api, enc } from '../api.js';
import { h, fill, fmtNumber, fmtTime, table, errorBox } from '../dom.js';

// MAX_GROUP_STATES is how many groups the overview reads the state of.
const MAX_GROUP_STATES = 20;

export function render(root, route) {
  return route.page === 'group' ? renderGroup(root, route.arg) : renderOverview(root);
}

function renderOverview(root) {
  const subs = h('div', {}, h('p', { class: 'muted' }, 'Loading…'));
  const groups = h('div', {}, h('p', { class: 'muted' }, 'Loading…'));
  root.append(
    h('div', { class: 'page-head' }, h('h1', {}, 'Subscriptions & groups')),
    h('section', { class: 'card' }, h('h2', {}, 'Durable subscriptions'), subs),
    h('section', { class: 'card' }, h('h2', {}, 'Consumer groups'), groups));
  api('/subscriptions').then((res) => {
    fill(subs, table(['Subscription', 'Shard', 'Checkpoint', 'Feed head', 'Behind', 'Saved'],
      res.subscriptions.map((s) => [h('strong', {}, s.subscription), s.shard, fmtNumber(s.position), fmtNumber(s.feedHead),
        h('span', { class: s.distance > 0 ? 'warn-text' : 'ok' }, fmtNumber(s.distance)), fmtTime(s.updated)]),
      { empty: 'No durable subscription has saved a checkpoint.' }));
  }).catch((e) => fill(subs, errorBox(e)));
  api('/groups').then(async (res) => {
    // The state of the first groups too (a few storage requests each): members, parked, lag.
    const states = await Promise.all(res.groups.slice(0, MAX_GROUP_STATES).map((g) => api(`/groups/${enc(g.group)}`).catch(() => null)));
    fill(groups, table(['Group', 'Slots', 'Members', 'Parked', 'Most behind'], res.groups.map((g, i) => {
      const st = states[i];
      return [
        h('a', { href: '#/group/' + encodeURIComponent(g.group), class: 'group-link' }, g.group),
        `${g.shards} shard${g.shards === 1 ? '' : 's'} × ${g.ranges} range${g.ranges === 1 ? '' : 's'}`,
        st ? fmtNumber(st.members.length) : '…',
        st ? h('span', { class: st.parked > 0 ? 'warn-text' : '' }, fmtNumber(st.parked)) : '…',
        st ? fmtNumber(Math.max(0, ...st.slots.map((s) => s.lag))) : '…'];
    }), { empty: 'No consumer group has been created.' }));
  }).catch((e) => fill(groups, errorBox(e)));
}

function renderGroup(root, group) {
  const summary = h('div', {}, h('p', { class: 'muted' }, 'Loading…'));
  const state = h('div', {});
  const parked = h('div', { id: 'parked' });
  const message = h('div', { id: 'group-message' });
  root.append(
    h('div', { class: 'page-head' },
      h('div', { class: 'crumbs' }, h('a', { href: '#/subscriptions' }, 'Subscriptions & groups'), ' / '),
      h('h1', {}, group)),
    message, summary,
    h('section', { class: 'card' }, h('h2', {}, 'Parked events'), parked),
    state);
  let stopped = false;
  const base = `/groups/${enc(group)}`;

  const change = async (what, body) => {
    try {
      const res = await api(`${base}/parked/${what}`, { method: 'POST', body });
      const n = what === 'replay' ? res.replayed : res.discarded;
      fill(message, h('div', { class: 'alert ok-box' }, what === 'replay'
        ? `${n} event${n === 1 ? '' : 's'} marked for replay: the member holding the slot handles ${n === 1 ? 'it' : 'them'} at its next look.`
        : `${n} event${n === 1 ? '' : 's'} discarded.`));
    } catch (e) {
      fill(message, errorBox(e));
    }
    load();
  };

  // confirmButton needs a second click within 4 s: a discard cannot be undone.
  const confirmButton = (label, action) => {
    let armed = null;
    const b = h('button', { type: 'button', class: 'danger', onclick: () => {
      if (armed) { clearTimeout(armed); armed = null; fill(b, label); action(); return; }
      fill(b, 'Click again to ' + label.toLowerCase());
      armed = setTimeout(() => { armed = null; fill(b, label); }, 4000);
    } }, label);
    return b;
  };

  const load = async () => {
    try {
      const [st, pk] = await Promise.all([api(base), api(`${base}/parked?limit=1000`)]);
      if (stopped) return;
      fill(summary,
        h('div', { class: 'stats' },
          h('div', { class: 'stat' }, h('div', { class: 'stat-label' }, 'Slots'), h('div', { class: 'stat-value' }, fmtNumber(st.slots.length)),
            h('div', { class: 'stat-sub' }, `${st.shards} shard${st.shards === 1 ? '' : 's'} × ${st.ranges} ranges`)),
          h('div', { class: 'stat' }, h('div', { class: 'stat-label' }, 'Members'), h('div', { class: 'stat-value' }, fmtNumber(st.members.length))),
          h('div', { class: 'stat' }, h('div', { class: 'stat-label' }, 'Parked'), h('div', { class: 'stat-value', id: 'parked-count' }, fmtNumber(st.parked))),
          h('div', { class: 'stat' }, h('div', { class: 'stat-label' }, 'Most behind'),
            h('div', { class: 'stat-value' }, fmtNumber(Math.max(0, ...st.slots.map((s) => s.lag)))), h('div', { class: 'stat-sub' }, 'events, one slot'))));
      fill(state,
        h('div', { class: 'two wide-right' },
          h('section', { class: 'card' }, h('h2', {}, 'Members'), table(['Member', 'Slots', 'Renewed'],
            st.members.map((m) => [h('strong', {}, m.member), m.slots, fmtTime(m.updated)]), { empty: 'No member is running.' })),
          h('section', { class: 'card' }, h('h2', {}, 'Slots'), table(['Shard', 'Range', 'Owner', 'Checkpoint', 'Lag', 'Updated'],
            st.slots.map((s) => [s.shard, s.range, s.owner || h('span', { class: 'muted' }, 'free'), fmtNumber(s.position),
              h('span', { class: s.lag > 0 ? 'warn-text' : '' }, fmtNumber(s.lag)), fmtTime(s.updated)])))));
      const rows = pk.parked.map((p) => [
        `${p.shard}:${fmtNumber(p.position)}`,
        h('a', { href: '#/stream/' + encodeURIComponent(p.stream), class: 'stream-link' }, `${p.version}@${p.stream}`),
        p.type,
        p.waiting ? h('span', { class: 'tag' }, 'waiting') : fmtNumber(p.attempts),
        h('code', { class: 'wrap error-text' }, p.error),
        fmtTime(p.parked),
        h('div', { class: 'actions' },
          p.replay ? h('span', { class: 'tag' }, 'replay asked') : h('button', { type: 'button', class: 'replay',
            onclick: () => change('replay', { events: [{ shard: p.shard, position: p.position }] }) }, 'Replay'),
          confirmButton('Discard', () => change('discard', { events: [{ shard: p.shard, position: p.position }] })))]);
      fill(parked,
        pk.parked.length ? h('div', { class: 'toolbar' },
          h('button', { type: 'button', onclick: () => change('replay', { all: true }) }, 'Replay all'),
          confirmButton('Discard all', () => change('discard', { all: true }))) : null,
        table(['Feed position', 'Event', 'Type', 'Attempts', 'Last error', 'Parked', ''], rows, { empty: 'Nothing is parked.', cls: 'parked' }));
    } catch (e) {
      if (!stopped) fill(summary, e.code === 'group_not_found' ? h('div', { class: 'alert' }, `There is no consumer group “${group}”.`) : errorBox(e));
    }
  };
  load();
  const timer = setInterval(load, 10000);
  return () => { stopped = true; clearInterval(timer); };
}
