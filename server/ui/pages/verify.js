// Verify: run a verification of the store (POST /admin/verify), follow its progress
// (GET /admin/verify/{id}), cancel it (DELETE), and show what it found.
import { api } from '../api.js';
import { h, fill, fmtNumber, fmtTime, table, errorBox } from '../dom.js';

const POLL = 500;

// What each list of the report means (estuite.VerifyReport).
const findings = [
  ['missing', 'Missing from the feed', 'committed events neither in the feed nor announced: estuite verify --repair announces them again'],
  ['holes', 'Holes', 'missing events below what the feed already holds of their stream: nothing fills them'],
  ['lost', 'Lost', 'events the store cannot account for'],
  ['uncatalogued', 'Uncatalogued streams', 'streams missing from the stream catalog (GET /streams does not list them): estuite verify --repair adds them'],
  ['duplicates', 'Duplicates', 'feed events whose stream version appeared at an earlier position'],
  ['gaps', 'Gaps', 'feed positions below the head that hold no row'],
  ['orderViolations', 'Order violations', 'feed events out of their stream’s order, or unlike the stream’s event'],
  ['unparseable', 'Unreadable rows', 'rows that could not be decoded, or are missing below a stream’s head'],
  ['wrongRedactions', 'Wrong redactions', 'redacted feed entries a stream read may still return'],
  ['pending', 'Pending', 'committed events the dispatcher has yet to write (normal under load)'],
  ['progressBehind', 'Progress behind', 'informational: progress rows behind full feed pages'],
];

export function render(root) {
  const startBtn = h('button', { type: 'button', class: 'primary', id: 'verify-start' }, 'Run verification');
  const cancelBtn = h('button', { type: 'button', class: 'hidden', id: 'verify-cancel' }, 'Cancel');
  const bar = h('progress', { max: 1, value: 0, id: 'verify-progress' });
  const barText = h('span', { class: 'muted', id: 'verify-phase' }, '');
  const progress = h('div', { class: 'progress hidden' }, bar, barText);
  const result = h('div', { id: 'verify-result' });
  root.append(
    h('div', { class: 'page-head' }, h('h1', {}, 'Verify')),
    h('section', { class: 'card' },
      h('p', {}, 'Reads both tables whole and checks that every committed event is in the feed exactly once, in order, with no gaps. ',
        h('span', { class: 'muted' }, 'It costs one query page per 1,000 rows of each table; on a large store, run it off-peak.')),
      h('div', { class: 'toolbar' }, startBtn, cancelBtn), progress),
    result);

  let timer = null, stopped = false, id = null;

  const show = (job) => {
    progress.classList.remove('hidden');
    const p = job.progress || {};
    bar.value = job.state === 'running' ? p.fraction || 0 : 1;
    fill(barText, job.state === 'running'
      ? `${Math.round((p.fraction || 0) * 100)}% · ${p.phase || 'starting'} · ${fmtNumber(p.rows)} rows, ${fmtNumber(p.streams)} streams, ${fmtNumber(p.feedPositions)} of ${fmtNumber(p.feedHead)} feed positions`
      : `${job.state} · started ${fmtTime(job.started)}, finished ${fmtTime(job.finished)}`);
    const running = job.state === 'running';
    startBtn.disabled = running;
    cancelBtn.classList.toggle('hidden', !running);
    if (running) { fill(result); return; }
    if (job.state === 'failed') { fill(result, errorBox({ message: job.error || 'the verification failed' })); return; }
    if (job.state === 'canceled') { fill(result, h('div', { class: 'alert' }, 'The verification was canceled.')); return; }
    if (job.report) fill(result, report(job.report));
  };

  const poll = async () => {
    try {
      const job = await api(`/admin/verify/${encodeURIComponent(id)}`);
      if (stopped) return;
      show(job);
      if (job.state === 'running') timer = setTimeout(poll, POLL);
    } catch (e) {
      if (!stopped) { fill(result, errorBox(e)); startBtn.disabled = false; cancelBtn.classList.add('hidden'); }
    }
  };

  startBtn.addEventListener('click', async () => {
    startBtn.disabled = true;
    fill(result);
    try {
      const job = await api('/admin/verify', { method: 'POST', body: {} });
      id = job.id;
    } catch (e) {
      if (e.code === 'verify_running' && e.body.id) {
        id = e.body.id; // one runs already: follow it
      } else {
        startBtn.disabled = false;
        fill(result, e.status === 404 ? h('div', { class: 'alert' }, 'This server cannot run verifications (POST /admin/verify): use estuite verify.') : errorBox(e));
        return;
      }
    }
    show({ state: 'running', progress: { fraction: 0 } });
    poll();
  });

  cancelBtn.addEventListener('click', async () => {
    try { await api(`/admin/verify/${encodeURIComponent(id)}`, { method: 'DELETE' }); } catch (e) { fill(result, errorBox(e)); }
  });

  // The latest verification of this server, if any: a running one is followed, a finished one
  // shown.
  api('/admin/verify').then((job) => {
    if (stopped || id) return;
    id = job.id;
    show(job);
    if (job.state === 'running') poll();
  }).catch(() => { /* none yet */ });

  return () => { stopped = true; clearTimeout(timer); };
}

function report(r) {
  const counts = r.counts || {};
  const found = findings.filter(([k]) => (counts[k] ?? (r[k] || []).length) > 0);
  const serious = found.filter(([k]) => k !== 'pending' && k !== 'progressBehind');
  return h('div', {},
    h('div', { class: 'alert ' + (r.ok ? 'ok-box' : 'error'), id: 'verify-verdict' },
      h('strong', {}, r.ok ? 'OK' : 'Problems found'),
      r.ok ? ' — every committed event is in the feed once, in order, without gaps.' : ` — ${serious.map(([, t]) => t.toLowerCase()).join(', ')}.`),
    h('div', { class: 'stats' },
      h('div', { class: 'stat' }, h('div', { class: 'stat-label' }, 'Streams'), h('div', { class: 'stat-value' }, fmtNumber(r.streams))),
      h('div', { class: 'stat' }, h('div', { class: 'stat-label' }, 'Events'), h('div', { class: 'stat-value' }, fmtNumber(r.events))),
      h('div', { class: 'stat' }, h('div', { class: 'stat-label' }, 'Feed head'), h('div', { class: 'stat-value' }, fmtNumber(r.feedHead))),
      h('div', { class: 'stat' }, h('div', { class: 'stat-label' }, 'Redacted'), h('div', { class: 'stat-value' }, fmtNumber(r.redacted)))),
    found.map(([k, title, what]) => h('section', { class: 'card' },
      h('h2', {}, `${title} (${fmtNumber(counts[k] ?? r[k].length)})`), h('p', { class: 'muted' }, what),
      finding(r[k] || []))),
    r.truncated ? h('p', { class: 'muted' }, 'Lists are cut to their first 1,000 entries; the counts are whole.') : null);
}

function finding(list) {
  if (!list.length) return null;
  if (typeof list[0] !== 'object') return table(['stream'], list.map((x) => [String(x)]));
  const heads = Object.keys(list[0]);
  return table(heads, list.map((x) => heads.map((k) => String(x[k]))));
}
