// WebSocket protocol v1: JSON text frames for events, binary frames for audio (constants.js's AUDIO:
// PCM16 LE mono at SAMPLE_RATE). See src/voice_fsm/events.py for the authoritative message models.
import { CLIENT_EVENT } from './constants.js';

/** ws: or wss: to /ws on the page's own host. */
export function socketUrl(loc = window.location) {
  const scheme = loc.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${loc.host}/ws`;
}

/** Where the page asks the server that served it for a client token. */
export const PAGE_TOKEN_PATH = '/v1/page_token';

/** `url` with the client token as its `token` query parameter. */
export function withToken(url, token) {
  const sep = url.includes('?') ? '&' : '?';
  return `${url}${sep}token=${encodeURIComponent(token)}`;
}

/**
 * Ask the server that served this page for a client token (POST /v1/page_token, same origin).
 * Resolves to one of:
 *   {token: null}               no token needed (204), or a server without the route
 *   {token: 'vft_…'}            connect with it (it is good for one connection, for about 60 s)
 *   {refused: {status, error}}  401 or 403: this page may not connect
 *   {unreachable: true}         no answer at all (the server is down)
 * The token itself is never logged.
 */
export async function fetchPageToken(path = PAGE_TOKEN_PATH) {
  let response;
  try {
    response = await fetch(path, { method: 'POST', credentials: 'same-origin', cache: 'no-store' });
  } catch {
    return { unreachable: true };
  }
  if (response.status === 401 || response.status === 403) {
    let error = null;
    try {
      error = (await response.json()).error || null;
    } catch {
      // not JSON: the status says enough
    }
    return { refused: { status: response.status, error } };
  }
  if (response.status === 200) {
    try {
      const body = await response.json();
      if (typeof body.token === 'string' && body.token) return { token: body.token };
    } catch {
      // fall through: try without a token, and let the socket's answer decide
    }
  }
  // 204, or anything else (an older server without the route, a proxy's error page): the
  // WebSocket itself is the judge.
  return { token: null };
}

function withPlayed(message, playedMs) {
  return Number.isFinite(playedMs) ? { ...message, played_ms: Math.max(0, Math.round(playedMs)) } : message;
}

/** Client -> server messages. */
export const messages = {
  sessionUpdate: (session) => ({ type: CLIENT_EVENT.SESSION_UPDATE, session }),
  /** With `playedMs` (a barge-in): how much of the interrupted reply was played. */
  inputAudioStart: (playedMs) => withPlayed({ type: CLIENT_EVENT.INPUT_AUDIO_START }, playedMs),
  inputAudioStop: () => ({ type: CLIENT_EVENT.INPUT_AUDIO_STOP }),
  responseCancel: (playedMs) => withPlayed({ type: CLIENT_EVENT.RESPONSE_CANCEL }, playedMs),
  conversationClear: () => ({ type: CLIENT_EVENT.CONVERSATION_CLEAR }),
};

/** "STT openai gpt-transcribe · LLM … · TTS … · session abc · protocol 1" */
export function formatProviders(created) {
  const stage = (label, info) => (info ? `${label} ${info.provider} ${info.model}` : null);
  const voice = created.session && created.session.voice ? `voice ${created.session.voice}` : null;
  return [
    stage('STT', created.stt),
    stage('LLM', created.llm),
    stage('TTS', created.tts),
    voice,
    created.session_id ? `session ${created.session_id}` : null,
    `protocol ${created.protocol}`,
  ]
    .filter(Boolean)
    .join(' · ');
}

const BACKOFF_MS = [1000, 2000, 4000, 8000, 10000];

/**
 * One WebSocket that reconnects by itself (1 s, 2 s, 4 s, 8 s, then every 10 s). Before each
 * attempt it asks the server for a client token (`fetchPageToken`), which a server with API keys
 * requires; a server without keys answers 204 and the socket opens without one.
 * Callbacks: onEvent(json), onAudio(ArrayBuffer), onStatus(status, {retryInMs, refused, closed})
 * with status "connecting" | "open" | "closed"; `refused` ({status, error}) when the server would
 * not give this page a token (HTTP 401 or 403), `closed` ({code, reason}) when an open socket
 * closed (e.g. 1001 "server shutting down": the next attempt may reach another server).
 */
export class Connection {
  constructor(url, { onEvent, onAudio, onStatus, tokenPath = PAGE_TOKEN_PATH }) {
    this.url = url;
    this.tokenPath = tokenPath;
    this.onEvent = onEvent;
    this.onAudio = onAudio;
    this.onStatus = onStatus;
    this.ws = null;
    this.attempt = 0;
    this.timer = null;
    this.pending = 0; // the latest connect() call; an older one still asking for a token gives up
  }

  get isOpen() {
    return Boolean(this.ws && this.ws.readyState === WebSocket.OPEN);
  }

  async connect() {
    clearTimeout(this.timer);
    this.timer = null;
    const call = ++this.pending;
    this.onStatus('connecting', {});
    const answer = await fetchPageToken(this.tokenPath);
    if (call !== this.pending) return;
    if (answer.refused) {
      console.warn(`the server refused this page a token (HTTP ${answer.refused.status})`);
      this.scheduleReconnect({ refused: answer.refused });
      return;
    }
    if (answer.unreachable) {
      this.scheduleReconnect();
      return;
    }
    this.open(answer.token ? withToken(this.url, answer.token) : this.url);
  }

  open(url) {
    let ws;
    try {
      ws = new WebSocket(url);
    } catch (err) {
      console.error('WebSocket could not be created', err.name);
      this.scheduleReconnect();
      return;
    }
    ws.binaryType = 'arraybuffer';
    this.ws = ws;
    ws.onopen = () => {
      this.attempt = 0;
      this.onStatus('open', {});
    };
    ws.onmessage = (event) => {
      if (typeof event.data !== 'string') {
        this.onAudio(event.data);
        return;
      }
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        console.warn('ignored a text frame that is not JSON', event.data);
        return;
      }
      this.onEvent(message);
    };
    ws.onclose = (event) => {
      if (this.ws !== ws) return;
      this.ws = null;
      console.info(`WebSocket closed (code ${event.code}${event.reason ? `, ${event.reason}` : ''})`);
      this.scheduleReconnect({ closed: { code: event.code, reason: event.reason } });
    };
    ws.onerror = () => {
      // A close event follows; reconnecting is handled there.
    };
  }

  scheduleReconnect({ refused = null, closed = null } = {}) {
    const delay = BACKOFF_MS[Math.min(this.attempt, BACKOFF_MS.length - 1)];
    this.attempt += 1;
    this.onStatus('closed', { retryInMs: delay, refused, closed });
    this.timer = setTimeout(() => this.connect(), delay);
  }

  /** Send a JSON message; false when the socket is not open. */
  send(message) {
    if (!this.isOpen) return false;
    this.ws.send(JSON.stringify(message));
    return true;
  }

  /** Send one binary audio frame; false when the socket is not open. */
  sendAudio(buffer) {
    if (!this.isOpen) return false;
    this.ws.send(buffer);
    return true;
  }
}
