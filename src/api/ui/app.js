// arbor's web view: the live supervision tree, jobs and logs of one agent.
//
// Plain script, no library and no build step. It reads the API the CLI
// uses (`/v1/tree`, `/v1/services`, `/v1/jobs`, `/v1/executions`, the logs
// routes) with the bearer token, and follows `/v1/events` (Server-Sent
// Events read through fetch, since EventSource cannot send a header): each
// event marks the view dirty and one refresh runs for a burst of events.
//
// The token comes from the URL fragment (`/ui#token=...`, which browsers
// never send to the server) or from the form, and is kept in
// sessionStorage: it is gone when the tab is closed.
'use strict';

const TOKEN_KEY = 'arbor.token';
/** Supervisors with more children than this start collapsed. */
const COLLAPSE_ABOVE = 50;
/** Events kept in memory (for the detail pane). */
const MAX_EVENTS = 2000;
/** Lines kept in a log view. */
const MAX_LOG_LINES = 2000;

const state = {
  token: null,
  tree: null,
  services: new Map(),
  parents: new Map(),
  selected: null,
  collapsed: new Set(),
  expanded: new Set(),
  events: [],
  filter: '',
  tab: 'tree',
  jobs: [],
  job: null,
  executions: [],
  execution: null,
  live: false,
  started: false,
};

// Lets a test tell a live update from a reload.
window.arborPage = { loadedAt: Date.now(), refreshes: 0 };

const $ = (sel) => document.querySelector(sel);

function esc(s) {
  return String(s ?? '').replace(/[&<>"']/g, (c) => ({
    '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;',
  })[c]);
}

// ---------------------------------------------------------------------------
// The API

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function headers(json) {
  const h = {};
  if (state.token) h.Authorization = 'Bearer ' + state.token;
  if (json) h['Content-Type'] = 'application/json';
  return h;
}

async function api(method, path, body) {
  const res = await fetch(path, {
    method,
    headers: headers(body !== undefined),
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: 'no-store',
  });
  const text = await res.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch (_) {
    json = null;
  }
  if (res.status === 401) {
    askToken('The agent refused the token: paste the current one.');
  }
  if (!res.ok) {
    const message = (json && json.error && json.error.message) || `${res.status} ${res.statusText}`;
    throw new ApiError(res.status, message);
  }
  return json;
}

/** Reads a streamed response line by line until it ends or `signal` aborts. */
async function readLines(res, onLine) {
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += value;
    let i;
    while ((i = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, i);
      buf = buf.slice(i + 1);
      onLine(line);
    }
  }
  if (buf) onLine(buf);
}

// ---------------------------------------------------------------------------
// The token

function takeToken() {
  const m = /(?:^#|&)token=([^&]*)/.exec(location.hash);
  if (m) {
    const t = decodeURIComponent(m[1]).trim();
    if (t) sessionStorage.setItem(TOKEN_KEY, t);
    // Out of the address bar and the history.
    history.replaceState(null, '', location.pathname + location.search);
  }
  state.token = sessionStorage.getItem(TOKEN_KEY);
}

function askToken(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  state.token = null;
  const err = $('#login-error');
  err.hidden = !message;
  err.textContent = message || '';
  $('#login').hidden = false;
  $('#login-token').focus();
}

$('#login-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const t = $('#login-token').value.trim();
  if (!t) return;
  sessionStorage.setItem(TOKEN_KEY, t);
  state.token = t;
  $('#login-token').value = '';
  $('#login').hidden = true;
  start();
});

// ---------------------------------------------------------------------------
// Refreshing, coalesced

function coalesced(run, delay) {
  let timer = null;
  let running = false;
  let again = false;
  const go = async () => {
    timer = null;
    running = true;
    again = false;
    try {
      await run();
    } catch (e) {
      if (!(e instanceof ApiError && e.status === 401)) console.warn(e);
    } finally {
      running = false;
      if (again) schedule();
    }
  };
  const schedule = (now) => {
    if (running) {
      again = true;
      return;
    }
    if (timer !== null) return;
    timer = setTimeout(go, now ? 0 : delay);
  };
  return schedule;
}

