// One device: its readings plotted from the merged history with its gaps marked, which
// site heard which record, its counters, and a live log of its latest frames (a tail of
// GET …/records?follow=true).

import * as api from './api.js';
import { el, num, time, shortId, deviceLink } from './format.js';

const LOG_ROWS = 200;
const MAX_RECORDS = 20000;
const COLORS = ['#2b7bb9', '#d9822b', '#3a9a5b', '#b04a9b', '#8c6d31', '#c23b3b', '#4a4ab0', '#2a9d9d'];
const FIRST_ID = { iotstream: 0, tinytelemetry: 1, secure: 0 };

// A record's identity as the page knows it: device time, seq and content.
function key(r) {
  return `${r.device_time_ns}-${r.seq}-${r.kind}-${JSON.stringify(r.readings)}`;
}

function order(a, b) {
  return a.device_time_ns - b.device_time_ns || a.seq - b.seq;
}

// This device in GET /v1/devices: the page after the id before it holds it first.
async function entry(dialect, id, signal) {
  const before = id > FIRST_ID[dialect] ? `&cursor=${dialect}:${id - 1}` : '';
  const page = await api.get(`/v1/devices?dialect=${dialect}&limit=1${before}`, signal);
  const d = page.devices[0];
  return d && d.device === id ? d : null;
}

export async function render(main, params, ctx) {
  const [dialect, idText] = params;
  const id = Number(idText);
  if (!(dialect in FIRST_ID) || !Number.isInteger(id)) {
    throw new Error('no such device: the page is #/device/<dialect>/<id>');
  }
  const base = `/v1/streams/${dialect}/${id}`;
  const count = el('select', { id: 'count' },
    [500, 2000, 10000].map((n) => el('option', { value: n, selected: n === 2000 }, `latest ${n}`)));
  const counters = el('dl', { class: 'facts', id: 'counters' });
  const readingsBox = el('div', { class: 'chart', id: 'readings' });
  const readingsNote = el('p', { class: 'muted', id: 'readings-note' });
  const coverageBox = el('div', { class: 'chart', id: 'coverage' });
  const heardTable = el('table', { class: 'data', id: 'heard' });
  const logBody = el('tbody');
  const liveNote = el('span', { id: 'live-count', class: 'muted', dataset: { count: 0 } }, 'waiting for frames…');
  main.replaceChildren(el('div', { class: 'page' },
    el('section', { class: 'card wide' },
      el('h2', {}, 'Device ', deviceLink({ dialect, device: id })),
      el('div', { class: 'controls' }, el('label', {}, 'plot the ', count, ' records of the merged history'))),
    el('section', { class: 'card' }, el('h2', {}, 'Counters'), counters),
    el('section', { class: 'card' }, el('h2', {}, 'Heard by'),
      el('p', { class: 'muted' },
        'The sites that received the plotted records themselves; the others got them by repair.'),
      heardTable),
    el('section', { class: 'card wide' }, el('h2', {}, 'Readings'), readingsNote, readingsBox),
    el('section', { class: 'card wide' },
      el('h2', {}, 'Which site heard which record'),
      el('p', { class: 'muted' },
        'One row per site, a dot where the site received the record itself: what no single collector can show.'),
      coverageBox),
    el('section', { class: 'card wide' },
      el('h2', {}, 'Latest frames ', liveNote),
      el('table', { class: 'data', id: 'log' },
        el('thead', {}, el('tr', {}, ['device time', 'seq', 'ext seq', 'kind', 'gap', 'heard by', 'auth', 'readings']
          .map((h) => el('th', {}, h)))),
        logBody))));

  let records = [];
  let seen = new Set();
  let liveCount = 0;
  const charts = { readings: null, coverage: null, labels: '', sites: '' };
  ctx.signal.addEventListener('abort', () => {
    if (charts.readings) charts.readings.destroy();
    if (charts.coverage) charts.coverage.destroy();
  });

  async function load() {
    const page = await api.get(`${base}/records?order=desc&limit=${count.value}`, ctx.signal);
    records = page.records.reverse();
    seen = new Set(records.map(key));
    draw();
  }
  async function showCounters() {
    drawCounters(counters, await entry(dialect, id, ctx.signal));
  }
  let pending = null;
  function later() {
    if (!pending) pending = setTimeout(() => { pending = null; draw(); }, 200);
  }
  function draw() {
    if (ctx.signal.aborted) return;
    drawReadings(readingsBox, readingsNote, records, charts);
    drawCoverage(coverageBox, heardTable, records, charts);
    logBody.replaceChildren(...records.slice(-LOG_ROWS).reverse().map((r) => logRow(r)));
    if (liveCount) {
      liveNote.dataset.count = liveCount;
      liveNote.textContent = `${liveCount} live since the page opened`;
    }
  }

  count.addEventListener('input', () => load().catch(ctx.fail));
  await Promise.all([load(), showCounters()]);
  let last = Date.now();
  ctx.onSummary(() => {
    if (Date.now() - last >= 5000) {
      last = Date.now();
      showCounters().catch(ctx.fail);
    }
  });
  // The tail starts at the newest record the page holds (at a reconnection too), so
  // nothing that came meanwhile is missed; what the page has already is skipped.
  const tail = () => {
    const newest = records[records.length - 1];
    return `${base}/records?follow=true` + (newest ? `&from=${Math.floor(newest.device_time_ns / 1e6) / 1000}` : '');
  };
  api.follow(tail, (type, data) => {
    if (type !== 'record') return;
    const r = JSON.parse(data);
    const k = key(r);
    if (seen.has(k)) return;
    seen.add(k);
    r.live = true;
    records.push(r);
    if (records.length > 1 && order(records[records.length - 2], r) > 0) records.sort(order);
    if (records.length > MAX_RECORDS) records.splice(0, records.length - MAX_RECORDS);
    liveCount++;
    later();
  }, (state, e) => {
    if (state === 'refused') ctx.fail(e);
  }, ctx.signal);
}

