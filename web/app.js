// voice-fsm page: hold the button (or the space bar) to talk, release to send; or switch hands-free
// on and just talk (the server's voice activity detection starts and ends the turns). Wires the socket
// (protocol.js), the microphone (capture.js), playback (player.js) and the displays: the state
// diagram (machine.js), the conversation (conversation.js), latency (latency.js), errors (errors.js).
import { Capture } from './capture.js';
import { Conversation } from './conversation.js';
import { accessErrorText, describeError, micErrorText, shortError } from './errors.js';
import { V2vChart, renderWaterfall } from './latency.js';
import { MachineDiagram } from './machine.js';
import { Player } from './player.js';
import { Connection, REPLY_STATES, messages, socketUrl } from './protocol.js';

const SAMPLE_RATE = 24000;
// Errors that end the turn (the others drop one message and leave the turn as it was).
const MESSAGE_LEVEL_CODES = new Set(['invalid-message', 'invalid-state', 'invalid-audio']);

const $ = (id) => document.getElementById(id);
const ui = {
  talk: $('talk'),
  talkLabel: $('talk-label'),
  state: $('state'),
  connection: $('connection'),
  metrics: $('metrics'),
  error: $('error'),
  hint: $('hint'),
  playback: $('playback'),
  stop: $('stop'),
  clear: $('clear'),
  handsFree: $('hands-free'),
  handsFreeLabel: $('hands-free-label'),
  handsFreeNote: $('hands-free-note'),
  listening: $('listening'),
  howTo: $('how-to'),
  howToHandsFree: $('how-to-hands-free'),
  providers: $('providers'),
  engines: $('engines'),
};

const app = {
  state: 'idle', // the server's state
  turn: 0, // the server's turn number, from the last `state` event
  connection: 'connecting',
  sessions: 0, // session.created messages seen (a second one means we reconnected)
  modes: [], // session.created.modes
  holders: new Set(), // what is holding the talk button down: "pointer", "key", "api"
  starting: false, // between press and input_audio.start (waiting for the microphone)
  recording: false, // input_audio.start sent, input_audio.stop not yet
  stopping: null, // promise: flushing the last audio, then input_audio.stop
  handsFree: false, // hands-free switched on and the microphone streaming
  handsFreeStarting: false, // switched on, waiting for the microphone
  modeSent: 'push_to_talk', // the mode the server has (or was last asked for) in this session
  leavingHandsFree: false, // push_to_talk sent; its session.updated not yet received
  speech: false, // hands-free: the server hears speech (vad.speech_started … vad.speech_stopped)
  vadTurn: null, // the turn the last vad.speech_started belongs to
  startsSent: 0, // input_audio.start messages this session …
  recordingsSeen: 0, // … and `state: recording` events; equal when the server confirmed the last
  confirmedTurn: null, // the server's turn number of our current recording, once confirmed
  dropBelow: 0, // audio of turns below this is stale (interrupted) and ignored
  cancelledTurn: -1, // the reply of this turn was cancelled with the Stop button
  audioMs: new Map(), // turn -> duration_ms of its reply audio (audio.done)
  retryAt: 0, // when the next reconnect attempt starts (Date.now() ms)
  retryTimer: null,
  closeReason: '', // the reason the server gave when it last closed the socket
  sessionUpdate: sessionFromQuery(),
  created: null, // the last session.created event (its stages' providers and models)
};

let ctx = null;
const player = new Player({ onChange: render });
const capture = new Capture({ onChunk: sendChunk });
const conn = new Connection(socketUrl(), { onEvent, onAudio, onStatus });
const machine = new MachineDiagram($('machine'));
const conversation = new Conversation($('conversation'));
const chart = new V2vChart($('v2v-chart'), { limit: 20 });