const refreshTree = coalesced(async () => {
  const [tree, services] = await Promise.all([api('GET', '/v1/tree'), api('GET', '/v1/services')]);
  state.tree = tree;
  state.services = new Map(services.map((s) => [s.name, s]));
  window.arborPage.refreshes += 1;
  renderTree();
  renderSummary();
  renderDetail();
}, 120);

const refreshJobs = coalesced(async () => {
  state.jobs = await api('GET', '/v1/jobs');
  if (state.job) {
    const list = await api('GET', '/v1/executions?job=' + encodeURIComponent(state.job));
    state.executions = list.slice().reverse();
  }
  renderJobs();
  if (state.execution) await loadExecution(state.execution, false);
}, 200);

// ---------------------------------------------------------------------------
// Events

async function followEvents() {
  let delay = 500;
  for (;;) {
    try {
      const res = await fetch('/v1/events', { headers: headers(false), cache: 'no-store' });
      if (res.status === 401) {
        setLive(false, 'token refused');
        askToken('The agent refused the token: paste the current one.');
        return;
      }
      if (!res.ok) throw new Error(`${res.status}`);
      setLive(true);
      delay = 500;
      // Catch up on what happened while not connected.
      refreshTree(true);
      refreshJobs(true);
      let block = [];
      await readLines(res, (line) => {
        if (line === '') {
          onEvent(block);
          block = [];
        } else {
          block.push(line);
        }
      });
    } catch (e) {
      console.warn('event stream', e);
    }
    setLive(false, 'reconnecting');
    await new Promise((r) => setTimeout(r, delay));
    delay = Math.min(delay * 2, 5000);
  }
}

function onEvent(lines) {
  let kind = null;
  let data = '';
  for (const line of lines) {
    if (line.startsWith(':')) continue;
    if (line.startsWith('event:')) kind = line.slice(6).trim();
    else if (line.startsWith('data:')) data += line.slice(5).replace(/^ /, '');
  }
  if (!data) return;
  let ev;
  try {
    ev = JSON.parse(data);
  } catch (_) {
    return;
  }
  ev.kind = kind || ev.event;
  ev.at = new Date();
  state.events.push(ev);
  if (state.events.length > MAX_EVENTS) state.events.splice(0, state.events.length - MAX_EVENTS);
  if (ev.kind.startsWith('execution_')) refreshJobs();
  else if (ev.kind.startsWith('node_') || ev.kind === 'placement_changed') refreshCluster();
  else refreshTree();
}

function setLive(live, text) {
  state.live = live;
  $('#live').dataset.live = String(live);
  $('#live-text').textContent = live ? 'live' : text || 'offline';
}

// ---------------------------------------------------------------------------
// The tree

function isCollapsed(node, path) {
  if (state.filter) return false;
  if (state.expanded.has(path)) return false;
  if (state.collapsed.has(path)) return true;
  return node.children.length > COLLAPSE_ABOVE;
}

function matches(node) {
  if (node.name.toLowerCase().includes(state.filter)) return true;
  return node.children.some(matches);
}

function exitText(exit) {
  if (!exit) return '';
  switch (exit.kind) {
    case 'normal':
      return exit.reason ? `stopped (${exit.reason})` : 'stopped';
    case 'exited': {
      const s = exit.status || {};
      let t = 'code' in s ? `exit ${s.code}` : 'signal' in s ? `signal ${s.signal}` : 'exited';
      if (exit.oom_killed) t += ' (out of memory)';
      return t;
    }
    case 'failed':
      return `failed: ${exit.reason}`;
    case 'killed':
      return 'killed';
    case 'start_failed':
      return `start failed: ${exit.reason}`;
    default:
      return exit.kind;
  }
}

function countdown(until) {
  const ms = Date.parse(until) - Date.now();
  if (!(ms > 0)) return 'restarting now';
  return `restart in ${(ms / 1000).toFixed(ms < 10000 ? 1 : 0)}s`;
}