function drawCounters(dl, d) {
  if (!d) {
    dl.replaceChildren(el('dt', {}, 'device'), el('dd', {}, 'not known to this node'));
    return;
  }
  const h = d.heard_here || {};
  const drift = h.clock_drift_ppm === null || h.clock_drift_ppm === undefined ? '–' : num(h.clock_drift_ppm, 1) + ' ppm';
  const fact = (k, label, v) => [el('dt', {}, label), el('dd', { dataset: { fact: k } }, v)];
  dl.replaceChildren(
    ...fact('records', 'records (merged, sealed)', `${num(d.records)} in ${num(d.windows)} windows`),
    ...fact('range', 'device time', `${time(d.first_device_time)} – ${time(d.last_device_time)}`),
    ...fact('last_seen', 'last seen here', time(d.last_seen)),
    ...fact('auth', 'authentication', d.auth || '–'),
    ...fact('sites', 'sites of its latest window', d.sites.length ? d.sites.map((s) => shortId(s)) : '–'),
    ...(d.heard_here ? [
      ...fact('received', 'received here', `${num(h.received)} datagrams, ${num(h.records)} records`),
      ...fact('gaps', 'gaps / missing', `${num(h.gaps)} / ${num(h.missing)}`),
      ...fact('duplicates', 'duplicates / conflicts', `${num(h.duplicates)} / ${num(h.conflicts)}`),
      ...fact('reordered', 'reordered / late', `${num(h.reordered)} / ${num(h.late)}`),
      ...fact('reboots', 'reboots', num(h.reboots)),
      ...fact('jitter_ms', 'jitter', `${num(h.jitter_ms, 2)} ms`),
      ...fact('clock', 'clock offset / drift', `${num(h.clock_offset_ms, 1)} ms / ${drift}`),
    ] : fact('received', 'received here', 'never: only other sites heard it')));
}

function width(box) {
  return Math.max(300, box.clientWidth || 800);
}