// Hooks for tests and for poking around in the console.
const hooks = {
  get scheduledSamples() {
    return player.scheduledSamples;
  },
  get playedSamples() {
    return player.playedSamples;
  },
  /** Milliseconds of the current (or last) turn's reply audio actually played. */
  get playedMs() {
    return player.playedMs();
  },
  /** AudioBufferSourceNodes scheduled or playing; 0 right after playback was cut. */
  get activeSources() {
    return player.activeSources;
  },
  get recording() {
    return app.recording;
  },
  /** The page is playing reply audio (the server may be idle already: it sent the whole reply). */
  get playing() {
    return player.playing;
  },
  /** Hands-free is on: the microphone streams and the server's VAD starts and ends turns. */
  get handsFree() {
    return app.handsFree;
  },
  /** Hands-free: the server hears speech right now (between vad.speech_started and _stopped). */
  get speechDetected() {
    return app.speech;
  },
  vadEvents: [], // 'started' / 'stopped' for every vad.speech_started / _stopped, in order (page lifetime)
  state: 'idle',
  stateHistory: [], // every state the page showed, in order, consecutive duplicates folded
  events: [], // the type of every server event received, in order
  connection: 'connecting',
  reconnects: 0, // sessions created after the first one
  refused: null, // {status, error} while the server refuses this page a token (401/403)
  sessionId: null,
  turn: 0,
  // Per session (reset by session.created):
  lastPlayedMs: null, // played_ms when playback was last cut off (barge-in or Stop)
  lastMetrics: null, // the last turn.metrics event
  lastError: null, // the last error event
  sentAudioBytes: 0,
  receivedAudioBytes: 0,
  droppedAudioBytes: 0, // binary frames outside audio.start … audio.done of a wanted turn
  press: () => press('api'),
  release: () => release('api'),
  stop: () => stopReply(),
  clear: () => clearConversation(),
};
window.voiceFsm = hooks;

// ------------------------------------------------------------------ audio context and microphone

/** Create or resume the one AudioContext; call from a user gesture (autoplay policy). */
function ensureContext() {
  if (!ctx || ctx.state === 'closed') {
    const AudioContextClass = window.AudioContext || window.webkitAudioContext;
    if (!AudioContextClass) throw new Error('This browser has no Web Audio API.');
    try {
      ctx = new AudioContextClass({ sampleRate: SAMPLE_RATE, latencyHint: 'interactive' });
    } catch {
      ctx = new AudioContextClass({ latencyHint: 'interactive' });
    }
    player.attach(ctx);
  }
  if (ctx.state !== 'running') ctx.resume().catch(() => {});
  return ctx;
}

/** Open the microphone into the context; false (with the reason shown) if it cannot be. */
async function openMic() {
  try {
    await capture.open(ctx);
    return true;
  } catch (err) {
    // Some browsers cannot connect a microphone to a context at another sample rate: fall back to
    // the default rate; the worklet resamples to 24 kHz and playback buffers keep their own rate.
    if (err && err.captureStage === 'graph' && err.name === 'NotSupportedError' && ctx.sampleRate === SAMPLE_RATE) {
      console.warn('24 kHz capture graph not supported; using the default sample rate', err);
      const old = ctx;
      ctx = new (window.AudioContext || window.webkitAudioContext)({ latencyHint: 'interactive' });
      player.attach(ctx);
      old.close().catch(() => {});
      ctx.resume().catch(() => {});
      try {
        await capture.open(ctx);
        return true;
      } catch (retryErr) {
        err = retryErr;
      }
    }
    console.warn('microphone', err);
    showError(micErrorText(err), (err && err.name) || 'microphone');
    return false;
  }
}

function sendChunk(buffer) {
  if (conn.sendAudio(buffer)) hooks.sentAudioBytes += buffer.byteLength;
}

// ------------------------------------------------------------------ push to talk

async function press(source) {
  const first = app.holders.size === 0;
  app.holders.add(source);
  if (!first || app.starting || app.recording || app.handsFree || app.handsFreeStarting) return;
  if (!conn.isOpen) {
    showError('Not connected to the server yet. Wait for it to reconnect.', 'not-connected');
    return;
  }
  try {
    ensureContext();
  } catch (err) {
    showError(err.message, 'no-web-audio');
    return;
  }

  // A new turn. Whatever is playing stops now; the server cancels a reply in flight when it gets
  // input_audio.start (barge-in), and anything still on the wire from it is ignored.
  const wasReplying = REPLY_STATES.has(app.state);
  const wasPlaying = player.playing || player.accepting;
  const played = cutPlayback('You interrupted it');
  app.dropBelow = Math.max(app.dropBelow, app.turn + 1);
  clearError();
  conversation.begin();
  app.starting = true;
  render();

  try {
    if (app.stopping) await app.stopping;
    const wasReady = capture.readyFor(ctx);
    const ok = await openMic();
    const stillHeld = app.holders.size > 0;
    if (!ok || !stillHeld || !conn.isOpen) {
      conversation.abandon();
      // No turn after all; a reply we silenced is cancelled rather than left talking unheard.
      if (wasReplying && REPLY_STATES.has(app.state)) {
        app.cancelledTurn = app.turn;
        conn.send(messages.responseCancel(played));
      }
      if (ok && !stillHeld && !wasReady) {
        ui.hint.textContent = 'Microphone ready. Hold the button (or the space bar) while you speak.';
      }
      return;
    }
    ui.hint.textContent = '';
    // A barge-in tells the server how much of the interrupted reply was heard.
    conn.send(messages.inputAudioStart(wasReplying || wasPlaying ? played : undefined));
    app.startsSent += 1;
    app.confirmedTurn = null;
    capture.start();
    app.recording = true;
  } finally {
    app.starting = false;
    render();
  }
}

