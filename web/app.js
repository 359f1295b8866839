// voice-fsm page: hold the button (or the space bar) to talk, release to send; or switch hands-free
// on and just talk (the server's voice activity detection starts and ends the turns). Wires the socket
// (protocol.js), the microphone (capture.js), playback (player.js) and the displays: the state
// diagram (machine.js), the conversation (conversation.js) and its tool calls (tools.js), latency
// (latency.js), errors (errors.js).
// The page's own state is one record (client.js): every change to it is a named change, and the
// controls show `view(client)`.
import { Capture } from './capture.js';
import { changes, connectionText, createClient, pipelineOf, replying, view, wantsAudio } from './client.js';
import { MESSAGE_LEVEL_CODES as MESSAGE_LEVEL, MODE, PIPELINE, SAMPLE_RATE, SERVER_EVENT, STATE } from './constants.js';
import { Conversation } from './conversation.js';
import { accessErrorText, describeError, micErrorText, shortError } from './errors.js';
import { V2vChart, renderWaterfall } from './latency.js';
import { MachineDiagram } from './machine.js';
import { Player } from './player.js';
import { Connection, messages, socketUrl } from './protocol.js';
import { ToolCalls } from './tools.js';

// Errors about one message (the others end the turn): that message is dropped, the turn goes on.
const MESSAGE_LEVEL_CODES = new Set(MESSAGE_LEVEL);

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
  pipeline: $('pipeline'),
  s2s: $('s2s'),
  listening: $('listening'),
  howTo: $('how-to'),
  howToHandsFree: $('how-to-hands-free'),
  providers: $('providers'),
  engines: $('engines'),
};

const client = createClient(sessionFromQuery());
const CHANGES_KEPT = 200;

/** Apply the named change `name` (client.js) and return what it returns. */
function change(name, ...args) {
  const result = changes[name](client, ...args);
  hooks.changes.push(name);
  if (hooks.changes.length > CHANGES_KEPT) hooks.changes.splice(0, hooks.changes.length - CHANGES_KEPT);
  return result;
}