// The readings, one series per label, of the records that carry some (not heartbeats);
// a gap in the seqs breaks the lines there and gets a dashed red mark.
function drawReadings(box, note, records, charts) {
  const labels = [];
  for (const r of records) for (const x of r.readings) if (!labels.includes(x.label)) labels.push(x.label);
  const xs = [], ys = labels.map(() => []), gaps = [];
  let prev = null, broken = false;
  for (const r of records) {
    const x = r.device_time_ns / 1e9;
    if (r.gap > 0) {
      gaps.push(x);
      broken = true;
    }
    if (!r.readings.length) continue;
    if (broken && prev !== null) {
      xs.push((prev + x) / 2);
      ys.forEach((a) => a.push(null));
    }
    broken = false;
    xs.push(x);
    labels.forEach((l, i) => {
      const v = r.readings.find((q) => q.label === l);
      ys[i].push(v && v.value !== null ? v.value : null);
    });
    prev = x;
  }
  const plotted = records.filter((r) => r.readings.length).length;
  const missing = records.reduce((n, r) => n + r.gap, 0);
  note.textContent = records.length
    ? `${records.length} records, ${plotted} with readings; ${gaps.length} gaps (${missing} seqs missing) `
      + 'marked in red.'
    : 'No records of this device yet.';
  Object.assign(box.dataset, { points: plotted, series: labels.join(','), gaps: gaps.length });
  charts.gaps = gaps;
  const data = [xs, ...ys];
  if (charts.readings && charts.labels === labels.join(',')) {
    charts.readings.setData(data);
    return;
  }
  if (charts.readings) charts.readings.destroy();
  charts.labels = labels.join(',');
  charts.readings = new uPlot({
    width: width(box), height: 300,
    scales: { x: { time: true } },
    series: [
      { label: 'device time' },
      ...labels.map((l, i) => ({ label: l, stroke: COLORS[i % COLORS.length], width: 1.5, spanGaps: false })),
    ],
    hooks: {
      draw: [(u) => {
        const c = u.ctx;
        c.save();
        c.strokeStyle = '#c23b3b';
        c.setLineDash([4, 3]);
        c.lineWidth = 1;
        for (const g of charts.gaps) {
          const px = Math.round(u.valToPos(g, 'x', true)) + 0.5;
          c.beginPath();
          c.moveTo(px, u.bbox.top);
          c.lineTo(px, u.bbox.top + u.bbox.height);
          c.stroke();
        }
        c.restore();
      }],
    },
  }, data, box);
}

// One row of dots per site: which records each heard itself.
function drawCoverage(box, table, records, charts) {
  const sites = [...new Set(records.flatMap((r) => r.heard_by))].sort();
  const xs = records.map((r) => r.device_time_ns / 1e9);
  const rows = sites.map((s, i) => records.map((r) => (r.heard_by.includes(s) ? i + 1 : null)));
  const heard = sites.map((s, i) => rows[i].filter((v) => v !== null).length);
  const alone = records.filter((r) => r.heard_by.length === 1).length;
  const nobody = records.filter((r) => r.heard_by.length === 0).length;
  Object.assign(box.dataset, { sites: sites.length, points: records.length });
  table.replaceChildren(
    el('thead', {}, el('tr', {}, ['site', 'records heard there', 'share'].map((h) => el('th', {}, h)))),
    el('tbody', {}, sites.map((s, i) => el('tr', { dataset: { site: s } },
      el('td', {}, el('a', { href: `#/site/${encodeURIComponent(s)}` }, shortId(s))),
      el('td', { class: 'num', dataset: { col: 'heard' } }, num(heard[i])),
      el('td', { class: 'num' }, records.length ? (100 * heard[i] / records.length).toFixed(1) + ' %' : '–')))),
    el('tfoot', {}, el('tr', {}, el('td', { colspan: 3, class: 'muted' },
      `${records.length} records: ${alone} heard by one site only`
        + `${nobody ? `, ${nobody} by none that says so` : ''}.`))));
  const data = [xs, ...rows];
  if (charts.coverage && charts.sites === sites.join(',')) {
    charts.coverage.setData(data);
    return;
  }
  if (charts.coverage) charts.coverage.destroy();
  charts.sites = sites.join(',');
  charts.coverage = new uPlot({
    width: width(box), height: 50 + 28 * Math.max(sites.length, 1),
    scales: { x: { time: true }, y: { auto: false, range: [0.5, sites.length + 0.5] } },
    legend: { show: false },
    axes: [{}, {
      size: 90,
      splits: () => sites.map((_, i) => i + 1),
      values: (_u, splits) => splits.map((v) => (sites[v - 1] ? '…' + sites[v - 1].slice(-8) : '')),
    }],
    series: [{}, ...sites.map((s, i) => ({
      label: s, stroke: COLORS[i % COLORS.length], fill: COLORS[i % COLORS.length],
      paths: () => null, points: { show: true, size: 5, fill: COLORS[i % COLORS.length] },
    }))],
  }, data, box);
}

function logRow(r) {
  return el('tr', { class: r.live ? 'new' : '', dataset: { seq: r.seq, time: r.device_time_ns } },
    el('td', {}, time(r.device_time)),
    el('td', { class: 'num' }, r.seq),
    el('td', { class: 'num' }, r.ext_seq),
    el('td', {}, r.kind),
    el('td', { class: r.gap ? 'num gap' : 'num' }, r.gap),
    el('td', { title: r.heard_by.join('\n') }, `${r.heard_by.length}: `, r.heard_by.map((s) => shortId(s))),
    el('td', {}, r.auth),
    el('td', { class: 'readings' }, r.readings.map((x) => `${x.label}=${x.value ?? 'NaN'}`).join(' ')));
}