function release(source) {
  if (!app.holders.delete(source) || app.holders.size > 0) return;
  if (!app.recording) return; // press() notices the release itself while it is still starting
  app.recording = false;
  render();
  // Send the last partial chunk, then input_audio.stop (the server keeps commands in order, so this
  // is right even when its `state: recording` has not arrived yet).
  app.stopping = capture
    .stop(true)
    .then(() => {
      conn.send(messages.inputAudioStop());
    })
    .finally(() => {
      app.stopping = null;
    });
}

function releaseAll() {
  for (const source of [...app.holders]) release(source);
}

/** Stop button / Escape: stop the reply being prepared or spoken. */
function stopReply() {
  const audible = player.playing;
  const played = cutPlayback('Stopped');
  if (REPLY_STATES.has(app.state)) {
    app.cancelledTurn = app.turn;
    conn.send(messages.responseCancel(played));
    if (!audible) conversation.cancelled(app.turn);
  }
  render();
}

/**
 * Silence all scheduled audio at once and ignore the rest of its turn's frames. Returns the
 * played_ms of the reply in flight (0 when none of its audio had played). With `how`, the turn
 * whose audio was audible gets a note in the conversation.
 */
function cutPlayback(how) {
  const replyTurn = REPLY_STATES.has(app.state) ? app.turn : player.turn;
  const audioTurn = player.turn;
  const hadAudio = player.playing || player.accepting;
  const audible = player.playing;
  const playedOfAudio = player.stop();
  player.endTurn();
  const played = audioTurn !== null && audioTurn === replyTurn ? playedOfAudio : 0;
  if (hadAudio) hooks.lastPlayedMs = played;
  if (how && audible && audioTurn !== null) {
    conversation.cut(audioTurn, playedOfAudio, app.audioMs.get(audioTurn), how);
  }
  return played;
}

function clearConversation() {
  cutPlayback();
  conn.send(messages.conversationClear());
  conversation.clear();
  clearError();
  showMetrics(null);
  hooks.lastMetrics = null;
  render();
}

// ------------------------------------------------------------------ hands-free

// Hands-free: the microphone streams all the time, in every state, and the server's voice activity
// detection starts a turn when it hears speech (vad.speech_started, then `state: recording`) and ends
// it after a pause (vad.speech_stopped); the rest of the turn is as in push-to-talk. Speech while a
// reply is in flight or still playing interrupts it (the page silences it on vad.speech_started).
// The talk button is disabled meanwhile: it shows when the server hears speech.

const HANDS_FREE_TIP = {
  available: 'Talk without holding the button: the microphone stays on and the server detects when you speak.',
  missing: "The server doesn't support hands-free mode yet: it offers push-to-talk only.",
};

function updateHandsFreeAvailability() {
  const available = app.modes.includes('hands_free');
  if (!available && (ui.handsFree.checked || app.handsFree)) {
    ui.handsFree.checked = false;
    stopHandsFree({ tellServer: false });
  }
  const tip = available ? HANDS_FREE_TIP.available : HANDS_FREE_TIP.missing;
  ui.handsFreeLabel.title = tip;
  ui.handsFree.title = tip;
  ui.handsFreeNote.textContent = available ? '' : 'Not supported by this server yet.';
  render();
}

/** Ask the server for `mode` unless it has it (or was asked) already. */
function requestMode(mode) {
  if (app.modeSent === mode) return true;
  if (!conn.send(messages.sessionUpdate({ mode }))) return false;
  app.modeSent = mode;
  return true;
}

