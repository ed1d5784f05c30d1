// AudioWorklet for the live-captions page: downmix to mono, low-pass,
// resample to 16 kHz by linear interpolation, and post 100 ms PCM16 chunks
// (with their RMS for the level meter) to the main thread.
//
// Runs on the audio rendering thread: no allocation per sample, no blocking.

const OUT_RATE = 16000;
const CHUNK = 1600; // 100 ms at 16 kHz: small enough for low latency, few frames

// RBJ biquad low-pass. Two in series with these Q values give a 4th-order
// Butterworth, enough to keep 8–24 kHz from folding into speech when the
// context runs at 44.1/48 kHz (linear interpolation alone aliases badly).
class LowPass {
  constructor(rate, cutoff, q) {
    const w = 2 * Math.PI * cutoff / rate;
    const alpha = Math.sin(w) / (2 * q);
    const cos = Math.cos(w);
    const a0 = 1 + alpha;
    this.b0 = (1 - cos) / 2 / a0;
    this.b1 = (1 - cos) / a0;
    this.b2 = this.b0;
    this.a1 = -2 * cos / a0;
    this.a2 = (1 - alpha) / a0;
    this.x1 = this.x2 = this.y1 = this.y2 = 0;
  }

  step(x) {
    const y = this.b0 * x + this.b1 * this.x1 + this.b2 * this.x2
      - this.a1 * this.y1 - this.a2 * this.y2;
    this.x2 = this.x1; this.x1 = x;
    this.y2 = this.y1; this.y1 = y;
    return y;
  }
}

class CaptureProcessor extends AudioWorkletProcessor {
  constructor() {
    super();
    // `sampleRate` is the context rate, a global of the worklet scope.
    this.step = sampleRate / OUT_RATE; // input samples per output sample
    this.filters = sampleRate > OUT_RATE * 1.1
      ? [new LowPass(sampleRate, 7200, 0.5412), new LowPass(sampleRate, 7200, 1.3066)]
      : [];
    // Position of the next output sample in input samples, relative to the
    // start of the current block; -1 refers to `prev`, the last sample of
    // the previous block, so interpolation is continuous across blocks.
    this.pos = 0;
    this.prev = 0;
    this.scratch = new Float32Array(128);
    this.out = new Int16Array(CHUNK);
    this.fill = 0;
    this.sumSq = 0;
    this.port.onmessage = (e) => {
      // Stop: hand over the partial last chunk so no tail audio is lost.
      if (e.data === 'flush') {
        this.post(true);
      }
    };
  }

  post(flushed) {
    const n = this.fill;
    const pcm = n === CHUNK ? this.out : this.out.slice(0, n);
    const rms = n ? Math.sqrt(this.sumSq / n) : 0;
    this.port.postMessage({ pcm: pcm.buffer, rms, flushed }, [pcm.buffer]);
    this.out = new Int16Array(CHUNK); // the old buffer was transferred away
    this.fill = 0;
    this.sumSq = 0;
  }

  process(inputs) {
    const chans = inputs[0];
    if (!chans || chans.length === 0) return true; // input not connected yet
    const n = chans[0].length;
    if (this.scratch.length !== n) this.scratch = new Float32Array(n);
    const x = this.scratch;

    // Downmix (the browser may ignore channelCount: 1) and filter.
    for (let i = 0; i < n; i++) {
      let s = 0;
      for (let c = 0; c < chans.length; c++) s += chans[c][i];
      s /= chans.length;
      for (const f of this.filters) s = f.step(s);
      x[i] = s;
    }

    let pos = this.pos;
    while (pos < n - 1) {
      const i = Math.floor(pos);
      const frac = pos - i;
      const a = i < 0 ? this.prev : x[i];
      const v = a + (x[i + 1] - a) * frac;
      const clamped = v > 1 ? 1 : v < -1 ? -1 : v;
      this.out[this.fill++] = clamped < 0 ? clamped * 0x8000 : clamped * 0x7fff;
      this.sumSq += clamped * clamped;
      if (this.fill === CHUNK) this.post(false);
      pos += this.step;
    }
    this.pos = pos - n; // >= -1 because the loop stopped at pos >= n - 1
    this.prev = x[n - 1];
    return true;
  }
}

registerProcessor('capture', CaptureProcessor);
