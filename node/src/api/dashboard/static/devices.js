// Every device of the mesh (GET /v1/devices): what the merged history holds of it, and
// what this node's own ingest counted — gaps, duplicates, reboots, jitter, clock offset —
// sortable, filterable, the stale ones marked.

import * as api from './api.js';
import { el, num, time, ns, deviceKey, deviceLink, deviceOrder, sortable } from './format.js';

// Read again at most this often while summaries come.
const REFRESH_MS = 5000;
const STALE = { '1m': 60, '5m': 300, '10m': 600, '1h': 3600, '1d': 86400 };

function here(d, k) {
  return d.heard_here ? d.heard_here[k] : null;
}

// A column of what this node's ingest counted (`–` for a device only other sites heard).
function counted(key, label, digits) {
  return { key, label, num: true, value: (d) => here(d, key), cell: (d) => num(here(d, key), digits) };
}

const COLUMNS = [
  { key: 'device', label: 'device', value: deviceOrder, cell: deviceLink },
  { key: 'records', label: 'records', num: true, title: 'records of its sealed windows: the merged history',
    cell: (d) => num(d.records) },
  { key: 'last_device_time', label: 'last record (device time)', cell: (d) => time(d.last_device_time) },
  { key: 'last_seen', label: 'last seen here', cell: (d) => time(d.last_seen) },
  counted('received', 'received here'),
  counted('gaps', 'gaps'),
  counted('duplicates', 'dups'),
  counted('reboots', 'reboots'),
  counted('jitter_ms', 'jitter ms', 2),
  counted('clock_offset_ms', 'clock offset ms', 1),
  { key: 'auth', label: 'auth', value: (d) => d.auth, cell: (d) => d.auth || '–' },
  { key: 'sites', label: 'sites', num: true, value: (d) => d.sites.length,
    title: 'sites that heard its latest sealed window',
    cell: (d) => el('span', { title: d.sites.join('\n') }, String(d.sites.length)) },
];

export async function render(main, _params, ctx) {
  const filter = el('input', { id: 'filter', type: 'search', size: 32,
    placeholder: 'filter: dialect:device, auth, site id…' });
  const staleAfter = el('select', { id: 'stale-after' },
    Object.keys(STALE).map((k) => el('option', { value: k, selected: k === '10m' }, k)));
  const staleOnly = el('input', { id: 'stale-only', type: 'checkbox' });
  const caption = el('p', { id: 'devices-caption', class: 'muted' }, 'reading…');
  let all = [];
  let nowNs = null;
  const table = sortable(COLUMNS, (d) => ({ class: isStale(d) ? 'stale' : '', dataset: { device: deviceKey(d) } }));
  table.table.id = 'devices';

  function isStale(d) {
    const last = ns(d.last_seen) ?? ns(d.last_device_time);
    const now = nowNs ?? Date.now() * 1e6;
    return last === null || now - last > STALE[staleAfter.value] * 1e9;
  }
  function draw() {
    const words = filter.value.trim().toLowerCase().split(/\s+/).filter(Boolean);
    const shown = all.filter((d) => {
      if (staleOnly.checked && !isStale(d)) return false;
      const text = `${deviceKey(d)} ${d.auth || ''} ${d.sites.join(' ')}`.toLowerCase();
      return words.every((w) => text.includes(w));
    });
    const stale = all.filter(isStale).length;
    caption.textContent = `${all.length} devices, ${stale} stale (not heard for ${staleAfter.value})` +
      (shown.length !== all.length ? `, ${shown.length} shown` : '');
    table.update(shown);
  }
  let last = 0;
  async function read() {
    last = Date.now();
    const { items, complete } = await api.pages('/v1/devices?limit=10000', 'devices', 100000, ctx.signal);
    all = items;
    draw();
    if (!complete) caption.append(' (the first 100,000)');
  }
  for (const input of [filter, staleAfter, staleOnly]) input.addEventListener('input', draw);
  main.replaceChildren(el('div', { class: 'page' },
    el('section', { class: 'card wide' },
      el('h2', {}, 'Devices'),
      el('div', { class: 'controls' },
        filter,
        el('label', {}, 'stale after ', staleAfter),
        el('label', { class: 'check' }, staleOnly, ' stale only')),
      caption,
      el('p', { class: 'muted' },
        'records: the merged history, sealed windows (a minute behind); received, gaps, dups, reboots, jitter ',
        'and clock offset: as this node\'s ingest counted them (– : only other sites heard it); ',
        'sites: who heard its latest window.'),
      el('div', { class: 'scroll' }, table.table))));
  nowNs = ctx.summary() ? ctx.summary().time_ns : null;
  await read();
  ctx.onSummary((s) => {
    nowNs = s.time_ns;
    if (Date.now() - last >= REFRESH_MS) read().catch(ctx.fail);
    else draw();
  });
}

