// voice-fsm push-to-talk page: hold the button (or the space bar) to talk, release to send.
import { Capture, micErrorText } from './capture.js';
import { Player } from './player.js';
import {
  Connection,
  REPLY_STATES,
  describeError,
  formatMetrics,
  formatProviders,
  messages,
  socketUrl,
} from './protocol.js';

const SAMPLE_RATE = 24000;

const $ = (id) => document.getElementById(id);
const ui = {
  talk: $('talk'),
  talkLabel: $('talk-label'),
  state: $('state'),
  connection: $('connection'),
  transcript: $('transcript'),
  reply: $('reply'),
  metrics: $('metrics'),
  error: $('error'),
  hint: $('hint'),
  stop: $('stop'),
  clear: $('clear'),
  providers: $('providers'),
};

const app = {
  state: 'idle', // the server's state
  turn: 0, // the server's turn number, from the last `state` event
  connection: 'connecting',
  holders: new Set(), // what is holding the talk button down: "pointer", "key", "api"
  starting: false, // between press and input_audio.start (waiting for the microphone)
  recording: false, // input_audio.start sent, input_audio.stop not yet
  stopping: null, // promise: flushing the last audio, then input_audio.stop
  startsSent: 0, // input_audio.start messages this session …
  recordingsSeen: 0, // … and `state: recording` events; equal when the server confirmed the last
  confirmedTurn: null, // the server's turn number of our current recording, once confirmed
  dropBelow: 0, // text and audio of turns below this are stale (interrupted) and ignored
  cancelledTurn: -1, // the reply of this turn was cancelled with the Stop button
  shownTurn: null, // the turn whose transcript and reply are on screen
  sessionUpdate: sessionFromQuery(),
};

let ctx = null;
const player = new Player({ onChange: render });
const capture = new Capture({ onChunk: sendChunk });
const conn = new Connection(socketUrl(), { onEvent, onAudio, onStatus });

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
  get recording() {
    return app.recording;
  },
  state: 'idle',
  events: [], // the type of every server event received, in order
  connection: 'connecting',
  sessionId: null,
  turn: 0,
  lastPlayedMs: null, // played_ms when playback was last cut off (barge-in or Stop)
  lastMetrics: null,
  lastError: null,
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
    console.error('microphone', err);
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
  if (!first || app.starting || app.recording) return;
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
  const played = cutPlayback();
  app.dropBelow = Math.max(app.dropBelow, app.turn + 1);
  clearError();
  clearTurnDisplay();
  app.starting = true;
  render();

  try {
    if (app.stopping) await app.stopping;
    const wasReady = capture.readyFor(ctx);
    const ok = await openMic();
    const stillHeld = app.holders.size > 0;
    if (!ok || !stillHeld || !conn.isOpen) {
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
    conn.send(messages.inputAudioStart());
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
  const played = cutPlayback();
  if (REPLY_STATES.has(app.state)) {
    app.cancelledTurn = app.turn;
    conn.send(messages.responseCancel(played));
  }
  render();
}

/** Silence all scheduled audio at once and ignore the rest of this turn's frames. */
function cutPlayback() {
  const hadAudio = player.playing || player.accepting;
  const played = player.stop();
  player.endTurn();
  if (hadAudio) hooks.lastPlayedMs = played;
  return played;
}

function clearConversation() {
  cutPlayback();
  conn.send(messages.conversationClear());
  app.shownTurn = null;
  clearTurnDisplay();
  clearError();
  ui.metrics.textContent = '';
  hooks.lastMetrics = null;
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
      break;
    case 'state':
      onState(event);
      break;
    case 'transcript.delta':
      if (showTurn(event.turn)) setText(ui.transcript, ui.transcript.textContent + event.text, 'partial');
      break;
    case 'transcript.done':
      if (showTurn(event.turn)) setText(ui.transcript, event.text, 'final');
      break;
    case 'response.delta':
      if (showTurn(event.turn)) setText(ui.reply, ui.reply.textContent + event.text, 'partial');
      break;
    case 'response.done':
      if (showTurn(event.turn)) setText(ui.reply, event.text, event.interrupted ? 'interrupted' : 'final');
      break;
    case 'audio.start':
      if (event.turn >= app.dropBelow && event.turn > app.cancelledTurn) {
        player.beginTurn(event.turn, event.sample_rate);
      } else {
        player.endTurn();
      }
      break;
    case 'audio.done':
      if (player.turn === event.turn) player.endTurn();
      break;
    case 'turn.metrics':
      hooks.lastMetrics = event;
      ui.metrics.textContent = `Turn ${event.turn}: ${formatMetrics(event)}`;
      break;
    case 'error':
      hooks.lastError = event;
      showError(describeError(event), event.code, event.message);
      break;
    default:
      console.debug('unhandled server event', event);
  }
}

