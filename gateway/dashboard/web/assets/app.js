// telegate service dashboard. Plain JavaScript, no libraries, no inline
// scripts (the Content-Security-Policy forbids them). Every text from the
// API is inserted with textContent, never as HTML.
'use strict';

const state = { session: null };

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? '' : v);
  }
  for (const k of kids.flat()) {
    if (k === null || k === undefined || k === false) continue;
    e.append(k instanceof Node ? k : document.createTextNode(String(k)));
  }
  return e;
}
const svgNS = 'http://www.w3.org/2000/svg';
function sv(tag, attrs, ...kids) {
  const e = document.createElementNS(svgNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'text') e.textContent = v; else e.setAttribute(k, v);
  }
  for (const k of kids) if (k) e.append(k);
  return e;
}

async function api(path, opts) {
  opts = opts || {};
  const headers = { 'Accept': 'application/json' };
  if (opts.body !== undefined) headers['Content-Type'] = 'application/json';
  if (opts.method && opts.method !== 'GET' && state.session) headers['X-CSRF-Token'] = state.session.csrf_token;
  const r = await fetch(path, { method: opts.method || 'GET', headers, credentials: 'same-origin',
    body: opts.body !== undefined ? JSON.stringify(opts.body) : undefined });
  if (r.status === 401 && !opts.noRedirect) { location.href = '/ui/login?next=' + encodeURIComponent(location.pathname + location.search); throw new Error('login required'); }
  if (r.status === 204) return null;
  let data = null;
  try { data = await r.json(); } catch (e) { data = null; }
  if (!r.ok) { const err = new Error((data && data.error) || ('HTTP ' + r.status)); err.status = r.status; throw err; }
  return data;
}

function ago(t) {
  if (!t) return 'never';
  const d = new Date(t);
  if (isNaN(d) || d.getFullYear() < 2000) return 'never';
  const s = Math.round((Date.now() - d.getTime()) / 1000);
  if (s < 5) return 'just now';
  if (s < 60) return s + ' s ago';
  if (s < 3600) return Math.floor(s / 60) + ' min ago';
  if (s < 86400) return Math.floor(s / 3600) + ' h ago';
  return Math.floor(s / 86400) + ' d ago';
}
function fmtTime(t) {
  if (!t) return '—';
  const d = new Date(t);
  if (isNaN(d) || d.getFullYear() < 2000) return '—';
  return d.toLocaleString(undefined, { year: 'numeric', month: 'short', day: '2-digit', hour: '2-digit', minute: '2-digit', second: '2-digit' });
}
function fmtNum(v, unit) {
  if (v === null || v === undefined) return '—';
  let s;
  if (unit === '' && (v === 0 || v === 1)) s = String(v);
  else if (Math.abs(v) >= 1000) s = v.toLocaleString(undefined, { maximumFractionDigits: 0 });
  else s = (Math.round(v * 10) / 10).toLocaleString(undefined, { maximumFractionDigits: 1 });
  return s;
}
const unitLabel = { 'celsius': '°C', 'percent': '%', 'degrees': '°' };
function unitOf(u) { return unitLabel[u] !== undefined ? unitLabel[u] : (u || ''); }
function shortPath(p) { return p.replace(/^Vehicle\./, ''); }
function badge(kind, text) { return el('span', { class: 'badge ' + kind, text: text || kind }); }
// Command states (dashboard sends and the services' dispatcher) → badge kind.
const cmdBadge = { applied: 'ok', sent: 'pending', pending: 'pending', superseded: 'warning', expired: 'warning' };

async function loadSession() {
  state.session = await api('/api/service/v1/session');
  const who = document.getElementById('who');
  if (who) who.textContent = state.session.user + ' · ' + state.session.role;
}

function setupChrome(page) {
  const nav = document.getElementById('nav-' + page);
  if (nav) nav.classList.add('active');
  const lo = document.getElementById('logout');
  if (lo) lo.addEventListener('click', async () => {
    try { await api('/api/service/v1/logout', { method: 'POST', body: {} }); } catch (e) { /* ignore */ }
    location.href = '/ui/login';
  });
}

