// Live captions page for stt: microphone → AudioWorklet (16 kHz PCM16) →
// WebSocket /ws/stream, plus one-shot file transcription over the
// OpenAI-compatible REST API. Plain DOM, no framework, no build step.

const RATE = 16000;
const STOP_GRACE_MS = 30000; // how long to wait for "done" after {"type":"end"}

const $ = (id) => document.getElementById(id);
const el = {
  start: $('start'), stop: $('stop'), status: $('status'), info: $('session-info'),
  error: $('error'), partial: $('partial'), finals: $('finals'), transcript: $('transcript'),
  latency: $('latency'), level: $('level'), fields: $('option-fields'),
  vadMode: $('vad-mode'), vadSilence: $('vad-silence'), language: $('language'),
  task: $('task'), profile: $('profile'), words: $('words'), apiKey: $('api-key'),
  file: $('file'), model: $('model'), upload: $('upload'),
  fileStatus: $('file-status'), fileElapsed: $('file-elapsed'), fileResult: $('file-result'),
};

// What the user can do about each server error code; the server's own
// message says what went wrong.
const ERROR_HELP = {
  ERR1003: 'check the VAD settings',
  ERR1005: 'the session token was not accepted: start a new session',
  ERR1006: 'no audio reached the server in time: check that the microphone works and is not muted',
  ERR1007: 'an audio chunk was too large: reload the page and try again',
  ERR1008: 'server at capacity: retry later',
  ERR1009: 'this server needs an API key: enter it under "API key" and try again',
  ERR1010: 'an option was not accepted: check language, task, profile and model',
  ERR1011: 'the server could not read the audio: reload the page and try again',
  ERR2001: 'the server is overloaded and a decode timed out: retry later or use the realtime profile',
  ERR2002: 'decoding failed on the server: retry; if it keeps failing, see the server logs',
  ERR2003: 'a speech component is unavailable on the server: ask the operator to check its model and VAD',
  ERR2004: 'the server is shutting down: retry in a moment',
};

// Close codes, for when the socket closes without an error frame first.
const CLOSE_HELP = {
  1001: 'the server is going away (shutting down or restarting): retry in a moment',
  1003: 'the server rejected the start frame (bad session options): check the options above',
  1006: 'the connection dropped without a close frame: check that the server is running and reachable',
  1009: 'a frame was too large for the server: reload the page',
  1011: 'the server hit an internal error: see the server logs',
  4401: 'authentication failed: this server needs an API key; enter it under "API key" and start again',
  4403: 'the server refused the session (at capacity or over a limit): retry later',
};

function helpFor(code) {
  if (ERROR_HELP[code]) return ERROR_HELP[code];
  if (/^ERR3/.test(code || '')) return 'unexpected server error: see the server logs';
  return '';
}

function showError(text) {
  el.error.textContent = text;
  el.error.hidden = false;
}

function clearError() {
  el.error.textContent = '';
  el.error.hidden = true;
}

function codedError(code, message) {
  const help = helpFor(code);
  return `${code || 'error'}: ${message || 'no message'}` + (help ? `\nWhat to do: ${help}` : '');
}

function setStatus(state) {
  el.status.textContent = state;
}

function fmtTime(sec) {
  const tenths = Math.max(0, Math.round((Number(sec) || 0) * 10));
  const m = Math.floor(tenths / 600);
  const s = ((tenths % 600) / 10).toFixed(1).padStart(4, '0');
  return `${String(m).padStart(2, '0')}:${s}`;
}