function onSessionCreated(event) {
  hooks.sessionId = event.session_id;
  // A new session numbers its turns afresh.
  app.turn = 0;
  app.startsSent = 0;
  app.recordingsSeen = 0;
  app.confirmedTurn = null;
  app.dropBelow = 0;
  app.cancelledTurn = -1;
  app.shownTurn = null;
  if (event.output_audio && event.output_audio.sample_rate) player.sampleRate = event.output_audio.sample_rate;
  ui.providers.textContent = formatProviders(event);
  const update = { ...app.sessionUpdate };
  const mode = event.session && event.session.mode;
  if (mode && mode !== 'push_to_talk') update.mode = 'push_to_talk';
  if (Object.keys(update).length > 0) conn.send(messages.sessionUpdate(update));
}

function onState(event) {
  app.turn = event.turn;
  hooks.turn = event.turn;
  if (event.state === 'recording') {
    // Our own start (or a barge-in): nothing from earlier turns may play or show any more.
    app.dropBelow = event.turn;
    app.recordingsSeen += 1;
    if (app.recording && app.recordingsSeen === app.startsSent) app.confirmedTurn = event.turn;
    cutPlayback();
  } else if (event.previous === 'recording' && app.recording && app.confirmedTurn === event.turn) {
    // The server ended our recording itself (an error such as audio-too-long): stop sending audio.
    app.recording = false;
    capture.stop(false);
  }
  setState(event.state);
}

function onAudio(data) {
  hooks.receivedAudioBytes += data.byteLength;
  if (!player.enqueue(data)) hooks.droppedAudioBytes += data.byteLength;
}

function onStatus(status, { retryInMs } = {}) {
  app.connection = status;
  hooks.connection = status;
  if (status === 'closed') {
    // Whatever was in flight belonged to the old session.
    app.holders.clear();
    if (app.recording) capture.stop(false);
    app.recording = false;
    cutPlayback();
    setState('idle');
    ui.connection.textContent = `Disconnected, retrying in ${Math.round(retryInMs / 1000)} s`;
  } else if (status === 'open') {
    ui.connection.textContent = 'Connected';
  } else {
    ui.connection.textContent = 'Connecting…';
  }
  ui.connection.dataset.status = status;
  render();
}

// ------------------------------------------------------------------ display

function setState(state) {
  app.state = state;
  hooks.state = state;
  ui.state.textContent = state;
  document.body.dataset.state = state;
  render();
}

/** Whether text of `turn` belongs on screen; a new turn replaces the old one's text. */
function showTurn(turn) {
  if (turn < app.dropBelow) return false;
  if (app.shownTurn !== turn) {
    clearTurnDisplay();
    app.shownTurn = turn;
  }
  return true;
}

function setText(element, text, status) {
  element.textContent = text;
  element.dataset.status = status;
}

function clearTurnDisplay() {
  setText(ui.transcript, '', 'empty');
  setText(ui.reply, '', 'empty');
}

function showError(text, code, detail) {
  ui.error.textContent = '';
  const words = document.createElement('span');
  words.textContent = text;
  const codeEl = document.createElement('code');
  codeEl.textContent = code;
  ui.error.append(words, ' ', codeEl);
  if (detail && detail !== text) {
    const more = document.createElement('small');
    more.textContent = detail;
    ui.error.append(more);
  }
  ui.error.hidden = false;
}

function clearError() {
  ui.error.textContent = '';
  ui.error.hidden = true;
}

function render() {
  const open = app.connection === 'open';
  const talking = app.recording || app.starting;
  ui.talk.disabled = !open;
  ui.talk.setAttribute('aria-pressed', String(talking));
  ui.talk.classList.toggle('active', talking);
  let label = 'Hold to talk';
  if (app.starting) label = 'Opening microphone…';
  else if (app.recording) label = 'Listening… release to send';
  else if (REPLY_STATES.has(app.state) || player.playing) label = 'Hold to interrupt';
  ui.talkLabel.textContent = label;
  ui.stop.disabled = !(REPLY_STATES.has(app.state) || player.playing);
  ui.clear.disabled = !open || app.state !== 'idle' || talking;
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
clearTurnDisplay();
conn.connect();