function row(node, path, depth) {
  const kids = node.children.length;
  const folded = kids > 0 && isCollapsed(node, path);
  const svc = depth === 1 ? state.services.get(node.name) : null;
  const st = svc ? svc.status : node.state;
  const restarts = svc ? svc.restarts : node.restarts;
  const next = (svc && svc.next_restart) || node.next_restart;
  const ready = node.ready === true ? '<span class="ready yes" title="ready">● ready</span>'
    : node.ready === false ? '<span class="ready no" title="not ready">○ not ready</span>' : '';
  const note = node.status || (svc && svc.reason) || exitText(node.last_exit);
  const sel = state.selected === path ? ' selected' : '';
  return `<div class="row${sel}" role="treeitem" data-path="${esc(path)}" data-name="${esc(node.name)}" data-state="${esc(st)}" data-restarts="${restarts}" style="--depth:${depth}"${kids ? ` aria-expanded="${!folded}"` : ''}>`
    + (kids ? `<button class="twisty" data-toggle="${esc(path)}" aria-label="${folded ? 'expand' : 'collapse'}">${folded ? '▶' : '▼'}</button>` : '<span class="twisty"></span>')
    + `<span class="name">${esc(node.name)}</span>`
    + `<span class="kind">${esc(node.kind)}</span>`
    + `<span class="pill s-${esc(st)}">${esc(st.replace(/_/g, ' '))}</span>`
    + ready
    + `<span class="restarts${restarts ? ' some' : ''}" title="restarts">↻ ${restarts}</span>`
    + (folded ? `<span class="count">${kids} children</span>` : '')
    + (next && st !== 'running' ? `<span class="countdown" data-until="${esc(next)}">${countdown(next)}</span>` : '')
    + (note ? `<span class="note" title="${esc(note)}">${esc(note)}</span>` : '')
    + '</div>';
}

function renderTree() {
  const began = performance.now();
  const out = [];
  state.parents = new Map();
  const walk = (node, path, depth) => {
    if (state.filter && !matches(node)) return;
    out.push(row(node, path, depth));
    if (isCollapsed(node, path)) return;
    for (const c of node.children) {
      const p = path + '/' + c.name;
      state.parents.set(p, path);
      walk(c, p, depth + 1);
    }
  };
  if (state.tree) walk(state.tree, state.tree.name, 0);
  $('#tree').innerHTML = out.join('');
  $('#node-name').textContent = state.tree ? state.tree.name : '';
  window.arborPage.rows = out.length;
  window.arborPage.renderMs = performance.now() - began;
}

function renderSummary() {
  const all = [...state.services.values()];
  const count = (f) => all.filter(f).length;
  const bad = count((s) => s.status === 'failed' || s.status === 'crash_loop_back_off');
  const ok = count((s) => s.status === 'running');
  $('#summary').innerHTML = `<b>${all.length}</b> services · <b>${ok}</b> running`
    + (bad ? ` · <b class="error">${bad}</b> failing` : '')
    + ` · <b>${state.jobs.length}</b> jobs`;
}

function findNode(path) {
  if (!state.tree || !path) return null;
  const parts = path.split('/');
  if (parts[0] !== state.tree.name) return null;
  let node = state.tree;
  for (const name of parts.slice(1)) {
    node = node.children.find((c) => c.name === name);
    if (!node) return null;
  }
  return node;
}

$('#tree').addEventListener('click', (e) => {
  const toggle = e.target.closest('[data-toggle]');
  if (toggle) {
    const path = toggle.dataset.toggle;
    const node = findNode(path);
    if (node && isCollapsed(node, path)) {
      state.collapsed.delete(path);
      state.expanded.add(path);
    } else {
      state.expanded.delete(path);
      state.collapsed.add(path);
    }
    renderTree();
    return;
  }
  const r = e.target.closest('.row');
  if (!r) return;
  select(r.dataset.path);
});