/** The switch went on (or a new session while it is on): open the microphone and stream it. */
async function startHandsFree() {
  if (app.handsFree || app.handsFreeStarting) return;
  const giveUp = () => {
    ui.handsFree.checked = false;
    render();
  };
  if (!conn.isOpen) return render(); // the switch stays on: the next session.created starts it
  if (!app.modes.includes('hands_free')) return giveUp();
  try {
    ensureContext();
  } catch (err) {
    showError(err.message, 'no-web-audio');
    return giveUp();
  }
  app.handsFreeStarting = true;
  render();
  try {
    // A push-to-talk recording in progress is sent as if the button had been released.
    releaseAll();
    if (app.stopping) await app.stopping;
    const ok = await openMic();
    if (!ui.handsFree.checked || !conn.isOpen) return; // switched off, or the socket closed
    if (!ok || !app.modes.includes('hands_free')) return giveUp();
    // The mode first, so the server never sees a frame outside a turn in push-to-talk mode.
    if (!requestMode('hands_free')) return;
    app.handsFree = true;
    app.speech = false;
    capture.start();
  } finally {
    app.handsFreeStarting = false;
    render();
  }
}

/** The switch went off (or the socket closed): stop streaming; the server goes back to push-to-talk. */
function stopHandsFree({ tellServer = true } = {}) {
  const was = app.handsFree;
  app.handsFree = false;
  app.speech = false;
  if (was) capture.stop(false);
  if (tellServer && conn.isOpen && app.modeSent === 'hands_free' && requestMode('push_to_talk')) {
    // A turn the server was recording stays open after the switch: see onSessionUpdated.
    app.leavingHandsFree = true;
  }
  render();
}

function onSessionUpdated(event) {
  if (app.created && event.session) {
    app.created = { ...app.created, session: { ...app.created.session, ...event.session } };
    showEngines();
  }
  const mode = event.session && event.session.mode;
  if (mode === 'push_to_talk' && app.modeSent === 'hands_free' && !app.leavingHandsFree) {
    // The server ended hands-free mode itself: its speech detection could not start or failed
    // (the error just before says why). Switch it off here too; it may be switched on again.
    app.modeSent = 'push_to_talk';
    ui.handsFree.checked = false;
    stopHandsFree({ tellServer: false });
    return;
  }
  if (!app.leavingHandsFree || mode !== 'push_to_talk') return;
  app.leavingHandsFree = false;
  // The server handles messages in order: if it is recording now, that is a hands-free turn it
  // began before it switched modes, and nothing would end it. Discard it.
  const ours = app.recording || app.starting || app.handsFree || app.handsFreeStarting;
  if (app.state === 'recording' && !ours) {
    conn.send(messages.responseCancel());
    conversation.discarded(app.turn);
  }
}

function onSpeechStarted(event) {
  hooks.vadEvents.push('started');
  app.speech = true;
  app.vadTurn = event.turn;
  if (app.state !== 'recording' || event.turn !== app.turn) {
    // A new turn. As on a push-to-talk press, whatever plays stops now: the server has cancelled a
    // reply in flight (barge-in), and anything still on the wire from it is ignored.
    cutPlayback('You interrupted it');
    app.dropBelow = Math.max(app.dropBelow, event.turn);
    clearError();
    conversation.begin();
  }
  render();
}

function onSpeechStopped() {
  hooks.vadEvents.push('stopped');
  app.speech = false;
  render();
}

// ------------------------------------------------------------------ server events

function onEvent(event) {
  if (!event || typeof event.type !== 'string') return;
  hooks.events.push(event.type);
  switch (event.type) {
    case 'session.created':
      onSessionCreated(event);
      break;
    case 'session.updated':
      onSessionUpdated(event);
      break;
    case 'vad.speech_started':
      onSpeechStarted(event);
      break;
    case 'vad.speech_stopped':
      onSpeechStopped(event);
      break;
    case 'state':
      onState(event);
      break;
    case 'transcript.delta':
      conversation.transcript(event.turn, event.text, false);
      break;
    case 'transcript.done':
      conversation.transcript(event.turn, event.text, true);
      break;
    case 'response.delta':
      conversation.reply(event.turn, event.text);
      break;
    case 'response.done':
      conversation.reply(event.turn, event.text, { final: true, interrupted: event.interrupted });
      break;
    case 'audio.start':
      if (event.turn >= app.dropBelow && event.turn > app.cancelledTurn) {
        player.beginTurn(event.turn, event.sample_rate);
      } else {
        player.endTurn();
      }
      break;
    case 'audio.done':
      app.audioMs.set(event.turn, event.duration_ms);
      if (player.turn === event.turn) player.endTurn();
      break;
    case 'turn.metrics':
      hooks.lastMetrics = event;
      showMetrics(event);
      conversation.metrics(event.turn, renderWaterfall(event));
      chart.add(event.voice_to_voice_ms, `Turn ${event.turn}`);
      break;
    case 'error':
      hooks.lastError = event;
      showError(describeError(event), event.code, event.message);
      // A finished turn keeps its outcome: an error between turns (hands-free detection lost)
      // is not about it.
      if (!MESSAGE_LEVEL_CODES.has(event.code) && conversation.isOpen(event.turn)) {
        conversation.error(event.turn, `${shortError(event)} (${event.code}).`, event.code);
      }
      break;
    default:
      console.debug('unhandled server event', event);
  }
}

