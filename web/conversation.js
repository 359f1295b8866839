// The conversation on screen: one `.turn[data-turn="N"]` entry per turn, newest at the bottom,
// each with the user's transcript, the assistant's reply, a note (errors, interruptions) and
// the turn's latency waterfall. The ids `transcript` and `reply` always sit on the newest
// entry's text elements (on hidden placeholders while there is no turn), so exactly one
// element has each id.
import { BUSY_STATES, STATE } from './constants.js';

const PHASE_WORDS = {
  pending: 'starting…',
  recording: 'listening…',
  transcribing: 'transcribing…',
  thinking: 'thinking…',
  speaking: 'speaking…',
  acting: 'running tools…',
  done: 'done',
  interrupted: 'interrupted',
  cancelled: 'cancelled',
  error: 'failed',
  disconnected: 'connection lost',
};
// A turn is open while it is pending or the server is busy with it (every state but idle).
const OPEN_PHASES = new Set(['pending', ...BUSY_STATES]);

function make(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function setText(element, text, status) {
  element.textContent = text;
  element.dataset.status = status;
}

class Entry {
  constructor(session) {
    this.turn = null;
    this.session = session;
    this.phase = 'pending';
    this.playing = false; // the page plays this turn's reply audio
    this.interrupted = false;
    this.el = make('article', 'turn');
    this.el.dataset.session = String(session);
    this.el.dataset.status = 'pending';
    const head = make('header', 'turn-head');
    this.label = make('span', 'turn-no', 'New turn');
    this.status = make('span', 'turn-status', PHASE_WORDS.pending);
    head.append(this.label, this.status);

    this.transcript = make('p', 'text');
    this.reply = make('p', 'text');
    setText(this.transcript, '', 'empty');
    setText(this.reply, '', 'empty');
    const user = make('div', 'bubble user');
    user.append(make('span', 'who', 'You'), this.transcript);
    const assistant = make('div', 'bubble assistant');
    assistant.append(make('span', 'who', 'Assistant'), this.reply);

    this.note = make('p', 'turn-note');
    this.note.hidden = true;
    this.metrics = make('div', 'turn-metrics');
    this.el.append(head, user, assistant, this.note, this.metrics);
  }

  number(turn) {
    this.turn = turn;
    this.el.dataset.turn = String(turn);
    this.label.textContent = `Turn ${turn}`;
  }

  /** Follow the server's states; `force` (an outcome the page saw itself) overrides a finished turn. */
  setPhase(phase, force = false) {
    if (!this.open && !force) return; // a finished turn keeps its outcome
    if (phase === 'done' && this.interrupted) phase = 'interrupted';
    this.phase = phase;
    this.el.dataset.status = phase;
    this.el.classList.toggle('closed', !this.open);
    this.showStatus();
  }

  /** This page plays the turn's reply audio (`true`) or not; the server may be done already. */
  setPlaying(playing) {
    if (this.playing === playing) return;
    this.playing = playing;
    this.el.dataset.playing = String(playing);
    this.showStatus();
  }

  showStatus() {
    const words = PHASE_WORDS[this.phase] || this.phase;
    this.status.textContent = this.playing && this.phase === 'done' ? `${words} · playing reply` : words;
  }

  get open() {
    return OPEN_PHASES.has(this.phase);
  }

  addNote(text, kind) {
    this.note.hidden = false;
    this.note.textContent = text;
    this.note.dataset.kind = kind;
  }
}

export class Conversation {
  /** @param {HTMLElement} list  #conversation */
  constructor(list) {
    this.list = list;
    this.session = 0;
    this.entries = new Map(); // "session:turn" -> Entry
    this.pending = null; // an entry started by the user, its turn number not yet known
    this.latest = null; // the entry holding the ids
    this.playingEntry = null; // the entry whose reply audio the page plays
    this.follow = true; // keep the newest entry in view
    this.empty = make('div', 'conversation-empty');
    this.empty.append(make('p', null, 'No turns yet. Hold the button (or the space bar), ask something, and let go.'));
    this.homeTranscript = make('p', 'text');
    this.homeReply = make('p', 'text');
    for (const home of [this.homeTranscript, this.homeReply]) {
      home.hidden = true;
      setText(home, '', 'empty');
      this.empty.append(home);
    }
    list.replaceChildren(this.empty);
    this.moveIds(null);
    list.addEventListener('scroll', () => {
      this.follow = list.scrollHeight - list.scrollTop - list.clientHeight < 48;
    });
    if (typeof ResizeObserver === 'function') new ResizeObserver(() => this.scroll()).observe(list);
  }

  get turnCount() {
    return this.list.querySelectorAll('.turn').length;
  }

  /** A new WebSocket session: turn numbers start again. */
  newSession(sessionId, { reconnected }) {
    this.session += 1;
    this.abandon();
    if (reconnected) {
      const last = this.list.lastElementChild;
      const divider = last && last.classList.contains('divider') ? last : make('div', 'divider');
      divider.setAttribute('role', 'separator');
      divider.dataset.kind = 'reconnected';
      divider.textContent = `Connection lost, reconnected · new session ${sessionId || ''}`.trim();
      this.append(divider);
    }
  }

  /** The user started a turn; its number comes with the server's `state: recording`. */
  begin() {
    if (this.pending) return this.pending;
    this.pending = new Entry(this.session);
    this.append(this.pending.el);
    this.moveIds(this.pending);
    return this.pending;
  }

  /** The turn the user started did not happen (no microphone, released too soon, no socket). */
  abandon() {
    if (!this.pending) return;
    const gone = this.pending;
    this.pending = null;
    gone.el.remove();
    if (this.latest === gone) {
      const entries = [...this.entries.values()].filter((e) => e.el.isConnected);
      this.moveIds(entries.length ? entries[entries.length - 1] : null);
    }
    this.refreshEmpty();
  }

  /** `state: recording` of `turn`: the pending entry gets its number (or a new one is made). */
  confirm(turn) {
    let entry = this.get(turn);
    if (!entry) {
      entry = this.pending || new Entry(this.session);
      this.pending = null;
      entry.number(turn);
      this.entries.set(`${this.session}:${turn}`, entry);
      if (!entry.el.isConnected) this.append(entry.el);
      this.moveIds(entry);
    }
    // Any older turn still open was cut short by this one (a barge-in).
    for (const other of this.entries.values()) {
      if (other !== entry && other.open) {
        other.interrupted = true;
        other.setPhase('interrupted', true);
      }
    }
    entry.setPhase(STATE.RECORDING);
    return entry;
  }

  get(turn) {
    return this.entries.get(`${this.session}:${turn}`) || null;
  }

  phase(turn, phase) {
    const entry = this.get(turn);
    if (entry) entry.setPhase(phase);
  }

  /** The page plays the reply audio of `turn` (null: nothing plays). */
  playing(turn) {
    const entry = turn === null || turn === undefined ? null : this.get(turn);
    if (this.playingEntry && this.playingEntry !== entry) this.playingEntry.setPlaying(false);
    if (entry) entry.setPlaying(true);
    this.playingEntry = entry;
  }

  transcript(turn, text, final) {
    const entry = this.get(turn);
    if (!entry) return;
    setText(entry.transcript, final ? text : entry.transcript.textContent + text, final ? 'final' : 'partial');
    this.scroll();
  }

  reply(turn, text, { final = false, interrupted = false } = {}) {
    const entry = this.get(turn);
    if (!entry) return;
    if (interrupted) entry.interrupted = true;
    const status = entry.interrupted ? 'interrupted' : final ? 'final' : 'partial';
    setText(entry.reply, final ? text : entry.reply.textContent + text, status);
    if (interrupted && entry.phase === 'done') entry.setPhase('interrupted', true);
    this.scroll();
  }

  /** The user cut the reply's audio short (barge-in or Stop). */
  cut(turn, playedMs, totalMs, how) {
    const entry = this.get(turn);
    if (!entry) return;
    entry.interrupted = true;
    entry.el.dataset.playedMs = String(playedMs);
    if (entry.reply.dataset.status !== 'empty') entry.reply.dataset.status = 'interrupted';
    const of = Number.isFinite(totalMs) && totalMs > 0 ? ` of ${(totalMs / 1000).toFixed(1)} s` : '';
    entry.addNote(`${how} after ${(playedMs / 1000).toFixed(1)} s${of} of the spoken reply.`, 'interrupted');
    if (!entry.open) entry.setPhase('interrupted', true);
    this.scroll();
  }

  /** Stop pressed before any reply audio played. */
  cancelled(turn) {
    const entry = this.get(turn);
    if (!entry) return;
    entry.interrupted = true;
    if (entry.reply.dataset.status !== 'empty') entry.reply.dataset.status = 'interrupted';
    entry.addNote('Stopped before the reply was spoken.', 'cancelled');
    entry.setPhase('cancelled', true);
  }

  /** Hands-free was switched off while the server was recording this turn: it was dropped. */
  discarded(turn) {
    const entry = this.get(turn);
    if (!entry) return;
    entry.interrupted = true;
    entry.addNote('Hands-free was switched off; this recording was discarded.', 'cancelled');
    entry.setPhase('cancelled', true);
  }

  /** Whether `turn` is shown and still under way. */
  isOpen(turn) {
    const entry = this.get(turn);
    return Boolean(entry && entry.open);
  }

  error(turn, text, code) {
    const entry = this.get(turn);
    if (!entry) return;
    entry.addNote(text, 'error');
    entry.note.dataset.code = code;
    entry.setPhase('error', true);
    this.scroll();
  }

  metrics(turn, element) {
    const entry = this.get(turn);
    if (!entry) return;
    entry.metrics.replaceChildren(element);
    this.scroll();
  }

  /** The socket dropped: an unfinished turn will not finish. */
  disconnected() {
    this.abandon();
    for (const entry of this.entries.values()) {
      if (entry.open) {
        entry.setPhase('disconnected', true);
        entry.addNote('The connection dropped before this turn finished.', 'disconnected');
      }
    }
  }

  clear() {
    this.pending = null;
    this.entries.clear();
    this.list.replaceChildren(this.empty);
    this.moveIds(null);
    this.refreshEmpty();
  }

  // -------------------------------------------------------------- internals

  append(node) {
    this.list.append(node);
    this.refreshEmpty();
    this.follow = true;
    this.scroll();
  }

  refreshEmpty() {
    this.empty.hidden = this.list.querySelector('.turn') !== null;
  }

  moveIds(entry) {
    const transcript = entry ? entry.transcript : this.homeTranscript;
    const reply = entry ? entry.reply : this.homeReply;
    for (const [id, target] of [
      ['transcript', transcript],
      ['reply', reply],
    ]) {
      const holder = document.getElementById(id);
      if (holder && holder !== target) holder.removeAttribute('id');
      target.id = id;
    }
    for (const home of [this.homeTranscript, this.homeReply]) setText(home, '', 'empty');
    this.latest = entry;
  }

  scroll() {
    if (!this.follow) return;
    // After layout, so the new content's height counts.
    requestAnimationFrame(() => {
      this.list.scrollTop = this.list.scrollHeight;
    });
  }
}
