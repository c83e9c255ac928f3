// The cairn dashboard's page: polls the server's JSON API once a second and draws the job with
// uPlot. Served by src/dashboard/server.cpp; everything it needs is embedded in the binary.
'use strict';

const token = new URLSearchParams(location.search).get('token');
const $ = (id) => document.getElementById(id);

function apiUrl(path) {
  const u = new URL(path, location.href);
  if (token) u.searchParams.set('token', token);
  return u;
}

async function fetchText(path) {
  const r = await fetch(apiUrl(path), {cache: 'no-store'});
  const body = await r.text();
  if (!r.ok) {
    let why = body;
    try { why = JSON.parse(body).error || body; } catch (e) { /* not JSON: the text itself */ }
    throw new Error(path + ': ' + r.status + ' ' + why);
  }
  return body;
}
const fetchJson = async (path) => JSON.parse(await fetchText(path));

const state = {rows: [], events: [], metricsNext: 0, eventsNext: 0, status: {}, xaxis: 'step'};

// Each chart: the metrics.jsonl keys it draws (scaled), one series per key.
const CHARTS = [
  {id: 'loss', title: 'Loss', series: [
    {label: 'train', key: 'loss', stroke: '#1f77b4'},
    {label: 'validation', key: 'val_loss', stroke: '#d62728', points: true}]},
  {id: 'tps', title: 'Tokens per second', series: [{label: 'tokens/s', key: 'tokens_per_s', stroke: '#2ca02c'}]},
  {id: 'mfu', title: 'MFU (%)', series: [{label: 'MFU %', key: 'mfu', scale: 100, stroke: '#9467bd'}]},
  {id: 'lr', title: 'Learning rate', series: [{label: 'lr', key: 'lr', stroke: '#ff7f0e'}]},
  {id: 'gn', title: 'Gradient norm (before clipping)', series: [{label: 'norm', key: 'grad_norm', stroke: '#8c564b'}]},
  {id: 'st', title: 'Step time (s)', series: [{label: 'seconds', key: 'step_time', stroke: '#17becf'}]},
  {id: 'mem', title: 'Peak memory of the fullest rank (MB)', series: [{label: 'MB', key: 'mem_peak_mb', stroke: '#7f7f7f'}]},
];
const PALETTE = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f'];

function showError(message) {
  const e = $('error');
  e.textContent = message;
  e.hidden = !message;
}
window.addEventListener('error', (ev) => showError('page error: ' + ev.message));

// The rows to draw: on the step axis the newest row of each step (a restart trains steps again).
function plotRows() {
  if (state.xaxis !== 'step') return state.rows;
  const byStep = new Map();
  for (const r of state.rows) byStep.set(r.step, r);
  return [...byStep.values()].sort((a, b) => a.step - b.step);
}

function chartData(chart, rows) {
  const x = rows.map((r) => (state.xaxis === 'step' ? r.step : r.time));
  const cols = chart.series.map((s) => rows.map((r) => {
    const v = s.get ? s.get(r) : r[s.key];
    return v == null ? null : v * (s.scale || 1);
  }));
  return [x, ...cols];
}

function makeChart(chart, rows) {
  const el = document.createElement('div');
  el.className = 'chart';
  el.id = 'chart-' + chart.id;
  $('charts').appendChild(el);
  const opts = {
    title: chart.title,
    width: Math.max(440, el.clientWidth - 8),
    height: 220,
    scales: {x: {time: state.xaxis === 'time'}},
    series: [{label: state.xaxis}].concat(chart.series.map((s) => ({
      label: s.label, stroke: s.stroke, width: 1.5, spanGaps: true, points: {show: !!s.points}}))),
    axes: [{}, {size: 64}],
  };
  chart.plot = new uPlot(opts, chartData(chart, rows), el);
}

// A chart with one series per rank from an array-valued key of the rows (rank_compute_s: each
// rank's forward and backward seconds, where a straggler stands out; micro_batches: dynamic
// sharding's micro-batches per rank), made when the rows have it.
function rankChart(id, key, title, rows) {
  const ranks = rows.reduce((n, r) => Math.max(n, (r[key] || []).length), 0);
  if (ranks === 0) return null;
  return {id: id, title: title, series: [...Array(ranks).keys()].map((i) => ({
    label: 'rank ' + i, get: (r) => (r[key] ? r[key][i] : null),
    stroke: PALETTE[i % PALETTE.length]}))};
}

