// Small helpers shared by the pages: building elements (text only, never HTML from data),
// numbers, times and node ids as a person reads them, and sortable tables.

// An element: `el('td', { class: 'num', dataset: { col: 'records' } }, '12')`.
export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'dataset') Object.assign(e.dataset, v);
    else if (k === 'class') e.className = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (k in e && typeof v !== 'string') e[k] = v;
    else e.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

// A node id (libp2p peer id) shortened to its last 8 characters, the whole in a tooltip.
export function shortId(id) {
  if (!id) return el('span', { class: 'muted' }, '–');
  return el('span', { class: 'id', title: id }, '…' + id.slice(-8));
}

export function num(v, digits) {
  if (v === undefined || v === null || Number.isNaN(v)) return '–';
  if (digits !== undefined) return Number(v).toFixed(digits);
  return Number(v).toLocaleString('en-US');
}

export function pct(part, whole) {
  return whole > 0 ? (100 * part / whole).toFixed(1) + ' %' : '–';
}

export function bytes(n) {
  if (n === undefined || n === null) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + ' ' + units[i];
}

export function duration(seconds) {
  if (seconds === undefined || seconds === null) return '–';
  seconds = Math.max(0, Math.round(seconds));
  const d = Math.floor(seconds / 86400), h = Math.floor(seconds % 86400 / 3600);
  const m = Math.floor(seconds % 3600 / 60), s = seconds % 60;
  if (d) return `${d}d ${h}h`;
  if (h) return `${h}h ${m}m`;
  if (m) return `${m}m ${s}s`;
  return `${s}s`;
}

// An RFC 3339 time from the API, as `2026-12-05 17:10:10.250` (UTC).
export function time(t) {
  if (!t) return '–';
  return t.replace('T', ' ').replace(/(\.\d{3})\d*Z$/, '$1').replace(/Z$/, '');
}

// Nanoseconds since the epoch from an RFC 3339 time with up to 9 fractional digits.
export function ns(t) {
  if (!t) return null;
  const m = /^(.*?)(?:\.(\d+))?Z$/.exec(t);
  if (!m) return null;
  const whole = Date.parse(m[1] + 'Z');
  if (Number.isNaN(whole)) return null;
  return whole * 1e6 + Number(((m[2] || '') + '000000000').slice(0, 9));
}

// A device's key and the page that shows it.
export function deviceKey(d) {
  return `${d.dialect}:${d.device}`;
}

// Devices sort by dialect, then id as a number.
export function deviceOrder(d) {
  return `${d.dialect}:${String(d.device).padStart(10, '0')}`;
}

export function deviceLink(d) {
  return el('a', { href: `#/device/${d.dialect}/${d.device}` }, deviceKey(d));
}

// A table whose columns sort when their header is clicked. `columns` are
// `{ key, label, value(row) → sortable, cell(row) → text or node, num }`; `rowAttrs(row)`
// gives each row's attributes. Returns `{ table, update(rows) }`.
export function sortable(columns, rowAttrs, initial) {
  let rows = [];
  let sort = initial || { key: columns[0].key, dir: 1 };
  const body = el('tbody');
  const heads = columns.map((c) =>
    el('th', { class: c.num ? 'num' : '', dataset: { col: c.key }, title: c.title, scope: 'col',
      onclick: () => {
        sort = { key: c.key, dir: sort.key === c.key ? -sort.dir : (c.num ? -1 : 1) };
        draw();
      } }, c.label));
  const table = el('table', { class: 'data' }, el('thead', {}, el('tr', {}, heads)), body);
  function draw() {
    const col = columns.find((c) => c.key === sort.key) || columns[0];
    const value = col.value || ((r) => r[col.key]);
    const sorted = rows.slice().sort((a, b) => {
      const x = value(a), y = value(b);
      if (x === y) return 0;
      if (x === null || x === undefined) return 1;
      if (y === null || y === undefined) return -1;
      return (x < y ? -1 : 1) * sort.dir;
    });
    const order = sort.dir > 0 ? 'ascending' : 'descending';
    heads.forEach((h, i) => h.setAttribute('aria-sort', columns[i].key === sort.key ? order : 'none'));
    const cell = (c, r) => el('td', { class: c.num ? 'num' : '', dataset: { col: c.key } }, c.cell ? c.cell(r) : r[c.key]);
    body.replaceChildren(...sorted.map((r) => el('tr', rowAttrs ? rowAttrs(r) : {}, columns.map((c) => cell(c, r)))));
  }
  return { table, update(r) { rows = r; draw(); } };
}
