// Microphone capture, main-thread side: one getUserMedia stream for the whole page (permission is
// asked once), fed through capture-worklet.js, which posts PCM16 LE chunks of 40 ms.
import { SAMPLE_RATE } from './constants.js';

export const WORKLET_URL = '/static/capture-worklet.js';
export const CAPTURE_RATE = SAMPLE_RATE; // the protocol's rate: the server takes no other
export const CHUNK_MS = 40;
export const CHUNK_SAMPLES = (CAPTURE_RATE * CHUNK_MS) / 1000;

const AUDIO_CONSTRAINTS = {
  audio: { echoCancellation: true, noiseSuppression: true, channelCount: 1 },
};

const FLUSH_TIMEOUT_MS = 300;

export class Capture {
  /** @param {{onChunk: (buf: ArrayBuffer) => void}} options */
  constructor({ onChunk }) {
    this.onChunk = onChunk;
    this.stream = null;
    this.ctx = null; // the context the graph below belongs to
    this.source = null;
    this.node = null;
    this.opening = null;
    this.capturing = false; // chunks are passed on only while true
    this.gen = 0; // recording generation; chunks of an older recording are dropped
    this.flushWaiters = new Map(); // gen -> resolve, for stop(true)
    this.modules = new WeakSet(); // contexts that have loaded the worklet module
  }

  /** True when the microphone is open and wired to `ctx`. */
  readyFor(ctx) {
    return Boolean(this.node && this.ctx === ctx && this.stream && this.stream.active);
  }

  /**
   * Open the microphone (once) and wire it into `ctx`. Throws a DOMException-like error; errors
   * raised after the stream was obtained carry `captureStage = "graph"`.
   */
  open(ctx) {
    if (this.readyFor(ctx)) return Promise.resolve();
    if (!this.opening) {
      this.opening = this.openNow(ctx).finally(() => {
        this.opening = null;
      });
    }
    return this.opening;
  }

  async openNow(ctx) {
    if (!this.stream || !this.stream.active) {
      if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
        const err = new Error('navigator.mediaDevices is not available');
        err.name = 'NoMediaDevices';
        throw err;
      }
      this.stream = await navigator.mediaDevices.getUserMedia(AUDIO_CONSTRAINTS);
      for (const track of this.stream.getAudioTracks()) {
        // Unplugged or revoked: the next press asks again.
        track.addEventListener('ended', () => this.disconnect());
      }
    }
    try {
      this.disconnect(false);
      if (!this.modules.has(ctx)) {
        await ctx.audioWorklet.addModule(WORKLET_URL);
        this.modules.add(ctx);
      }
      const source = ctx.createMediaStreamSource(this.stream);
      const node = new AudioWorkletNode(ctx, 'capture-processor', {
        numberOfInputs: 1,
        numberOfOutputs: 1,
        outputChannelCount: [1],
        channelCount: 1,
        channelCountMode: 'explicit',
        channelInterpretation: 'speakers',
        processorOptions: { targetRate: CAPTURE_RATE, chunkSamples: CHUNK_SAMPLES },
      });
      node.port.onmessage = (event) => this.onMessage(event.data);
      source.connect(node);
      // The worklet writes no output (silence); connecting it keeps it pulled in every browser.
      node.connect(ctx.destination);
      this.ctx = ctx;
      this.source = source;
      this.node = node;
    } catch (err) {
      err.captureStage = 'graph';
      throw err;
    }
  }

  onMessage(data) {
    if (!data) return;
    if (data.type === 'chunk') {
      if (this.capturing && data.gen === this.gen && data.buffer.byteLength > 0) this.onChunk(data.buffer);
    } else if (data.type === 'flushed') {
      const done = this.flushWaiters.get(data.gen);
      if (done) done();
    }
  }

  /** Begin passing chunks of a new recording on. */
  start() {
    if (!this.node) return false;
    this.gen += 1;
    this.capturing = true;
    this.node.port.postMessage({ type: 'start', gen: this.gen });
    return true;
  }

  /**
   * Stop collecting. With `flush`, the partial last chunk is passed on too, and the promise
   * resolves once every chunk of this recording has been handed to `onChunk`. Without, the rest
   * of the recording is dropped at once.
   */
  stop(flush = true) {
    if (!this.node || !this.capturing) {
      this.capturing = false;
      return Promise.resolve();
    }
    const gen = this.gen;
    const node = this.node;
    if (!flush) {
      this.capturing = false;
      node.port.postMessage({ type: 'stop', flush: false });
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.flushWaiters.delete(gen);
        if (this.gen === gen) this.capturing = false;
        resolve();
      };
      const timer = setTimeout(done, FLUSH_TIMEOUT_MS);
      this.flushWaiters.set(gen, done);
      node.port.postMessage({ type: 'stop', flush: true });
    });
  }

  /** Unwire the graph; with `stopTracks`, release the microphone too. */
  disconnect(stopTracks = true) {
    this.capturing = false;
    for (const done of [...this.flushWaiters.values()]) done();
    if (this.source) this.source.disconnect();
    if (this.node) {
      this.node.port.onmessage = null;
      this.node.disconnect();
    }
    this.source = null;
    this.node = null;
    this.ctx = null;
    if (stopTracks && this.stream) {
      for (const track of this.stream.getTracks()) track.stop();
      this.stream = null;
    }
  }
}
