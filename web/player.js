// Playback of the server's reply audio: PCM16 LE mono frames of any length, scheduled back to back
// as AudioBufferSourceNodes behind a small jitter buffer, and stoppable at once (barge-in).

import { SAMPLE_RATE } from './constants.js';

const JITTER_S = 0.05;

export class Player {
  /** @param {{onChange?: () => void}} options  called when playback starts or ends */
  constructor({ onChange } = {}) {
    this.onChange = onChange || (() => {});
    this.ctx = null;
    this.sampleRate = SAMPLE_RATE; // until audio.start or session.created says otherwise
    this.sources = new Set(); // {src, samples, stopped} still scheduled or playing
    this.nextTime = 0;
    this.carry = null; // an odd trailing byte, joined to the next frame
    this.accepting = false; // between audio.start and audio.done of a turn we still want
    this.turn = null;
    this.turnChunks = []; // {startAt, duration} of the current turn's audio
    this.turnStoppedAt = null; // audio clock time when the current turn was cut off
    // Counters (whole page lifetime), exposed for tests.
    this.scheduledSamples = 0;
    this.playedSamples = 0; // buffers that ended without being stopped
  }

  attach(ctx) {
    if (this.ctx && this.ctx !== ctx) this.stop();
    this.ctx = ctx;
    this.nextTime = 0;
  }

  get playing() {
    return this.sources.size > 0;
  }

  /** AudioBufferSourceNodes scheduled or playing right now (0 right after stop()). */
  get activeSources() {
    return this.sources.size;
  }

  /** audio.start: frames that follow belong to `turn`. */
  beginTurn(turn, sampleRate) {
    this.turn = turn;
    if (sampleRate) this.sampleRate = sampleRate;
    this.turnChunks = [];
    this.turnStoppedAt = null;
    this.carry = null;
    this.accepting = true;
  }

  /** audio.done, a cancel or a barge-in: later frames are dropped until the next beginTurn. */
  endTurn() {
    this.accepting = false;
    this.carry = null;
  }

  /** Schedule one binary frame. Returns false when the frame was dropped. */
  enqueue(data) {
    const ctx = this.ctx;
    if (!this.accepting || !ctx) return false;
    let bytes = new Uint8Array(data);
    if (this.carry !== null) {
      const joined = new Uint8Array(bytes.length + 1);
      joined[0] = this.carry;
      joined.set(bytes, 1);
      bytes = joined;
      this.carry = null;
    }
    if (bytes.length % 2 === 1) {
      this.carry = bytes[bytes.length - 1];
      bytes = bytes.subarray(0, bytes.length - 1);
    }
    const samples = bytes.length >> 1;
    if (samples === 0) return true;

    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const buffer = ctx.createBuffer(1, samples, this.sampleRate);
    const channel = buffer.getChannelData(0);
    for (let i = 0; i < samples; i++) channel[i] = view.getInt16(i * 2, true) / 32768;

    const src = ctx.createBufferSource();
    src.buffer = buffer;
    src.connect(ctx.destination);
    const startAt = Math.max(this.nextTime, ctx.currentTime + JITTER_S);
    const entry = { src, samples, stopped: false };
    src.onended = () => {
      if (entry.stopped) return;
      this.playedSamples += samples;
      this.sources.delete(entry);
      src.disconnect();
      if (this.sources.size === 0) this.onChange();
    };
    src.start(startAt);
    this.nextTime = startAt + buffer.duration;
    const wasPlaying = this.playing;
    this.sources.add(entry);
    this.turnChunks.push({ startAt, duration: buffer.duration });
    this.scheduledSamples += samples;
    if (!wasPlaying) this.onChange();
    return true;
  }

  /** Milliseconds of the current turn's audio that have actually been played. */
  playedMs() {
    if (!this.ctx) return 0;
    const now = this.turnStoppedAt ?? this.ctx.currentTime;
    let seconds = 0;
    for (const { startAt, duration } of this.turnChunks) {
      seconds += Math.min(Math.max(now - startAt, 0), duration);
    }
    return Math.round(seconds * 1000);
  }

  /** Stop everything at once. Returns the current turn's played_ms. */
  stop() {
    const played = this.playedMs();
    if (this.ctx && this.turnStoppedAt === null && this.turnChunks.length > 0) {
      this.turnStoppedAt = this.ctx.currentTime;
    }
    const hadSources = this.playing;
    for (const entry of this.sources) {
      entry.stopped = true;
      try {
        entry.src.stop();
      } catch {
        // never started or already stopped
      }
      entry.src.disconnect();
    }
    this.sources.clear();
    this.nextTime = 0;
    this.carry = null;
    if (hadSources) this.onChange();
    return played;
  }
}
