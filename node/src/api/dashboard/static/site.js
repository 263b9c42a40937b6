// A site: for each device, how much of it this site heard itself against what the mesh
// holds after repair (GET /v1/coverage) — the loss a single collector there would show,
// and the loss left once the sites have repaired each other.

import * as api from './api.js';
import { el, num, pct, shortId, deviceKey, deviceLink, deviceOrder, sortable } from './format.js';

const RANGES = {
  '15m': 'last 15 minutes', '1h': 'last hour', '6h': 'last 6 hours', '1d': 'last day', '7d': 'last week',
};
const REFRESH_MS = 10000;

function expected(d) {
  return d.records + d.missing;
}

export async function render(main, params, ctx) {
  const me = ctx.summary() ? ctx.summary().status.node_id : (await api.get('/v1/status', ctx.signal)).node_id;
  let site = params[0] || me;
  const range = el('select', { id: 'range' },
    Object.entries(RANGES).map(([k, v]) => el('option', { value: k, selected: k === '1h' }, v)));
  const chooser = el('select', { id: 'site' });
  const caption = el('p', { id: 'site-caption', class: 'muted' }, 'reading…');
  const heard = (d) => d.heard[site] || 0;
  const columns = [
    { key: 'device', label: 'device', value: deviceOrder, cell: deviceLink },
    { key: 'expected', label: 'sent (seqs)', num: true, value: expected, cell: (d) => num(expected(d)),
      title: 'records after repair plus the seqs still missing' },
    { key: 'heard', label: 'heard here', num: true, value: heard, cell: (d) => num(heard(d)) },
    { key: 'loss_here', label: 'loss here', num: true, value: (d) => 1 - heard(d) / expected(d),
      cell: (d) => pct(expected(d) - heard(d), expected(d)) },
    { key: 'records', label: 'after repair', num: true, cell: (d) => num(d.records) },
    { key: 'missing', label: 'still missing', num: true, cell: (d) => num(d.missing) },
    { key: 'loss_repaired', label: 'loss after repair', num: true, value: (d) => d.missing / expected(d),
      cell: (d) => pct(d.missing, expected(d)) },
    { key: 'repaired', label: 'gained by repair', num: true, value: (d) => d.records - heard(d),
      cell: (d) => num(d.records - heard(d)) },
    { key: 'loss_bar', label: 'heard here / after repair', value: (d) => heard(d) / expected(d),
      cell: (d) => el('span', { class: 'bars' },
        el('meter', { min: 0, max: 1, value: expected(d) ? heard(d) / expected(d) : 0, title: 'heard here' }),
        el('meter', { min: 0, max: 1, value: expected(d) ? d.records / expected(d) : 0, title: 'after repair' })) },
  ];
  const table = sortable(columns, (d) => ({ dataset: { device: deviceKey(d) } }));
  table.table.id = 'site-devices';
  const totals = el('div', { class: 'stats', id: 'site-totals' });
  let devices = [];
  let sites = [];

  function draw() {
    const all = [...new Set([me, site, ...sites])].sort();
    const name = (s) => `…${s.slice(-8)}${s === me ? ' (this node)' : ''}`;
    chooser.replaceChildren(...all.map((s) => el('option', { value: s, selected: s === site }, name(s))));
    const sum = (f) => devices.reduce((n, d) => n + f(d), 0);
    const sent = sum(expected), got = sum(heard), after = sum((d) => d.records), missing = sum((d) => d.missing);
    const stat = (k, label, v) => el('div', { class: 'stat' },
      el('span', { class: 'value', dataset: { stat: k } }, v), el('span', { class: 'label' }, label));
    totals.replaceChildren(
      stat('devices', 'devices', num(devices.length)),
      stat('heard', 'records heard here', num(got)),
      stat('loss_here', 'loss here', pct(sent - got, sent)),
      stat('records', 'records after repair', num(after)),
      stat('loss_repaired', 'loss after repair', pct(missing, sent)));
    caption.replaceChildren('Site ', shortId(site), site === me ? ' (this node)' : '',
      `: ${devices.length} devices with records in the ${RANGES[range.value]} of device time.`);
    table.update(devices);
  }
  let last = 0;
  async function read() {
    last = Date.now();
    const path = `/v1/coverage?from=-${range.value}&limit=10000`;
    const { items, complete } = await api.pages(path, 'devices', 100000, ctx.signal);
    devices = items;
    sites = [...new Set(items.flatMap((d) => Object.keys(d.heard)))];
    draw();
    if (!complete) caption.append(' (the first 100,000 devices)');
  }
  chooser.addEventListener('input', () => {
    site = chooser.value;
    history.replaceState(null, '', `#/site/${encodeURIComponent(site)}`);
    draw();
  });
  range.addEventListener('input', () => read().catch(ctx.fail));
  main.replaceChildren(el('div', { class: 'page' },
    el('section', { class: 'card wide' },
      el('h2', {}, 'Site'),
      el('div', { class: 'controls' }, el('label', {}, 'site ', chooser), el('label', {}, 'over the ', range)),
      caption,
      el('p', { class: 'muted' },
        'Per device: the seqs it sent (the records the mesh holds plus those still missing), ',
        'how many this site received itself, and what the mesh holds after the sites repaired each other.'),
      totals,
      el('div', { class: 'scroll' }, table.table))));
  await read();
  ctx.onSummary(() => {
    if (Date.now() - last >= REFRESH_MS) read().catch(ctx.fail);
  });
}
