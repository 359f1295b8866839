// Latency display: a per-turn waterfall built from `turn.metrics`, and a small chart of
// voice-to-voice latency over the last turns.

/** Waterfall rows, in order. `chained` stages start where the previous chained stage ended. */
export const STAGES = [
  { key: 'stt', field: 'stt_ms', name: 'STT', title: 'speech recognition: request → final transcript', chained: true },
  { key: 'llm_first_token', field: 'llm_first_token_ms', name: 'LLM 1st token', title: 'language model: request → first text', chained: true },
  { key: 'tts_first_audio', field: 'tts_first_audio_ms', name: 'TTS 1st audio', title: 'speech synthesis: request → first audio', chained: true },
  { key: 'voice_to_voice', field: 'voice_to_voice_ms', name: 'Voice to voice', title: 'end of your recording → first reply audio sent', chained: false },
];

const isNum = (value) => typeof value === 'number' && Number.isFinite(value);

export function formatMs(value) {
  if (!isNum(value)) return '—';
  return value >= 10000 ? `${(value / 1000).toFixed(1)} s` : `${Math.round(value)} ms`;
}

/** [{stage, ms, start}] with `start` in ms from the end of the recording; ms null when absent. */
export function waterfallSpans(metrics) {
  let end = 0;
  return STAGES.map((stage) => {
    const ms = isNum(metrics[stage.field]) ? metrics[stage.field] : null;
    const start = stage.chained ? end : 0;
    if (stage.chained && ms !== null) end += ms;
    return { stage, ms, start };
  });
}

/** One `.waterfall` element for a `turn.metrics` event; each row holds a `.bar[data-stage][data-ms]`. */
export function renderWaterfall(metrics) {
  const spans = waterfallSpans(metrics);
  const total = Math.max(1, ...spans.map(({ ms, start }) => (ms === null ? 0 : start + ms)));
  const root = document.createElement('div');
  root.className = 'waterfall';
  root.dataset.turn = String(metrics.turn);
  root.setAttribute('role', 'group');
  root.setAttribute('aria-label', `Latency of turn ${metrics.turn}`);

  for (const { stage, ms, start } of spans) {
    const row = document.createElement('div');
    row.className = 'wf-row';
    row.title = stage.title;

    const name = document.createElement('span');
    name.className = 'wf-name';
    name.textContent = stage.name;

    const track = document.createElement('span');
    track.className = 'wf-track';
    const bar = document.createElement('span');
    bar.className = `bar bar-${stage.key}`;
    bar.dataset.stage = stage.key;
    if (ms === null) {
      bar.dataset.ms = '';
      bar.classList.add('absent');
      bar.setAttribute('aria-label', `${stage.name}: did not run`);
    } else {
      bar.dataset.ms = String(Math.round(ms));
      bar.style.left = `${(start / total) * 100}%`;
      bar.style.width = `${(ms / total) * 100}%`;
      bar.setAttribute('aria-label', `${stage.name}: ${formatMs(ms)}`);
    }
    track.append(bar);

    const value = document.createElement('span');
    value.className = 'wf-ms';
    value.textContent = ms === null ? 'n/a' : formatMs(ms);

    row.append(name, track, value);
    root.append(row);
  }

  const extra = [
    isNum(metrics.audio_in_ms) ? `you spoke ${(metrics.audio_in_ms / 1000).toFixed(1)} s` : null,
    isNum(metrics.llm_ms) ? `LLM total ${formatMs(metrics.llm_ms)}` : null,
    isNum(metrics.tts_ms) ? `TTS total ${formatMs(metrics.tts_ms)}` : null,
  ].filter(Boolean);
  if (extra.length) {
    const note = document.createElement('p');
    note.className = 'wf-note';
    note.textContent = extra.join(' · ');
    root.append(note);
  }
  return root;
}

export function median(values) {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  const m = sorted.length >> 1;
  return sorted.length % 2 ? sorted[m] : (sorted[m - 1] + sorted[m]) / 2;
}

export const SVG = 'http://www.w3.org/2000/svg';
const CW = 320;
const CH = 120;
const PAD = { left: 44, right: 10, top: 10, bottom: 18 };