function authHeaders() {
  const key = el.apiKey.value.trim();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

// ---------------------------------------------------------------- streaming

/** The one live session, or null. Everything it owns is released in finish(). */
let live = null;

function setBusy(busy) {
  el.start.disabled = busy;
  el.stop.disabled = !busy;
  // The fieldset alone disables its controls, but WebDriver and some
  // assistive tech read each control's own flag.
  el.fields.disabled = busy;
  for (const c of el.fields.querySelectorAll('input, select')) c.disabled = busy;
}

function buildStartFrame() {
  const data = { sample_rate: RATE };
  if (el.vadMode.value) data.vad_mode = el.vadMode.value;
  const silence = el.vadSilence.value.trim();
  if (el.vadSilence.validity.badInput || silence !== '') {
    const v = Number(silence);
    if (el.vadSilence.validity.badInput || !Number.isFinite(v) || v < 0 || v > 60) {
      throw new Error('VAD silence must be between 0 and 60 seconds, or blank for the server default');
    }
    data.vad_silence = v;
  }
  // "default" omits the field; "" asks the server to auto-detect.
  if (el.language.value !== 'default') data.language_code = el.language.value;
  if (el.task.value) data.task = el.task.value;
  if (el.profile.value) data.decode_profile = el.profile.value;
  const attributes = {};
  if (el.words.checked) attributes.word_timestamps = 'true';
  if (el.apiKey.value.trim()) attributes.api_key = el.apiKey.value.trim();
  if (Object.keys(attributes).length) data.attributes = attributes;
  return { type: 'start', data };
}

function micError(err) {
  switch (err && err.name) {
    case 'NotAllowedError':
    case 'SecurityError':
      return 'microphone permission denied: allow the microphone in the browser\'s site settings, then press Start again';
    case 'NotFoundError':
    case 'OverconstrainedError':
      return 'no microphone found: connect one, then press Start again';
    case 'NotReadableError':
      return 'the microphone is busy or failed: close other apps using it, then press Start again';
    default:
      return `could not start audio capture: ${err && err.message ? err.message : err}`;
  }
}

async function start() {
  if (live) return;
  clearError();
  let startFrame;
  try {
    startFrame = buildStartFrame();
  } catch (e) {
    showError(e.message);
    return;
  }
  if (!window.isSecureContext || !navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    showError('the microphone needs a secure context: open this page over https, or at http://localhost');
    setStatus('error');
    return;
  }
  if (typeof AudioWorkletNode === 'undefined') {
    showError('this browser lacks AudioWorklet, which live captions need: use a current Chrome, Edge, Firefox or Safari (over https or localhost)');
    setStatus('error');
    return;
  }

  const s = live = {
    ws: null, ctx: null, stream: null, node: null,
    opened: false, ready: false, ended: false, done: false, errored: false, finished: false,
    sent: 0,        // samples sent so far
    sendLog: [],    // [samples sent after this chunk, performance.now() when sent]
    latencies: [],  // end-of-speech → final, ms
    onFlushed: null, stopTimer: 0,
  };
  setBusy(true);
  setStatus('connecting');
  el.info.textContent = '';
  el.latency.textContent = '—';

  // Microphone first, so a permission problem shows before a session is opened.
  try {
    s.stream = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false },
    });
    if (s.finished) return releaseAudio(s); // Stop pressed during the permission prompt
    s.ctx = new AudioContext();
    if (!s.ctx.audioWorklet) throw new Error('AudioWorklet is unavailable (it needs https or localhost)');
    await s.ctx.audioWorklet.addModule('/capture-worklet.js');
    if (s.finished) return releaseAudio(s);
    s.node = new AudioWorkletNode(s.ctx, 'capture', { numberOfInputs: 1, numberOfOutputs: 1 });
    s.node.port.onmessage = (e) => onChunk(s, e.data);
    s.ctx.createMediaStreamSource(s.stream).connect(s.node);
    // The node outputs silence; connecting it makes every engine pull it.
    s.node.connect(s.ctx.destination);
    await s.ctx.resume();
  } catch (err) {
    if (s.finished) return releaseAudio(s);
    showError(micError(err));
    finish(s, 'error');
    return;
  }
  if (s.finished) return releaseAudio(s);

  const url = (location.protocol === 'https:' ? 'wss' : 'ws') + '://' + location.host + '/ws/stream';
  const ws = s.ws = new WebSocket(url);
  ws.binaryType = 'arraybuffer';
  ws.onopen = () => {
    s.opened = true;
    ws.send(JSON.stringify(startFrame));
  };
  ws.onmessage = (e) => onFrame(s, e.data);
  ws.onclose = (e) => onClose(s, e);
}

function onChunk(s, msg) {
  // RMS of full scale speech sits around 0.05–0.3; a dB scale keeps quiet
  // speech visible on the meter.
  const db = 20 * Math.log10(Math.max(msg.rms, 1e-6));
  el.level.value = Math.min(1, Math.max(0, (db + 60) / 60));

  // Audio before the session frame is dropped, so session time 0 is the
  // first sample sent and end_sec maps onto sendLog directly.
  const ws = s.ws;
  if (s.ready && !s.ended && ws && ws.readyState === WebSocket.OPEN && msg.pcm.byteLength) {
    ws.send(msg.pcm);
    s.sent += msg.pcm.byteLength / 2;
    s.sendLog.push([s.sent, performance.now()]);
  }
  if (msg.flushed && s.onFlushed) s.onFlushed();
}

