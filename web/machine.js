// The session's state machine, drawn as an inline SVG that follows the server's `state` events:
// idle → recording → transcribing → thinking → speaking → idle, a return path to idle (spoken,
// cancel, fail) on the right and the barge-in path back to recording on the left. Every edge is
// labelled with the trigger names of src/voice_fsm/machine.py.
// STATES and TRANSITIONS mirror machine.py's; tests/test_browser_first_hour.py compares them (and
// the drawn labels) with it, so they cannot drift apart.

export const STATES = ['idle', 'recording', 'transcribing', 'thinking', 'speaking'];

const BUSY = ['recording', 'transcribing', 'thinking', 'speaking'];
const REPLYING = ['transcribing', 'thinking', 'speaking'];

/** machine.py's TRANSITIONS: {trigger, source: [states], dest}, in its order. */
export const TRANSITIONS = [
  { trigger: 'start', source: ['idle'], dest: 'recording' },
  { trigger: 'barge_in', source: REPLYING, dest: 'recording' },
  { trigger: 'stop', source: ['recording'], dest: 'transcribing' },
  { trigger: 'transcribed', source: ['transcribing'], dest: 'thinking' },
  { trigger: 'replied', source: ['thinking'], dest: 'speaking' },
  { trigger: 'spoken', source: ['speaking'], dest: 'idle' },
  { trigger: 'cancel', source: BUSY, dest: 'idle' },
  { trigger: 'fail', source: BUSY, dest: 'idle' },
];

const CAPTIONS = {
  idle: 'Waiting for you to talk.',
  recording: 'Listening: your voice streams to the server.',
  transcribing: 'Speech recognition is turning your words into text.',
  thinking: 'The language model is writing the reply.',
  speaking: 'Speech synthesis is speaking the reply.',
};
// The server is idle once it has sent the whole reply; the page may still be playing it.
const IDLE_PLAYING = 'The server has sent the whole reply and waits for you; this page is still playing it.';

/** The triggers that take `from` to `to`, in TRANSITIONS order. */
function triggersOf(from, to) {
  return TRANSITIONS.filter((t) => t.dest === to && t.source.includes(from)).map((t) => t.trigger);
}

/** The triggers of several edges, each once, in TRANSITIONS order. */
function unionOf(pairs) {
  const names = new Set(pairs.flatMap(([from, to]) => triggersOf(from, to)));
  return TRANSITIONS.map((t) => t.trigger).filter((name) => names.has(name));
}

const SVG = 'http://www.w3.org/2000/svg';
const W = 300;
const NODE_W = 132;
const NODE_H = 34;
const STEP = 54;
const TOP = 10;
const X0 = (W - NODE_W) / 2;
const X1 = X0 + NODE_W;
const RIGHT = X1 + 42; // the return path to idle
const LEFT = X0 - 42; // the barge-in path to recording

const top = (i) => TOP + i * STEP;
const mid = (i) => top(i) + NODE_H / 2;

function el(name, attrs = {}, text) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

function edge(from, to, d) {
  return el('path', {
    class: 'edge',
    'data-edge': `${from}>${to}`,
    'data-triggers': triggersOf(from, to).join(' '),
    d,
    'marker-end': 'url(#machine-arrow)',
  });
}

function label(attrs, triggers) {
  return el('text', { class: 'edge-label', 'data-triggers': triggers.join(' '), ...attrs }, triggers.join(' · '));
}

