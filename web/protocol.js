// WebSocket protocol v1: JSON text frames for events, binary frames for PCM16 LE mono 24 kHz audio.
// See src/voice_fsm/events.py for the authoritative message models.

export const PROTOCOL = 1;
export const REPLY_STATES = new Set(['transcribing', 'thinking', 'speaking']);

/** ws: or wss: to /ws on the page's own host. */
export function socketUrl(loc = window.location) {
  const scheme = loc.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${loc.host}/ws`;
}

function withPlayed(message, playedMs) {
  return Number.isFinite(playedMs) ? { ...message, played_ms: Math.max(0, Math.round(playedMs)) } : message;
}

/** Client -> server messages. */
export const messages = {
  sessionUpdate: (session) => ({ type: 'session.update', session }),
  /** With `playedMs` (a barge-in): how much of the interrupted reply was played. */
  inputAudioStart: (playedMs) => withPlayed({ type: 'input_audio.start' }, playedMs),
  inputAudioStop: () => ({ type: 'input_audio.stop' }),
  responseCancel: (playedMs) => withPlayed({ type: 'response.cancel' }, playedMs),
  conversationClear: () => ({ type: 'conversation.clear' }),
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
 * One WebSocket that reconnects by itself (1 s, 2 s, 4 s, 8 s, then every 10 s).
 * Callbacks: onEvent(json), onAudio(ArrayBuffer), onStatus(status, {retryInMs}) with
 * status "connecting" | "open" | "closed".
 */
export class Connection {
  constructor(url, { onEvent, onAudio, onStatus }) {
    this.url = url;
    this.onEvent = onEvent;
    this.onAudio = onAudio;
    this.onStatus = onStatus;
    this.ws = null;
    this.attempt = 0;
    this.timer = null;
  }

  get isOpen() {
    return Boolean(this.ws && this.ws.readyState === WebSocket.OPEN);
  }

  connect() {
    clearTimeout(this.timer);
    this.timer = null;
    this.onStatus('connecting', {});
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch (err) {
      console.error('WebSocket could not be created', err);
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
      this.scheduleReconnect();
    };
    ws.onerror = () => {
      // A close event follows; reconnecting is handled there.
    };
  }

  scheduleReconnect() {
    const delay = BACKOFF_MS[Math.min(this.attempt, BACKOFF_MS.length - 1)];
    this.attempt += 1;
    this.onStatus('closed', { retryInMs: delay });
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