// ---------- login ----------
function pageLogin(main) {
  const err = el('div', { class: 'error hidden', id: 'login-error' });
  const user = el('input', { id: 'username', name: 'username', autocomplete: 'username', required: true, autofocus: true });
  const pass = el('input', { id: 'password', name: 'password', type: 'password', autocomplete: 'current-password', required: true });
  const form = el('form', { class: 'card login', id: 'login-form' },
    el('h1', { text: 'Sign in' }),
    el('p', { class: 'sub', text: 'Service-team access to fleet diagnostics.' }),
    err,
    el('label', { class: 'field' }, 'User name', user),
    el('label', { class: 'field' }, 'Password', pass),
    el('button', { class: 'btn', type: 'submit', id: 'login-submit', text: 'Sign in' }));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    err.classList.add('hidden');
    try {
      await api('/api/service/v1/login', { method: 'POST', body: { username: user.value.trim(), password: pass.value }, noRedirect: true });
      const next = new URLSearchParams(location.search).get('next');
      location.href = next && next.startsWith('/ui/') ? next : '/ui/';
    } catch (e) {
      err.textContent = e.message; err.classList.remove('hidden');
    }
  });
  main.append(el('div', { class: 'login-wrap' }, form));
}

// ---------- fleet ----------
function pageFleet(main) {
  const params = new URLSearchParams(location.search);
  const f = { q: params.get('q') || '', model: params.get('model') || '', dtc: params.get('dtc') || '',
    status: params.get('status') || '', health: params.get('health') || '', sort: params.get('sort') || 'vin', page: +(params.get('page') || 1) };
  const stats = el('div', { class: 'stats' });
  const q = el('input', { class: 'wide', id: 'f-q', placeholder: 'VIN or model…', value: f.q, type: 'search' });
  const model = el('select', { id: 'f-model' }, el('option', { value: '', text: 'All models' }));
  const dtc = el('input', { id: 'f-dtc', placeholder: 'e.g. P0301', value: f.dtc, maxlength: '5' });
  const status = el('select', { id: 'f-status' }, ['', 'connected', 'disconnected'].map(v => el('option', { value: v, text: v || 'Any status' })));
  const health = el('select', { id: 'f-health' }, ['', 'critical', 'warning', 'ok'].map(v => el('option', { value: v, text: v || 'Any health' })));
  const sort = el('select', { id: 'f-sort' }, [['vin', 'VIN'], ['health', 'Health (worst first)'], ['last_seen', 'Last seen']].map(([v, t]) => el('option', { value: v, text: t })));
  status.value = f.status; health.value = f.health; sort.value = f.sort;
  const tbody = el('tbody', { id: 'fleet-body' });
  const info = el('span', { class: 'muted', id: 'fleet-info' });
  const prev = el('button', { class: 'btn btn-light', type: 'button', text: '‹ Previous' });
  const next = el('button', { class: 'btn btn-light', type: 'button', text: 'Next ›' });
  const notice = el('div', { class: 'notice hidden' });
  main.append(
    el('h1', { text: 'Fleet overview' }),
    el('p', { class: 'sub', text: 'Connectivity, last contact and health of every registered vehicle. Updates every 5 seconds.' }),
    notice, stats,
    el('div', { class: 'filters' },
      el('label', { class: 'field' }, 'Search', q), el('label', { class: 'field' }, 'Model', model),
      el('label', { class: 'field' }, 'DTC', dtc), el('label', { class: 'field' }, 'Status', status),
      el('label', { class: 'field' }, 'Health', health), el('label', { class: 'field' }, 'Sort', sort)),
    el('div', { class: 'card table-card' },
      el('table', { id: 'fleet-table' },
        el('thead', {}, el('tr', {}, ['VIN', 'Model', 'Status', 'Last seen', 'Health', 'Open DTCs', 'Speed', 'SoC', 'Odometer'].map(h => el('th', { text: h })))),
        tbody),
      el('div', { class: 'pager' }, info, prev, next)));
  let timer = null, seq = 0;
  async function load() {
    const my = ++seq;
    const p = new URLSearchParams();
    for (const k of ['q', 'model', 'dtc', 'status', 'health', 'sort']) if (f[k]) p.set(k, f[k]);
    p.set('page', f.page); p.set('page_size', 25);
    history.replaceState(null, '', '/ui/?' + p.toString());
    let data;
    try { data = await api('/api/service/v1/fleet?' + p.toString()); } catch (e) { notice.textContent = e.message; notice.classList.remove('hidden'); return; }
    if (my !== seq) return;
    if (model.options.length === 1) for (const m of data.models) model.append(el('option', { value: m, text: m }));
    model.value = f.model;
    notice.classList.toggle('hidden', data.state_ready);
    notice.textContent = 'Loading fleet state from InfluxDB and NATS…';
    const c = data.counts;
    stats.replaceChildren(
      el('div', { class: 'card stat' }, el('div', { class: 'label', text: 'Vehicles' }), el('div', { class: 'value', id: 'stat-vehicles', text: c.vehicles })),
      el('div', { class: 'card stat ok' }, el('div', { class: 'label', text: 'Connected' }), el('div', { class: 'value', id: 'stat-connected', text: c.connected })),
      el('div', { class: 'card stat warn' }, el('div', { class: 'label', text: 'Warning' }), el('div', { class: 'value', text: c.warning })),
      el('div', { class: 'card stat crit' }, el('div', { class: 'label', text: 'Critical' }), el('div', { class: 'value', text: c.critical })));
    tbody.replaceChildren(...data.items.map(v => el('tr', { 'data-vin': v.vin },
      el('td', {}, el('a', { class: 'mono', href: '/ui/vehicles/' + encodeURIComponent(v.vin), text: v.vin })),
      el('td', { text: v.model }),
      el('td', {}, el('span', { class: 'dot' + (v.connected ? ' on' : '') }), v.connected ? 'Connected' : 'Offline'),
      el('td', { class: 'muted', title: fmtTime(v.last_seen), text: ago(v.last_seen) }),
      el('td', {}, badge(v.health)),
      el('td', {}, v.dtcs.length ? v.dtcs.map(d => el('span', { class: 'chip', text: d })) : el('span', { class: 'muted', text: '—' })),
      el('td', { class: 'num', text: v.speed_kmh !== undefined ? fmtNum(v.speed_kmh) + ' km/h' : '—' }),
      el('td', { class: 'num', text: v.soc_pct !== undefined ? fmtNum(v.soc_pct) + ' %' : '—' }),
      el('td', { class: 'num', text: v.odometer_km ? fmtNum(v.odometer_km) + ' km' : '—' }))));
    if (!data.items.length) tbody.append(el('tr', {}, el('td', { colspan: 9, class: 'empty', text: 'No vehicle matches these filters.' })));
    const pages = Math.max(1, Math.ceil(data.total / data.page_size));
    info.textContent = data.total + ' vehicles · page ' + data.page + ' of ' + pages;
    prev.disabled = data.page <= 1; next.disabled = data.page >= pages;
  }
  function changed() { f.page = 1; load(); }
  let deb = null;
  q.addEventListener('input', () => { clearTimeout(deb); deb = setTimeout(() => { f.q = q.value.trim(); changed(); }, 250); });
  dtc.addEventListener('input', () => { clearTimeout(deb); deb = setTimeout(() => { f.dtc = dtc.value.trim().toUpperCase(); changed(); }, 250); });
  model.addEventListener('change', () => { f.model = model.value; changed(); });
  status.addEventListener('change', () => { f.status = status.value; changed(); });
  health.addEventListener('change', () => { f.health = health.value; changed(); });
  sort.addEventListener('change', () => { f.sort = sort.value; changed(); });
  prev.addEventListener('click', () => { f.page--; load(); });
  next.addEventListener('click', () => { f.page++; load(); });
  load();
  timer = setInterval(load, 5000);
}