function build() {
  const height = top(STATES.length - 1) + NODE_H + TOP;
  const svg = el('svg', {
    viewBox: `0 0 ${W} ${height}`,
    class: 'machine-svg',
    role: 'list',
    'aria-label': 'Session state machine',
  });
  const defs = el('defs');
  for (const [id, cls] of [
    ['machine-arrow', 'arrow'],
    ['machine-arrow-taken', 'arrow taken'],
  ]) {
    const marker = el('marker', {
      id,
      viewBox: '0 0 10 10',
      refX: 9,
      refY: 5,
      markerWidth: 8,
      markerHeight: 8,
      markerUnits: 'userSpaceOnUse',
      orient: 'auto-start-reverse',
    });
    marker.append(el('path', { d: 'M0,0 L10,5 L0,10 z', class: cls }));
    defs.append(marker);
  }
  svg.append(defs);

  const edges = el('g', { class: 'edges', 'aria-hidden': 'true' });
  // The happy path, top to bottom.
  for (let i = 0; i < STATES.length - 1; i++) {
    const x = W / 2;
    edges.append(edge(STATES[i], STATES[i + 1], `M${x},${top(i) + NODE_H} V${top(i + 1) - 1}`));
    const y = top(i) + NODE_H + (STEP - NODE_H) / 2 + 3;
    edges.append(label({ x: x + 6, y }, triggersOf(STATES[i], STATES[i + 1])));
  }
  // Back to idle: spoken (from speaking), cancel or fail (from any busy state).
  const toIdle = [];
  for (let i = STATES.length - 1; i >= 1; i--) {
    edges.append(edge(STATES[i], 'idle', `M${X1},${mid(i)} H${RIGHT} V${mid(0)} H${X1 + 1}`));
    toIdle.push([STATES[i], 'idle']);
  }
  const rightLabel = label(
    { x: RIGHT + 12, y: (mid(0) + mid(STATES.length - 1)) / 2, 'text-anchor': 'middle' },
    unionOf(toIdle),
  );
  rightLabel.setAttribute('transform', `rotate(90 ${RIGHT + 12} ${rightLabel.getAttribute('y')})`);
  edges.append(rightLabel);
  // Barge-in: talking while a reply is in flight starts a new recording.
  const toRecording = [];
  for (let i = STATES.length - 1; i >= 2; i--) {
    edges.append(edge(STATES[i], 'recording', `M${X0},${mid(i)} H${LEFT} V${mid(1)} H${X0 - 1}`));
    toRecording.push([STATES[i], 'recording']);
  }
  const leftY = (mid(1) + mid(STATES.length - 1)) / 2;
  const leftLabel = label({ x: LEFT - 8, y: leftY, 'text-anchor': 'middle' }, unionOf(toRecording));
  leftLabel.setAttribute('transform', `rotate(-90 ${LEFT - 8} ${leftY})`);
  edges.append(leftLabel);
  svg.append(edges);

  const nodes = new Map();
  STATES.forEach((state, i) => {
    const g = el('g', { class: 'node', 'data-state': state, role: 'listitem', 'aria-label': state });
    g.append(el('rect', { x: X0, y: top(i), width: NODE_W, height: NODE_H, rx: 9 }));
    g.append(el('text', { x: W / 2, y: mid(i) + 5, 'text-anchor': 'middle' }, state));
    svg.append(g);
    nodes.set(state, g);
  });
  return { svg, nodes };
}

/** The diagram inside `container` (#machine); `show(state, previous)` moves the highlight. */
export class MachineDiagram {
  constructor(container) {
    this.container = container;
    const { svg, nodes } = build();
    this.nodes = nodes;
    this.svg = svg;
    this.caption = document.createElement('p');
    this.caption.className = 'machine-caption';
    this.caption.setAttribute('aria-live', 'polite');
    container.replaceChildren(svg, this.caption);
    this.current = null;
    this.playing = false;
  }

  /** The page plays reply audio (`true`) or not: the caption says so while the server is idle. */
  setPlaying(playing) {
    this.playing = playing;
    this.container.dataset.playing = String(playing);
    if (this.current) this.caption.textContent = this.captionFor(this.current);
  }

  captionFor(state) {
    return state === 'idle' && this.playing ? IDLE_PLAYING : CAPTIONS[state];
  }

  show(state, previous) {
    if (!this.nodes.has(state)) return;
    for (const [name, g] of this.nodes) {
      const active = name === state;
      g.classList.toggle('active', active);
      if (active) g.setAttribute('aria-current', 'step');
      else g.removeAttribute('aria-current');
    }
    for (const path of this.svg.querySelectorAll('.edge.taken')) {
      path.classList.remove('taken');
      path.setAttribute('marker-end', 'url(#machine-arrow)');
    }
    if (previous && previous !== state) {
      const taken = this.svg.querySelector(`.edge[data-edge="${previous}>${state}"]`);
      if (taken) {
        taken.classList.add('taken');
        taken.setAttribute('marker-end', 'url(#machine-arrow-taken)');
        taken.parentNode.append(taken); // drawn over the paths it shares a line with
      }
    }
    this.container.dataset.current = state;
    this.caption.textContent = this.captionFor(state);
    this.current = state;
  }
}
