// Taskforge dashboard: the task list with live progress (SSE), a submit form
// (with an algorithm picker; grayscale's image is uploaded as a blob), cancel,
// a task's event history (with a finished task's result image), and the
// health of Redis and RabbitMQ.
//
// It talks only to the api that served it (same origin). Live updates use
// fetch() with a streamed body rather than EventSource, because EventSource
// cannot send an Authorization header and the api may need an API key.
'use strict';

(() => {
  const TERMINAL = new Set(['COMPLETED', 'FAILED', 'TIMED_OUT', 'CANCELLED']);
  // Browsers open at most 6 HTTP/1.1 connections per host; each live stream
  // holds one, so leave room for the other calls.
  const MAX_STREAMS = 4;
  // A stream with no event for this long gives its slot to a waiting task
  // (it resumes later from its last event id, so nothing is missed).
  const IDLE_YIELD_MS = 10000;
  // The api sends a keep-alive every 15 s; silence this long means a dead connection.
  const STALL_MS = 45000;
  const HEALTH_MS = 5000;
  const KEY_STORE = 'taskforge.apiKey';

  const $ = (sel) => document.querySelector(sel);
  const els = {
    layout: $('.layout'),
    list: $('#tasks'),
    empty: $('#tasks-empty'),
    listError: $('#tasks-error'),
    form: $('#submit-form'),
    submit: $('#submit-button'),
    formMessage: $('#form-message'),
    announcer: $('#announcer'),
    history: $('#history'),
    historyTitle: $('#history-title'),
    historySummary: $('#history-summary'),
    historyEvents: $('#history-events'),
    keyDialog: $('#key-dialog'),
    keyInput: $('#key-input'),
    keyReason: $('#key-reason'),
    mgmt: $('#mgmt-link'),
    algorithm: $('#algorithm'),
    algorithmDescription: $('#algorithm-description'),
    preview: $('#result-preview'),
    previewImage: $('#result-image'),
    previewCaption: $('#result-caption'),
  };

  /** id → { data: task JSON, el: <li>, lastSeq, retries } */
  const tasks = new Map();
  /** id → { ctrl, opened, lastEvent, lastByte, yielded } */
  const streams = new Map();
  /** ids waiting for a stream slot, in order */
  const waiting = [];
  /** the task whose history is shown */
  const history = { id: null, events: new Map(), rendered: 0 };
  let generation = 0; // bumped by restart(); stale async work checks it

  // ---------------------------------------------------------------- helpers

  const short = (id) => id.slice(0, 8);
  const statusLabel = (s) => s.replace('_', ' ');
  const rank = (s) => (TERMINAL.has(s) ? 3 : { SCHEDULED: 0, QUEUED: 0, PROCESSING: 1, CANCELLING: 2 }[s] ?? 0);
  // A later attempt (a retry went PROCESSING → SCHEDULED → QUEUED) outranks an earlier one.
  const newer = (a, b) => (a.attempt || 1) > (b.attempt || 1) || ((a.attempt || 1) === (b.attempt || 1) && rank(a.status) > rank(b.status));

  function fmtTime(iso, withMs) {
    if (!iso) return '';
    const d = new Date(iso);
    const opts = { hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false };
    if (withMs) opts.fractionalSecondDigits = 3;
    return d.toLocaleTimeString([], opts);
  }

  function fmtDateTime(iso) {
    if (!iso) return '';
    return new Date(iso).toLocaleString([], { hour12: false });
  }

  function el(tag, props = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(props)) {
      if (k === 'class') node.className = v;
      else if (k === 'dataset') Object.assign(node.dataset, v);
      else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
      else if (k in node && typeof v !== 'string') node[k] = v;
      else node.setAttribute(k, v);
    }
    for (const c of children) node.append(c);
    return node;
  }

  function announce(text) {
    // Clear first so the same text is announced again.
    els.announcer.textContent = '';
    requestAnimationFrame(() => {
      els.announcer.textContent = text;
    });
  }

  function formMessage(text, kind) {
    els.formMessage.textContent = text;
    els.formMessage.className = 'form-message' + (kind ? ' ' + kind : '');
  }

  function listError(text) {
    els.listError.textContent = text || '';
    els.listError.hidden = !text;
  }

  // ------------------------------------------------------------------- api

  const getKey = () => localStorage.getItem(KEY_STORE) || '';

  function authHeaders(headers) {
    const key = getKey();
    if (key) headers.Authorization = 'Bearer ' + key;
    return headers;
  }

  class ApiError extends Error {
    constructor(status, body) {
      super((body && body.message) || 'request failed (HTTP ' + status + ')');
      this.status = status;
      this.code = (body && body.error) || 'http_' + status;
      this.body = body || {};
    }
  }

  /**
   * A JSON call to the api; throws ApiError with the api's {error, message}.
   * `raw` (a File or Blob) is sent as the body with its own type instead of JSON.
   */
  async function api(path, { method = 'GET', body, raw } = {}) {
    const init = { method, headers: authHeaders({ Accept: 'application/json' }), cache: 'no-store' };
    if (body !== undefined) {
      init.body = JSON.stringify(body);
      init.headers['Content-Type'] = 'application/json';
    } else if (raw !== undefined) {
      init.body = raw;
      init.headers['Content-Type'] = raw.type || 'application/octet-stream';
    }
    let res;
    try {
      res = await fetch(path, init);
    } catch (e) {
      throw new ApiError(0, { error: 'network', message: 'cannot reach the api (' + e.message + ')' });
    }
    const text = await res.text();
    let json = null;
    try {
      json = text ? JSON.parse(text) : null;
    } catch {
      json = null;
    }
    if (res.status === 401) needKey(json && json.message);
    if (!res.ok) throw new ApiError(res.status, json);
    return { status: res.status, body: json };
  }

  // ---------------------------------------------------------------- api key

  function needKey(message) {
    stopStreams();
    if (els.keyDialog.open) return;
    els.keyReason.textContent = getKey()
      ? 'The api did not accept the stored API key' + (message ? ' (' + message + ')' : '') + '. Enter another one.'
      : 'This api needs an API key (sent as Authorization: Bearer). It is kept in this browser only.';
    els.keyInput.value = '';
    els.keyDialog.returnValue = '';
    els.keyDialog.showModal();
  }

  els.keyDialog.addEventListener('close', () => {
    const action = els.keyDialog.returnValue;
    if (action === 'save') {
      const key = els.keyInput.value.trim();
      if (key) localStorage.setItem(KEY_STORE, key);
      else localStorage.removeItem(KEY_STORE);
      restart();
    } else if (action === 'forget') {
      localStorage.removeItem(KEY_STORE);
      announce('API key forgotten');
      restart();
    }
    els.keyInput.value = '';
  });

  $('#key-button').addEventListener('click', () => {
    els.keyReason.textContent = getKey()
      ? 'An API key is stored in this browser. Enter a new one, or forget it.'
      : 'No API key is stored. Enter one if the api has API_KEYS set.';
    els.keyInput.value = '';
    els.keyDialog.returnValue = '';
    els.keyDialog.showModal();
  });

  // ----------------------------------------------------------- task rows

  function upsert(data) {
    let t = tasks.get(data.task_id);
    if (!t) {
      t = { data: { ...data }, el: null, lastSeq: 0, retries: 0 };
      tasks.set(data.task_id, t);
    } else {
      const cur = t.data;
      const next = { ...cur, ...data };
      // A snapshot may be older than what the stream already told us.
      if (TERMINAL.has(cur.status) || (data.status && newer(cur, data))) {
        next.status = cur.status;
        next.attempt = cur.attempt;
      }
      next.progress = Math.max(cur.progress || 0, data.progress || 0);
      next.stage = Math.max(cur.stage || 0, data.stage || 0);
      next.cancel_requested = cur.cancel_requested || data.cancel_requested;
      t.data = next;
    }
    render(t);
    return t;
  }

  function buildRow(id) {
    const li = el('li', { class: 'task', dataset: { taskId: id } });
    const open = el(
      'button',
      { type: 'button', class: 'task-open', 'aria-label': 'Show the history of task ' + id, onclick: () => openHistory(id) },
      el('span', { class: 'task-id' }, short(id)),
      el('span', { class: 'status' }),
    );
    const fill = el('div', { class: 'fill' });
    const bar = el(
      'div',
      { class: 'bar', role: 'progressbar', 'aria-valuemin': '0', 'aria-valuemax': '100', 'aria-label': 'Progress of task ' + short(id) },
      fill,
    );
    const meta = el('span', { class: 'meta' });
    const cancel = el('button', { type: 'button', class: 'danger small cancel', onclick: () => cancelTask(id) }, 'Cancel');
    cancel.setAttribute('aria-label', 'Cancel task ' + short(id));
    li.append(open, bar, meta, cancel);
    return li;
  }

  function render(t) {
    const d = t.data;
    if (!t.el) t.el = buildRow(d.task_id);
    const li = t.el;
    li.dataset.status = d.status;
    li.querySelector('.status').textContent = statusLabel(d.status);
    li.querySelector('.task-open').title = 'Created ' + fmtDateTime(d.created_at);
    const progress = Math.max(0, Math.min(100, d.progress || 0));
    const bar = li.querySelector('.bar');
    bar.setAttribute('aria-valuenow', String(progress));
    bar.setAttribute('aria-valuetext', progress + ' percent, stage ' + (d.stage || 0) + ' of ' + d.stages);
    li.querySelector('.fill').style.width = progress + '%';
    const meta = li.querySelector('.meta');
    meta.replaceChildren(
      el('span', { class: 'pct' }, progress + ' %'),
      ' · ' + (d.stage || 0) + '/' + d.stages + ' stages' + (d.worker ? ' · ' + d.worker : ''),
      d.status === 'SCHEDULED' && d.scheduled_for ? ' · due ' + fmtDateTime(d.scheduled_for) : '',
      (d.attempt || 1) > 1 ? ' · attempt ' + d.attempt + '/' + d.max_attempts : '',
    );
    if (d.error && d.status !== 'COMPLETED') meta.title = d.error;
    const cancel = li.querySelector('.cancel');
    cancel.hidden = TERMINAL.has(d.status);
    if (d.status === 'CANCELLING') cancel.disabled = true;
    li.classList.toggle('selected', history.id === d.task_id);
    if (history.id === d.task_id) renderSummary();
  }

  function showEmpty() {
    els.empty.hidden = tasks.size > 0;
  }

  function removeTask(id) {
    const t = tasks.get(id);
    if (!t) return;
    stopStream(id);
    if (t.el) t.el.remove();
    tasks.delete(id);
    if (history.id === id) closeHistory();
    showEmpty();
  }

  async function refreshTask(id) {
    const gen = generation;
    try {
      const { body } = await api('/tasks/' + id);
      if (gen === generation && tasks.has(id)) upsert(body);
    } catch (e) {
      if (e.status === 404) removeTask(id);
    }
  }

  // ------------------------------------------------------------------ list

  let listRetry = null;

  async function loadTasks() {
    clearTimeout(listRetry);
    const gen = generation;
    try {
      const { body } = await api('/tasks?limit=50');
      if (gen !== generation) return;
      listError('');
      const seen = new Set();
      for (const data of body.tasks) {
        seen.add(data.task_id);
        const t = upsert(data);
        els.list.append(t.el); // moves existing rows into the api's order
      }
      for (const id of [...tasks.keys()]) if (!seen.has(id)) removeTask(id);
      showEmpty();
      // Running tasks first, then queued ones, each newest first.
      const live = body.tasks.filter((d) => !TERMINAL.has(d.status));
      live.sort((a, b) => (a.status === 'QUEUED') - (b.status === 'QUEUED'));
      for (const d of live) watch(d.task_id);
    } catch (e) {
      if (gen !== generation || e.status === 401) return;
      listError('Could not load the tasks: ' + e.message + ' Retrying…');
      listRetry = setTimeout(loadTasks, 5000);
    }
  }

  $('#reload-button').addEventListener('click', () => {
    announce('Reloading the task list');
    loadTasks();
  });

  // -------------------------------------------------------------- schedules

  /** The schedules table: name, cron, next and last due time, last task. */
  async function loadSchedules() {
    const body = $('#schedules');
    const error = $('#schedules-error');
    try {
      const { body: answer } = await api('/schedules');
      error.hidden = true;
      const rows = answer.schedules.map((s) =>
        el('tr', {},
          el('td', {}, s.name || '—'),
          el('td', {}, el('code', {}, s.cron)),
          el('td', {}, fmtDateTime(s.next_run_at)),
          el('td', {}, s.last_run_at ? fmtDateTime(s.last_run_at) : '—'),
          el('td', {}, s.last_task_id || '—')));
      body.replaceChildren(...rows);
      $('#schedules-wrap').hidden = rows.length === 0;
      $('#schedules-empty').hidden = rows.length !== 0;
    } catch (e) {
      if (e.status === 401) return;
      error.textContent = 'Could not load the schedules: ' + e.message;
      error.hidden = false;
    }
  }

  $('#schedules-reload').addEventListener('click', () => {
    announce('Reloading the schedules');
    loadSchedules();
  });

  // --------------------------------------------------------- live streams

  /** Wants a live stream for a task; `urgent` puts it first in line. */
  function watch(id, urgent) {
    const t = tasks.get(id);
    if (!t || TERMINAL.has(t.data.status) || streams.has(id)) return;
    const at = waiting.indexOf(id);
    if (at >= 0) {
      if (!urgent) return;
      waiting.splice(at, 1);
    }
    if (urgent) waiting.unshift(id);
    else waiting.push(id);
    pump();
  }

  function pump() {
    while (streams.size < MAX_STREAMS && waiting.length) {
      const id = waiting.shift();
      const t = tasks.get(id);
      if (t && !TERMINAL.has(t.data.status) && !streams.has(id)) openStream(id);
    }
  }

  function stopStream(id) {
    const s = streams.get(id);
    if (s) {
      s.stopped = true;
      s.ctrl.abort();
    }
    const at = waiting.indexOf(id);
    if (at >= 0) waiting.splice(at, 1);
  }

  function stopStreams() {
    waiting.length = 0;
    for (const id of [...streams.keys()]) stopStream(id);
  }

  async function openStream(id) {
    const t = tasks.get(id);
    const now = Date.now();
    const s = { ctrl: new AbortController(), opened: now, lastEvent: now, lastByte: now, yielded: false, stopped: false };
    streams.set(id, s);
    t.el.dataset.live = 'true';
    let retry = true;
    try {
      const headers = authHeaders({ Accept: 'text/event-stream' });
      if (t.lastSeq) headers['Last-Event-ID'] = String(t.lastSeq);
      const res = await fetch('/tasks/' + id + '/events', { headers, signal: s.ctrl.signal, cache: 'no-store' });
      if (res.status === 401) {
        retry = false;
        needKey();
        return;
      }
      if (res.status === 404) {
        retry = false;
        removeTask(id);
        return;
      }
      if (!res.ok || !res.body) throw new Error('HTTP ' + res.status);
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      const feed = sseParser((frame) => {
        s.lastEvent = Date.now();
        if (!frame.data) return;
        let ev;
        try {
          ev = JSON.parse(frame.data);
        } catch {
          return;
        }
        if (frame.id && /^\d+$/.test(frame.id)) ev.seq = ev.seq || Number(frame.id);
        t.retries = 0;
        applyEvent(id, ev);
      });
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        s.lastByte = Date.now();
        feed(value);
      }
    } catch (e) {
      if (!s.ctrl.signal.aborted) console.warn('event stream of ' + id + ' failed:', e);
    } finally {
      streams.delete(id);
      if (t.el) delete t.el.dataset.live;
      const live = tasks.get(id) === t && !TERMINAL.has(t.data.status);
      if (live && retry && !s.stopped) {
        if (s.yielded) {
          waiting.push(id);
        } else {
          // Closed early (network, api restart): back off, then resume after the last event.
          const delay = Math.min(15000, 1000 * 2 ** t.retries);
          t.retries += 1;
          setTimeout(() => watch(id), delay);
        }
      }
      pump();
    }
  }

  /**
   * An SSE parser (WHATWG "event stream interpretation"): feed it text chunks;
   * it calls onFrame({id, event, data}) at each blank line. Lines starting
   * with ':' are comments (the api's keep-alives).
   */
  function sseParser(onFrame) {
    let buffer = '';
    let data = [];
    let event = '';
    let lastId = '';
    return (chunk) => {
      buffer += chunk;
      // A trailing '\r' may be half of '\r\n': keep it for the next chunk.
      const lines = buffer.split(/\r\n|\r(?!$)|\n/);
      buffer = lines.pop();
      for (const line of lines) {
        if (line === '') {
          if (data.length) onFrame({ id: lastId, event: event || 'message', data: data.join('\n') });
          data = [];
          event = '';
          continue;
        }
        if (line.startsWith(':')) continue;
        const colon = line.indexOf(':');
        const field = colon < 0 ? line : line.slice(0, colon);
        let value = colon < 0 ? '' : line.slice(colon + 1);
        if (value.startsWith(' ')) value = value.slice(1);
        if (field === 'data') data.push(value);
        else if (field === 'event') event = value;
        else if (field === 'id' && !value.includes('\0')) lastId = value;
      }
    };
  }

  function applyEvent(id, ev) {
    const t = tasks.get(id);
    if (!t) return;
    if (ev.seq) t.lastSeq = Math.max(t.lastSeq, ev.seq);
    const d = t.data;
    const before = d.status;
    // The stream is in order: a status event is the status (retries go back to SCHEDULED).
    if (!TERMINAL.has(d.status) && (ev.type === 'status' || rank(ev.status) >= rank(d.status))) d.status = ev.status;
    if (ev.attempt) d.attempt = Math.max(d.attempt || 1, ev.attempt);
    if (ev.type === 'status' && ev.status === 'SCHEDULED') refreshTask(id);
    if ((ev.progress || 0) > (d.progress || 0)) d.progress = ev.progress;
    if ((ev.stage || 0) > (d.stage || 0)) d.stage = ev.stage;
    if (ev.worker) d.worker = ev.worker;
    if (ev.type === 'cancel_requested') d.cancel_requested = true;
    if (ev.at) d.updated_at = ev.at;
    render(t);
    if (history.id === id) addHistoryEvent(ev);
    if (d.status !== before) {
      announce('Task ' + short(id) + ' is ' + statusLabel(d.status).toLowerCase());
      // Fetch the final record once (result, error, times, webhook).
      if (TERMINAL.has(d.status)) refreshTask(id);
    }
  }

  // Yield idle slots to waiting tasks, and drop connections that went silent.
  setInterval(() => {
    const now = Date.now();
    for (const s of streams.values()) {
      if (now - s.lastByte > STALL_MS) {
        s.ctrl.abort();
      } else if (waiting.length && now - s.lastEvent > IDLE_YIELD_MS && now - s.opened > IDLE_YIELD_MS) {
        s.yielded = true;
        s.ctrl.abort();
      }
    }
  }, 2000);

  // ------------------------------------------------------------ algorithms

  /** name → GET /algorithms entry */
  const algorithms = new Map();

  async function loadAlgorithms() {
    try {
      const { body } = await api('/algorithms');
      algorithms.clear();
      for (const a of body) algorithms.set(a.name, a);
      const chosen = els.algorithm.value;
      els.algorithm.replaceChildren(...body.map((a) => el('option', { value: a.name }, a.name)));
      els.algorithm.value = algorithms.has(chosen) ? chosen : body[0].name;
    } catch (e) {
      els.algorithmDescription.textContent = 'Could not load the algorithms: ' + e.message;
      return;
    }
    showAlgorithm();
  }

  /** Shows the chosen algorithm's description and its own inputs. */
  function showAlgorithm() {
    const name = els.algorithm.value;
    const a = algorithms.get(name);
    els.algorithmDescription.textContent = a ? a.description + (a.cpu_bound ? ' (CPU-bound)' : '') : '';
    for (const group of els.form.querySelectorAll('.algo-fields')) group.hidden = group.dataset.algorithm !== name;
    // Stage length is hello's sleep; the others' stages are real work.
    const stageMs = els.form.elements.stage_ms;
    stageMs.closest('label').hidden = name !== 'hello';
    if (name !== 'hello') stageMs.value = '';
    if (a) els.form.elements.stages.placeholder = String(a.default_stages);
  }

  els.algorithm.addEventListener('change', showAlgorithm);

  /**
   * Adds the chosen algorithm and its own inputs to the create body; returns
   * a message for the user when something is missing, else null. The image
   * file is left in `pending.file` for uploadInputFile.
   */
  function algorithmFields(body, pending) {
    const name = els.algorithm.value;
    if (name !== 'hello') body.algorithm = name;
    const f = els.form.elements;
    if (name === 'grayscale') {
      const file = f.image_file.files[0];
      if (!file) return 'Choose an image (PNG or JPEG) for grayscale.';
      pending.file = file;
    } else if (name === 'pi') {
      const own = {};
      for (const field of ['samples', 'seed']) {
        const raw = f[field].value.trim();
        if (raw === '' && f[field].validity.badInput) return field[0].toUpperCase() + field.slice(1) + ' must be a number.';
        if (raw !== '') own[field] = Number(raw);
      }
      if (Object.keys(own).length) body.input = { ...(body.input || {}), ...own };
    }
    if (body.input !== undefined && (typeof body.input !== 'object' || Array.isArray(body.input)) && name !== 'hello') {
      return 'Input must be a JSON object for ' + name + '.';
    }
    return null;
  }

  /** Uploads the chosen image as a blob (POST /blobs) and names it in the input. */
  async function uploadInputFile(body, pending) {
    if (!pending.file) return;
    formMessage('Uploading ' + pending.file.name + '…');
    const { body: blob } = await api('/blobs', { method: 'POST', raw: pending.file });
    body.input = { ...(body.input || {}), image: blob.blob_id };
    formMessage('Submitting…');
  }

  // ------------------------------------------------------- result preview

  /** blob id → object URL of its bytes, fetched with the API key */
  const previews = new Map();

  /** The result image of the task in the side panel, when it has one. */
  function renderPreview(d) {
    const blobId = d && d.status === 'COMPLETED' && d.result && typeof d.result.image === 'string' ? d.result.image : null;
    if (!blobId) {
      els.preview.hidden = true;
      delete els.preview.dataset.blobId;
      return;
    }
    if (els.preview.dataset.blobId === blobId) return;
    els.preview.dataset.blobId = blobId;
    const size = d.result.width && d.result.height ? d.result.width + '×' + d.result.height + ' ' : '';
    els.previewImage.alt = 'Result image of task ' + short(d.task_id);
    els.previewImage.removeAttribute('src');
    els.previewCaption.textContent = 'Result: ' + size + 'PNG, loading…';
    els.preview.hidden = false;
    loadPreview(blobId).then(
      (url) => {
        if (els.preview.dataset.blobId !== blobId) return;
        els.previewImage.src = url;
        els.previewCaption.textContent = 'Result: ' + size + 'PNG (blob ' + short(blobId) + ')';
      },
      (e) => {
        if (els.preview.dataset.blobId === blobId) els.previewCaption.textContent = 'Could not load the result image: ' + e.message;
      },
    );
  }

  /** GET /blobs/{id} with the Authorization header an <img src> could not send. */
  async function loadPreview(blobId) {
    if (previews.has(blobId)) return previews.get(blobId);
    const res = await fetch('/blobs/' + blobId, { headers: authHeaders({}), cache: 'no-store' });
    if (res.status === 401) needKey();
    if (!res.ok) throw new Error('HTTP ' + res.status + (res.status === 404 ? ' (expired)' : ''));
    const url = URL.createObjectURL(await res.blob());
    previews.set(blobId, url);
    return url;
  }

  // ----------------------------------------------------------- actions

  els.form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const body = {};
    for (const name of ['stages', 'stage_ms', 'timeout_secs', 'priority']) {
      const input = els.form.elements[name];
      const raw = input.value.trim();
      if (raw === '') {
        if (input.validity.badInput) {
          formMessage(input.parentElement.firstChild.textContent.trim() + ' must be a number.', 'error');
          input.focus();
          return;
        }
        continue;
      }
      body[name] = Number(raw);
    }
    const rawInput = els.form.elements.input.value.trim();
    if (rawInput) {
      try {
        body.input = JSON.parse(rawInput);
      } catch (err) {
        formMessage('Input is not valid JSON: ' + err.message, 'error');
        els.form.elements.input.focus();
        return;
      }
    }
    const pending = {};
    const missing = algorithmFields(body, pending);
    if (missing) {
      formMessage(missing, 'error');
      return;
    }
    els.submit.disabled = true;
    formMessage('Submitting…');
    try {
      await uploadInputFile(body, pending);
      const { body: created } = await api('/tasks', { method: 'POST', body });
      const id = created.task_id;
      let data;
      try {
        data = (await api('/tasks/' + id)).body;
      } catch {
        data = {
          task_id: id, status: created.status, progress: 0, stage: 0,
          stages: body.stages || 0, created_at: new Date().toISOString(),
        };
      }
      const t = upsert(data);
      els.list.prepend(t.el);
      showEmpty();
      watch(id, true);
      formMessage('Task ' + short(id) + ' queued.', 'ok');
    } catch (err) {
      formMessage(err.code === 'network' ? err.message : 'The api refused: ' + err.message + ' (' + err.code + ')', 'error');
    } finally {
      els.submit.disabled = false;
    }
  });

  async function cancelTask(id) {
    const t = tasks.get(id);
    if (!t) return;
    const button = t.el.querySelector('.cancel');
    button.disabled = true;
    try {
      const { body } = await api('/tasks/' + id, { method: 'DELETE' });
      upsert({ task_id: id, status: body.status, cancel_requested: true });
      announce('Task ' + short(id) + ': ' + statusLabel(body.status).toLowerCase());
      if (TERMINAL.has(body.status)) refreshTask(id);
      else watch(id, true);
    } catch (err) {
      if (err.code === 'already_finished' && err.body.status) {
        upsert({ task_id: id, status: err.body.status });
        announce('Task ' + short(id) + ' had already finished');
        refreshTask(id);
      } else if (err.status === 404) {
        removeTask(id);
        announce('Task ' + short(id) + ' no longer exists');
      } else {
        button.disabled = false;
        listError('Cancel failed: ' + err.message);
      }
    }
  }

  // --------------------------------------------------------------- history

  async function openHistory(id) {
    const previous = history.id;
    history.id = id;
    history.events = new Map();
    history.rendered = 0;
    els.historyEvents.replaceChildren();
    for (const t of tasks.values()) t.el.classList.toggle('selected', t.data.task_id === id);
    els.history.hidden = false;
    els.layout.classList.add('with-history');
    els.historyTitle.textContent = 'History of ' + short(id);
    renderSummary();
    if (previous !== id) {
      els.historyTitle.tabIndex = -1;
      els.historyTitle.focus();
    }
    try {
      const { body } = await api('/tasks/' + id + '/events');
      if (history.id !== id) return;
      for (const ev of body) history.events.set(ev.seq, ev);
      renderHistory(true);
    } catch (e) {
      if (history.id !== id) return;
      els.historyEvents.replaceChildren(el('tr', {}, el('td', { colSpan: 6 }, 'Could not load the history: ' + e.message)));
    }
  }

  function closeHistory() {
    const id = history.id;
    history.id = null;
    els.history.hidden = true;
    els.layout.classList.remove('with-history');
    renderPreview(null);
    const t = id && tasks.get(id);
    if (t) {
      t.el.classList.remove('selected');
      t.el.querySelector('.task-open').focus();
    }
  }

  $('#history-close').addEventListener('click', closeHistory);
  document.addEventListener('keydown', (e) => {
    if (e.key === 'Escape' && history.id && !els.keyDialog.open) closeHistory();
  });

  function addHistoryEvent(ev) {
    if (!ev.seq || history.events.has(ev.seq)) return;
    history.events.set(ev.seq, ev);
    renderHistory(ev.seq < history.rendered);
  }

  function renderHistory(full) {
    const events = [...history.events.values()].sort((a, b) => a.seq - b.seq);
    if (full) {
      els.historyEvents.replaceChildren();
      history.rendered = 0;
    }
    for (const ev of events) {
      if (ev.seq <= history.rendered) continue;
      const who = [ev.worker, ev.detail].filter(Boolean).join(' — ');
      els.historyEvents.append(
        el(
          'tr',
          { dataset: { type: ev.type } },
          el('td', {}, String(ev.seq)),
          el('td', { title: ev.at }, fmtTime(ev.at, true)),
          el('td', {}, ev.type.replace('_', ' ')),
          el('td', {}, statusLabel(ev.status)),
          el('td', {}, ev.progress + ' %'),
          el('td', {}, who),
        ),
      );
      history.rendered = ev.seq;
    }
  }

  function renderSummary() {
    const t = tasks.get(history.id);
    if (!t) return;
    const d = t.data;
    const rows = [
      ['Task', el('code', {}, d.task_id)],
      ['Status', statusLabel(d.status) + (d.cancel_requested && !TERMINAL.has(d.status) ? ' (cancel requested)' : '')],
      ['Progress', (d.progress || 0) + ' % · stage ' + (d.stage || 0) + ' of ' + d.stages],
      ['Algorithm', d.algorithm],
      // Stage length is hello's sleep; other algorithms' stages are real work.
      ['Stage length', d.stage_ms != null && (d.algorithm || 'hello') === 'hello' ? d.stage_ms + ' ms' : null],
      ['Timeout', d.timeout_secs != null ? d.timeout_secs + ' s' : null],
      ['Priority', d.priority != null ? String(d.priority) : null],
      ['Worker', d.worker],
      ['Created', fmtDateTime(d.created_at)],
      ['Started', fmtDateTime(d.started_at)],
      ['Finished', fmtDateTime(d.finished_at)],
      ['Result', d.result != null ? el('code', {}, JSON.stringify(d.result)) : null],
      ['Due', d.status === 'SCHEDULED' ? fmtDateTime(d.scheduled_for) : null],
      ['Attempt', d.max_attempts != null ? (d.attempt || 1) + ' of ' + d.max_attempts + (d.takeovers ? ' · ' + d.takeovers + ' takeover(s)' : '') : null],
      ['Error', d.error],
      ['Failed attempts', d.errors && d.errors.length ? el('ul', { class: 'attempt-errors' },
        ...d.errors.map((e) => el('li', {}, 'attempt ' + e.attempt + ' at ' + fmtDateTime(e.at) + ': ' + e.error))) : null],
      ['Webhook', d.webhook ? d.webhook.state + ' after ' + d.webhook.attempts + ' attempt(s)' + (d.webhook.last_error ? ': ' + d.webhook.last_error : '') : null],
      ['Input', d.input != null ? el('code', {}, JSON.stringify(d.input)) : null],
    ];
    const nodes = [];
    for (const [name, value] of rows) {
      if (value == null || value === '') continue;
      nodes.push(el('dt', {}, name), el('dd', {}, value));
    }
    els.historySummary.replaceChildren(...nodes);
    renderPreview(d);
  }

  // ---------------------------------------------------------------- health

  function setPill(name, check, fallback) {
    const pill = document.querySelector('.pill[data-check="' + name + '"]');
    if (!pill) return;
    const detail = pill.querySelector('.pill-detail');
    if (!check) {
      pill.dataset.state = 'unknown';
      detail.textContent = fallback || 'unknown';
      pill.title = fallback || 'no result yet';
      return;
    }
    pill.dataset.state = check.ok ? 'ok' : 'down';
    const ms = check.latency_ms < 1 ? check.latency_ms.toFixed(1) : Math.round(check.latency_ms);
    detail.textContent = check.ok ? 'ok · ' + ms + ' ms' : 'down';
    pill.title = check.ok ? 'answered in ' + ms + ' ms' : check.error || 'failing';
  }

  async function pollHealth() {
    try {
      const res = await fetch('/readyz', { cache: 'no-store', headers: { Accept: 'application/json' } });
      const body = await res.json();
      const checks = body.checks || {};
      setPill('redis', checks.redis, 'starting');
      setPill('rabbitmq', checks.rabbitmq, 'starting');
    } catch {
      setPill('redis', null, 'api unreachable');
      setPill('rabbitmq', null, 'api unreachable');
    } finally {
      setTimeout(pollHealth, HEALTH_MS);
    }
  }

  // ---------------------------------------------------------------- queues

  const queuesBody = $('#queues');
  const queuesError = $('#queues-error');

  function queueRow(q) {
    const verb = q.paused ? 'resume' : 'pause';
    const button = el('button', {
      type: 'button',
      class: 'secondary small',
      'aria-label': (q.paused ? 'Resume' : 'Pause') + ' queue ' + q.name,
      onclick: () => setQueuePaused(q.name, verb, button),
    }, q.paused ? 'Resume' : 'Pause');
    return el('tr', {},
      el('td', { class: 'mono' }, q.name),
      el('td', {}, String(q.depth)),
      el('td', {}, String(q.consumers)),
      el('td', {}, q.paused ? 'paused' : 'running'),
      el('td', {}, button));
  }

  async function loadQueues() {
    try {
      const { body } = await api('/queues');
      queuesBody.replaceChildren(...(body || []).map(queueRow));
      queuesError.hidden = true;
    } catch (e) {
      queuesError.textContent = 'Queues: ' + e.message;
      queuesError.hidden = false;
    }
  }

  async function setQueuePaused(name, verb, button) {
    button.disabled = true;
    try {
      await api('/queues/' + encodeURIComponent(name) + '/' + verb, { method: 'POST' });
      announce('Queue ' + name + (verb === 'pause' ? ' paused' : ' resumed'));
    } catch (e) {
      queuesError.textContent = 'Could not ' + verb + ' ' + name + ': ' + e.message;
      queuesError.hidden = false;
    }
    await loadQueues();
  }

  function pollQueues() {
    loadQueues().finally(() => setTimeout(pollQueues, HEALTH_MS));
  }

  // ------------------------------------------------------------------ start

  function restart() {
    generation += 1;
    stopStreams();
    loadTasks();
    loadSchedules();
  }

  // The management UI runs beside the broker on port 15672, reached through
  // the same host name as this page.
  const mgmt = new URL(window.location.href);
  mgmt.protocol = 'http:';
  mgmt.port = '15672';
  mgmt.pathname = '/';
  mgmt.search = '';
  mgmt.hash = '';
  els.mgmt.href = mgmt.href;

  pollHealth();
  loadAlgorithms();
  loadTasks();
  loadSchedules();
  pollQueues();
})();
