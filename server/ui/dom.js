// Small DOM helpers: elements built in code (no HTML strings, so no injection), formatting, and
// the SVG charts.

// h builds an element: h('a', {href: '#/x', class: 'y', onclick: f}, 'text', child, …).
export function h(tag, attrs, ...children) {
  const el = tag.startsWith('svg:')
    ? document.createElementNS('http://www.w3.org/2000/svg', tag.slice(4))
    : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.setAttribute('class', v);
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k in el && !tag.startsWith('svg:') && k !== 'list') el[k] = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children) {
    if (c === undefined || c === null || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else el.append(c instanceof Node ? c : String(c));
  }
}

// clear empties el and fills it with children.
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export function fmtNumber(n) {
  return n === null || n === undefined ? '—' : Number(n).toLocaleString('en-US');
}

// statsAxis is the time axis of the statistics' charts: their whole window, up to now.
export function statsAxis(st) {
  const to = Date.parse(st.current.time);
  return { from: to - st.windowSeconds * 1000, to, slots: st.windowSeconds / st.intervalSeconds };
}

// chartWidth is the width a chart drawn into box gets: the box's, once laid out.
export function chartWidth(box) {
  return Math.max(320, Math.round(box.clientWidth || 720));
}

// fmtTime shows an RFC 3339 time as local date and time, with milliseconds.
export function fmtTime(s) {
  if (!s) return '—';
  const d = new Date(s);
  if (isNaN(d)) return s;
  const pad = (n, w = 2) => String(n).padStart(w, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
}

export function fmtSeconds(x) {
  if (x === null || x === undefined) return '—';
  if (x < 1) return `${Math.round(x * 1000)} ms`;
  if (x < 120) return `${x.toFixed(1)} s`;
  return `${(x / 60).toFixed(1)} min`;
}

export function fmtMoney(x, currency) {
  const digits = x === 0 ? 2 : x < 0.01 ? 4 : 2;
  return `${x.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits })} ${currency || ''}`.trim();
}

export function fmtBytes(n) {
  if (n < 1024) return `${n} bytes`;
  if (n < 1 << 20) return `${(n / 1024).toFixed(1)} KiB (${fmtNumber(n)} bytes)`;
  return `${(n / (1 << 20)).toFixed(1)} MiB (${fmtNumber(n)} bytes)`;
}

// base64Size is the number of bytes a base64 text holds.
export function base64Size(b64) {
  const pad = b64.endsWith('==') ? 2 : b64.endsWith('=') ? 1 : 0;
  return (b64.length / 4) * 3 - pad;
}

// jsonBlock shows a JSON value pretty-printed.
export function jsonBlock(value, cls = 'json') {
  return h('pre', { class: cls }, JSON.stringify(value, null, 2));
}

// payload shows an event's data or metadata: pretty JSON, or base64 with its size.
export function payload(label, json, b64) {
  if (b64 !== undefined && b64 !== null) {
    return h('div', { class: 'payload' },
      h('div', { class: 'payload-label' }, label, h('span', { class: 'tag' }, `binary, ${fmtBytes(base64Size(b64))}`)),
      h('pre', { class: 'json b64' }, b64));
  }
  if (json === undefined) return null;
  return h('div', { class: 'payload' }, h('div', { class: 'payload-label' }, label), jsonBlock(json));
}

// table builds a table from column heads and rows of cells.
export function table(heads, rows, { empty = 'Nothing here yet.', cls = '' } = {}) {
  if (!rows.length) return h('p', { class: 'empty' }, empty);
  return h('table', { class: 'grid ' + cls },
    h('thead', {}, h('tr', {}, heads.map((x) => h('th', {}, x)))),
    h('tbody', {}, rows.map((r) => (r instanceof Node ? r : h('tr', {}, r.map((c) => h('td', {}, c)))))));
}

export function errorBox(e) {
  const msg = e && e.message ? e.message : String(e);
  return h('div', { class: 'alert error' }, e && e.code ? h('strong', {}, e.code + ': ') : null, msg);
}

export function stat(label, value, sub) {
  return h('div', { class: 'stat' }, h('div', { class: 'stat-label' }, label), h('div', { class: 'stat-value' }, value),
    sub ? h('div', { class: 'stat-sub' }, sub) : null);
}

const H = 180, PAD = { l: 52, r: 12, t: 12, b: 24 };

// lineChart draws series [{name, cls, points: [[t, y]…]}] over time (ms) as an SVG of width W
// pixels (its box's width, so that its text keeps its size).
// from and to (ms) fix the time axis (default: the points' span).
export function lineChart(series, { unit = '', yMin = 0, width = 720, from, to } = {}) {
  const W = width;
  const all = series.flatMap((s) => s.points);
  const svg = h('svg:svg', { viewBox: `0 0 ${W} ${H}`, class: 'chart', role: 'img' });
  if (!all.length) {
    svg.append(h('svg:text', { x: W / 2, y: H / 2, 'text-anchor': 'middle', class: 'chart-empty' }, 'No samples yet: the server takes one every 5 seconds.'));
    return svg;
  }
  const t0 = from ?? Math.min(...all.map((p) => p[0])), t1 = Math.max(to ?? Math.max(...all.map((p) => p[0])), t0 + 1);
  const yMax = niceMax(Math.max(yMin, ...all.map((p) => p[1])));
  const x = (t) => PAD.l + ((t - t0) / (t1 - t0)) * (W - PAD.l - PAD.r);
  const y = (v) => H - PAD.b - (v / yMax) * (H - PAD.t - PAD.b);
  axes(svg, W, t0, t1, yMax, x, y, unit);
  for (const s of series) {
    if (!s.points.length) continue;
    const d = s.points.map((p, i) => `${i ? 'L' : 'M'}${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(' ');
    svg.append(h('svg:path', { d, class: 'line ' + (s.cls || '') }));
  }
  return svg;
}

// barChart draws stacked bars: times (ms), and series [{name, cls, values}] of one value per time;
// from and to (ms) fix the time axis, slots how many bars it has room for.
export function barChart(times, series, { unit = '', width = 720, from, to, slots } = {}) {
  const W = width;
  const svg = h('svg:svg', { viewBox: `0 0 ${W} ${H}`, class: 'chart', role: 'img' });
  if (!times.length) {
    svg.append(h('svg:text', { x: W / 2, y: H / 2, 'text-anchor': 'middle', class: 'chart-empty' }, 'No samples yet: the server takes one every 5 seconds.'));
    return svg;
  }
  const totals = times.map((_, i) => series.reduce((a, s) => a + s.values[i], 0));
  const yMax = niceMax(Math.max(1, ...totals));
  const t0 = from ?? times[0], t1 = Math.max(to ?? times[times.length - 1], t0 + 1);
  const span = W - PAD.l - PAD.r;
  const bw = Math.max(1, Math.min(16, span / (slots || times.length) - 1));
  const x = (t) => PAD.l + bw / 2 + ((t - t0) / (t1 - t0)) * (span - bw);
  const y = (v) => H - PAD.b - (v / yMax) * (H - PAD.t - PAD.b);
  axes(svg, W, t0, t1, yMax, x, y, unit);
  times.forEach((t, i) => {
    let base = 0;
    for (const s of series) {
      const v = s.values[i];
      if (v > 0) {
        svg.append(h('svg:rect', { x: (x(t) - bw / 2).toFixed(1), y: y(base + v).toFixed(1), width: bw.toFixed(1),
          height: Math.max(0.5, y(base) - y(base + v)).toFixed(1), class: 'bar ' + s.cls }));
      }
      base += v;
    }
  });
  return svg;
}

function axes(svg, W, t0, t1, yMax, x, y, unit) {
  const ms = unit === ' s' && yMax < 1; // seconds below one: in milliseconds
  const n = divisions(yMax);
  for (let i = 0; i <= n; i++) {
    const v = yMax * (i / n);
    svg.append(h('svg:line', { x1: PAD.l, x2: W - PAD.r, y1: y(v), y2: y(v), class: 'gridline' }));
    svg.append(h('svg:text', { x: PAD.l - 6, y: y(v) + 4, 'text-anchor': 'end', class: 'axis' },
      ms ? `${Math.round(v * 1000)} ms` : shortNum(v) + unit));
  }
  const clock = (t) => new Date(t).toTimeString().slice(0, 5);
  svg.append(h('svg:text', { x: PAD.l, y: H - 6, class: 'axis' }, clock(t0)));
  svg.append(h('svg:text', { x: (PAD.l + W - PAD.r) / 2, y: H - 6, 'text-anchor': 'middle', class: 'axis' }, clock((t0 + t1) / 2)));
  svg.append(h('svg:text', { x: W - PAD.r, y: H - 6, 'text-anchor': 'end', class: 'axis' }, clock(t1)));
}

// niceMax rounds v up to 1, 2, 2.5 or 5 times a power of ten.
function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  const f = v / p;
  return (f <= 1 ? 1 : f <= 2 ? 2 : f <= 2.5 ? 2.5 : f <= 5 ? 5 : 10) * p;
}

// divisions is how many grid steps split a niceMax value into round ones.
function divisions(max) {
  const f = max / Math.pow(10, Math.floor(Math.log10(max)));
  return Math.abs(f - 2.5) < 1e-9 || Math.abs(f - 5) < 1e-9 ? 5 : 4;
}

function shortNum(v) {
  if (v >= 1e6) return (v / 1e6).toFixed(1) + 'M';
  if (v >= 1e3) return (v / 1e3).toFixed(1) + 'k';
  if (v >= 10 || v === 0) return Math.round(v).toString();
  return v.toFixed(v >= 1 ? 1 : 2);
}

export function legend(items) {
  return h('div', { class: 'legend' }, items.map((s) => h('span', { class: 'legend-item' }, h('i', { class: 'swatch ' + s.cls }), s.name)));
}