function select(path) {
  if (state.selected === path) return;
  state.selected = path;
  stopLog();
  // Only the highlight moves: no need to draw a thousand rows again.
  for (const r of document.querySelectorAll('#tree .row.selected')) r.classList.remove('selected');
  for (const r of document.querySelectorAll('#tree .row')) {
    if (r.dataset.path === path) r.classList.add('selected');
  }
  renderDetail(true);
}

$('#filter').addEventListener('input', (e) => {
  state.filter = e.target.value.trim().toLowerCase();
  renderTree();
});

$('#expand-all').addEventListener('click', () => {
  state.collapsed.clear();
  const walk = (node, path) => {
    if (node.children.length) state.expanded.add(path);
    for (const c of node.children) walk(c, path + '/' + c.name);
  };
  if (state.tree) walk(state.tree, state.tree.name);
  renderTree();
});

$('#collapse-all').addEventListener('click', () => {
  state.expanded.clear();
  if (!state.tree) return;
  for (const c of state.tree.children) {
    if (c.children.length) state.collapsed.add(state.tree.name + '/' + c.name);
  }
  renderTree();
});

// ---------------------------------------------------------------------------
// The selected node

let log = null;

function stopLog() {
  if (log) log.abort.abort();
  log = null;
}

function eventsOf(path) {
  const parts = path.split('/');
  const name = parts[parts.length - 1];
  const depth = parts.length - 1;
  return state.events.filter((ev) => ev.child === name || ev.supervisor === name
    || (depth === 0 && ev.supervisor === name));
}

const EVENT_CLASS = {
  child_exited: 'bad', child_failed: 'bad', probe_failed: 'bad', child_start_failed: 'bad',
  supervisor_escalated: 'bad', crash_loop_back_off: 'warn', not_ready: 'warn',
  child_restarted: 'warn', child_isolated: 'warn', child_started: 'ok', ready: 'ok',
};

function eventText(ev) {
  const skip = new Set(['event', 'kind', 'at', 'supervisor']);
  return Object.entries(ev)
    .filter(([k, v]) => !skip.has(k) && v !== null && v !== undefined && v !== '')
    .map(([k, v]) => `${k}: ${typeof v === 'object' ? JSON.stringify(v) : v}`)
    .join(', ');
}

function renderEvents(path) {
  const list = eventsOf(path).slice(-50).reverse();
  if (!list.length) return '<p class="empty">No recent events.</p>';
  return '<ul class="events">' + list.map((ev) => `<li><time>${ev.at.toLocaleTimeString()}</time>`
    + `<span class="ek ${EVENT_CLASS[ev.kind] || ''}">${esc(ev.kind.replace(/_/g, ' '))}</span>`
    + `<span>${esc(eventText(ev))}</span></li>`).join('') + '</ul>';
}