let charts = [];
function drawCharts(rebuild) {
  const rows = plotRows();
  const wanted = CHARTS.filter((c) => rows.some((r) => c.series.some((s) => r[s.key] != null)));
  for (const c of [rankChart('rc', 'rank_compute_s', 'Forward + backward per rank (s)', rows),
                   rankChart('mb', 'micro_batches', 'Micro-batches per rank', rows)])
    if (c) wanted.push(c);
  const ids = (list) => list.map((c) => c.id + ':' + c.series.length).join(',');
  if (rebuild || ids(wanted) !== ids(charts)) {
    charts.forEach((c) => c.plot && c.plot.destroy());
    $('charts').textContent = '';
    charts = wanted;
    charts.forEach((c) => makeChart(c, rows));
    return;
  }
  charts.forEach((c) => c.plot.setData(chartData(c, rows)));
}

function duration(s) {
  if (s == null || !isFinite(s)) return '–';
  s = Math.round(s);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  return (h ? h + 'h ' : '') + (h || m ? m + 'm ' : '') + r + 's';
}
const fmt = (v, digits) => (v == null ? '–' : Number(v).toFixed(digits));

function drawFacts() {
  const s = state.status;
  $('run').textContent = s.run_dir || '';
  const st = $('state');
  st.textContent = s.state || 'unknown';
  st.className = 'state ' + (s.state || '');
  const facts = [
    ['step', (s.step ?? '–') + (s.max_steps ? ' / ' + s.max_steps : '')],
    ['ETA', duration(s.eta_s)],
    ['loss', fmt(s.loss, 4)],
    ['validation loss', s.val_loss == null ? '–' : fmt(s.val_loss, 4) + ' @' + s.val_step],
    ['tokens/s', fmt(s.tokens_per_s, 0)],
    ['MFU', s.mfu == null ? '–' : fmt(100 * s.mfu, 1) + '%'],
    ['goodput', s.goodput == null ? '–' : fmt(100 * s.goodput, 1) + '%'],
    ['world size', s.world_size ?? '–'],
    ['restarts', s.restarts ?? 0],
    ['failures', s.failures ?? 0],
    ['hangs', s.hangs ?? 0],
    ['peak memory', s.mem_peak_mb == null ? '–' : fmt(s.mem_peak_mb, 0) + ' MB'],
  ];
  if (s.slowest_rank != null)
    facts.push([s.straggler != null ? 'straggler' : 'slowest rank',
                s.slowest_rank + ' (' + fmt(s.slowest_ratio, 2) + '× the median)',
                s.straggler != null ? 'warn' : '']);
  if (s.rendezvous_s != null) facts.push(['last rendezvous', fmt(s.rendezvous_s, 2) + ' s']);
  if (s.nodes) {
    facts.push(['nodes in the round', s.nodes.filter((n) => n.state === 'member').length]);
    facts.push(['rounds', s.rounds]);
  }
  const bad = s.unreadable_lines || {};
  const unreadable = (bad['metrics.jsonl'] || 0) + (bad['events.jsonl'] || 0);
  if (unreadable) facts.push(['unreadable lines', unreadable]);
  $('facts').replaceChildren(...facts.map(([name, value, extra]) => {
    const d = document.createElement('div');
    d.className = 'fact' + (extra ? ' ' + extra : '');
    const b = document.createElement('b');
    b.textContent = value;
    const l = document.createElement('span');
    l.textContent = name;
    d.append(b, l);
    return d;
  }));
}

// The elastic master's view (its master_* events): every node's latest state, and the world
// size of each round over time.
let worldPlot = null;
function drawMembership() {
  const s = state.status;
  $('membership').hidden = !s.nodes;
  if (!s.nodes) return;
  $('nodes').querySelector('tbody').replaceChildren(...s.nodes.map((n) => {
    const tr = document.createElement('tr');
    tr.className = n.state === 'member' ? '' : (n.state === 'joined' ? 'ckpt' : 'bad');
    tr.dataset.node = n.id;
    for (const c of [n.id, n.host || '', n.state + (n.reason ? ': ' + n.reason : ''),
                     n.failures, n.since ? new Date(n.since * 1000).toLocaleTimeString() : ''])
      tr.appendChild(Object.assign(document.createElement('td'), {textContent: String(c)}));
    return tr;
  }));
  const rounds = state.events.filter((e) => e.event === 'master_round_completed' && e.round);
  if (rounds.length === 0) return;
  const data = [rounds.map((e) => e.time), rounds.map((e) => e.round.world_size)];
  data[0].push(Date.now() / 1000);  // the latest world holds until now
  data[1].push(data[1][data[1].length - 1]);
  if (!worldPlot) {
    const el = $('world');
    worldPlot = new uPlot({
      title: 'World size per round', width: Math.max(440, el.clientWidth - 8), height: 180,
      scales: {x: {time: true}, y: {range: (u, min, max) => [0, max + 1]}},
      series: [{label: 'time'}, {label: 'ranks', stroke: '#1f77b4', width: 2,
                                 paths: uPlot.paths.stepped({align: 1})}],
      axes: [{}, {size: 48}],
    }, data, el);
  } else {
    worldPlot.setData(data);
  }
}