function onFrame(s, data) {
  if (typeof data !== 'string') return;
  let f;
  try {
    f = JSON.parse(data);
  } catch {
    return;
  }
  switch (f.type) {
    case 'session':
      s.ready = true;
      setStatus(s.ended ? 'stopping' : 'streaming');
      el.info.textContent = '· ' + [
        f.model_id,
        f.decode_profile,
        f.task,
        `language ${f.language_code || 'auto'}`,
        `VAD ${f.vad_mode}` + (f.vad_silence != null ? ` ${f.vad_silence} s` : ''),
        f.session_id ? `session ${String(f.session_id).slice(0, 8)}` : '',
      ].filter(Boolean).join(' · ');
      break;
    case 'result':
      onResult(s, f);
      break;
    case 'error':
      s.errored = true;
      showError(codedError(f.code, f.message));
      break;
    case 'done': {
      s.done = true;
      const total = f.trailing && f.trailing['stt-decode-total-sec'];
      if (total) el.info.textContent += ` · decode ${Number(total).toFixed(2)} s`;
      finish(s, 'stopped');
      break;
    }
  }
}

function onClose(s, e) {
  if (s.finished) return;
  if (s.done || s.errored) {
    finish(s, s.done && !s.errored ? 'stopped' : 'error');
    return;
  }
  // A clean close without "done": the server ended the session itself
  // (1005 is a close frame without a code).
  if (e.code === 1000 || e.code === 1005) {
    finish(s, 'stopped');
    return;
  }
  let text;
  if (!s.opened) {
    text = `could not connect to ${location.host}/ws/stream: check that the server is running`;
  } else {
    const help = CLOSE_HELP[e.code] || 'the session ended unexpectedly: start again';
    text = `connection closed (${e.code}${e.reason ? `: ${e.reason}` : ''})\nWhat to do: ${help}`;
  }
  showError(text);
  finish(s, 'error');
}

function onResult(s, r) {
  if (!r.is_final) {
    renderPartial(r);
    return;
  }
  recordLatency(s, r.end_sec);
  el.partial.replaceChildren();
  const text = (r.text || '').trim();
  if (!text) return;

  const li = document.createElement('li');
  li.className = 'final';
  const meta = document.createElement('span');
  meta.className = 'meta';
  const lang = r.language_code || r.language || '';
  meta.textContent = `${fmtTime(r.start_sec)}–${fmtTime(r.end_sec)}` + (lang ? ` · ${lang}` : '');
  const span = document.createElement('span');
  span.className = 'text';
  span.textContent = text;
  li.append(meta, span);
  if (Array.isArray(r.words) && r.words.length) {
    const words = document.createElement('span');
    words.className = 'words';
    words.textContent = r.words.map((w) => `${(w.word || '').trim()} ${fmtTime(w.start_sec)}`).join(' · ');
    li.append(words);
  }

  // Follow new captions unless the user scrolled up to read older ones.
  const box = el.transcript;
  const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
  el.finals.append(li);
  if (atBottom) box.scrollTop = box.scrollHeight;
}

function renderPartial(r) {
  let committed = r.committed_text || '';
  const unstable = r.unstable_text || '';
  if (!committed && !unstable) committed = r.text || '';
  const a = document.createElement('span');
  a.className = 'committed';
  a.textContent = committed;
  const b = document.createElement('span');
  b.className = 'unstable';
  b.textContent = unstable;
  const gap = committed && unstable && !/\s$/.test(committed) && !/^\s/.test(unstable) ? ' ' : '';
  el.partial.replaceChildren(a, gap, b);
}

function recordLatency(s, endSec) {
  const log = s.sendLog;
  if (!log.length || !Number.isFinite(endSec)) return;
  // First chunk whose send completed the sample at end_sec; past the end
  // (rounding, padding) falls back to the last chunk sent.
  const target = Math.ceil(endSec * RATE);
  let lo = 0;
  let hi = log.length - 1;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (log[mid][0] >= target) hi = mid; else lo = mid + 1;
  }
  const ms = performance.now() - log[lo][1];
  s.latencies.push(ms);
  const sorted = [...s.latencies].sort((x, y) => x - y);
  const n = sorted.length;
  const median = n % 2 ? sorted[(n - 1) / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2;
  el.latency.textContent = `last ${Math.round(ms)} ms · median ${Math.round(median)} ms (${n} finals)`;
}

async function stop() {
  const s = live;
  if (!s) return;
  el.stop.disabled = true;
  if (!s.ready) {
    // No session yet: nothing to flush.
    if (s.ws) s.ws.close(1000);
    finish(s, 'stopped');
    return;
  }
  setStatus('stopping');
  // Collect the audio still in the worklet's buffer before saying "end".
  await new Promise((resolve) => {
    s.onFlushed = resolve;
    setTimeout(resolve, 500);
    s.node.port.postMessage('flush');
  });
  if (s.finished) return; // the server closed meanwhile
  s.ended = true;
  releaseAudio(s);
  if (s.ws.readyState === WebSocket.OPEN) s.ws.send(JSON.stringify({ type: 'end' }));
  s.stopTimer = setTimeout(() => {
    showError('the server did not finish the session within 30 s: the last captions may be missing');
    finish(s, 'error');
  }, STOP_GRACE_MS);
}

