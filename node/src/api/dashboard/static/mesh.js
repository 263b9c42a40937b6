// The mesh: this node, its ingest totals, its windows and repair traffic, and every node of
// the mesh with its connection and how its windows compare (in sync, behind, ahead).

import * as api from './api.js';
import { el, shortId, num, bytes, duration } from './format.js';

export async function render(main, _params, ctx) {
  const [summary, members] = await Promise.all([
    api.get('/v1/summary', ctx.signal),
    api.get('/v1/mesh/members', ctx.signal),
  ]);
  const view = el('div', { class: 'page' });
  main.replaceChildren(view);
  let roster = members;
  let peerCount = summary.peers.peers.length;
  draw(view, summary, roster);
  ctx.onSummary(async (s) => {
    // The roster changes rarely: read again when the set of connected peers does.
    if (s.peers.peers.length !== peerCount) {
      peerCount = s.peers.peers.length;
      try { roster = await api.get('/v1/mesh/members', ctx.signal); } catch (e) { ctx.fail(e); }
    }
    draw(view, s, roster);
  });
}

function stat(key, label, value, title) {
  return el('div', { class: 'stat', title },
    el('span', { class: 'value', dataset: { stat: key } }, value),
    el('span', { class: 'label' }, label));
}

function draw(view, summary, roster) {
  const s = summary.status, p = summary.peers, t = s.totals, r = p.stats || {};
  const m = s.membership || {};
  const held = m.mode === 'closed' ? `, roster v${m.roster_version ?? '–'}, ${m.members ?? '–'} members` : '';
  const listeners = Object.entries(s.listeners).map(([k, v]) => `${k} ${v || 'off'}`).join(' · ');
  const node = el('section', { class: 'card' },
    el('h2', {}, 'This node'),
    el('dl', { class: 'facts' },
      el('dt', {}, 'node id'), el('dd', { dataset: { fact: 'node_id' } }, s.node_id),
      el('dt', {}, 'mesh'), el('dd', {}, `${s.mesh || '–'} (${m.mode || 'open'}${held})`),
      el('dt', {}, 'version'), el('dd', {}, s.version),
      el('dt', {}, 'up'), el('dd', {}, duration(s.uptime_seconds)),
      el('dt', {}, 'listeners'), el('dd', {}, listeners),
      el('dt', {}, 'API'), el('dd', {}, s.http.auth === 'token' ? 'bearer token required' : 'no token')));
  const ingest = el('section', { class: 'card' },
    el('h2', {}, 'Ingest here'),
    el('div', { class: 'stats' },
      stat('received', 'datagrams received', num(t.received)),
      stat('records', 'records stored', num(t.records)),
      stat('duplicates', 'duplicates', num(t.duplicates)),
      stat('conflicts', 'conflicts', num(t.conflicts)),
      stat('dropped', 'dropped (malformed)', num(t.dropped)),
      stat('streams', 'streams in memory', num(t.streams_in_memory))));
  const repair = el('section', { class: 'card' },
    el('h2', {}, 'Windows and repair'),
    el('div', { class: 'stats' },
      stat('windows', 'windows held', num(p.windows)),
      stat('wanted', 'windows wanted', num(p.wanted), 'windows for which a peer holds a root this node lacks'),
      stat('repairing', 'repairs running', num(p.repairing)),
      stat('windows_repaired', 'windows repaired', num(r.windows_repaired)),
      stat('records_repaired', 'records repaired', num(r.records_repaired)),
      stat('repair_in', 'repair traffic in', bytes(r.repair_bytes_in)),
      stat('repair_out', 'repair traffic out', bytes(r.repair_bytes_out)),
      stat('symbols', 'symbols used / received', `${num(r.symbols_used)} / ${num(r.symbols_received)}`),
      stat('failures', 'decode / verification failures',
        `${num(r.decode_failures)} / ${num(r.verification_failures)}`)));
  view.replaceChildren(node, ingest, repair, nodes(s, p, roster));
}

// Every node: the roster's members (a closed mesh) and the connected peers.
function nodes(s, p, roster) {
  const connected = new Map(p.peers.map((x) => [x.peer_id, x]));
  const ids = new Set([s.node_id]);
  for (const m of (roster && roster.members) || []) ids.add(m.peer_id);
  for (const id of connected.keys()) ids.add(id);
  const rows = [...ids].map((id) => {
    const peer = connected.get(id);
    const state = id === s.node_id ? 'this node' : peer ? 'connected' : 'not connected';
    return el('tr', { class: state.replace(' ', '-'), dataset: { node: id } },
      el('td', {}, el('a', { href: `#/site/${encodeURIComponent(id)}` }, shortId(id))),
      el('td', { dataset: { col: 'state' } }, state),
      el('td', { class: 'num' }, peer ? duration(peer.connected_seconds) : '–'),
      el('td', { class: 'addr' }, address(s, id, peer)),
      ['in_sync', 'behind', 'ahead', 'differing'].map((k) =>
        el('td', { class: 'num', dataset: { col: k } }, peer ? num(peer[k]) : '–')));
  });
  return el('section', { class: 'card wide' },
    el('h2', {}, `Nodes (${ids.size})`),
    el('p', { class: 'muted' }, 'Windows of each peer compared with this node\'s: in sync, behind (the peer holds ',
      'fewer records), ahead (more), differing (as many, another root).'),
    el('table', { class: 'data', id: 'nodes' },
      el('thead', {}, el('tr', {}, ['node', 'state', 'connected for', 'address', 'in sync', 'behind', 'ahead', 'differing']
        .map((h) => el('th', {}, h)))),
      el('tbody', {}, rows)));
}

// A peer's remote addresses; this node's first overlay address.
function address(s, id, peer) {
  if (peer) return peer.addrs.join(' ');
  return id === s.node_id ? (s.listen || [])[0] || '–' : '–';
}
