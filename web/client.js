// The page's own state, in one record: what the server is doing (its state and turn, from its
// `state` events) and what the browser is doing (the connection, the talk button and the
// microphone, hands-free, the reply audio playing). `changes` are its only writers, one named
// function per thing that happens; `view` derives what the controls show from it. app.js does the
// side effects (socket, microphone, playback) around the changes.
import { INITIAL_STATE, MODE, PIPELINE, REPLY_STATES, STATE } from './constants.js';

/** A fresh page: not connected yet, nothing held, push-to-talk. */
export function createClient(sessionUpdate = {}) {
  return {
    server: { state: INITIAL_STATE, turn: 0 }, // the server's state and turn (`state` events)
    connection: {
      status: 'connecting', // 'connecting' | 'open' | 'closed'
      retryAt: 0, // closed: when the next attempt starts (Date.now() ms)
      closeReason: '', // the reason the server gave when it last closed the socket
      refused: null, // {status, error} while the server refuses this page a token (401/403)
    },
    sessions: 0, // session.created messages seen (a second one means we reconnected)
    created: null, // the last session.created, with the session.updated changes merged in
    modes: [], // session.created.modes
    pipelines: [], // session.created.pipelines: cascade, and speech-to-speech where the server runs it
    pipelineWanted: null, // the pipeline the switch asked for (kept across reconnects); null: the server's
    sessionUpdate, // the page URL's settings, sent with every new session
    // Push-to-talk. `held`: what holds the button down ("pointer", "key", "api").
    held: new Set(),
    talk: 'off', // 'off' | 'opening' (waiting for the microphone) | 'sending' (start sent, stop not yet)
    flushing: null, // a promise while the last audio is sent before input_audio.stop
    starts: { sent: 0, seen: 0, confirmedTurn: null }, // our input_audio.starts and their `state: recording`
    // Hands-free: the microphone streams and the server's voice activity detection takes turns.
    handsFree: 'off', // 'off' | 'opening' (waiting for the microphone) | 'on'
    mode: { sent: MODE.PUSH_TO_TALK, leaving: false }, // asked of the server; push_to_talk asked, not yet confirmed
    vad: { speech: false, turn: null }, // the server hears speech; the turn of its last speech_started
    // Reply audio.
    audio: {
      dropBelow: 0, // audio of turns below this is stale (interrupted) and ignored
      cancelledTurn: -1, // the reply of this turn was cancelled with the Stop button
      durations: new Map(), // turn -> duration_ms of its reply audio (audio.done)
    },
    playback: { playing: false, turn: null }, // the page plays the reply audio of `turn`
  };
}

/** A reply is in flight on the server (a press or speech now barges in). */
export const replying = (c) => REPLY_STATES.includes(c.server.state);

/** The audio of `turn` is still wanted (not interrupted, not stopped). */
export const wantsAudio = (c, turn) => turn >= c.audio.dropBelow && turn > c.audio.cancelledTurn;

export const changes = {
  // ---------------------------------------------------------------- the connection
  connecting(c) {
    c.connection.status = 'connecting';
  },
  opened(c) {
    c.connection.status = 'open';
    c.connection.refused = null;
  },
  /** The socket closed: whatever was in flight belonged to the old session. Returns true when
   * a push-to-talk recording was cut short. */
  closed(c, { retryAt, refused = null, closeReason = '' }) {
    Object.assign(c.connection, { status: 'closed', retryAt, refused, closeReason });
    c.held.clear();
    const wasRecording = c.talk === 'sending';
    if (wasRecording) c.talk = 'off';
    c.server.state = INITIAL_STATE;
    return wasRecording;
  },
  sessionCreated(c, event) {
    c.sessions += 1;
    c.server.turn = 0;
    c.starts = { sent: 0, seen: 0, confirmedTurn: null };
    c.audio = { dropBelow: 0, cancelledTurn: -1, durations: new Map() };
    c.vad = { speech: false, turn: null };
    c.mode = { sent: (event.session && event.session.mode) || MODE.PUSH_TO_TALK, leaving: false };
    c.created = event;
    c.modes = Array.isArray(event.modes) ? event.modes : [];
    c.pipelines = Array.isArray(event.pipelines) ? event.pipelines : [PIPELINE.CASCADE];
  },
  pipelineWanted(c, pipeline) {
    c.pipelineWanted = pipeline;
  },
  sessionUpdated(c, session) {
    if (c.created && session) c.created = { ...c.created, session: { ...c.created.session, ...session } };
  },

  // ---------------------------------------------------------------- the server's machine
  /** A `state` event. Returns true when it ended our recording (stop sending audio). */
  serverState(c, { state, previous, turn }) {
    c.server.turn = turn;
    if (state === STATE.RECORDING) {
      // Our own start (or a barge-in): nothing from earlier turns may play or show any more.
      c.audio.dropBelow = turn;
      if (turn !== c.vad.turn) {
        // Started by our input_audio.start (a hands-free turn starts with vad.speech_started).
        c.starts.seen += 1;
        if (c.talk === 'sending' && c.starts.seen === c.starts.sent) c.starts.confirmedTurn = turn;
      }
    } else if (previous === STATE.RECORDING && c.talk === 'sending' && c.starts.confirmedTurn === turn) {
      // The server ended our recording itself (an error such as audio-too-long).
      c.talk = 'off';
      c.server.state = state;
      return true;
    }
    c.server.state = state;
    return false;
  },

  // ---------------------------------------------------------------- push-to-talk
  /** Returns true when this is the first thing holding the button. */
  held(c, source) {
    const first = c.held.size === 0;
    c.held.add(source);
    return first;
  },
  /** Returns true when `source` held the button and nothing else does now. */
  unheld(c, source) {
    return c.held.delete(source) && c.held.size === 0;
  },
  /** A new turn from here: audio of the current one and earlier is ignored. */
  newTurn(c, firstTurn) {
    c.audio.dropBelow = Math.max(c.audio.dropBelow, firstTurn);
  },
  talkOpening(c) {
    c.talk = 'opening';
  },
  /** input_audio.start sent. */
  talkRecording(c) {
    c.starts.sent += 1;
    c.starts.confirmedTurn = null;
    c.talk = 'sending';
  },
  /** The microphone is open (or could not be): still opening means no recording came of it. */
  talkOpened(c) {
    if (c.talk === 'opening') c.talk = 'off';
  },
  /** The button was released: the last audio is flushed, then input_audio.stop. */
  talkReleased(c) {
    c.talk = 'off';
  },
  flushing(c, promise) {
    c.flushing = promise;
  },
  flushed(c) {
    c.flushing = null;
  },
  /** response.cancel sent for the reply of the current turn. */
  replyCancelled(c) {
    c.audio.cancelledTurn = c.server.turn;
  },

  // ---------------------------------------------------------------- hands-free
  handsFreeOpening(c) {
    c.handsFree = 'opening';
  },
  handsFreeOn(c) {
    c.handsFree = 'on';
    c.vad.speech = false;
  },
  handsFreeOpened(c) {
    if (c.handsFree === 'opening') c.handsFree = 'off';
  },
  /** Returns true when the microphone was streaming. */
  handsFreeOff(c) {
    const was = c.handsFree === 'on';
    if (was) c.handsFree = 'off';
    c.vad.speech = false;
    return was;
  },
  modeRequested(c, mode) {
    c.mode.sent = mode;
  },
  /** push_to_talk asked on leaving hands-free; its session.updated is awaited. */
  leavingHandsFree(c) {
    c.mode.leaving = true;
  },
  leftHandsFree(c) {
    c.mode.leaving = false;
  },
  speechStarted(c, turn) {
    c.vad.speech = true;
    c.vad.turn = turn;
  },
  speechStopped(c) {
    c.vad.speech = false;
  },

  // ---------------------------------------------------------------- reply audio
  audioDone(c, turn, durationMs) {
    c.audio.durations.set(turn, durationMs);
  },
  playback(c, playing, turn) {
    c.playback = { playing, turn };
  },
};

