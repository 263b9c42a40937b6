// The dashboard: a single page routed by the URL's fragment (#/mesh, #/devices,
// #/device/<dialect>/<id>, #/site/<node id>), one live summary feed shared by the pages,
// and a form for the API's token when the node wants one.

import * as api from './api.js';
import { el, shortId } from './format.js';
import * as mesh from './mesh.js';
import * as devices from './devices.js';
import * as device from './device.js';
import * as site from './site.js';

const PAGES = { mesh, devices, device, site };

const main = document.getElementById('main');
const live = document.getElementById('live');
const forgetButton = document.getElementById('forget');

let page = null; // the AbortController of the page shown
let feed = null; // the AbortController of the summary feed
let summary = null; // the latest summary event
const listeners = new Set();

// What a page gets: its abort signal, the latest summary and later ones, a way to fail.
function context(signal) {
  return {
    signal,
    summary: () => summary,
    onSummary(fn) {
      listeners.add(fn);
      signal.addEventListener('abort', () => listeners.delete(fn));
    },
    fail: (e) => failed(e, signal),
  };
}

function failed(e, signal) {
  if (signal && signal.aborted) return;
  if (e instanceof api.Unauthorized) {
    login(e.message);
    return;
  }
  console.error(e);
  main.prepend(el('p', { class: 'error', role: 'alert' }, String(e.message || e)));
}

function setLive(state) {
  live.textContent = state === 'live' ? 'live' : state === 'retrying' ? 'reconnecting' : 'offline';
  live.className = 'live ' + state;
}

function startFeed() {
  if (feed) return;
  feed = new AbortController();
  const signal = feed.signal;
  api.follow('/v1/summary?follow=true', (type, data) => {
    if (type !== 'summary') return;
    summary = JSON.parse(data);
    const s = summary.status;
    document.getElementById('node').replaceChildren('node ', shortId(s.node_id), ` · mesh ${s.mesh || '–'}`);
    for (const fn of listeners) {
      try { fn(summary); } catch (e) { console.error(e); }
    }
  }, (state, e) => {
    if (signal.aborted) return;
    setLive(state);
    if (state === 'refused') login(e.message);
  }, signal);
}

function route() {
  if (page) page.abort();
  page = new AbortController();
  const parts = location.hash.replace(/^#\/?/, '').split('/').filter(Boolean).map(decodeURIComponent);
  const name = PAGES[parts[0]] ? parts[0] : 'mesh';
  for (const a of document.querySelectorAll('[data-nav]')) {
    a.classList.toggle('active', a.dataset.nav === name || (name === 'device' && a.dataset.nav === 'devices'));
  }
  forgetButton.hidden = !api.token();
  main.replaceChildren();
  main.dataset.page = name;
  startFeed();
  const ctx = context(page.signal);
  PAGES[name].render(main, parts.slice(1), ctx).catch(ctx.fail);
}

// The node wants its token: asks for it, checks it against /v1/status, then goes on.
function login(message) {
  if (page) page.abort();
  if (feed) feed.abort();
  page = null;
  feed = null;
  setLive('offline');
  forgetButton.hidden = true;
  const input = el('input', { id: 'token', type: 'password', autocomplete: 'current-password', required: true,
    size: 40 });
  const remember = el('input', { id: 'remember', type: 'checkbox' });
  const note = el('p', { id: 'login-error', class: 'error', role: 'alert', hidden: !api.token() }, message || '');
  const form = el('form', { id: 'login', class: 'card login' },
    el('h1', {}, 'This node wants its API token'),
    el('p', {}, 'Its HTTP API is served only to those who hold the bearer token of its ',
      el('code', {}, '--http-token-file'), '. The dashboard sends it with every request and keeps it in this tab',
      ' (or in this browser, if you ask it to).'),
    note,
    el('label', { for: 'token' }, 'Token'), input,
    el('label', { class: 'check' }, remember, ' Remember in this browser'),
    el('button', { type: 'submit' }, 'Open the dashboard'));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    api.setToken(input.value.trim(), remember.checked);
    try {
      await api.get('/v1/status');
      route();
    } catch (e) {
      api.forget();
      note.hidden = false;
      note.textContent = e instanceof api.Unauthorized ? 'That is not this node\'s token.' : String(e.message || e);
    }
  });
  main.dataset.page = 'login';
  main.replaceChildren(form);
  input.focus();
}

// Whatever goes wrong shows on the page (and a browser test sees it): a script error, a
// promise nobody awaited, something the content security policy blocked.
window.addEventListener('error', (e) => failed(e.error || new Error(e.message)));
window.addEventListener('unhandledrejection', (e) => failed(e.reason || new Error('a failed promise')));
document.addEventListener('securitypolicyviolation', (e) =>
  failed(new Error(`blocked by the content security policy: ${e.violatedDirective} ${e.blockedURI}`)));

forgetButton.addEventListener('click', () => {
  api.forget();
  login('');
});
window.addEventListener('hashchange', route);
route();