function renderDetail(fresh) {
  const pane = $('#detail');
  const path = state.selected;
  const node = findNode(path);
  if (!node) {
    stopLog();
    pane.innerHTML = '<p class="empty">Select a node to see its details, recent events and logs.</p>';
    return;
  }
  const parts = path.split('/');
  const svc = parts.length >= 2 ? state.services.get(parts[1]) : null;
  const isService = svc && parts.length === 2;
  const replica = svc && parts.length === 3 && node.kind === 'container' ? node.name : null;
  const st = isService ? svc.status : node.state;
  const next = (isService && svc.next_restart) || node.next_restart;
  const facts = [
    ['kind', node.kind + (node.strategy ? ` (${node.strategy})` : '')],
    ['state', node.state],
    node.restart && ['restart', node.restart],
    ['restarts', isService ? svc.restarts : node.restarts],
    isService && ['replicas', `${svc.running} running, ${svc.ready} ready of ${svc.replicas}`],
    node.ready !== undefined && ['ready', node.ready ? 'yes' : 'no'],
    node.status && ['status', node.status],
    isService && svc.reason && ['reason', svc.reason],
    node.last_exit && ['last exit', exitText(node.last_exit)],
    next && ['next restart', `<span class="countdown" data-until="${esc(next)}">${countdown(next)}</span>`, true],
    node.children.length && ['children', node.children.length],
  ].filter(Boolean);
  const actions = isService ? `<div class="actions">
      <button class="primary" data-action="restart" data-service="${esc(svc.name)}">Restart</button>
      <button data-action="stop" data-service="${esc(svc.name)}" ${svc.status === 'stopped' ? 'disabled' : ''}>Stop</button>
      <button data-action="start" data-service="${esc(svc.name)}" ${svc.status === 'stopped' || svc.status === 'failed' ? '' : 'disabled'}>Start</button>
    </div>` : replica ? `<div class="actions"><button data-action="restart" data-service="${esc(svc.name)}">Restart ${esc(svc.name)}</button></div>` : '';
  const head = `<h2>${esc(node.name)} <span class="pill s-${esc(st)}">${esc(st.replace(/_/g, ' '))}</span></h2>`
    + `<div class="path">${esc(path)}</div>`
    + '<dl class="facts">' + facts.map(([k, v, html]) => `<dt>${esc(k)}</dt><dd>${html ? v : esc(v)}</dd>`).join('') + '</dl>'
    + actions;
  const wantsLog = svc && (isService || replica);
  if (fresh || !pane.querySelector('.detail-head')) {
    pane.innerHTML = `<div class="detail-head"></div><h3>Recent events</h3><div class="detail-events"></div>`
      + (wantsLog ? `<h3>Logs${replica ? '' : ' (all replicas)'}</h3><pre class="log" id="log"></pre>` : '');
    if (wantsLog) startLog(svc.name, replica);
  }
  pane.querySelector('.detail-head').innerHTML = head;
  pane.querySelector('.detail-events').innerHTML = renderEvents(path);
}

$('#detail').addEventListener('click', async (e) => {
  const b = e.target.closest('[data-action]');
  if (!b) return;
  const name = b.dataset.service;
  const action = b.dataset.action;
  b.disabled = true;
  try {
    await api('POST', `/v1/services/${encodeURIComponent(name)}/${action}`);
    toast(`${action === 'stop' ? 'Stopped' : action === 'start' ? 'Started' : 'Restarted'} ${name}`);
  } catch (err) {
    toast(`${action} ${name}: ${err.message}`, true);
  } finally {
    b.disabled = false;
    refreshTree(true);
  }
});

function startLog(service, replica) {
  stopLog();
  const abort = new AbortController();
  log = { abort };
  const pre = $('#log');
  let lines = 0;
  const q = new URLSearchParams({ follow: 'true', tail: '200' });
  if (replica) q.set('replica', replica);
  const url = `/v1/services/${encodeURIComponent(service)}/logs?${q}`;
  (async () => {
    try {
      const res = await fetch(url, { headers: headers(false), signal: abort.signal, cache: 'no-store' });
      if (!res.ok) {
        pre.textContent = `(logs unavailable: ${res.status})`;
        return;
      }
      await readLines(res, (line) => {
        if (!line) return;
        let l;
        try {
          l = JSON.parse(line);
        } catch (_) {
          return;
        }
        const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
        const span = document.createElement('span');
        const err = / \[STDERR\] /.test(l.text);
        const mark = / \[ARBOR\] /.test(l.text);
        span.className = err ? 'err' : mark ? 'mark' : '';
        if (!replica) {
          const r = document.createElement('span');
          r.className = 'rep';
          r.textContent = l.replica + ' | ';
          pre.appendChild(r);
        }
        span.textContent = l.text + '\n';
        pre.appendChild(span);
        lines += 1;
        while (lines > MAX_LOG_LINES && pre.firstChild) {
          pre.removeChild(pre.firstChild);
          if (!replica && pre.firstChild) pre.removeChild(pre.firstChild);
          lines -= 1;
        }
        if (atBottom) pre.scrollTop = pre.scrollHeight;
      });
    } catch (e) {
      if (e.name !== 'AbortError') pre.appendChild(document.createTextNode(`(log stream ended: ${e.message})\n`));
    }
  })();
}