function releaseAudio(s) {
  if (s.stream) for (const t of s.stream.getTracks()) t.stop();
  if (s.node) s.node.port.onmessage = null;
  if (s.ctx && s.ctx.state !== 'closed') s.ctx.close().catch(() => {});
  s.stream = s.node = s.ctx = null;
  el.level.value = 0;
}

function finish(s, state) {
  if (s.finished) return;
  s.finished = true;
  clearTimeout(s.stopTimer);
  releaseAudio(s);
  if (s.ws && s.ws.readyState <= WebSocket.OPEN) s.ws.close(1000);
  if (live === s) live = null;
  setBusy(false);
  setStatus(state);
}

// ------------------------------------------------------- file transcription

async function loadModels() {
  try {
    const resp = await fetch('/v1/models', { headers: authHeaders() });
    if (!resp.ok) return;
    const body = await resp.json();
    for (const m of body.data || []) {
      const opt = document.createElement('option');
      opt.value = opt.textContent = m.id;
      el.model.append(opt);
    }
  } catch {
    // Keep "server default" alone: the upload then sends no model field.
  }
}

function httpErrorText(resp, json) {
  const e = json && json.error;
  if (e && e.message) {
    const code = typeof e.code === 'string' ? e.code : '';
    let help = helpFor(code);
    if (!help && resp.status === 401) help = ERROR_HELP.ERR1009;
    if (!help && resp.status === 413) help = 'the file is larger than the server accepts: send a shorter clip';
    if (!help && (resp.status === 429 || resp.status === 503)) help = ERROR_HELP.ERR1008;
    return `${code || `HTTP ${resp.status}`}: ${e.message}` + (help ? `\nWhat to do: ${help}` : '');
  }
  return `HTTP ${resp.status} ${resp.statusText}: the server sent no error details`;
}

function formatVerbose(v) {
  const head = [
    v.language ? `language ${v.language}` : '',
    Number.isFinite(v.duration) ? `${v.duration.toFixed(1)} s of audio` : '',
    v.task || '',
  ].filter(Boolean).join(' · ');
  const segs = (v.segments || []).map((g) => `[${fmtTime(g.start)}–${fmtTime(g.end)}] ${(g.text || '').trim()}`);
  return [head, segs.join('\n'), (v.text || '').trim()].filter(Boolean).join('\n\n');
}

async function upload() {
  clearError();
  const file = el.file.files[0];
  if (!file) {
    showError('choose an audio file first');
    el.file.focus();
    return;
  }
  // Translations take no language and, as in the OpenAI API, no granularities.
  const translate = el.task.value === 'translate';
  const form = new FormData();
  form.append('file', file, file.name);
  if (el.model.value) form.append('model', el.model.value);
  form.append('response_format', 'verbose_json');
  if (!translate) {
    form.append('timestamp_granularities[]', 'segment');
    const lang = el.language.value;
    if (lang && lang !== 'default') form.append('language', lang);
  }
  const url = translate ? '/v1/audio/translations' : '/v1/audio/transcriptions';

  const t0 = performance.now();
  const elapsed = () => ((performance.now() - t0) / 1000).toFixed(0);
  el.upload.disabled = true;
  el.fileResult.textContent = '';
  el.fileStatus.textContent = 'transcribing…';
  el.fileElapsed.textContent = '0 s';
  const tick = setInterval(() => { el.fileElapsed.textContent = `${elapsed()} s`; }, 1000);
  try {
    const resp = await fetch(url, { method: 'POST', body: form, headers: authHeaders() });
    const body = await resp.text();
    let json = null;
    try {
      json = JSON.parse(body);
    } catch {
      // Handled below: an error page or a truncated body.
    }
    if (!resp.ok) throw new Error(httpErrorText(resp, json));
    if (!json) throw new Error('the server sent a response that is not JSON');
    el.fileResult.textContent = formatVerbose(json);
    el.fileStatus.textContent = 'done';
    el.fileElapsed.textContent = `in ${((performance.now() - t0) / 1000).toFixed(1)} s`;
  } catch (err) {
    const text = err instanceof TypeError
      ? 'could not reach the server: check that it is running'
      : err.message;
    showError(text);
    el.fileStatus.textContent = 'failed';
    el.fileElapsed.textContent = '';
  } finally {
    clearInterval(tick);
    el.upload.disabled = false;
  }
}

// ------------------------------------------------------------------- wiring

el.start.addEventListener('click', start);
el.stop.addEventListener('click', stop);
el.upload.addEventListener('click', upload);
$('options').addEventListener('submit', (e) => e.preventDefault());
setBusy(false);
setStatus('idle');
loadModels();
