// One chat session: history, sending (with a queue while offline), the run
// event stream with resume after a dropped connection, and the live room
// (WebSocket) for presence and other people's runs.
//
// Events from every source (own POST stream, resumed SSE, WebSocket, poll)
// go through apply(), which drops any sequence number already seen, so a
// resume never repeats or loses text.

import { all, json, request, NetworkError, problem } from './api.js';
import { h } from './dom.js';
import { readSse } from './sse.js';

const FILE_TOOLS = new Set(['write_file', 'edit_file', 'delete_file']);
const TOOL_VERBS = {
  write_file: 'Writing',
  edit_file: 'Editing',
  delete_file: 'Deleting',
  read_file: 'Reading',
  list_files: 'Listing files',
  run_command: 'Running',
};
const WATCHDOG_MS = 45000;
const POLL_MS = 5000;

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export class Chat {
  /**
   * @param {object} o
   * @param {{id: string, last_seq: number}} o.session
   * @param {HTMLElement} o.log        the message list (role=log)
   * @param {HTMLElement} o.status     the connection status line
   * @param {HTMLElement} o.presence   the presence list
   * @param {() => string} o.userId  the signed-in user's id (once known)
   * @param {() => void} o.onFilesChanged  a file tool changed the project
   * @param {() => void} o.onRunFinished   a run ended (reload the preview)
   * @param {(busy: boolean) => void} [o.onBusy]
   */
  constructor(o) {
    this.session = o.session;
    this.log = o.log;
    this.statusEl = o.status;
    this.presenceEl = o.presence;
    this.userId = o.userId;
    this.onFilesChanged = o.onFilesChanged;
    this.onRunFinished = o.onRunFinished;
    this.onBusy = o.onBusy || (() => {});
    this.lastSeq = 0;
    /** @type {Set<number>} */
    this.seen = new Set();
    /** runs already complete in the history: their replayed events are skipped */
    this.doneRuns = new Set();
    /** @type {Map<string, RunView>} */
    this.runs = new Map();
    /** messages waiting to be sent, oldest first */
    this.queue = [];
    this.busy = false; // a POST stream or a resume is in progress
    this.activeRun = ''; // run_id between run_started and run_finished
    this.inflight = null; // the queue item being POSTed
    this.held = null; // events from other sources while a POST is in flight
    this.closed = false;
    this.ws = null;
    this.wsFailures = 0;
    this.wsOpen = false;
    this.pollTimer = 0;
    this.onlineHandler = () => this.wake();
    this.offlineHandler = () => this.setStatus();
    this.visibilityHandler = () => {
      if (!document.hidden) this.wake();
    };
    addEventListener('online', this.onlineHandler);
    addEventListener('offline', this.offlineHandler);
    document.addEventListener('visibilitychange', this.visibilityHandler);
    /** @type {Array<() => void>} */
    this.wakers = [];
    this.autoscroll = true;
    this.scrollQueued = false;
    this.log.addEventListener('scroll', () => {
      const l = this.log;
      this.autoscroll = l.scrollHeight - l.scrollTop - l.clientHeight < 80;
    });
  }

  // --- lifecycle -----------------------------------------------------------

  async start() {
    const items = await all(`/v1/sessions/${this.session.id}/messages`, 200);
    const userById = new Map();
    let pending = '';
    for (const m of items) {
      if (m.role === 'user') {
        const text = textOf(m.content);
        if (!text) continue; // tool results travel as user turns
        const bubble = this.userBubble(text);
        userById.set(m.id, bubble);
        if (m.run_id) pending = m.run_id;
      } else if (m.role === 'assistant') {
        if (m.run_id) {
          this.doneRuns.add(m.run_id);
          if (pending === m.run_id) pending = '';
        }
        const run = this.runView(m.run_id || m.id);
        run.fromBlocks(m.content || []);
        run.finish(m.status || 'complete', '');
      }
    }
    this.lastSeq = pending ? 0 : this.session.last_seq || 0;
    if (pending) this.runView(pending);
    if (!items.length) {
      this.empty = h(
        'p',
        { class: 'empty muted' },
        'Describe the app you want, for example “a to-do list that remembers its items”. The assistant writes the files; the preview shows the result.',
      );
      this.log.append(this.empty);
    }
    this.scrollToEnd(true);
    this.setStatus();
    this.connectRoom();
    if (pending) {
      // A run is going on (or its driver died): follow it from the start.
      this.activeRun = pending;
      this.follow('resume');
    } else {
      this.schedulePoll();
    }
  }

  close() {
    this.closed = true;
    removeEventListener('online', this.onlineHandler);
    removeEventListener('offline', this.offlineHandler);
    document.removeEventListener('visibilitychange', this.visibilityHandler);
    clearTimeout(this.pollTimer);
    if (this.ws) this.ws.close();
    if (this.abort) this.abort.abort();
    this.wake();
  }

  /** Resolves the next time the network comes back or something nudges us. */
  waitForWake(ms) {
    return new Promise((resolve) => {
      const t = setTimeout(done, ms);
      function done() {
        clearTimeout(t);
        resolve();
      }
      this.wakers.push(done);
    });
  }

  wake() {
    const w = this.wakers;
    this.wakers = [];
    for (const f of w) f();
    if (!this.busy) this.pump();
  }

  // --- status --------------------------------------------------------------

  setStatus(override) {
    let text = '';
    let kind = '';
    if (override) {
      [kind, text] = override;
    } else if (!navigator.onLine) {
      kind = 'offline';
      text = this.queue.length
        ? `Offline: ${this.queue.length} message${this.queue.length > 1 ? 's' : ''} queued, sent when you are back online.`
        : 'Offline. Messages you send are queued.';
    } else if (this.reconnecting) {
      kind = 'reconnecting';
      text = 'Reconnecting…';
    } else if (this.activeRun) {
      kind = 'running';
      text = 'Working…';
    }
    this.onBusy(Boolean(this.activeRun));
    this.statusEl.textContent = text;
    this.statusEl.dataset.kind = kind;
    this.statusEl.hidden = !text;
  }

  // --- sending -------------------------------------------------------------

  /** Queues a message; it is sent as soon as the session is free and online. */
  send(text) {
    const bubble = this.userBubble(text);
    const item = { text, bubble };
    this.queue.push(item);
    bubble.setState(navigator.onLine ? 'sending' : 'queued');
    this.scrollToEnd(true);
    this.pump();
    this.setStatus();
  }

  async pump() {
    if (this.busy || this.closed || !this.queue.length) return;
    if (!navigator.onLine) {
      for (const q of this.queue) q.bubble.setState('queued');
      this.setStatus();
      return;
    }
    const item = this.queue[0];
    this.busy = true;
    item.bubble.setState('sending');
    this.inflight = item;
    this.held = [];
    const ctl = new AbortController();
    this.abort = ctl;
    let res;
    try {
      res = await request(`/v1/sessions/${this.session.id}/messages`, {
        method: 'POST',
        json: { content: item.text },
        headers: { accept: 'text/event-stream' },
        signal: ctl.signal,
      });
    } catch (e) {
      this.inflight = null;
      this.releaseHeld();
      this.busy = false;
      if (e instanceof NetworkError || (e && e.name === 'AbortError')) {
        // Not sent: it stays first in the queue until the network is back.
        item.bubble.setState('queued');
        this.setStatus();
        if (!this.closed) {
          await this.waitForWake(3000);
          this.pump();
        }
        return;
      }
      if (e && e.code === 'run_in_progress') {
        // Someone else's run: follow it, then send.
        item.bubble.setState('queued', 'Waiting for the current run to finish…');
        this.follow('watch');
        return;
      }
      this.queue.shift();
      item.bubble.setState('failed', e.detail || e.message);
      this.pump();
      return;
    }
    this.queue.shift();
    item.bubble.setState('sent');
    this.setStatus();
    let ended = false;
    try {
      await readSse(res.body, (m) => {
        const ev = parseEvent(m);
        if (!ev) return;
        this.apply(ev, 'own');
        if (ev.type === 'run_finished') ended = true;
      });
    } catch {
      /* the connection broke mid-stream: resume below */
    }
    this.inflight = null;
    this.releaseHeld();
    this.abort = null;
    if (ended || !this.activeRun || this.closed) {
      this.finishBusy();
      return;
    }
    this.busy = false;
    this.follow('resume');
  }

  finishBusy() {
    this.busy = false;
    this.reconnecting = false;
    this.setStatus();
    if (this.queue.length) this.pump();
    else this.schedulePoll();
  }

  /** Cancels the running turn. */
  async cancel() {
    try {
      await json(`/v1/sessions/${this.session.id}/cancel`, { method: 'POST' });
    } catch (e) {
      if (e.code !== 'no_active_run') throw e;
    }
  }

  // --- following the event log (resume after a drop, other people's runs) --

  /**
   * Reads GET /events after the last seen sequence until the active run
   * ends, reconnecting with backoff. mode 'resume' shows "reconnecting…".
   */
  async follow(mode) {
    if (this.busy || this.closed) return;
    this.busy = true;
    this.reconnecting = mode === 'resume';
    this.setStatus();
    let delay = 250;
    let idleEnds = 0;
    while (!this.closed) {
      if (!navigator.onLine) {
        this.setStatus();
        await this.waitForWake(10000);
        continue;
      }
      const ctl = new AbortController();
      this.abort = ctl;
      let watchdog = setTimeout(() => ctl.abort(), WATCHDOG_MS);
      let ok = false;
      let got = 0;
      try {
        const res = await request(`/v1/sessions/${this.session.id}/events`, {
          headers: { accept: 'text/event-stream', 'last-event-id': String(this.lastSeq) },
          signal: ctl.signal,
        });
        this.reconnecting = false;
        this.setStatus();
        await readSse(res.body, (m) => {
          clearTimeout(watchdog);
          watchdog = setTimeout(() => ctl.abort(), WATCHDOG_MS);
          const ev = parseEvent(m);
          if (ev) {
            got++;
            this.apply(ev, 'follow');
          }
        });
        ok = true;
      } catch (e) {
        const transient =
          e instanceof NetworkError ||
          (e && (e.name === 'AbortError' || e instanceof TypeError || e.status === 429 || e.status >= 500));
        if (!transient) {
          // A problem from the server (e.g. the session is gone): say so, stop.
          this.systemNote(e.detail || e.message, true);
          break;
        }
        if (e && e.status === 429) delay = Math.max(delay, 5000);
      } finally {
        clearTimeout(watchdog);
      }
      // The server ends the stream when no run is pending any more.
      if (ok && !this.activeRun) break;
      // A failed poll is retried by the next poll, so the composer is not held up.
      if (!ok && mode === 'watch' && !this.activeRun) break;
      if (ok) {
        // Ended while our run is still open: its driver may be gone. Ask again
        // a few times (the server marks a dead run incomplete), then stop.
        idleEnds = got ? 0 : idleEnds + 1;
        if (idleEnds >= 4) {
          this.activeRun = '';
          break;
        }
        await this.waitForWake(1000 * (idleEnds + 1));
      } else {
        if (mode === 'resume') this.reconnecting = true;
        this.setStatus();
        await this.waitForWake(delay);
        delay = Math.min(delay * 2, 5000);
      }
    }
    this.abort = null;
    this.finishBusy();
  }

  /** Without a live room, look for other people's runs now and then. */
  schedulePoll() {
    clearTimeout(this.pollTimer);
    if (this.closed || this.wsOpen) return;
    this.pollTimer = setTimeout(async () => {
      if (this.closed || this.busy || this.wsOpen) return;
      if (document.hidden || !navigator.onLine) return this.schedulePoll();
      await this.follow('watch');
    }, POLL_MS);
  }

  // --- live room (WebSocket) -----------------------------------------------

  async connectRoom() {
    if (this.closed || this.wsFailures >= 3 || this.ws) return;
    let ticket;
    try {
      ticket = await json(`/v1/sessions/${this.session.id}/ws-ticket`, { method: 'POST' });
    } catch (e) {
      if (e instanceof NetworkError) {
        // Offline: try again when the network is back.
        await this.waitForWake(30000);
        this.connectRoom();
      } else {
        this.wsFailures++;
      }
      return;
    }
    if (this.closed || this.ws) return;
    const url = new URL(ticket.url, location.href);
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    url.searchParams.set('after', String(this.lastSeq));
    let opened = false;
    const ws = new WebSocket(url);
    this.ws = ws;
    ws.onopen = () => {
      opened = true;
      this.wsOpen = true;
      this.wsFailures = 0;
      clearTimeout(this.pollTimer);
      this.presenceEl.hidden = false;
    };
    ws.onmessage = (m) => {
      let doc;
      try {
        doc = JSON.parse(m.data);
      } catch {
        return;
      }
      if (doc.type === 'presence') this.renderPresence(doc.users || []);
      else if (typeof doc.seq === 'number') {
        this.apply(doc, 'room');
        if (!this.busy && this.activeRun) this.setStatus();
      }
    };
    ws.onclose = () => {
      this.ws = null;
      this.wsOpen = false;
      this.presenceEl.hidden = true;
      if (this.closed) return;
      // A room that never opens (501: no live rooms here) is given up after a few tries.
      if (!opened && navigator.onLine) this.wsFailures++;
      if (!this.busy) this.schedulePoll();
      const wait = opened ? 1000 : [2000, 8000, 30000][this.wsFailures - 1] || 30000;
      setTimeout(() => this.connectRoom(), wait);
    };
  }

  renderPresence(users) {
    const byUser = new Map();
    for (const u of users) {
      const e = byUser.get(u.user_id) || { name: u.name || u.user_id, count: 0 };
      e.count++;
      byUser.set(u.user_id, e);
    }
    const list = [...byUser.entries()].map(([id, u]) =>
      h(
        'li',
        { title: u.name, dataset: { userId: id } },
        h('span', { class: 'avatar', 'aria-hidden': 'true' }, initials(u.name)),
        h('span', { class: 'who' }, id === this.userId() ? `${u.name} (you)` : u.name),
        u.count > 1 ? h('span', { class: 'count' }, ` ×${u.count}`) : null,
      ),
    );
    this.presenceEl.dataset.connections = String(users.length);
    this.presenceEl.querySelector('ul').replaceChildren(...list);
    this.presenceEl.hidden = false;
  }

  ack() {
    if (this.ws && this.wsOpen && this.ws.readyState === 1) {
      this.ws.send(JSON.stringify({ type: 'ack', seq: this.lastSeq }));
    }
  }

  // --- events ----------------------------------------------------------------

  releaseHeld() {
    const held = this.held || [];
    this.held = null;
    held.sort((a, b) => a.seq - b.seq);
    for (const ev of held) this.apply(ev, 'held');
  }

  /** Applies one run event exactly once. */
  apply(ev, source) {
    if (this.seen.has(ev.seq)) return;
    if (this.held && source !== 'own' && source !== 'held') {
      // A POST is in flight: its run_started must bind the run to our message first.
      this.held.push(ev);
      return;
    }
    this.seen.add(ev.seq);
    if (ev.seq > this.lastSeq) this.lastSeq = ev.seq;
    if (this.doneRuns.has(ev.run_id)) return;
    const run = this.runs.get(ev.run_id);
    switch (ev.type) {
      case 'run_started': {
        this.activeRun = ev.run_id;
        if (source === 'own' && this.inflight) {
          this.runView(ev.run_id, this.inflight.bubble.el);
        } else if (!run) {
          this.foreignRun(ev);
        }
        this.setStatus();
        break;
      }
      case 'text_start':
        this.runView(ev.run_id).textStart(ev.block_id);
        break;
      case 'text_delta':
        this.runView(ev.run_id).textDelta(ev.block_id, ev.delta);
        break;
      case 'text_end':
        this.runView(ev.run_id).textEnd(ev.block_id);
        break;
      case 'tool_call_start':
        this.runView(ev.run_id).toolStart(ev.tool_call_id, ev.name);
        break;
      case 'tool_call_delta':
        this.runView(ev.run_id).toolDelta(ev.tool_call_id, ev.delta);
        break;
      case 'tool_call_end':
        this.runView(ev.run_id).toolEnd(ev.tool_call_id, ev.name, ev.input);
        break;
      case 'tool_result': {
        const r = this.runView(ev.run_id);
        const name = r.toolResult(ev.tool_call_id, ev.output, ev.is_error);
        if (!ev.is_error && FILE_TOOLS.has(name)) {
          r.changedFiles = true;
          this.onFilesChanged();
        }
        break;
      }
      case 'run_error':
        this.runView(ev.run_id).error(ev.message || ev.code);
        break;
      case 'run_finished': {
        const r = this.runView(ev.run_id);
        r.finish(ev.status, ev.stop_reason);
        if (this.activeRun === ev.run_id) this.activeRun = '';
        this.doneRuns.add(ev.run_id);
        this.setStatus();
        this.onRunFinished(r.changedFiles);
        this.ack();
        break;
      }
      default:
        break;
    }
    if (source === 'own' && ev.type === 'run_started') this.releaseHeld();
    this.scrollToEnd(false);
  }

  /** A run started by someone else (or another tab): show its message. */
  foreignRun(ev) {
    const bubble = this.userBubble('…');
    this.runView(ev.run_id);
    all(`/v1/sessions/${this.session.id}/messages`, 200)
      .then((items) => {
        const m = items.find((x) => x.id === ev.user_message_id);
        bubble.setText(m ? textOf(m.content) : '(message)');
      })
      .catch(() => bubble.setText('(message)'));
  }

  // --- rendering ---------------------------------------------------------------

  userBubble(text) {
    if (this.empty) {
      this.empty.remove();
      this.empty = null;
    }
    const body = h('div', { class: 'text' }, text);
    const state = h('div', { class: 'state', 'aria-live': 'polite' });
    const el = h('article', { class: 'msg user', 'aria-label': 'You' }, body, state);
    this.log.append(el);
    return {
      el,
      setText(t) {
        body.textContent = t;
      },
      setState(s, detail) {
        el.dataset.state = s;
        state.textContent =
          s === 'queued'
            ? detail || 'Queued: sent when the connection is back.'
            : s === 'sending'
              ? 'Sending…'
              : s === 'failed'
                ? `Not sent: ${detail}`
                : '';
        state.className = s === 'failed' ? 'state error' : 'state';
      },
    };
  }

  systemNote(text, isError) {
    this.log.append(h('p', { class: isError ? 'note error' : 'note', role: isError ? 'alert' : null }, text));
    this.scrollToEnd(true);
  }

  runView(id, after) {
    let r = this.runs.get(id);
    if (!r) {
      r = new RunView(id);
      this.runs.set(id, r);
      if (after) after.after(r.el);
      else this.log.append(r.el);
    }
    return r;
  }

  scrollToEnd(force) {
    if (!force && !this.autoscroll) return;
    if (force) this.autoscroll = true;
    if (this.scrollQueued) return;
    this.scrollQueued = true;
    requestAnimationFrame(() => {
      this.scrollQueued = false;
      this.log.scrollTop = this.log.scrollHeight;
    });
  }
}

