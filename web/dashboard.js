// The dashboard: polls /v1/dashboard every 2 s while the tab is visible and draws what it
// holds (the summary of the server's last turns, their rolling percentiles, live sessions).
// No libraries: tables, lists and inline SVG.
//
// Test contract: every percentile cell is `td[data-stage=<field>][data-p=50|95|99]` with the
// exact figure in `data-value` ('' when no turn has it); `window.voiceFsmDashboard` holds the
// last snapshot, the polls made and the status.

import { STATES } from './constants.js';
import { formatMs, niceMax, svgEl } from './latency.js';

const POLL_MS = 2000;
const RECENT_ROWS = 15;
const STATE_ORDER = STATES;

/** What is summarised, as the `turn.completed` line names it, with the colour of its stage. */
const STAGES = [
  { field: 'voice_to_voice_ms', name: 'Voice to voice', title: 'end of the recording → first reply audio sent', colour: 'v2v' },
  { field: 'stt_ms', name: 'Speech to text', title: 'request → final transcript', colour: 'stt' },
  { field: 'llm_first_token_ms', name: 'LLM first token', title: 'request → first text', colour: 'llm' },
  { field: 'llm_ms', name: 'LLM whole reply', title: 'request → last text', colour: 'llm' },
  { field: 'tts_first_audio_ms', name: 'TTS first audio', title: 'first request → first audio', colour: 'tts' },
  { field: 'tts_ms', name: 'TTS whole reply', title: 'first request → last audio', colour: 'tts' },
];

const $ = (selector) => document.querySelector(selector);
const isNum = (value) => typeof value === 'number' && Number.isFinite(value);

const hooks = {
  snapshot: null,
  polls: 0,
  failures: 0,
  status: 'connecting',
  lastError: null,
};
window.voiceFsmDashboard = hooks;

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === 'dataset') Object.assign(node.dataset, value);
    else if (key === 'text') node.textContent = value;
    else node.setAttribute(key, String(value));
  }
  node.append(...children);
  return node;
}

function clock(unixSeconds) {
  if (!isNum(unixSeconds)) return '—';
  return new Date(unixSeconds * 1000).toLocaleTimeString([], { hour12: false });
}

// ------------------------------------------------------------------ status

function setStatus(status, text) {
  hooks.status = status;
  const pill = $('#connection');
  pill.dataset.status = status;
  pill.textContent = text;
}

function showError(message) {
  const box = $('#error');
  box.hidden = !message;
  box.textContent = message || '';
}

// ------------------------------------------------------------------ numbers

function renderTiles(snapshot) {
  const v2v = snapshot.summary.stages.voice_to_voice_ms;
  for (const p of [50, 95]) {
    const tile = $(`#tile-v2v-p${p}`);
    tile.textContent = formatMs(v2v[`p${p}`]);
    tile.dataset.value = isNum(v2v[`p${p}`]) ? String(v2v[`p${p}`]) : '';
  }
  const outcomes = snapshot.summary.outcomes;
  const count = (id, n, text) => {
    $(id).dataset.count = String(n);
    $(id).textContent = text ?? String(n);
  };
  count('#tile-turns', snapshot.kept, `${snapshot.kept} / ${snapshot.capacity}`);
  count('#tile-errors', outcomes.error || 0);
  count('#tile-sessions', snapshot.sessions.live);
}

function renderPercentiles(summary) {
  const rows = STAGES.map((stage) => {
    const figures = summary.stages[stage.field] || { count: 0 };
    const name = el('th', { scope: 'row', title: stage.title },
      el('span', { class: `dot dot-${stage.colour}`, 'aria-hidden': 'true' }), stage.name);
    const cells = [50, 95, 99].map((p) => {
      const value = figures[`p${p}`];
      return el('td', {
        class: 'num',
        dataset: { stage: stage.field, p: String(p), value: isNum(value) ? String(value) : '' },
        text: formatMs(value),
      });
    });
    const turns = el('td', { class: 'num', dataset: { stage: stage.field, count: String(figures.count) }, text: String(figures.count) });
    return el('tr', { dataset: { stage: stage.field } }, name, ...cells, turns);
  });
  $('#percentiles tbody').replaceChildren(...rows);
}