// ---------------------------------------------------------------------------
// Jobs

function execState(rec) {
  const s = rec.state || {};
  return s.status || 'unknown';
}

/** The colour class of an execution's state: a completed run succeeded. */
function execClass(st) {
  return st === 'completed' ? 's-completed-ok' : `s-${st}`;
}

function execDetail(rec) {
  const s = rec.state || {};
  if (s.status === 'completed') return `exit ${s.exit_code}`;
  if (s.status === 'failed') {
    const r = s.reason;
    const why = typeof r === 'string' ? r : r && typeof r === 'object' ? (r.kind || Object.keys(r)[0] || '') + (r.message ? `: ${r.message}` : '') : '';
    return why + (s.exit_code !== undefined && s.exit_code !== null ? ` (exit ${s.exit_code})` : '');
  }
  return '';
}

function ago(t) {
  if (!t) return '';
  const ms = Date.parse(t) - Date.now();
  const abs = Math.abs(ms);
  const txt = abs < 60000 ? `${Math.round(abs / 1000)}s` : abs < 3600000 ? `${Math.round(abs / 60000)}m` : `${Math.round(abs / 3600000)}h`;
  return ms >= 0 ? `in ${txt}` : `${txt} ago`;
}

function took(rec) {
  if (!rec.started_at) return '';
  const end = rec.finished_at ? Date.parse(rec.finished_at) : Date.now();
  return `${((end - Date.parse(rec.started_at)) / 1000).toFixed(1)}s`;
}

function renderJobs() {
  const body = $('#jobs tbody');
  body.innerHTML = state.jobs.map((j) => {
    const latest = j.latest;
    const st = latest ? (latest.state && latest.state.status) || latest.status || '' : '';
    return `<tr data-job="${esc(j.name)}" class="${state.job === j.name ? 'selected' : ''}">`
      + `<td><b>${esc(j.name)}</b>${j.suspended ? ' <span class="kind">suspended</span>' : ''}</td>`
      + `<td><code>${esc(j.schedule || 'on demand')}</code></td>`
      + `<td>${esc(j.next_run ? ago(j.next_run) : '')}</td>`
      + `<td>${st ? `<span class="pill ${esc(execClass(st))}">${esc(st)}</span>` : ''}</td>`
      + `<td><button class="small" data-trigger="${esc(j.name)}">Trigger</button></td></tr>`;
  }).join('') || '<tr><td colspan="5" class="empty">No jobs.</td></tr>';
  const title = $('#exec-title');
  const table = $('#executions');
  title.hidden = table.hidden = !state.job;
  if (!state.job) return;
  title.textContent = `Executions of ${state.job}`;
  table.querySelector('tbody').innerHTML = state.executions.map((r) => {
    const st = execState(r);
    const running = ['pending', 'initializing', 'running'].includes(st);
    return `<tr data-execution="${esc(r.id)}" class="${state.execution === r.id ? 'selected' : ''}">`
      + `<td><code>${esc(r.id.slice(0, 8))}</code> #${r.attempt}</td>`
      + `<td><span class="pill ${esc(execClass(st))}">${esc(st)}</span> <span class="note">${esc(execDetail(r))}</span></td>`
      + `<td>${esc(ago(r.started_at || r.created_at))}</td>`
      + `<td>${esc(took(r))}</td>`
      + `<td>${running ? `<button class="small danger" data-cancel="${esc(r.id)}">Cancel</button>` : ''}</td></tr>`;
  }).join('') || '<tr><td colspan="5" class="empty">No executions yet.</td></tr>';
}