export function svgEl(name, attrs = {}, text) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

/** A round axis maximum at or above `value`. */
export function niceMax(value) {
  const v = Math.max(value, 100);
  const magnitude = 10 ** Math.floor(Math.log10(v));
  for (const step of [1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) {
    if (step * magnitude >= v) return step * magnitude;
  }
  return 10 * magnitude;
}

/**
 * Voice-to-voice latency of the last `limit` turns, drawn into `figure` (#v2v-chart): an inline
 * SVG line with one circle per turn and a dashed median, `data-points` on the figure and a
 * caption with the latest and median values.
 */
export class V2vChart {
  constructor(figure, { limit = 20 } = {}) {
    this.figure = figure;
    this.limit = limit;
    this.points = []; // {label, ms}
    this.svg = svgEl('svg', { viewBox: `0 0 ${CW} ${CH}`, class: 'chart-svg', role: 'img' });
    this.label = document.createElement('figcaption');
    this.label.className = 'chart-label';
    figure.replaceChildren(this.svg, this.label);
    this.render();
  }

  /** Add one turn's voice_to_voice_ms (null values are not drawn). */
  add(ms, label) {
    if (!isNum(ms)) return;
    this.points.push({ ms, label });
    if (this.points.length > this.limit) this.points.splice(0, this.points.length - this.limit);
    this.render();
  }

  render() {
    const values = this.points.map((p) => p.ms);
    const n = values.length;
    const latest = n ? values[n - 1] : null;
    const med = median(values);
    this.figure.dataset.points = String(n);
    this.figure.dataset.latest = latest === null ? '' : String(Math.round(latest));
    this.figure.dataset.median = med === null ? '' : String(Math.round(med));
    this.label.textContent = n
      ? `Latest ${formatMs(latest)} · median ${formatMs(med)} over ${n} turn${n === 1 ? '' : 's'}`
      : 'No measured turns yet.';
    this.svg.setAttribute(
      'aria-label',
      n ? `Voice-to-voice latency of the last ${n} turns; latest ${formatMs(latest)}, median ${formatMs(med)}` : 'No data yet',
    );

    const max = niceMax(n ? Math.max(...values) : 1000);
    const plotW = CW - PAD.left - PAD.right;
    const plotH = CH - PAD.top - PAD.bottom;
    const x = (i) => PAD.left + (this.limit === 1 ? plotW / 2 : (i / (this.limit - 1)) * plotW);
    const y = (v) => PAD.top + plotH - (v / max) * plotH;

    const parts = [];
    for (const tick of [0, max / 2, max]) {
      parts.push(svgEl('line', { class: 'grid', x1: PAD.left, x2: CW - PAD.right, y1: y(tick), y2: y(tick) }));
      parts.push(svgEl('text', { class: 'axis', x: PAD.left - 6, y: y(tick) + 3, 'text-anchor': 'end' }, formatMs(tick)));
    }
    parts.push(svgEl('text', { class: 'axis', x: PAD.left, y: CH - 4 }, n ? `last ${n} of up to ${this.limit} turns` : ''));
    if (n) {
      parts.push(svgEl('line', { class: 'median', x1: PAD.left, x2: CW - PAD.right, y1: y(med), y2: y(med) }));
      if (n > 1) {
        const pts = values.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(' ');
        parts.push(svgEl('polyline', { class: 'line', points: pts }));
      }
      values.forEach((v, i) => {
        const dot = svgEl('circle', { class: i === n - 1 ? 'point latest' : 'point', cx: x(i), cy: y(v), r: i === n - 1 ? 4 : 3 });
        dot.append(svgEl('title', {}, `${this.points[i].label}: ${formatMs(v)}`));
        parts.push(dot);
      });
    } else {
      parts.push(svgEl('text', { class: 'empty', x: PAD.left + plotW / 2, y: PAD.top + plotH / 4 + 4, 'text-anchor': 'middle' }, 'no data yet'));
    }
    this.svg.replaceChildren(...parts);
  }
}