function barList(target, counts, kind, classFor) {
  const entries = Object.entries(counts);
  if (entries.length === 0) {
    target.replaceChildren(el('li', { class: 'dash-empty', text: kind === 'code' ? 'No errors.' : 'No turns yet.' }));
    return;
  }
  const max = Math.max(...entries.map(([, n]) => n));
  target.replaceChildren(...entries.map(([name, n]) => {
    const bar = el('span', { class: `dash-bar ${classFor(name)}` });
    bar.style.width = `${(n / max) * 100}%`;
    return el('li', { dataset: { [kind]: name, count: String(n) } },
      el('span', { class: 'dash-bar-name', text: name }),
      el('span', { class: 'dash-bar-track' }, bar),
      el('span', { class: 'dash-bar-count', text: String(n) }));
  }));
}

function renderSessions(sessions) {
  const states = [...STATE_ORDER, ...Object.keys(sessions.by_state).filter((s) => !STATE_ORDER.includes(s))];
  $('#sessions').replaceChildren(...states.map((state) => {
    const n = sessions.by_state[state] || 0;
    return el('li', { class: 'dash-state', dataset: { state, count: String(n) } },
      el('strong', { text: String(n) }), el('span', { text: state }));
  }));
}

function renderRecent(turns) {
  const rows = turns.slice(-RECENT_ROWS).reverse().map((turn) => {
    const outcome = el('span', { class: `outcome outcome-${turn.outcome}`, text: turn.outcome });
    const outcomeCell = el('td', {}, outcome);
    if (turn.code) outcomeCell.append(' ', el('code', { text: turn.code }));
    const ms = (field) => el('td', { class: 'num', text: formatMs(turn[field]) });
    return el('tr', { dataset: { session: turn.session_id, turn: String(turn.turn), outcome: turn.outcome } },
      el('td', { class: 'num', text: clock(turn.ended_at) }),
      el('td', { class: 'session', title: turn.session_id, text: turn.session_id.replace(/^sess_/, '').slice(0, 8) }),
      el('td', { class: 'num', text: String(turn.turn) }),
      el('td', { text: (turn.mode || '').replace('_', '-').replace('_', '-') }),
      outcomeCell,
      ms('voice_to_voice_ms'), ms('stt_ms'), ms('llm_first_token_ms'), ms('tts_first_audio_ms'));
  });
  if (rows.length === 0) {
    rows.push(el('tr', {}, el('td', { colspan: '9', class: 'dash-empty', text: 'No finished turns yet: talk to the server from its main page.' })));
  }
  $('#recent tbody').replaceChildren(...rows);
}

// ------------------------------------------------------------------ charts

const CW = 360;
const CH = 130;
const PAD = { left: 46, right: 10, top: 10, bottom: 20 };