// ---------- alerts ----------
function pageAlerts(main) {
  const sev = el('select', { id: 'a-sev' }, ['', 'critical', 'warning', 'info'].map(v => el('option', { value: v, text: v || 'Any severity' })));
  const code = el('input', { id: 'a-code', placeholder: 'Code prefix, e.g. P03', maxlength: '5' });
  const tbody = el('tbody', { id: 'alerts-body' });
  const info = el('span', { class: 'muted' });
  main.append(
    el('h1', { text: 'Active DTC alerts' }),
    el('p', { class: 'sub', text: 'Diagnostic trouble codes currently stored in vehicles, most severe first. Updates every 5 seconds.' }),
    el('div', { class: 'filters' }, el('label', { class: 'field' }, 'Severity', sev), el('label', { class: 'field' }, 'Code', code), info),
    el('div', { class: 'card table-card' }, el('table', { id: 'alerts-table' },
      el('thead', {}, el('tr', {}, ['Severity', 'Code', 'Description', 'Status', 'Vehicle', 'Model', 'First seen', 'Last seen'].map(h => el('th', { text: h })))),
      tbody)));
  async function load() {
    const p = new URLSearchParams({ limit: 200 });
    if (sev.value) p.set('severity', sev.value);
    if (code.value.trim()) p.set('code', code.value.trim().toUpperCase());
    let data;
    try { data = await api('/api/service/v1/dtcs?' + p); } catch (e) { info.textContent = e.message; return; }
    info.textContent = data.total + ' active alerts' + (data.total > data.items.length ? ' (showing ' + data.items.length + ')' : '');
    tbody.replaceChildren(...data.items.map(a => el('tr', { 'data-vin': a.vin, 'data-code': a.code },
      el('td', {}, badge(a.severity)),
      el('td', { class: 'mono', text: a.code }),
      el('td', { text: a.description }),
      el('td', {}, badge(a.status)),
      el('td', {}, el('a', { class: 'mono', href: '/ui/vehicles/' + encodeURIComponent(a.vin), text: a.vin })),
      el('td', { text: a.model }),
      el('td', { class: 'muted', text: fmtTime(a.first_seen) }),
      el('td', { class: 'muted', title: fmtTime(a.last_seen), text: ago(a.last_seen) }))));
    if (!data.items.length) tbody.append(el('tr', {}, el('td', { colspan: 8, class: 'empty', text: 'No active DTCs. The fleet is healthy.' })));
  }
  sev.addEventListener('change', load);
  code.addEventListener('input', () => { clearTimeout(code._t); code._t = setTimeout(load, 250); });
  load();
  setInterval(load, 5000);
}