function onSessionCreated(event) {
  app.sessions += 1;
  const reconnected = app.sessions > 1;
  if (reconnected) hooks.reconnects += 1;
  hooks.sessionId = event.session_id;
  // A new session numbers its turns afresh; the conversation stays on screen.
  conversation.newSession(event.session_id, { reconnected });
  const shown = ui.metrics.querySelector('.metrics-title');
  if (reconnected && shown && !shown.textContent.includes('(')) shown.textContent += ' (before reconnecting)';
  app.turn = 0;
  hooks.turn = 0;
  hooks.lastMetrics = null; // hooks are per session; the screen keeps the old turns
  hooks.lastError = null;
  hooks.lastPlayedMs = null;
  app.startsSent = 0;
  app.recordingsSeen = 0;
  app.confirmedTurn = null;
  app.dropBelow = 0;
  app.cancelledTurn = -1;
  app.audioMs.clear();
  app.speech = false;
  app.vadTurn = null;
  app.leavingHandsFree = false;
  app.modeSent = (event.session && event.session.mode) || 'push_to_talk';
  player.stop();
  player.endTurn();
  player.turn = null;
  if (event.output_audio && event.output_audio.sample_rate) player.sampleRate = event.output_audio.sample_rate;
  app.created = event;
  showEngines();
  app.modes = Array.isArray(event.modes) ? event.modes : [];
  updateHandsFreeAvailability();

  // The settings of the page's URL, and push-to-talk unless the server starts that way. Hands-free
  // (the switch still on after a reconnect) is asked for once the microphone streams again.
  const update = { ...app.sessionUpdate };
  if (app.modeSent !== 'push_to_talk') update.mode = 'push_to_talk';
  if (Object.keys(update).length > 0 && conn.send(messages.sessionUpdate(update))) {
    if (update.mode) app.modeSent = update.mode;
  }
  if (ui.handsFree.checked && app.modes.includes('hands_free')) startHandsFree();
}

function onState(event) {
  app.turn = event.turn;
  hooks.turn = event.turn;
  if (event.state === 'recording') {
    // Our own start (or a barge-in): nothing from earlier turns may play or show any more.
    app.dropBelow = event.turn;
    if (event.turn !== app.vadTurn) {
      // Started by our input_audio.start (a hands-free turn starts with vad.speech_started).
      app.recordingsSeen += 1;
      if (app.recording && app.recordingsSeen === app.startsSent) app.confirmedTurn = event.turn;
    }
    cutPlayback();
    clearError();
    conversation.confirm(event.turn);
  } else {
    if (event.previous === 'recording' && app.recording && app.confirmedTurn === event.turn) {
      // The server ended our recording itself (an error such as audio-too-long): stop sending audio.
      app.recording = false;
      capture.stop(false);
    }
    conversation.phase(event.turn, event.state === 'idle' ? 'done' : event.state);
  }
  setState(event.state, event.previous);
}

function onAudio(data) {
  hooks.receivedAudioBytes += data.byteLength;
  if (!player.enqueue(data)) hooks.droppedAudioBytes += data.byteLength;
}