let ctx = null;
let retryTimer = null;
const player = new Player({ onChange: syncPlayback });
const capture = new Capture({ onChunk: sendChunk });
const conn = new Connection(socketUrl(), { onEvent, onAudio, onStatus });
const machine = new MachineDiagram($('machine'));
const conversation = new Conversation($('conversation'));
const tools = new ToolCalls((turn) => {
  const entry = conversation.get(turn);
  return entry ? entry.el : null;
});
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
    return client.talk === 'sending';
  },
  /** The page is playing reply audio (the server may be idle already: it sent the whole reply). */
  get playing() {
    return player.playing;
  },
  /** Hands-free is on: the microphone streams and the server's VAD starts and ends turns. */
  get handsFree() {
    return client.handsFree === 'on';
  },
  /** Hands-free: the server hears speech right now (between vad.speech_started and _stopped). */
  get speechDetected() {
    return client.vad.speech;
  },
  /** The page's whole state (client.js), and the names of its last changes, in order. */
  client,
  changes: [],
  vadEvents: [], // 'started' / 'stopped' for every vad.speech_started / _stopped, in order (page lifetime)
  /** The server's state as the page shows it. */
  get state() {
    return client.server.state;
  },
  stateHistory: [], // every state the page showed, in order, consecutive duplicates folded
  events: [], // the type of every server event received, in order
  get connection() {
    return client.connection.status;
  },
  reconnects: 0, // sessions created after the first one
  /** {status, error} while the server refuses this page a token (401/403). */
  get refused() {
    return client.connection.refused;
  },
  sessionId: null,
  get turn() {
    return client.server.turn;
  },
  // Per session (reset by session.created):
  lastPlayedMs: null, // played_ms when playback was last cut off (barge-in or Stop)
  lastMetrics: null, // the last turn.metrics event
  lastError: null, // the last error event
  /** The session's tool calls, in order: {turn, call_id, name, arguments, runs_on, status
   * ('running' | 'ok' | 'failed' | 'cancelled'), ok, output, error, duration_ms}. */
  get toolCalls() {
    return tools.list;
  },
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
    // the default rate; the worklet resamples to SAMPLE_RATE and playback buffers keep their own rate.
    if (err && err.captureStage === 'graph' && err.name === 'NotSupportedError' && ctx.sampleRate === SAMPLE_RATE) {
      console.warn(`${SAMPLE_RATE} Hz capture graph not supported; using the default sample rate`, err);
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
  const first = change('held', source);
  if (!first || client.talk !== 'off' || client.handsFree !== 'off') return;
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
  const wasReplying = replying(client);
  const wasPlaying = player.playing || player.accepting;
  const played = cutPlayback('You interrupted it');
  change('newTurn', client.server.turn + 1);
  clearError();
  conversation.begin();
  change('talkOpening');
  render();

  try {
    if (client.flushing) await client.flushing;
    const wasReady = capture.readyFor(ctx);
    const ok = await openMic();
    const stillHeld = client.held.size > 0;
    if (!ok || !stillHeld || !conn.isOpen) {
      conversation.abandon();
      // No turn after all; a reply we silenced is cancelled rather than left talking unheard.
      if (wasReplying && replying(client)) {
        change('replyCancelled');
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
    capture.start();
    change('talkRecording');
  } finally {
    change('talkOpened');
    render();
  }
}

function release(source) {
  if (!change('unheld', source)) return;
  if (client.talk !== 'sending') return; // press() notices the release itself while it is still opening
  change('talkReleased');
  render();
  // Send the last partial chunk, then input_audio.stop (the server keeps commands in order, so this
  // is right even when its `state: recording` has not arrived yet).
  change(
    'flushing',
    capture
      .stop(true)
      .then(() => {
        conn.send(messages.inputAudioStop());
      })
      .finally(() => change('flushed')),
  );
}

function releaseAll() {
  for (const source of [...client.held]) release(source);
}

/** Stop button / Escape: stop the reply being prepared or spoken. */
function stopReply() {
  const audible = player.playing;
  const played = cutPlayback('Stopped');
  if (replying(client)) {
    change('replyCancelled');
    conn.send(messages.responseCancel(played));
    if (!audible) conversation.cancelled(client.server.turn);
  }
  render();
}

/**
 * Silence all scheduled audio at once and ignore the rest of its turn's frames. Returns the
 * played_ms of the reply in flight (0 when none of its audio had played). With `how`, the turn
 * whose audio was audible gets a note in the conversation.
 */
function cutPlayback(how, replyTurn = replying(client) ? client.server.turn : player.turn) {
  const audioTurn = player.turn;
  const hadAudio = player.playing || player.accepting;
  const audible = player.playing;
  const playedOfAudio = player.stop();
  player.endTurn();
  const played = audioTurn !== null && audioTurn === replyTurn ? playedOfAudio : 0;
  if (hadAudio) hooks.lastPlayedMs = played;
  if (how && audible && audioTurn !== null) {
    conversation.cut(audioTurn, playedOfAudio, client.audio.durations.get(audioTurn), how);
  }
  return played;
}

function clearConversation() {
  cutPlayback();
  conn.send(messages.conversationClear());
  conversation.clear();
  tools.reset();
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

function updateHandsFreeAvailability() {
  if (!client.modes.includes(MODE.HANDS_FREE) && (ui.handsFree.checked || client.handsFree === 'on')) {
    ui.handsFree.checked = false;
    stopHandsFree({ tellServer: false });
  }
  render();
}

/** Ask the server for `mode` unless it has it (or was asked) already. */
function requestMode(mode) {
  if (client.mode.sent === mode) return true;
  if (!conn.send(messages.sessionUpdate({ mode }))) return false;
  change('modeRequested', mode);
  return true;
}

/** The switch went on (or a new session while it is on): open the microphone and stream it. */
async function startHandsFree() {
  if (client.handsFree !== 'off') return;
  const giveUp = () => {
    ui.handsFree.checked = false;
    render();
  };
  if (!conn.isOpen) return render(); // the switch stays on: the next session.created starts it
  if (!client.modes.includes(MODE.HANDS_FREE)) return giveUp();
  try {
    ensureContext();
  } catch (err) {
    showError(err.message, 'no-web-audio');
    return giveUp();
  }
  change('handsFreeOpening');
  render();
  try {
    // A push-to-talk recording in progress is sent as if the button had been released.
    releaseAll();
    if (client.flushing) await client.flushing;
    const ok = await openMic();
    if (!ui.handsFree.checked || !conn.isOpen) return; // switched off, or the socket closed
    if (!ok || !client.modes.includes(MODE.HANDS_FREE)) return giveUp();
    // The mode first, so the server never sees a frame outside a turn in push-to-talk mode.
    if (!requestMode(MODE.HANDS_FREE)) return;
    change('handsFreeOn');
    capture.start();
  } finally {
    change('handsFreeOpened');
    render();
  }
}

/** The switch went off (or the socket closed): stop streaming; the server goes back to push-to-talk. */
function stopHandsFree({ tellServer = true } = {}) {
  if (change('handsFreeOff')) capture.stop(false);
  if (tellServer && conn.isOpen && client.mode.sent === MODE.HANDS_FREE && requestMode(MODE.PUSH_TO_TALK)) {
    // A turn the server was recording stays open after the switch: see onSessionUpdated.
    change('leavingHandsFree');
  }
  render();
}

function onSessionUpdated(event) {
  if (client.created && event.session) {
    change('sessionUpdated', event.session);
    showEngines();
  }
  const mode = event.session && event.session.mode;
  if (mode === MODE.PUSH_TO_TALK && client.mode.sent === MODE.HANDS_FREE && !client.mode.leaving) {
    // The server ended hands-free mode itself: its speech detection could not start or failed
    // (the error just before says why). Switch it off here too; it may be switched on again.
    change('modeRequested', MODE.PUSH_TO_TALK);
    ui.handsFree.checked = false;
    stopHandsFree({ tellServer: false });
    return;
  }
  if (!client.mode.leaving || mode !== MODE.PUSH_TO_TALK) return;
  change('leftHandsFree');
  // The server handles messages in order: if it is recording now, that is a hands-free turn it
  // began before it switched modes, and nothing would end it. Discard it.
  if (client.server.state === STATE.RECORDING && client.talk === 'off' && client.handsFree === 'off') {
    conn.send(messages.responseCancel());
    conversation.discarded(client.server.turn);
  }
}

function onSpeechStarted(event) {
  hooks.vadEvents.push('started');
  const newTurn = client.server.state !== STATE.RECORDING || event.turn !== client.server.turn;
  change('speechStarted', event.turn);
  if (newTurn) {
    // A new turn. As on a push-to-talk press, whatever plays stops now: the server has cancelled a
    // reply in flight (barge-in), and anything still on the wire from it is ignored.
    cutPlayback('You interrupted it');
    change('newTurn', event.turn);
    clearError();
    conversation.begin();
  }
  render();
}

function onSpeechStopped() {
  hooks.vadEvents.push('stopped');
  change('speechStopped');
  render();
}

// ------------------------------------------------------------------ server events

function onEvent(event) {
  if (!event || typeof event.type !== 'string') return;
  hooks.events.push(event.type);
  switch (event.type) {
    case SERVER_EVENT.SESSION_CREATED:
      onSessionCreated(event);
      break;
    case SERVER_EVENT.SESSION_UPDATED:
      onSessionUpdated(event);
      break;
    case SERVER_EVENT.VAD_SPEECH_STARTED:
      onSpeechStarted(event);
      break;
    case SERVER_EVENT.VAD_SPEECH_STOPPED:
      onSpeechStopped(event);
      break;
    case SERVER_EVENT.STATE:
      onState(event);
      break;
    case SERVER_EVENT.TRANSCRIPT_DELTA:
      conversation.transcript(event.turn, event.text, false);
      break;
    case SERVER_EVENT.TRANSCRIPT_DONE:
      conversation.transcript(event.turn, event.text, true);
      break;
    case SERVER_EVENT.RESPONSE_DELTA:
      conversation.reply(event.turn, event.text);
      break;
    case SERVER_EVENT.RESPONSE_DONE:
      conversation.reply(event.turn, event.text, { final: true, interrupted: event.interrupted });
      break;
    case SERVER_EVENT.AUDIO_START:
      if (wantsAudio(client, event.turn)) {
        player.beginTurn(event.turn, event.sample_rate);
        syncPlayback();
      } else {
        player.endTurn();
      }
      break;
    case SERVER_EVENT.AUDIO_DONE:
      change('audioDone', event.turn, event.duration_ms);
      if (player.turn === event.turn) player.endTurn();
      break;
    case SERVER_EVENT.TOOL_CALL:
      // Shown only: this page declares no tools, so a call it should run (runs_on client) is
      // not answered; the server times it out and the model hears so.
      tools.call(event);
      break;
    case SERVER_EVENT.TOOL_RESULT:
      tools.result(event);
      break;
    case SERVER_EVENT.TOOL_CANCELLED:
      tools.cancelled(event);
      break;
    case SERVER_EVENT.TURN_METRICS:
      hooks.lastMetrics = event;
      showMetrics(event);
      conversation.metrics(event.turn, renderWaterfall(event));
      chart.add(event.voice_to_voice_ms, `Turn ${event.turn}`);
      break;
    case SERVER_EVENT.ERROR:
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
  change('sessionCreated', event);
  const reconnected = client.sessions > 1;
  if (reconnected) hooks.reconnects += 1;
  hooks.sessionId = event.session_id;
  // A new session numbers its turns afresh; the conversation stays on screen.
  conversation.newSession(event.session_id, { reconnected });
  tools.reset();
  const shown = ui.metrics.querySelector('.metrics-title');
  if (reconnected && shown && !shown.textContent.includes('(')) shown.textContent += ' (before reconnecting)';
  hooks.lastMetrics = null; // hooks are per session; the screen keeps the old turns
  hooks.lastError = null;
  hooks.lastPlayedMs = null;
  if (player.accepting) player.stop(); // else only a reply received in full still plays
  player.endTurn();
  player.turn = null;
  syncPlayback();
  if (event.output_audio && event.output_audio.sample_rate) player.sampleRate = event.output_audio.sample_rate;
  showEngines();
  updateHandsFreeAvailability();

  // The settings of the page's URL, and push-to-talk unless the server starts that way. Hands-free
  // (the switch still on after a reconnect) is asked for once the microphone streams again.
  const update = { ...client.sessionUpdate };
  if (client.mode.sent !== MODE.PUSH_TO_TALK) update.mode = MODE.PUSH_TO_TALK;
  // The pipeline the switch asked for, again after a reconnect (where the server runs it).
  const wanted = client.pipelineWanted;
  if (wanted && wanted !== pipelineOf(client) && client.pipelines.includes(wanted)) update.pipeline = wanted;
  if (Object.keys(update).length > 0 && conn.send(messages.sessionUpdate(update))) {
    if (update.mode) change('modeRequested', update.mode);
  }
  if (ui.handsFree.checked && client.modes.includes(MODE.HANDS_FREE)) startHandsFree();
}

function onState(event) {
  // What was replying is judged on the state before this event, with this event's turn.
  const replyTurn = replying(client) ? event.turn : player.turn;
  const endedOurRecording = change('serverState', event);
  if (event.state === STATE.RECORDING) {
    cutPlayback(undefined, replyTurn);
    clearError();
    conversation.confirm(event.turn);
    tools.turnEnded(event.turn - 1);
  } else {
    if (event.state === STATE.IDLE) tools.turnEnded(event.turn);
    // The server ended our recording itself (an error such as audio-too-long): stop sending audio.
    if (endedOurRecording) capture.stop(false);
    conversation.phase(event.turn, event.state === STATE.IDLE ? 'done' : event.state);
  }
  showState(event.state, event.previous);
}

function onAudio(data) {
  hooks.receivedAudioBytes += data.byteLength;
  if (!player.enqueue(data)) hooks.droppedAudioBytes += data.byteLength;
}

function onStatus(status, { retryInMs, refused, closed } = {}) {
  clearInterval(retryTimer);
  retryTimer = null;
  if (status === 'closed') {
    // Whatever was in flight belonged to the old session. But a draining server closes with 1001
    // only once the turn is over: a reply whose audio came in full plays to its end.
    const replyTurn = replying(client) ? client.server.turn : player.turn;
    const replyReceived =
      closed && closed.code === 1001 && !player.accepting && client.audio.durations.has(player.turn);
    const wasRecording = change('closed', {
      retryAt: Date.now() + (retryInMs || 0),
      refused: refused || null,
      closeReason: (closed && closed.reason) || '',
    });
    if (refused) showError(accessErrorText(refused), 'not-allowed');
    if (wasRecording) capture.stop(false);
    if (client.handsFree === 'on') stopHandsFree({ tellServer: false });
    if (!replyReceived) cutPlayback(undefined, replyTurn);
    conversation.disconnected();
    tools.turnEnded(Infinity);
    showState(client.server.state);
    retryTimer = setInterval(showConnection, 250);
  } else if (status === 'open') {
    change('opened');
    if (ui.error.dataset.code === 'not-allowed') clearError();
  } else {
    change('connecting');
  }
  render();
}

function showConnection() {
  ui.connection.textContent = connectionText(client, Date.now());
}

// ------------------------------------------------------------------ display

/** The server's state changed to `state` (from `previous`, when the server said so). */
function showState(state, previous) {
  machine.show(state, previous);
  const history = hooks.stateHistory;
  if (history[history.length - 1] !== state) history.push(state);
  render();
}

/** The player started or stopped playing, or its turn changed. */
function syncPlayback() {
  change('playback', player.playing, player.turn);
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
  const created = client.created;
  const parts = [];
  // Speech-to-speech: one Realtime model in place of the three stages.
  const stages = pipelineOf(client) === PIPELINE.SPEECH_TO_SPEECH && created.s2s ? [['s2s', 'speech-to-speech']] : STAGES;
  for (const [key, name] of stages) {
    const info = created[key];
    if (!info) continue;
    let engine = `${info.provider} ${info.model}`;
    const voice = created.session && created.session.voice;
    if ((key === 'tts' || key === 's2s') && voice && String(info.provider).startsWith('openai')) engine += `, voice ${voice}`;
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

/** Show `view(client)`: every control follows the client state. */
function render() {
  const v = view(client);
  ui.state.textContent = v.state;
  document.body.dataset.state = v.state;
  ui.connection.dataset.status = v.connection;
  showConnection();
  ui.talk.disabled = v.talk.disabled;
  ui.talk.setAttribute('aria-pressed', String(v.talk.pressed));
  ui.talk.classList.toggle('active', v.talk.pressed);
  ui.talk.classList.toggle('hands-free', v.talk.handsFree);
  ui.talk.classList.toggle('speech', v.talk.speech);
  ui.talkLabel.textContent = v.talk.label;
  ui.listening.hidden = v.listening.hidden;
  ui.listening.dataset.speech = String(v.listening.speech);
  ui.listening.textContent = v.listening.text;
  ui.howTo.hidden = v.howToHidden;
  ui.howToHandsFree.hidden = v.howToHandsFreeHidden;
  ui.playback.hidden = !v.playing;
  machine.setPlaying(v.playing);
  conversation.playing(v.playingTurn);
  ui.stop.disabled = v.stopDisabled;
  ui.clear.disabled = v.clearDisabled;
  ui.handsFree.disabled = v.handsFreeSwitch.disabled;
  ui.handsFreeLabel.title = v.handsFreeSwitch.tip;
  ui.handsFree.title = v.handsFreeSwitch.tip;
  ui.handsFreeNote.textContent = v.handsFreeSwitch.note;
  ui.pipeline.hidden = v.pipelineSwitch.hidden;
  ui.s2s.disabled = v.pipelineSwitch.disabled;
  ui.s2s.checked = v.pipelineSwitch.on;
}

// ------------------------------------------------------------------ input

// The pipeline switch: speech-to-speech (a Realtime model hears and answers) or the cascade.
ui.s2s.addEventListener('change', () => {
  const pipeline = ui.s2s.checked ? PIPELINE.SPEECH_TO_SPEECH : PIPELINE.CASCADE;
  change('pipelineWanted', pipeline);
  if (conn.isOpen) conn.send(messages.sessionUpdate({ pipeline }));
  render();
});

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

showState(client.server.state);
clearError();
showMetrics(null);
updateHandsFreeAvailability();
conn.connect();
