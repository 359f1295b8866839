// Wording of everything that can go wrong, in plain words: the server's `error` events (one entry
// per code of src/voice_fsm/errors.py, by its name in constants.js) and microphone failures.
import { ERROR_CODE, STAGE } from './constants.js';

/** The stage of a provider error, in words. */
export const STAGE_WORDS = {
  [STAGE.STT]: 'speech recognition',
  [STAGE.LLM]: 'language model',
  [STAGE.TTS]: 'speech synthesis',
};

// Each entry gives the sentence before the code and the advice after it:
// "<lead> (<code>). <advice>". `{service}` is replaced by "The speech recognition service" etc.
const ERROR_WORDING = {
  [ERROR_CODE.INVALID_MESSAGE]: ['The server did not understand a message from this page', 'Reloading the page may help.'],
  [ERROR_CODE.INVALID_STATE]: ['The server was not ready for that', 'Wait for the current step to finish and try again.'],
  [ERROR_CODE.INVALID_AUDIO]: ['The server could not use the audio it received', 'Try again.'],
  [ERROR_CODE.NO_AUDIO]: ['That was too short', 'Hold the button for as long as you speak.'],
  [ERROR_CODE.AUDIO_TOO_LONG]: ['That recording was too long for the server', 'Keep it shorter and try again.'],
  [ERROR_CODE.NO_SPEECH]: ["I didn't catch anything", 'Speak a little louder or closer to the microphone and try again.'],
  [ERROR_CODE.PROVIDER_AUTH]: ["{service} refused the server's API key", "Check the key in the server's settings."],
  [ERROR_CODE.PROVIDER_RATE_LIMITED]: ['{service} is busy', 'Try again in a moment.'],
  [ERROR_CODE.PROVIDER_TIMEOUT]: ['{service} took too long to answer', 'Try again in a moment.'],
  [ERROR_CODE.PROVIDER_UNAVAILABLE]: ['{service} cannot be reached right now', 'Try again shortly.'],
  [ERROR_CODE.PROVIDER_ERROR]: ['{service} returned an error', 'Trying again may not help; the server log has the details.'],
  [ERROR_CODE.INTERNAL]: ['Something went wrong on the server', 'Try again; the server log has the details.'],
};

/** Every code the page has words for (the codes of src/voice_fsm/errors.py). */
export const KNOWN_ERROR_CODES = Object.keys(ERROR_WORDING);
const unworded = Object.values(ERROR_CODE).filter((code) => !(code in ERROR_WORDING));
if (unworded.length > 0) console.error('errors.js has no words for the error codes', unworded);

function serviceWords(stage) {
  const words = STAGE_WORDS[stage];
  return words ? `The ${words} service` : 'A speech or language service';
}

/**
 * Plain words for an `error` event, the code included:
 * "The speech recognition service is busy (provider-rate-limited). Try again in a moment."
 */
export function describeError({ code, stage }) {
  const wording = ERROR_WORDING[code];
  if (!wording) {
    const where = STAGE_WORDS[stage] ? ` in ${STAGE_WORDS[stage]}` : '';
    return `Something went wrong${where} (${code || 'unknown error'}).`;
  }
  const [lead, advice] = wording;
  return `${lead.replace('{service}', serviceWords(stage))} (${code}). ${advice}`;
}

/** A short form for a turn in the conversation list: "Speech recognition: busy". */
export function shortError({ code, stage }) {
  const wording = ERROR_WORDING[code];
  const lead = wording ? wording[0].replace('{service} ', '') : code;
  const where = STAGE_WORDS[stage];
  return where ? `${where[0].toUpperCase()}${where.slice(1)} ${lead}` : lead;
}

/**
 * Plain words for a server that will not let this page connect: its answer to
 * POST /v1/page_token was 401 (it needs a key and gives none to the page) or 403 (this page's
 * address or origin is not allowed).
 */
export function accessErrorText({ status, error }) {
  if (status === 401) {
    return (
      'This server needs a key, and does not give one to this page (HTTP 401). Open the page from ' +
      'an app that passes a token, or ask its operator to allow the page (VOICE_FSM_AUTH__PAGE_TOKENS).'
    );
  }
  const why = {
    'host-not-allowed': "this page's address is not one of its allowed hosts",
    'origin-not-allowed': "this page's origin is not one of its allowed origins",
    'origin-required': 'the browser sent no Origin',
  }[error];
  return `This server does not let this page connect${why ? `: ${why}` : ''} (HTTP ${status}).`;
}

/** Plain words for a getUserMedia / audio graph failure. */
export function micErrorText(err) {
  switch (err && err.name) {
    case 'NotAllowedError':
    case 'SecurityError':
      return 'Microphone permission was refused. Allow microphone access for this page in the browser (the icon in the address bar) and try again.';
    case 'NotFoundError':
    case 'OverconstrainedError':
      return 'No microphone found. Connect one and try again.';
    case 'NotReadableError':
    case 'AbortError':
      return 'The microphone could not be started. Another application may be using it.';
    case 'NoMediaDevices':
      return 'This browser cannot record audio on this page (a microphone needs https or localhost).';
    default:
      return `The microphone could not be opened: ${(err && err.message) || err}`;
  }
}