function onStatus(status, { retryInMs, refused, closed } = {}) {
  app.connection = status;
  hooks.connection = status;
  clearInterval(app.retryTimer);
  app.retryTimer = null;
  if (status === 'closed') {
    hooks.refused = refused || null;
    app.closeReason = (closed && closed.reason) || '';
    if (refused) showError(accessErrorText(refused), 'not-allowed');
    // Whatever was in flight belonged to the old session.
    app.holders.clear();
    if (app.recording) capture.stop(false);
    app.recording = false;
    if (app.handsFree) stopHandsFree({ tellServer: false });
    cutPlayback();
    conversation.disconnected();
    setState('idle');
    app.retryAt = Date.now() + (retryInMs || 0);
    showCountdown();
    app.retryTimer = setInterval(showCountdown, 250);
  } else if (status === 'open') {
    ui.connection.textContent = 'Connected';
    hooks.refused = null;
    if (ui.error.dataset.code === 'not-allowed') clearError();
  } else {
    ui.connection.textContent = app.sessions > 0 ? 'Reconnecting…' : 'Connecting…';
  }
  ui.connection.dataset.status = status;
  render();
}

function showCountdown() {
  const seconds = Math.max(1, Math.ceil((app.retryAt - Date.now()) / 1000));
  const why = hooks.refused ? 'Not allowed to connect' : `Disconnected${app.closeReason ? ` (${app.closeReason})` : ''}`;
  ui.connection.textContent = `${why}. Reconnecting in ${seconds} s…`;
}

// ------------------------------------------------------------------ display

function setState(state, previous) {
  app.state = state;
  hooks.state = state;
  ui.state.textContent = state;
  document.body.dataset.state = state;
  machine.show(state, previous);
  const history = hooks.stateHistory;
  if (history[history.length - 1] !== state) history.push(state);
  render();
}

// The header's names of the stages, in pipeline order.
const STAGES = [
  ['stt', 'speech-to-text'],
  ['llm', 'LLM'],
  ['tts', 'speech'],
];

/** The engine of each stage (#engines, in the header) as session.created describes them, and
 * the session in the footer. The session's `voice` is a name of OpenAI's voices: only OpenAI's
 * speech follows it (Piper speaks with its configured voice, its model; the fakes ignore it). */
function showEngines() {
  const created = app.created;
  const parts = [];
  for (const [key, name] of STAGES) {
    const info = created[key];
    if (!info) continue;
    let engine = `${info.provider} ${info.model}`;
    const voice = created.session && created.session.voice;
    if (key === 'tts' && voice && String(info.provider).startsWith('openai')) engine += `, voice ${voice}`;
    const part = document.createElement('span');
    part.className = 'engine';
    part.dataset.stage = key;
    const label = document.createElement('span');
    label.className = 'engine-stage';
    label.textContent = `${name}:`;
    const value = document.createElement('span');
    value.className = 'engine-name';
    value.textContent = engine;
    part.append(label, ' ', value);
    if (parts.length) parts.push(' · ');
    parts.push(part);
  }
  ui.engines.replaceChildren(...parts);
  ui.engines.hidden = parts.length === 0;
  ui.providers.textContent = [
    created.session_id ? `session ${created.session_id}` : null,
    `protocol ${created.protocol}`,
  ]
    .filter(Boolean)
    .join(' · ');
}

/** The latest turn's waterfall in #metrics (null: the empty note). */
function showMetrics(event) {
  if (!event) {
    const empty = document.createElement('p');
    empty.className = 'metrics-empty';
    empty.textContent = 'Timings appear here after the first complete turn.';
    ui.metrics.replaceChildren(empty);
    delete ui.metrics.dataset.turn;
    return;
  }
  const title = document.createElement('p');
  title.className = 'metrics-title';
  title.textContent = `Turn ${event.turn}`;
  ui.metrics.replaceChildren(title, renderWaterfall(event));
  ui.metrics.dataset.turn = String(event.turn);
}

function showError(text, code, detail) {
  ui.error.textContent = '';
  const words = document.createElement('span');
  words.className = 'error-text';
  words.textContent = text;
  ui.error.append(words);
  if (!text.includes(`(${code})`)) {
    const codeEl = document.createElement('code');
    codeEl.textContent = code;
    ui.error.append(' ', codeEl);
  }
  if (detail && detail !== text) {
    const more = document.createElement('small');
    more.textContent = `Server said: ${detail}`;
    ui.error.append(more);
  }
  ui.error.dataset.code = code;
  ui.error.hidden = false;
}

function clearError() {
  ui.error.textContent = '';
  delete ui.error.dataset.code;
  ui.error.hidden = true;
}

