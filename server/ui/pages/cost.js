// Cost: the storage requests the store made over the last minutes, by kind, and what that rate
// costs per month at the server's price table (GET /admin/stats, from memory, every 5 s).
import { api } from '../api.js';
import { h, fill, fmtNumber, fmtMoney, fmtTime, barChart, legend, table, errorBox, stat, chartWidth, statsAxis } from '../dom.js';

const kinds = [
  ['point_read', 'Point reads', 's1'],
  ['query_page', 'Query pages', 's2'],
  ['batch', 'Batches (entity group transactions)', 's3'],
  ['write', 'Single-row writes', 's4'],
  ['delete', 'Single-row deletes', 's5'],
];

export function render(root) {
  const cards = h('div', { class: 'stats' }, h('p', { class: 'muted' }, 'Loading…'));
  const chart = h('div', { class: 'chart-box' });
  const byKind = h('div', { id: 'cost-kinds' });
  const prices = h('p', { class: 'muted small' });
  root.append(
    h('div', { class: 'page-head' }, h('h1', {}, 'Cost'), h('span', { class: 'muted' }, 'storage transactions of this server, refreshed every 5 s')),
    cards,
    h('section', { class: 'card' }, h('h2', {}, 'Requests per 5 s'), legend(kinds.map(([, name, cls]) => ({ name, cls }))), chart),
    h('section', { class: 'card' }, h('h2', {}, 'By kind, at the rate of the window'), byKind, prices));

  let timer = null, stopped = false;
  const load = async () => {
    try {
      const st = await api('/admin/stats');
      if (!stopped) draw(st);
    } catch (e) {
      if (!stopped) fill(cards, errorBox(e));
    }
    if (!stopped) timer = setTimeout(load, 5000);
  };

  const draw = (st) => {
    const smp = [...st.samples, st.current];
    const mc = st.monthlyCost;
    const total = (k) => smp.reduce((a, s) => a + s.requests[k], 0);
    const all = kinds.reduce((a, [k]) => a + total(k), 0);
    const rate = all / Math.max(mc.seconds, 1e-9);
    fill(cards,
      stat('Per month, at this rate', h('span', { id: 'monthly-cost' }, fmtMoney(mc.total, mc.currency)), 'transactions only; capacity is billed apart'),
      stat('Requests', fmtNumber(all), `in the last ${Math.round(mc.seconds / 60) || '<1'} min`),
      stat('Rate', `${rate.toFixed(2)}/s`, `${fmtNumber(Math.round(rate * 86400))} a day`),
      stat('Price', `${st.prices.perTenThousandTransactions} ${st.prices.currency}`, `per 10,000 transactions (${st.prices.redundancy})`));
    fill(chart, barChart(smp.map((s) => Date.parse(s.time)), kinds.map(([k, , cls]) => ({ cls, values: smp.map((s) => s.requests[k]) })),
      { width: chartWidth(chart), ...statsAxis(st) }));
    fill(byKind, table(['Kind', 'Requests', 'Per second', 'Per month'], [
      ...kinds.map(([k, name, cls]) => h('tr', { dataset: { kind: k } },
        h('td', {}, h('i', { class: 'swatch ' + cls }), name, ' ', h('code', { class: 'muted' }, k)),
        h('td', { class: 'num' }, fmtNumber(total(k))),
        h('td', { class: 'num' }, mc.requestsPerSecond[k].toFixed(3)),
        h('td', { class: 'num' }, fmtMoney(mc.byKind[k], mc.currency)))),
      h('tr', { class: 'total' }, h('td', {}, 'Total'), h('td', { class: 'num' }, fmtNumber(all)), h('td', { class: 'num' }, rate.toFixed(3)),
        h('td', { class: 'num' }, fmtMoney(mc.total, mc.currency)))]));
    const first = st.samples.length ? st.samples[0] : st.current;
    fill(prices, `Azure Table Storage bills every request alike: a batch of 100 rows is one transaction, and so is a query page or a point read. `,
      `A month is 730 hours. Counted since ${fmtTime(new Date(Date.parse(first.time) - first.seconds * 1000).toISOString())}, by this server only. `,
      h('details', {}, h('summary', {}, `Prices of ${st.prices.date} (${st.prices.currency}, ${st.prices.redundancy})`), st.prices.source,
        ' Set your own with estuite serve --prices FILE.'));
  };

  load();
  return () => { stopped = true; clearTimeout(timer); };
}