// The plan's picture (plan.svg), once the run has one.
function drawPlan() {
  if (!state.status.plan_picture || !$('plan').hidden) return;
  $('planpic').src = apiUrl('/plan.svg').toString();
  $('plan').hidden = false;
}

// --dashboard-control: a button that asks the job to stop (with a checkpoint).
function drawControl() {
  const b = $('stop');
  b.hidden = !state.status.control || state.status.state === 'ended';
}
$('stop').addEventListener('click', async () => {
  if (!confirm('Stop the job? The workers save a checkpoint at the next step and exit.')) return;
  try {
    const r = await fetch(apiUrl('/api/stop'), {method: 'POST', headers: {'X-Cairn-Request': 'stop'}});
    const body = await r.json();
    if (!r.ok) throw new Error('/api/stop: ' + r.status + ' ' + (body.error || ''));
    $('stop').disabled = true;
    $('stop').textContent = 'stopping…';
  } catch (err) {
    showError(String(err.message || err));
  }
});

const BAD = new Set(['worker_failed', 'master_node_excluded', 'hang', 'checkpoint_persist_failed', 'checkpoint_skipped']);
function eventDetails(e) {
  const skip = new Set(['event', 'time', 'command', 'pids', 'plan']);
  return Object.entries(e).filter(([k]) => !skip.has(k)).map(([k, v]) => {
    const text = typeof v === 'object' ? JSON.stringify(v)
        : typeof v === 'number' && !Number.isInteger(v) ? String(Number(v.toPrecision(4)))
        : String(v);
    return k + '=' + (text.length > 120 ? text.slice(0, 117) + '...' : text);
  }).join('  ');
}
function addEvents(list) {
  const body = document.querySelector('#events tbody');
  for (const e of list) {
    const tr = document.createElement('tr');
    const failed = BAD.has(e.event) || (e.event === 'agent_end' && e.exit_code) ||
        (e.event === 'end' && e.reason === 'interrupted');
    tr.className = failed ? 'bad' : (e.event.startsWith('checkpoint') ? 'ckpt' : '');
    tr.dataset.event = e.event;
    const cells = [e.time ? new Date(e.time * 1000).toLocaleTimeString() : '', e.event, eventDetails(e)];
    for (const c of cells) {
      const td = document.createElement('td');
      td.textContent = c;
      tr.appendChild(td);
    }
    body.insertBefore(tr, body.firstChild);  // newest first
  }
}

async function pollData() {
  state.status = await fetchJson('/api/status');
  const m = await fetchJson('/api/metrics?since=' + state.metricsNext);
  if (m.total < state.metricsNext) {  // metrics.jsonl was replaced: read it again
    state.rows = [];
    state.metricsNext = 0;
    return pollData();
  }
  state.rows.push(...m.rows);
  state.metricsNext = m.next;
  const e = await fetchJson('/api/events?since=' + state.eventsNext);
  if (e.total < state.eventsNext) {
    state.events = [];
    state.eventsNext = 0;
    document.querySelector('#events tbody').textContent = '';
    return pollData();
  }
  state.events.push(...e.rows);
  state.eventsNext = e.next;
  addEvents(e.rows);
  return m.rows.length > 0;
}

async function pollLogs() {
  const names = (await fetchJson('/api/logs')).logs;
  const sel = $('logname');
  const have = [...sel.options].map((o) => o.value).join('\n');
  if (have !== names.join('\n')) {
    const keep = sel.value;
    sel.replaceChildren(...names.map((n) => new Option(n, n)));
    if (names.includes(keep)) sel.value = keep;
  }
  if (sel.value) {
    const pre = $('log');
    const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    pre.textContent = await fetchText('/api/log?lines=200&name=' + encodeURIComponent(sel.value));
    if (atBottom) pre.scrollTop = pre.scrollHeight;
  }
}

let tick = 0;
async function poll() {
  try {
    const grew = await pollData();
    drawFacts();
    drawMembership();
    drawPlan();
    drawControl();
    if (grew || tick === 0) drawCharts(false);
    if (tick % 2 === 0) await pollLogs();
    showError('');
    document.body.dataset.rows = String(state.rows.length);  // for tests: rows drawn so far
  } catch (err) {
    showError(String(err.message || err));
  }
  tick++;
  setTimeout(poll, 1000);
}

$('xaxis').addEventListener('change', (ev) => {
  state.xaxis = ev.target.value;
  drawCharts(true);
});
$('logname').addEventListener('change', () => pollLogs().catch((err) => showError(String(err))));
poll();