function render() {
  const open = app.connection === 'open';
  const talking = app.recording || app.starting;
  const handsFree = app.handsFree || app.handsFreeStarting;
  const replying = REPLY_STATES.has(app.state) || player.playing;
  ui.talk.disabled = !open || handsFree;
  ui.talk.setAttribute('aria-pressed', String(talking));
  ui.talk.classList.toggle('active', talking);
  ui.talk.classList.toggle('hands-free', handsFree);
  ui.talk.classList.toggle('speech', app.handsFree && app.speech);
  let label = 'Hold to talk';
  if (app.handsFreeStarting || (app.starting && !app.handsFree)) label = 'Opening microphone…';
  else if (app.handsFree && app.speech) label = 'Hearing you…';
  else if (app.handsFree) label = replying ? 'Talk to interrupt' : 'Hands-free: just talk';
  else if (app.recording) label = 'Listening… release to send';
  else if (replying) label = 'Hold to interrupt';
  ui.talkLabel.textContent = label;
  ui.listening.hidden = !app.handsFree;
  ui.listening.dataset.speech = String(app.handsFree && app.speech);
  ui.listening.textContent = app.speech ? 'hearing you…' : 'listening…';
  ui.howTo.hidden = handsFree;
  ui.howToHandsFree.hidden = !handsFree;
  ui.playback.hidden = !player.playing;
  machine.setPlaying(player.playing);
  conversation.playing(player.playing ? player.turn : null);
  ui.stop.disabled = !(REPLY_STATES.has(app.state) || player.playing);
  ui.clear.disabled = !open || app.state !== 'idle' || talking;
  ui.handsFree.disabled = !open || !app.modes.includes('hands_free');
}

// ------------------------------------------------------------------ input

function isTyping(target) {
  return target instanceof HTMLElement && (target.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(target.tagName));
}

ui.talk.addEventListener('pointerdown', (event) => {
  if (event.pointerType === 'mouse' && event.button !== 0) return;
  event.preventDefault();
  try {
    ui.talk.setPointerCapture(event.pointerId);
  } catch {
    // the pointer is already gone
  }
  press('pointer');
});
for (const type of ['pointerup', 'pointercancel', 'lostpointercapture']) {
  ui.talk.addEventListener(type, () => release('pointer'));
}
ui.talk.addEventListener('contextmenu', (event) => event.preventDefault());

// A touch's pointerdown does not count as a user gesture for audio (its pointerup does): resume
// the context on any later gesture so it is running by the next press.
for (const type of ['pointerup', 'click', 'keyup']) {
  window.addEventListener(type, () => {
    if (ctx && ctx.state !== 'running' && ctx.state !== 'closed') ctx.resume().catch(() => {});
  });
}

window.addEventListener('keydown', (event) => {
  if (isTyping(event.target) || event.ctrlKey || event.altKey || event.metaKey) return;
  if (event.code === 'Space' || event.key === ' ') {
    event.preventDefault(); // no page scroll, no button activation
    if (!event.repeat) press('key');
  } else if (event.key === 'Escape') {
    stopReply();
  }
});
window.addEventListener('keyup', (event) => {
  if (event.code === 'Space' || event.key === ' ') {
    event.preventDefault();
    release('key');
  }
});
// A key or button released while the page had no focus would leave us recording.
window.addEventListener('blur', releaseAll);
document.addEventListener('visibilitychange', () => {
  if (document.hidden) releaseAll();
});

ui.stop.addEventListener('click', stopReply);
ui.clear.addEventListener('click', () => {
  try {
    ensureContext();
  } catch {
    // playback is not needed to clear
  }
  clearConversation();
});
ui.handsFree.addEventListener('change', () => {
  if (ui.handsFree.checked) startHandsFree();
  else stopHandsFree();
});
// Space toggles a focused switch on keyup; the window's keyup handler (push-to-talk) would cancel that.
ui.handsFree.addEventListener('keyup', (event) => {
  if (event.code === 'Space' || event.key === ' ') event.stopPropagation();
});

/** Optional ?voice=…&language=…&instructions=… in the page URL become a session.update. */
function sessionFromQuery() {
  const params = new URLSearchParams(window.location.search);
  const session = {};
  for (const key of ['instructions', 'voice', 'language']) {
    const value = params.get(key);
    if (value) session[key] = value;
  }
  return session;
}

setState('idle');
clearError();
showMetrics(null);
updateHandsFreeAvailability();
conn.connect();
