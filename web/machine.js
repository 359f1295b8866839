// The session's state machine, drawn as an inline SVG that follows the server's `state` events:
// idle → recording → transcribing → thinking → speaking → idle, a return path to idle (done,
// cancel, error) on the right and the barge-in path back to recording on the left.
// Mirrors src/voice_fsm/machine.py (STATES and TRANSITIONS).

export const STATES = ['idle', 'recording', 'transcribing', 'thinking', 'speaking'];

const CAPTIONS = {
  idle: 'Waiting for you to talk.',
  recording: 'Listening: your voice streams to the server.',
  transcribing: 'Speech recognition is turning your words into text.',
  thinking: 'The language model is writing the reply.',
  speaking: 'Speech synthesis is speaking the reply.',
};

const TRIGGERS = ['start', 'stop', 'transcribed', 'replied'];

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
  return el('path', { class: 'edge', 'data-edge': `${from}>${to}`, d, 'marker-end': 'url(#machine-arrow)' });
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
    edges.append(
      el('text', { class: 'edge-label', x: x + 6, y: top(i) + NODE_H + (STEP - NODE_H) / 2 + 3 }, TRIGGERS[i]),
    );
  }
  // Back to idle: spoken (from speaking), cancel or error (from any busy state).
  for (let i = STATES.length - 1; i >= 1; i--) {
    edges.append(edge(STATES[i], 'idle', `M${X1},${mid(i)} H${RIGHT} V${mid(0)} H${X1 + 1}`));
  }
  const rightLabel = el(
    'text',
    { class: 'edge-label', x: RIGHT + 12, y: (mid(0) + mid(STATES.length - 1)) / 2, 'text-anchor': 'middle' },
    'done · cancel · error',
  );
  rightLabel.setAttribute('transform', `rotate(90 ${RIGHT + 12} ${rightLabel.getAttribute('y')})`);
  edges.append(rightLabel);
  // Barge-in: talking while a reply is in flight starts a new recording.
  for (let i = STATES.length - 1; i >= 2; i--) {
    edges.append(edge(STATES[i], 'recording', `M${X0},${mid(i)} H${LEFT} V${mid(1)} H${X0 - 1}`));
  }
  const leftY = (mid(1) + mid(STATES.length - 1)) / 2;
  const leftLabel = el('text', { class: 'edge-label', x: LEFT - 8, y: leftY, 'text-anchor': 'middle' }, 'barge-in');
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
    this.caption.textContent = CAPTIONS[state];
    this.current = state;
  }
}
