// Tool calls on the page. Each `tool.call` of a turn becomes an item in that turn's conversation
// entry, between the user's words and the reply: the tool's name and its arguments, then, when
// its `tool.result` comes, ok or the error, the output and its time; a `tool.cancelled` call (or
// one still running when its turn ended) shows as cancelled. Every word comes from the network
// (the model wrote the name and arguments, a tool the output), so it is only ever set as text,
// and shortened: the page shows a glance, the full text is in the title.
//
// The page declares no tools of its own: a call with runs_on client is for a program that did
// (another client of the same protocol); this page shows it and sends nothing back.

const ARGUMENTS_SHOWN = 120; // characters of the arguments on screen
const OUTPUT_SHOWN = 200; // characters of an output or error on screen
const TITLE_KEPT = 2000; // characters of the full text in the tooltip
const CALLS_KEPT = 200; // records in `list` (the test hook), oldest dropped first
// runs_on of the calls a client (not the server) runs; the protocol's own word, not a shared name.
const CLIENT = 'client';

const STATUS_WORDS = {
  running: 'running…',
  ok: 'ok',
  failed: 'failed',
  cancelled: 'cancelled',
};

function make(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/** `text` on one line, at most `limit` characters (an ellipsis marks a cut). */
export function shorten(text, limit) {
  const line = String(text ?? '').replace(/\s+/g, ' ').trim();
  const chars = Array.from(line); // code points: never half a surrogate pair
  return chars.length <= limit ? line : `${chars.slice(0, limit - 1).join('')}…`;
}

/** The text a tooltip may hold: the full text, bounded. */
function titleOf(text) {
  const s = String(text ?? '');
  return s.length <= TITLE_KEPT ? s : `${s.slice(0, TITLE_KEPT)}…`;
}

const str = (value) => (typeof value === 'string' ? value : '');
const ms = (value) => (Number.isFinite(value) && value >= 0 ? Math.round(value) : null);

/** One call on screen: `<li class="tool-call" data-call-id data-status data-runs-on>`. */
class CallItem {
  constructor(record) {
    this.el = make('li', 'tool-call');
    this.el.dataset.callId = record.call_id;
    this.el.dataset.runsOn = record.runs_on;
    const head = make('div', 'tool-head');
    const label = make('span', 'tool-label', 'Tool');
    this.name = make('code', 'tool-name', shorten(record.name, 64));
    this.args = make('code', 'tool-args', shorten(record.arguments, ARGUMENTS_SHOWN) || '{}');
    this.args.title = titleOf(record.arguments);
    head.append(label, ' ', this.name, ' ', this.args);
    if (record.runs_on === CLIENT) {
      const where = make('span', 'tool-where', 'client tool');
      where.title = "One of a client's own tools: the client runs it (this page declares none and does not answer).";
      head.append(' ', where);
    }
    this.status = make('span', 'tool-status');
    head.append(' ', this.status);
    this.result = make('div', 'tool-result');
    this.result.hidden = true;
    this.el.append(head, this.result);
    this.show(record);
  }

  show(record) {
    this.el.dataset.status = record.status;
    const time = record.duration_ms === null ? '' : ` · ${record.duration_ms} ms`;
    this.status.textContent = `${STATUS_WORDS[record.status] || record.status}${time}`;
    const text = record.status === 'failed' ? record.error : record.output;
    if (text === null) {
      this.result.hidden = true;
      this.result.replaceChildren();
      return;
    }
    const lead = make('span', 'tool-result-lead', record.status === 'failed' ? 'Error:' : 'Result:');
    const body = make('span', 'tool-result-text', shorten(text, OUTPUT_SHOWN));
    body.title = titleOf(text);
    this.result.replaceChildren(lead, ' ', body);
    this.result.hidden = false;
  }
}

/**
 * The tool calls of the session: `list` (records, for tests and the console) and their items in
 * the conversation. `entryOf(turn)` gives the turn's conversation element (null: not shown).
 */
export class ToolCalls {
  constructor(entryOf) {
    this.entryOf = entryOf;
    this.list = [];
    this.items = new Map(); // call_id -> {record, item}
  }

  /** A new session (call ids and turns start again) or a cleared conversation. */
  reset() {
    this.list.length = 0;
    this.items.clear();
  }

  /** A `tool.call` event. */
  call(event) {
    const callId = str(event.call_id);
    if (!callId || this.items.has(callId)) return;
    const record = {
      turn: Number.isInteger(event.turn) ? event.turn : null,
      call_id: callId,
      name: str(event.name),
      arguments: str(event.arguments),
      runs_on: str(event.runs_on),
      status: 'running',
      ok: null,
      output: null,
      error: null,
      duration_ms: null,
    };
    this.list.push(record);
    if (this.list.length > CALLS_KEPT) {
      for (const gone of this.list.splice(0, this.list.length - CALLS_KEPT)) this.items.delete(gone.call_id);
    }
    const item = new CallItem(record);
    this.items.set(callId, { record, item });
    this.place(record.turn, item.el);
  }

  /** A `tool.result` event: it ends the call, even one shown as cancelled (a client tool that
   * timed out is cancelled, then its error result follows). */
  result(event) {
    const known = this.items.get(str(event.call_id));
    if (!known) return;
    const { record, item } = known;
    record.ok = event.ok === true;
    record.status = record.ok ? 'ok' : 'failed';
    record.output = record.ok ? str(event.output) : null;
    record.error = record.ok ? null : str(event.error) || 'failed';
    record.duration_ms = ms(event.duration_ms);
    item.show(record);
  }

  /** A `tool.cancelled` event. */
  cancelled(event) {
    const known = this.items.get(str(event.call_id));
    if (known) this.cancel(known);
  }

  /** Turns up to `turn` ended (idle, the next turn began, the socket closed): a call of theirs
   * with no result will not get one. A server tool cut short by a barge-in gets no event. */
  turnEnded(turn) {
    for (const known of this.items.values()) {
      if (known.record.turn !== null && known.record.turn <= turn) this.cancel(known);
    }
  }

  cancel({ record, item }) {
    if (record.status !== 'running') return;
    record.status = 'cancelled';
    item.show(record);
  }

  /** Put `el` in the turn's list of calls, made before the reply when it is the first. */
  place(turn, el) {
    const entry = turn === null ? null : this.entryOf(turn);
    if (!entry) return;
    let list = entry.querySelector(':scope > .tool-calls');
    if (!list) {
      list = make('ol', 'tool-calls');
      list.setAttribute('aria-label', 'Tool calls');
      const reply = entry.querySelector(':scope > .bubble.assistant');
      entry.insertBefore(list, reply);
    }
    list.append(el);
  }
}