$('#view-jobs').addEventListener('click', async (e) => {
  const trig = e.target.closest('[data-trigger]');
  if (trig) {
    e.stopPropagation();
    const name = trig.dataset.trigger;
    try {
      const r = await api('POST', `/v1/jobs/${encodeURIComponent(name)}/trigger`);
      toast(`Triggered ${name}`);
      state.job = name;
      state.execution = r.execution_id;
    } catch (err) {
      toast(`trigger ${name}: ${err.message}`, true);
    }
    refreshJobs(true);
    return;
  }
  const cancel = e.target.closest('[data-cancel]');
  if (cancel) {
    e.stopPropagation();
    try {
      await api('POST', `/v1/executions/${cancel.dataset.cancel}/cancel`);
      toast('Cancelled');
    } catch (err) {
      toast(`cancel: ${err.message}`, true);
    }
    refreshJobs(true);
    return;
  }
  const job = e.target.closest('[data-job]');
  if (job) {
    state.job = job.dataset.job;
    state.execution = null;
    $('#exec-detail').innerHTML = '<p class="empty">Select an execution to see its logs.</p>';
    refreshJobs(true);
    return;
  }
  const ex = e.target.closest('[data-execution]');
  if (ex) {
    state.execution = ex.dataset.execution;
    renderJobs();
    await loadExecution(state.execution, true);
  }
});

async function loadExecution(id, fresh) {
  const pane = $('#exec-detail');
  try {
    const [rec, logs] = await Promise.all([
      api('GET', `/v1/executions/${id}`),
      api('GET', `/v1/executions/${id}/logs?stream=full&tail=500`),
    ]);
    if (state.execution !== id) return;
    const st = execState(rec);
    const pre = pane.querySelector('pre.log');
    const atBottom = !pre || pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    pane.innerHTML = `<h2>${esc(rec.job)} <span class="pill ${esc(execClass(st))}">${esc(st)}</span></h2>`
      + `<div class="path">${esc(rec.id)}</div>`
      + '<dl class="facts">'
      + `<dt>command</dt><dd><code>${esc((rec.command || []).join(' '))}</code></dd>`
      + `<dt>trigger</dt><dd>${esc(rec.trigger ? rec.trigger.kind : '')}</dd>`
      + `<dt>attempt</dt><dd>${esc(rec.attempt)}</dd>`
      + (execDetail(rec) ? `<dt>result</dt><dd>${esc(execDetail(rec))}</dd>` : '')
      + `<dt>started</dt><dd>${esc(rec.started_at ? new Date(rec.started_at).toLocaleString() : '')}</dd>`
      + `<dt>took</dt><dd>${esc(took(rec))}</dd>`
      + '</dl><h3>Logs</h3>'
      + `<pre class="log" id="exec-log">${esc(logs.text || '') || '(no output yet)'}</pre>`;
    const out = pane.querySelector('pre.log');
    if (fresh || atBottom) out.scrollTop = out.scrollHeight;
    if (['pending', 'initializing', 'running'].includes(st)) {
      setTimeout(() => {
        if (state.execution === id && state.tab === 'jobs') loadExecution(id, false);
      }, 1000);
    }
  } catch (err) {
    pane.innerHTML = `<p class="error">${esc(err.message)}</p>`;
  }
}

// ---------------------------------------------------------------------------
// Tabs, toasts, countdowns

for (const t of document.querySelectorAll('.tab')) {
  t.addEventListener('click', () => showTab(t.dataset.tab));
}

function showTab(tab) {
  state.tab = tab;
  for (const t of document.querySelectorAll('.tab')) t.classList.toggle('active', t.dataset.tab === tab);
  $('#view-tree').hidden = tab !== 'tree';
  $('#view-jobs').hidden = tab !== 'jobs';
  $('#view-cluster').hidden = tab !== 'cluster';
  if (tab === 'jobs') refreshJobs(true);
  if (tab === 'cluster') refreshCluster();
}

// ---------------------------------------------------------------------------
// The cluster (the tab shows only on an agent in a cluster)

const CLUSTER_EVENTS = new Set(['node_up', 'node_suspect', 'node_down', 'node_left', 'placement_changed']);
const STATE_CLASS = { up: 's-running', suspect: 's-degraded', down: 's-failed' };
let clusterBusy = false;