/** The assistant's answer for one run: text blocks and tool calls as they stream. */
class RunView {
  constructor(id) {
    this.id = id;
    this.body = h('div', { class: 'blocks' });
    this.footer = h('div', { class: 'state' });
    this.el = h(
      'article',
      // aria-busy: screen readers read the answer once, when it is complete, not token by token.
      { class: 'msg assistant', 'aria-label': 'Assistant', 'aria-busy': 'true', dataset: { runId: id, status: 'running' } },
      this.body,
      this.footer,
    );
    /** @type {Map<string, Text>} */
    this.texts = new Map();
    /** @type {Map<string, {el: HTMLElement, label: HTMLElement, name: string, args: string, detail: HTMLElement}>} */
    this.tools = new Map();
    this.changedFiles = false;
  }

  textStart(blockId) {
    if (this.texts.has(blockId)) return;
    const node = document.createTextNode('');
    this.texts.set(blockId, node);
    this.body.append(h('div', { class: 'text', dataset: { block: blockId } }, node));
  }

  textDelta(blockId, delta) {
    if (!this.texts.has(blockId)) this.textStart(blockId);
    this.texts.get(blockId).appendData(delta);
  }

  textEnd() {}

  toolStart(id, name) {
    if (this.tools.has(id)) return;
    const label = h('span', { class: 'label' }, `${TOOL_VERBS[name] || name}…`);
    const detail = h('pre', { class: 'detail', hidden: true });
    const toggle = h(
      'button',
      { type: 'button', class: 'tool-toggle', 'aria-expanded': 'false' },
      h('span', { class: 'icon', 'aria-hidden': 'true' }, '⚙'),
      label,
    );
    toggle.addEventListener('click', () => {
      detail.hidden = !detail.hidden;
      toggle.setAttribute('aria-expanded', String(!detail.hidden));
    });
    const el = h('div', { class: 'tool', dataset: { tool: name, state: 'running' } }, toggle, detail);
    this.body.append(el);
    this.tools.set(id, { el, label, name, args: '', detail, path: '' });
  }