// ---------- vehicle ----------
const keySignals = ['Vehicle.Speed', 'Vehicle.Powertrain.TractionBattery.StateOfCharge.Current', 'Vehicle.Powertrain.TractionBattery.CurrentPower',
  'Vehicle.Powertrain.TractionBattery.Temperature.Average', 'Vehicle.Cabin.HVAC.AmbientAirTemperature', 'Vehicle.Exterior.AirTemperature',
  'Vehicle.LowVoltageBattery.CurrentVoltage', 'Vehicle.Powertrain.Range', 'Vehicle.TraveledDistance',
  'Vehicle.Chassis.Axle.Row1.Wheel.Left.Tire.Pressure', 'Vehicle.Powertrain.CombustionEngine.ECT', 'Vehicle.Powertrain.CombustionEngine.Speed'];
const palette = ['#2563eb', '#dc2626', '#16a34a', '#9333ea', '#d97706', '#0891b2'];

function pageVehicle(main, vin) {
  const head = el('div', { class: 'vhead' });
  const liveBody = el('tbody', { id: 'live-body' });
  const liveStatus = el('span', { class: 'muted', id: 'live-status' }, el('span', { class: 'pulse off' }), 'connecting…');
  const dtcBox = el('div', { id: 'dtc-list' });
  const cmdBox = el('div', { class: 'card', id: 'commands' });
  const chartsBox = el('div', { id: 'charts' });
  const chargingBody = el('tbody', { id: 'charging-body' });
  const dtcHistBody = el('tbody', { id: 'dtc-history-body' });
  main.append(
    el('p', { class: 'sub' }, el('a', { href: '/ui/', text: '← Fleet' })),
    head,
    el('div', { class: 'grid2' },
      el('div', { class: 'card' },
        el('h2', {}, 'Live signals ', liveStatus),
        el('div', { class: 'scroll' }, el('table', { id: 'live-table' },
          el('thead', {}, el('tr', {}, el('th', { text: 'Signal' }), el('th', { class: 'num', text: 'Value' }), el('th', { text: 'Updated' }))), liveBody))),
      el('div', { class: 'stack' },
        el('div', { class: 'card' }, el('h2', { text: 'Open DTCs' }), dtcBox),
        cmdBox)),
    el('div', { class: 'card', id: 'history' }, el('h2', { text: 'Signal history' }), chartsBox),
    el('div', { class: 'grid2' },
      el('div', { class: 'card table-card' }, el('h2', { class: 'pad', text: '' }),
        el('table', { id: 'charging-table' }, el('caption', { class: 'cap', text: 'Recent charging sessions' }),
          el('thead', {}, el('tr', {}, ['Station', 'State', 'Started', 'Energy', 'SoC', 'Max power'].map(h => el('th', { text: h })))), chargingBody)),
      el('div', { class: 'card table-card' }, el('h2', { class: 'pad', text: '' }),
        el('table', { id: 'dtc-history-table' }, el('caption', { class: 'cap', text: 'DTC history (30 days)' }),
          el('thead', {}, el('tr', {}, ['Code', 'Description', 'First seen', 'Last seen', 'Now'].map(h => el('th', { text: h })))), dtcHistBody))));
  for (const c of main.querySelectorAll('h2.pad')) c.remove();

  const rows = new Map();
  function setValue(path, unit, value, time) {
    let r = rows.get(path);
    if (!r) {
      const val = el('span', { class: 'live-val' });
      const when = el('td', { class: 'muted' });
      const tr = el('tr', { 'data-path': path }, el('td', { title: path, text: shortPath(path) }), el('td', { class: 'num' }, val, ' ', el('span', { class: 'muted', text: unitOf(unit) })), when);
      r = { tr, val, when, time: null };
      rows.set(path, r);
      const sorted = [...rows.keys()].sort();
      liveBody.replaceChildren(...sorted.map(k => rows.get(k).tr));
    }
    const txt = fmtNum(value, unit);
    if (r.val.textContent !== txt) {
      r.val.textContent = txt;
      r.val.classList.add('flash');
      setTimeout(() => r.val.classList.remove('flash'), 500);
    }
    r.time = time;
    r.when.textContent = ago(time);
  }
  setInterval(() => { for (const r of rows.values()) r.when.textContent = ago(r.time); }, 1000);

  function renderHead(d) {
    head.replaceChildren(
      el('div', {}, el('h1', { class: 'mono', id: 'vin-title', text: d.vin }), el('div', { class: 'muted', text: d.model })),
      badge(d.health),
      el('div', { class: 'meta' },
        el('span', {}, el('span', { class: 'dot' + (d.connected ? ' on' : '') }), el('b', { id: 'conn-state', text: d.connected ? 'Connected' : 'Offline' })),
        el('span', {}, 'Last seen ', el('b', { title: fmtTime(d.last_seen), text: ago(d.last_seen) })),
        el('span', {}, 'MIL ', el('b', { text: d.mil ? 'on' : 'off' })),
        el('span', {}, 'Odometer ', el('b', { text: d.odometer_km ? fmtNum(d.odometer_km) + ' km' : '—' }))));
  }
  function renderDTCs(list) {
    if (!list || !list.length) { dtcBox.replaceChildren(el('div', { class: 'empty', text: 'No open DTCs.' })); return; }
    dtcBox.replaceChildren(...list.map(d => el('div', { class: 'dtc-item', 'data-code': d.code },
      el('div', { class: 'dtc-code', text: d.code }),
      el('div', { class: 'grow' },
        el('div', { class: 'dtc-desc', text: d.description }),
        el('div', { class: 'dtc-when', text: 'first seen ' + fmtTime(d.first_seen) + ' · last seen ' + ago(d.last_seen) })),
      el('div', {}, badge(d.severity), ' ', badge(d.status)))));
  }
  function applyState(d) {
    renderHead(d); renderDTCs(d.open_dtcs);
    for (const v of d.values || []) if (!rows.has(v.path) || new Date(v.time) > new Date(rows.get(v.path).time)) setValue(v.path, v.unit, v.value, v.time);
  }

  // live stream
  function connect() {
    const es = new EventSource('/api/service/v1/vehicles/' + encodeURIComponent(vin) + '/live');
    es.addEventListener('open', () => liveStatus.replaceChildren(el('span', { class: 'pulse' }), 'live'));
    es.addEventListener('error', () => liveStatus.replaceChildren(el('span', { class: 'pulse off' }), 'reconnecting…'));
    es.addEventListener('state', (ev) => applyState(JSON.parse(ev.data)));
    es.addEventListener('signals', (ev) => {
      const m = JSON.parse(ev.data);
      for (const s of m.signals) setValue(s.path, s.unit, s.value, s.time);
    });
  }
  api('/api/service/v1/vehicles/' + encodeURIComponent(vin)).then(applyState).catch(e => head.replaceChildren(el('div', { class: 'error', text: e.message })));
  connect();

  // commands
  async function loadCommands() {
    let data;
    try { data = await api('/api/service/v1/vehicles/' + encodeURIComponent(vin) + '/commands?limit=10'); } catch (e) { return; }
    const body = cmdBox.querySelector('#cmd-body');
    const items = data.items.map(c => el('tr', {},
      el('td', { text: c.name || '—' }), el('td', { class: 'muted', text: c.user || c.source }),
      el('td', { class: 'muted', text: fmtTime(c.sent_at || c.acked_at) }),
      el('td', {}, badge(cmdBadge[c.status] || 'critical', c.status), c.reason ? el('div', { class: 'muted', text: c.reason }) : null)));
    body.replaceChildren(...items);
    if (!items.length) body.append(el('tr', {}, el('td', { colspan: 4, class: 'empty', text: 'No commands sent yet.' })));
  }
  async function setupCommands() {
    const specs = await api('/api/service/v1/commands');
    const canSend = state.session && state.session.role === 'operator';
    const sel = el('select', { id: 'cmd-name' }, specs.map(s => el('option', { value: s.name, text: s.title })));
    const code = el('input', { id: 'cmd-code', placeholder: 'DTC, e.g. P0301', maxlength: '5' });
    const codeField = el('label', { class: 'field' }, 'Code', code);
    const msg = el('div', { class: 'hidden', id: 'cmd-msg' });
    const btn = el('button', { class: 'btn', type: 'submit', id: 'cmd-send', text: 'Send' });
    const desc = el('div', { class: 'muted' });
    function sync() {
      const s = specs.find(x => x.name === sel.value);
      codeField.classList.toggle('hidden', !s.params.includes('code'));
      desc.textContent = s.description;
    }
    sel.addEventListener('change', sync);
    const form = el('form', { class: 'cmd-form' }, el('label', { class: 'field' }, 'Command', sel), codeField, btn);
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const s = specs.find(x => x.name === sel.value);
      const params = {};
      if (s.params.includes('code')) params.code = code.value.trim().toUpperCase();
      btn.disabled = true;
      try {
        const r = await api('/api/service/v1/vehicles/' + encodeURIComponent(vin) + '/commands', { method: 'POST', body: { name: s.name, params } });
        msg.className = 'ok-msg'; msg.textContent = 'Sent ' + s.title + ' (id ' + r.cmd_id + '); waiting for the vehicle’s acknowledgement.';
      } catch (e) { msg.className = 'error'; msg.textContent = e.message; }
      btn.disabled = false;
      loadCommands();
    });
    cmdBox.replaceChildren(el('h2', { text: 'Commands' }),
      ...(canSend ? [form, desc, msg] : [el('p', { class: 'muted', text: 'Your role (viewer) can see the command history but not send commands.' })]),
      el('table', {}, el('thead', {}, el('tr', {}, ['Command', 'By', 'Sent', 'Status'].map(h => el('th', { text: h })))), el('tbody', { id: 'cmd-body' })));
    if (canSend) sync();
    loadCommands();
    setInterval(loadCommands, 5000);
  }
  setupCommands().catch(() => {});

  // history charts
  const chosen = new Set(['Vehicle.Speed', 'Vehicle.Powertrain.TractionBattery.StateOfCharge.Current']);
  const range = el('select', { id: 'h-range' }, [['15m', 'Last 15 minutes'], ['1h', 'Last hour'], ['6h', 'Last 6 hours'], ['24h', 'Last 24 hours'], ['7d', 'Last 7 days'], ['30d', 'Last 30 days']].map(([v, t]) => el('option', { value: v, text: t })));
  range.value = '15m';
  const agg = el('select', { id: 'h-agg' }, ['mean', 'min', 'max', 'last'].map(v => el('option', { value: v, text: v })));
  const refresh = el('button', { class: 'btn btn-light', type: 'button', text: 'Refresh' });
  const pick = el('div', { class: 'sigpick', id: 'h-signals' });
  const charts = el('div', { id: 'chart-list' });
  const hmsg = el('div', { class: 'hidden' });
  for (const p of keySignals) {
    const cb = el('input', { type: 'checkbox', value: p });
    cb.checked = chosen.has(p);
    const lab = el('label', { class: cb.checked ? 'on' : '', 'data-path': p }, cb, shortPath(p));
    cb.addEventListener('change', () => {
      if (cb.checked && chosen.size >= 6) { cb.checked = false; return; }
      cb.checked ? chosen.add(p) : chosen.delete(p);
      lab.classList.toggle('on', cb.checked);
      loadHistory();
    });
    pick.append(lab);
  }
  chartsBox.append(el('div', { class: 'chart-controls' }, el('label', { class: 'field' }, 'Range', range), el('label', { class: 'field' }, 'Aggregation', agg), refresh), pick, hmsg, charts);
  range.addEventListener('change', loadHistory);
  agg.addEventListener('change', loadHistory);
  refresh.addEventListener('click', loadHistory);
  async function loadHistory() {
    if (!chosen.size) { charts.replaceChildren(el('div', { class: 'empty', text: 'Choose one or more signals.' })); return; }
    const p = new URLSearchParams({ signals: [...chosen].join(','), range: range.value, agg: agg.value });
    let data;
    try { data = await api('/api/service/v1/vehicles/' + encodeURIComponent(vin) + '/history?' + p); hmsg.className = 'hidden'; }
    catch (e) { hmsg.className = 'error'; hmsg.textContent = e.message; return; }
    charts.replaceChildren(...data.series.map((s, i) => drawChart(s, palette[i % palette.length], new Date(data.start), new Date(data.end), data.window)));
  }
  loadHistory();
  setInterval(() => { if (range.value === '15m' || range.value === '1h') loadHistory(); }, 15000);

  // charging + DTC history
  api('/api/service/v1/vehicles/' + encodeURIComponent(vin) + '/charging?limit=10').then(d => {
    chargingBody.replaceChildren(...d.items.map(c => el('tr', {},
      el('td', { class: 'mono', text: c.station }), el('td', {}, badge(c.state === 'active' ? 'info' : 'ok', c.state)),
      el('td', { class: 'muted', text: fmtTime(c.started || c.last_update) }),
      el('td', { class: 'num', text: fmtNum(c.energy_wh / 1000) + ' kWh' }),
      el('td', { class: 'num', text: fmtNum(c.soc_start_pct) + ' → ' + fmtNum(c.soc_pct) + ' %' }),
      el('td', { class: 'num', text: fmtNum(c.max_power_w / 1000) + ' kW' }))));
    if (!d.items.length) chargingBody.append(el('tr', {}, el('td', { colspan: 6, class: 'empty', text: 'No charging sessions in the last 30 days.' })));
  }).catch(() => {});
  async function loadDTCHistory() {
    let d;
    try { d = await api('/api/service/v1/vehicles/' + encodeURIComponent(vin) + '/dtcs'); } catch (e) { return; }
    dtcHistBody.replaceChildren(...d.history.map(h => el('tr', {},
      el('td', { class: 'mono', text: h.code }), el('td', { text: h.description }),
      el('td', { class: 'muted', text: fmtTime(h.first_seen) }), el('td', { class: 'muted', text: fmtTime(h.last_seen) }),
      el('td', {}, h.open ? badge(h.severity, 'open') : badge('pending', 'cleared')))));
    if (!d.history.length) dtcHistBody.append(el('tr', {}, el('td', { colspan: 5, class: 'empty', text: 'No DTC reported in the last 30 days.' })));
  }
  loadDTCHistory();
  setInterval(loadDTCHistory, 15000);
}