async function refreshCluster() {
  if (clusterBusy) return;
  clusterBusy = true;
  try {
    const view = await api('GET', '/v1/cluster');
    state.cluster = view;
    $('#tab-cluster').hidden = false;
    renderCluster();
  } catch (e) {
    if (e.status === 404) {
      state.cluster = null;
      $('#tab-cluster').hidden = true;
    }
  } finally {
    clusterBusy = false;
  }
}

function renderCluster() {
  const v = state.cluster;
  if (!v) return;
  $('#cluster-status').innerHTML = `<b>${esc(v.node)}</b> at ${esc(v.addr)} · `
    + `<b>${v.live}</b> of <b>${v.known}</b> known members live`
    + (v.fenced ? ' · <b class="error">fenced</b>: no majority, this node runs no cluster-placed replica' : '');
  $('#members tbody').innerHTML = v.members.map((m) => `<tr data-member="${esc(m.name)}">`
    + `<td>${esc(m.name)}${m.self ? ' <span class="muted">(this node)</span>' : ''}</td>`
    + `<td>${esc(m.addr)}</td>`
    + `<td><span class="pill ${STATE_CLASS[m.state] || ''}">${esc(m.state)}</span></td>`
    + `<td>${m.rtt_ms == null ? '' : esc(m.rtt_ms.toFixed(2) + ' ms')}</td>`
    + `<td>${m.last_seen_ms_ago == null ? '' : esc((m.last_seen_ms_ago / 1000).toFixed(1) + ' s ago')}</td>`
    + `<td>${m.self ? '' : esc(m.missed_total)}</td></tr>`).join('');
  const placed = Object.entries(v.placements || {});
  $('#placements tbody').innerHTML = placed.length ? placed.map(([svc, nodes]) => {
    const spread = Object.entries(nodes).map(([n, k]) => `${n} ×${k}`).join(', ') || 'nowhere';
    return `<tr data-placement="${esc(svc)}"><td>${esc(svc)}</td><td>${esc(spread)}</td></tr>`;
  }).join('') : '<tr><td colspan="2" class="muted">No service of this spec is placed by the cluster '
    + '(<code>placement: {scope: cluster}</code>).</td></tr>';
  const list = state.events.filter((ev) => CLUSTER_EVENTS.has(ev.kind)).slice(-50).reverse();
  $('#cluster-events').innerHTML = '<h3>Cluster events</h3>' + (list.length
    ? '<ul class="events">' + list.map((ev) => `<li><time>${ev.at.toLocaleTimeString()}</time>`
      + `<span class="ek ${ev.kind === 'node_up' ? 'ok' : ev.kind === 'node_down' ? 'bad' : 'warn'}">${esc(ev.kind.replace(/_/g, ' '))}</span>`
      + `<span>${esc(eventText(ev))}</span></li>`).join('') + '</ul>'
    : '<p class="empty">No cluster events yet.</p>');
}

// Ages and round trips move without events.
setInterval(() => {
  if (state.tab === 'cluster' && state.cluster) refreshCluster();
}, 1000);

function toast(text, bad) {
  const t = document.createElement('div');
  t.className = 'toast' + (bad ? ' bad' : '');
  t.textContent = text;
  $('#toasts').appendChild(t);
  setTimeout(() => t.remove(), bad ? 8000 : 3500);
}

setInterval(() => {
  for (const el of document.querySelectorAll('.countdown[data-until]')) {
    el.textContent = countdown(el.dataset.until);
  }
}, 250);

// ---------------------------------------------------------------------------
// Start

async function start() {
  try {
    await api('GET', '/v1/tree');
  } catch (e) {
    if (e.status === 401) return;
    setLive(false, e.message);
  }
  if (state.started) return;
  state.started = true;
  // What happened before the page was opened, then what happens next.
  try {
    const recent = await api('GET', '/v1/events/recent?limit=500');
    for (const ev of recent) {
      ev.kind = ev.event;
      ev.at = new Date(ev.at);
      state.events.push(ev);
    }
  } catch (e) {
    console.warn('recent events', e);
  }
  refreshTree(true);
  refreshJobs(true);
  refreshCluster();
  followEvents();
}

takeToken();
start();
