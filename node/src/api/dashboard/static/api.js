// The node's JSON API as the pages use it: every request carries the bearer token the
// operator gave (kept in this tab's sessionStorage, or in localStorage when asked to
// remember it), and live streams are read with fetch, since EventSource cannot send a
// header.

const KEY = 'telemesh.token';

export function token() {
  return sessionStorage.getItem(KEY) || localStorage.getItem(KEY);
}

export function setToken(value, remember) {
  forget();
  (remember ? localStorage : sessionStorage).setItem(KEY, value);
}

export function forget() {
  sessionStorage.removeItem(KEY);
  localStorage.removeItem(KEY);
}

// The node wants a token (none given, or not its own): the app asks for one.
export class Unauthorized extends Error {
  constructor(message) {
    super(message);
    this.name = 'Unauthorized';
  }
}

function headers() {
  const t = token();
  return t ? { Authorization: 'Bearer ' + t } : {};
}

async function refusal(response) {
  let message = `${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    if (body && body.error) message = body.error;
  } catch (_) { /* not JSON */ }
  return response.status === 401 ? new Unauthorized(message) : new Error(message);
}

// GET `path` (with its query) and parse the JSON answer.
export async function get(path, signal) {
  const response = await fetch(path, { headers: headers(), signal, cache: 'no-store' });
  if (!response.ok) throw await refusal(response);
  return response.json();
}

// Follows pages of `path` by `next_cursor`, collecting `field`, up to `max` items.
export async function pages(path, field, max, signal) {
  const out = [];
  let cursor = null;
  for (;;) {
    const url = cursor ? `${path}${path.includes('?') ? '&' : '?'}cursor=${encodeURIComponent(cursor)}` : path;
    const page = await get(url, signal);
    out.push(...page[field]);
    if (!page.truncated || !page.next_cursor || out.length >= max) return { items: out, complete: !page.truncated };
    cursor = page.next_cursor;
  }
}

// Largest event accepted from a stream (the node's are far smaller).
const MAX_EVENT = 1 << 20;

// Reads server-sent events from `path` (a string, or a function giving it afresh at each
// connection) until `signal` aborts, calling
// `onEvent(type, data, id)` for each; reconnects after a second (up to 15) when the stream
// ends or fails, and reports `onState('live' | 'retrying' | 'refused', error)`.
export async function follow(path, onEvent, onState, signal) {
  let delay = 1000;
  while (!signal.aborted) {
    try {
      const url = typeof path === 'function' ? path() : path;
      const response = await fetch(url, { headers: headers(), signal, cache: 'no-store' });
      if (!response.ok) throw await refusal(response);
      onState('live');
      delay = 1000;
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value.replace(/\r\n?/g, '\n');
        let end;
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          let type = 'message', data = [], id = null;
          for (const line of block.split('\n')) {
            if (line.startsWith(':')) continue;
            const colon = line.indexOf(':');
            const name = colon < 0 ? line : line.slice(0, colon);
            const text = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
            if (name === 'event') type = text;
            else if (name === 'data') data.push(text);
            else if (name === 'id') id = text;
          }
          if (data.length) onEvent(type, data.join('\n'), id);
        }
        if (buffer.length > MAX_EVENT) throw new Error('an event over 1 MiB');
      }
    } catch (e) {
      if (signal.aborted) return;
      if (e instanceof Unauthorized) {
        onState('refused', e);
        return;
      }
      onState('retrying', e);
    }
    if (signal.aborted) return;
    onState('retrying');
    await new Promise((resolve) => setTimeout(resolve, delay));
    delay = Math.min(delay * 2, 15000);
  }
}
