// Capture worklet: microphone float32 -> PCM16 little-endian mono at the protocol's rate, in 40 ms
// chunks; capture.js gives the rate and the chunk size (`processorOptions`).
//
// Runs on the audio thread. The main thread controls it through `port`:
//   {type: "start", gen}        drop anything buffered and begin collecting recording `gen`
//   {type: "stop", flush}       with flush, post the partial last chunk; then {type: "flushed", gen}
// Chunks are posted as {type: "chunk", gen, buffer}, the buffer (transferred) holding
// `chunkSamples * 2` bytes (the last one of a recording may be shorter).
//
// The AudioContext normally runs at that rate, so samples pass straight through. If the browser
// would not give us a graph at that rate (the page then falls back to the default rate), the input is
// resampled here by linear interpolation.

class CaptureProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const opts = (options && options.processorOptions) || {};
    this.targetRate = opts.targetRate;
    this.chunkSamples = opts.chunkSamples;
    if (!(this.targetRate > 0 && this.chunkSamples > 0)) throw new Error('capture-processor needs targetRate and chunkSamples');
    this.step = sampleRate / this.targetRate; // input samples per output sample
    this.active = false;
    this.gen = 0;
    this.resetBuffer();
    this.port.onmessage = (event) => this.onCommand(event.data);
  }

  resetBuffer() {
    this.chunk = new ArrayBuffer(this.chunkSamples * 2);
    this.view = new DataView(this.chunk);
    this.filled = 0;
    this.pos = 0; // position of the next output sample, in input samples from the block start
    this.last = 0; // the previous block's last input sample (index -1 for interpolation)
  }

  onCommand(command) {
    if (!command) return;
    if (command.type === 'start') {
      this.resetBuffer();
      this.gen = command.gen;
      this.active = true;
    } else if (command.type === 'stop') {
      if (command.flush && this.active && this.filled > 0) {
        this.post(this.chunk.slice(0, this.filled * 2));
      }
      this.active = false;
      this.resetBuffer();
      this.port.postMessage({ type: 'flushed', gen: this.gen });
    }
  }

  post(buffer) {
    this.port.postMessage({ type: 'chunk', gen: this.gen, buffer }, [buffer]);
  }

  push(sample) {
    const s = sample > 1 ? 1 : sample < -1 ? -1 : sample;
    this.view.setInt16(this.filled * 2, s < 0 ? s * 0x8000 : s * 0x7fff, true);
    this.filled += 1;
    if (this.filled === this.chunkSamples) {
      this.post(this.chunk);
      this.chunk = new ArrayBuffer(this.chunkSamples * 2);
      this.view = new DataView(this.chunk);
      this.filled = 0;
    }
  }

  process(inputs) {
    const input = inputs[0];
    if (!this.active || !input || input.length === 0) return true;
    const x = input[0]; // the node down-mixes to one channel
    const n = x.length;
    if (this.step === 1) {
      for (let i = 0; i < n; i++) this.push(x[i]);
      return true;
    }
    let t = this.pos;
    while (t <= n - 1) {
      const i = Math.floor(t);
      const frac = t - i;
      const a = i < 0 ? this.last : x[i];
      const b = i + 1 < n ? x[i + 1] : a;
      this.push(a + (b - a) * frac);
      t += this.step;
    }
    this.pos = t - n;
    this.last = x[n - 1];
    return true;
  }
}

registerProcessor('capture-processor', CaptureProcessor);