  toolDelta(id, delta) {
    const t = this.tools.get(id);
    if (!t) return;
    t.args += delta;
    if (!t.path) {
      // Show the file as soon as its path has streamed in.
      const m = /"path"\s*:\s*"((?:[^"\\]|\\.)*)"/.exec(t.args);
      if (m) {
        t.path = unescapeJson(m[1]);
        t.label.textContent = `${TOOL_VERBS[t.name] || t.name} ${t.path}…`;
        t.el.dataset.path = t.path;
      }
    }
  }

  toolEnd(id, name, input) {
    if (!this.tools.has(id)) this.toolStart(id, name);
    const t = this.tools.get(id);
    t.name = name;
    t.input = input;
    const target = input && (input.path || input.command);
    if (target) {
      t.path = input.path || '';
      if (t.path) t.el.dataset.path = t.path;
    }
    t.label.textContent = `${TOOL_VERBS[name] || name}${target ? ` ${target}` : ''}…`;
    t.detail.textContent = describeInput(input);
  }

  /** @returns {string} the tool's name */
  toolResult(id, output, isError) {
    const t = this.tools.get(id);
    if (!t) return '';
    t.el.dataset.state = isError ? 'error' : 'done';
    const target = t.path || (t.input && t.input.command) || '';
    const verbs = { write_file: 'Wrote', edit_file: 'Edited', delete_file: 'Deleted', read_file: 'Read', list_files: 'Listed files', run_command: 'Ran' };
    t.label.textContent = `${isError ? 'Failed: ' : ''}${verbs[t.name] || t.name}${target ? ` ${target}` : ''}`;
    if (output) t.detail.textContent += `${t.detail.textContent ? '\n\n' : ''}${output}`;
    return t.name;
  }

  error(message) {
    this.body.append(h('p', { class: 'note error', role: 'alert' }, message));
  }

  fromBlocks(blocks) {
    let n = 0;
    for (const b of blocks) {
      if (b.type === 'text') {
        const id = `h${n++}`;
        this.textStart(id);
        this.textDelta(id, b.text);
      } else if (b.type === 'tool_use') {
        this.toolStart(b.id, b.name);
        this.toolEnd(b.id, b.name, b.input);
      } else if (b.type === 'tool_result') {
        this.toolResult(b.tool_use_id, b.content, b.is_error);
      }
    }
  }

  finish(status, reason) {
    this.el.dataset.status = status;
    this.el.removeAttribute('aria-busy');
    for (const t of this.tools.values()) if (t.el.dataset.state === 'running') t.el.dataset.state = 'stopped';
    const words = { incomplete: 'Stopped before the end', error: 'Ended with an error', cancelled: 'Cancelled' };
    if (status !== 'complete') {
      this.footer.textContent = `${words[status] || status}${reason ? ` (${reason})` : ''}.`;
      this.footer.className = 'state warn';
    }
  }
}

function parseEvent(m) {
  if (!m.data || m.data[0] !== '{') return null;
  try {
    const ev = JSON.parse(m.data);
    return typeof ev.seq === 'number' ? ev : null;
  } catch {
    return null;
  }
}

function textOf(content) {
  if (typeof content === 'string') return content;
  return (content || [])
    .filter((b) => b.type === 'text')
    .map((b) => b.text)
    .join('\n');
}

function describeInput(input) {
  if (!input || typeof input !== 'object') return '';
  if (typeof input.content === 'string') {
    const c = input.content;
    return `${input.path || ''}\n${c.length > 4000 ? `${c.slice(0, 4000)}\n…` : c}`;
  }
  return JSON.stringify(input, null, 2);
}

function unescapeJson(s) {
  try {
    return JSON.parse(`"${s}"`);
  } catch {
    return s;
  }
}

function initials(name) {
  const s = (name || '?').replace(/@.*/, '');
  const parts = s.split(/[.\s_-]+/).filter(Boolean);
  return ((parts[0] || '?')[0] + (parts[1] ? parts[1][0] : '')).toUpperCase();
}

export { problem };