// drawChart renders one series as an SVG line chart with axes, grid and a
// hover read-out.
function drawChart(series, color, start, end, window) {
  const W = 1000, H = 200, L = 56, R = 14, T = 12, B = 26;
  const pts = series.points.map(p => ({ t: new Date(p.t).getTime(), v: p.v }));
  const unit = unitOf(series.unit);
  const last = pts.length ? pts[pts.length - 1].v : null;
  const box = el('div', { class: 'chart', 'data-path': series.path },
    el('div', { class: 'chart-title' }, el('span', { text: shortPath(series.path) + (unit ? ' (' + unit + ')' : '') }),
      el('span', { class: 'muted', text: pts.length + ' points · window ' + window + (last !== null ? ' · last ' + fmtNum(last) + ' ' + unit : '') })));
  const svg = sv('svg', { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: 'none', role: 'img', 'aria-label': series.path });
  box.append(svg);
  const t0 = start.getTime(), t1 = end.getTime();
  let vmin = Infinity, vmax = -Infinity;
  for (const p of pts) { vmin = Math.min(vmin, p.v); vmax = Math.max(vmax, p.v); }
  if (!pts.length) { vmin = 0; vmax = 1; }
  if (vmin === vmax) { vmin -= 1; vmax += 1; }
  const pad = (vmax - vmin) * 0.08; vmin -= pad; vmax += pad;
  const x = t => L + (t - t0) / (t1 - t0) * (W - L - R);
  const y = v => T + (1 - (v - vmin) / (vmax - vmin)) * (H - T - B);
  // grid + y labels
  const step = niceStep((vmax - vmin) / 4);
  for (let v = Math.ceil(vmin / step) * step; v <= vmax; v += step) {
    svg.append(sv('line', { class: 'grid', x1: L, x2: W - R, y1: y(v), y2: y(v) }));
    const dec = Math.max(0, Math.min(4, -Math.floor(Math.log10(step))));
    svg.append(sv('text', { class: 'lbl', x: L - 6, y: y(v) + 4, 'text-anchor': 'end', text: Math.abs(v) >= 1000 ? fmtNum(v) : v.toFixed(dec) }));
  }
  // x labels
  const span = t1 - t0;
  for (let i = 0; i <= 5; i++) {
    const t = t0 + span * i / 5;
    const d = new Date(t);
    const label = span > 2 * 86400e3 ? d.toLocaleDateString(undefined, { month: 'short', day: '2-digit' }) + ' ' + d.toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit' })
      : d.toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit', second: span < 3600e3 ? '2-digit' : undefined });
    svg.append(sv('text', { class: 'lbl', x: x(t), y: H - 8, 'text-anchor': i === 0 ? 'start' : i === 5 ? 'end' : 'middle', text: label }));
  }
  svg.append(sv('line', { class: 'axis', x1: L, x2: W - R, y1: H - B, y2: H - B }));
  svg.append(sv('line', { class: 'axis', x1: L, x2: L, y1: T, y2: H - B }));
  if (!pts.length) {
    svg.append(sv('text', { class: 'lbl', x: (L + W) / 2, y: H / 2, 'text-anchor': 'middle', text: 'No data in this range' }));
    return box;
  }
  let d = '';
  pts.forEach((p, i) => { d += (i ? 'L' : 'M') + x(p.t).toFixed(1) + ' ' + y(p.v).toFixed(1); });
  const area = d + `L${x(pts[pts.length - 1].t).toFixed(1)} ${H - B}L${x(pts[0].t).toFixed(1)} ${H - B}Z`;
  svg.append(sv('path', { class: 'area', d: area, fill: color }));
  svg.append(sv('path', { class: 'line', d, stroke: color, 'vector-effect': 'non-scaling-stroke' }));
  // hover read-out
  const hl = sv('line', { class: 'hover-line', y1: T, y2: H - B, visibility: 'hidden' });
  const tip = sv('text', { class: 'tip', y: T + 12, visibility: 'hidden' });
  svg.append(hl, tip);
  svg.addEventListener('mousemove', ev => {
    const r = svg.getBoundingClientRect();
    const px = (ev.clientX - r.left) / r.width * W;
    const t = t0 + (px - L) / (W - L - R) * (t1 - t0);
    let best = pts[0];
    for (const p of pts) if (Math.abs(p.t - t) < Math.abs(best.t - t)) best = p;
    hl.setAttribute('x1', x(best.t)); hl.setAttribute('x2', x(best.t)); hl.setAttribute('visibility', 'visible');
    tip.textContent = fmtNum(best.v) + ' ' + unit + ' · ' + new Date(best.t).toLocaleTimeString();
    const tx = x(best.t);
    tip.setAttribute('x', tx > W * 0.7 ? tx - 8 : tx + 8); tip.setAttribute('text-anchor', tx > W * 0.7 ? 'end' : 'start');
    tip.setAttribute('visibility', 'visible');
  });
  svg.addEventListener('mouseleave', () => { hl.setAttribute('visibility', 'hidden'); tip.setAttribute('visibility', 'hidden'); });
  return box;
}
function niceStep(raw) {
  const p = Math.pow(10, Math.floor(Math.log10(raw)));
  const m = raw / p;
  return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * p;
}

document.addEventListener('DOMContentLoaded', async () => {
  const page = document.body.dataset.page;
  const main = document.getElementById('main');
  setupChrome(page);
  if (page === 'login') { pageLogin(main); return; }
  try { await loadSession(); } catch (e) { return; }
  if (page === 'fleet') pageFleet(main);
  else if (page === 'alerts') pageAlerts(main);
  else if (page === 'vehicle') pageVehicle(main, document.body.dataset.vin);
});