/** One stage's turns over time: a dot per turn, its rolling p50 (line) and p95 (dashed). */
function chart(stage, points) {
  const svg = svgEl('svg', { viewBox: `0 0 ${CW} ${CH}`, class: 'chart-svg', role: 'img' });
  const parts = [];
  const n = points.length;
  const max = niceMax(n ? Math.max(...points.map((p) => Math.max(p.value, p.p95 ?? 0))) : 1000);
  const plotW = CW - PAD.left - PAD.right;
  const plotH = CH - PAD.top - PAD.bottom;
  const times = points.map((p) => p.t);
  const t0 = n ? Math.min(...times) : 0;
  const span = n ? Math.max(...times) - t0 : 0;
  const x = (p, i) => PAD.left + (span > 0 ? ((p.t - t0) / span) * plotW : n > 1 ? (i / (n - 1)) * plotW : plotW / 2);
  const y = (v) => PAD.top + plotH - (v / max) * plotH;
  for (const tick of [0, max / 2, max]) {
    parts.push(svgEl('line', { class: 'grid', x1: PAD.left, x2: CW - PAD.right, y1: y(tick), y2: y(tick) }));
    parts.push(svgEl('text', { class: 'axis', x: PAD.left - 6, y: y(tick) + 3, 'text-anchor': 'end' }, formatMs(tick)));
  }
  if (n) {
    parts.push(svgEl('text', { class: 'axis', x: PAD.left, y: CH - 5 }, clock(t0)));
    parts.push(svgEl('text', { class: 'axis', x: CW - PAD.right, y: CH - 5, 'text-anchor': 'end' }, clock(t0 + span)));
    points.forEach((p, i) => {
      const dot = svgEl('circle', { class: 'dash-dot', cx: x(p, i), cy: y(p.value), r: 2.5 });
      dot.append(svgEl('title', {}, `${clock(p.t)}: ${formatMs(p.value)}`));
      parts.push(dot);
    });
    for (const [key, cls] of [['p95', 'dash-p95'], ['p50', 'dash-p50']]) {
      const line = points.map((p, i) => `${x(p, i).toFixed(1)},${y(p[key]).toFixed(1)}`).join(' ');
      parts.push(svgEl(n > 1 ? 'polyline' : 'circle', n > 1
        ? { class: cls, points: line }
        : { class: cls, cx: x(points[0], 0), cy: y(points[0][key]), r: 3.5 }));
    }
  } else {
    parts.push(svgEl('text', { class: 'empty', x: PAD.left + plotW / 2, y: PAD.top + plotH / 2, 'text-anchor': 'middle' }, 'no data yet'));
  }
  svg.replaceChildren(...parts);
  const last = points[n - 1];
  svg.setAttribute('aria-label', n
    ? `${stage.name} over ${n} turns: latest p50 ${formatMs(last.p50)}, p95 ${formatMs(last.p95)}`
    : `${stage.name}: no data yet`);
  const caption = el('figcaption', { class: 'chart-label' },
    el('strong', { text: stage.name }),
    n ? ` · p50 ${formatMs(last.p50)} · p95 ${formatMs(last.p95)} (last ${Math.min(n, 20)})` : '');
  return el('figure', { class: `chart dash-chart colour-${stage.colour}`, dataset: { stage: stage.field, points: String(n) } }, svg, caption);
}

function renderCharts(series) {
  $('#charts').replaceChildren(...STAGES.map((stage) => chart(stage, series[stage.field] || [])));
}

// ------------------------------------------------------------------ polling

function render(snapshot) {
  renderTiles(snapshot);
  renderPercentiles(snapshot.summary);
  renderSessions(snapshot.sessions);
  barList($('#outcomes'), snapshot.summary.outcomes, 'outcome', (name) => `outcome-${name}`);
  barList($('#error-codes'), snapshot.summary.error_codes, 'code', () => 'outcome-error');
  renderCharts(snapshot.series);
  renderRecent(snapshot.turns);
  $('#about').textContent = `Updates every ${POLL_MS / 1000} s from /v1/dashboard while this tab is visible · `
    + `keeps the last ${snapshot.capacity} turns (VOICE_FSM_DASHBOARD__TURNS) · ${snapshot.finished} finished since the server started`;
}

let timer = null;
let polling = false;

async function poll() {
  timer = null;
  if (polling) return;
  if (document.hidden) {
    setStatus('paused', 'Paused while hidden');
    return;
  }
  polling = true;
  try {
    const response = await fetch('/v1/dashboard', { cache: 'no-store', headers: { Accept: 'application/json' } });
    if (response.status === 401 || response.status === 403) {
      throw new Error(`The server refused the dashboard (${response.status}): with VOICE_FSM_AUTH__API_KEYS set it needs an API key (Authorization: Bearer).`);
    }
    if (!response.ok) throw new Error(`/v1/dashboard answered ${response.status}.`);
    const snapshot = await response.json();
    hooks.snapshot = snapshot;
    hooks.polls += 1;
    render(snapshot);
    showError(null);
    setStatus('open', `Live · ${clock(snapshot.generated_at)}`);
  } catch (err) {
    hooks.failures += 1;
    hooks.lastError = String(err.message || err);
    showError(hooks.lastError.startsWith('The server refused') || hooks.lastError.startsWith('/v1/')
      ? hooks.lastError
      : `The server does not answer (${hooks.lastError}); trying again.`);
    setStatus('closed', 'Not updating');
  } finally {
    polling = false;
    schedule();
  }
}

function schedule() {
  if (timer === null && !document.hidden) timer = setTimeout(poll, POLL_MS);
}

document.addEventListener('visibilitychange', () => {
  if (document.hidden) {
    clearTimeout(timer);
    timer = null;
    setStatus('paused', 'Paused while hidden');
  } else {
    poll();
  }
});

renderCharts({});
renderRecent([]);
poll();