const HANDS_FREE_TIP = {
  available: 'Talk without holding the button: the microphone stays on and the server detects when you speak.',
  missing: "The server doesn't support hands-free mode yet: it offers push-to-talk only.",
};

/** The pipeline the session runs, as the server last said (session.created, session.updated). */
export function pipelineOf(c) {
  return (c.created && c.created.session && c.created.session.pipeline) || PIPELINE.CASCADE;
}

/** What the connection pill says; `now` is Date.now(). */
export function connectionText(c, now) {
  const { status, retryAt, closeReason, refused } = c.connection;
  if (status === 'open') return 'Connected';
  if (status !== 'closed') return c.sessions > 0 ? 'Reconnecting…' : 'Connecting…';
  const seconds = Math.max(1, Math.ceil((retryAt - now) / 1000));
  const why = refused ? 'Not allowed to connect' : `Disconnected${closeReason ? ` (${closeReason})` : ''}`;
  return `${why}. Reconnecting in ${seconds} s…`;
}

/** What every control shows, from the client state alone. */
export function view(c) {
  const open = c.connection.status === 'open';
  const talking = c.talk !== 'off';
  const handsFree = c.handsFree !== 'off';
  const handsFreeOn = c.handsFree === 'on';
  const speech = handsFreeOn && c.vad.speech;
  const playing = c.playback.playing;
  const busy = replying(c) || playing;
  let talkLabel = 'Hold to talk';
  if (c.handsFree === 'opening' || (c.talk === 'opening' && !handsFreeOn)) talkLabel = 'Opening microphone…';
  else if (speech) talkLabel = 'Hearing you…';
  else if (handsFreeOn) talkLabel = busy ? 'Talk to interrupt' : 'Hands-free: just talk';
  else if (c.talk === 'sending') talkLabel = 'Listening… release to send';
  else if (busy) talkLabel = 'Hold to interrupt';
  const handsFreeAvailable = c.modes.includes(MODE.HANDS_FREE);
  return {
    state: c.server.state,
    connection: c.connection.status,
    talk: { disabled: !open || handsFree, pressed: talking, handsFree, speech, label: talkLabel },
    listening: { hidden: !handsFreeOn, speech, text: c.vad.speech ? 'hearing you…' : 'listening…' },
    howToHidden: handsFree,
    howToHandsFreeHidden: !handsFree,
    playing,
    playingTurn: playing ? c.playback.turn : null,
    stopDisabled: !busy,
    clearDisabled: !open || c.server.state !== STATE.IDLE || talking,
    pipelineSwitch: {
      hidden: !c.pipelines.includes(PIPELINE.SPEECH_TO_SPEECH),
      // The next turn runs on the pipeline asked for (one in flight finishes on its own).
      disabled: !open,
      on: (c.pipelineWanted || pipelineOf(c)) === PIPELINE.SPEECH_TO_SPEECH,
    },
    handsFreeSwitch: {
      disabled: !open || !handsFreeAvailable,
      tip: handsFreeAvailable ? HANDS_FREE_TIP.available : HANDS_FREE_TIP.missing,
      note: handsFreeAvailable ? '' : 'Not supported by this server yet.',
    },
  };
}
