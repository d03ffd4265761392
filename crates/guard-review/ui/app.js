// ingest-guard quarantine review. Plain DOM: every value from the server goes in through
// textContent or an attribute, never as HTML, so a payload cannot run anything.
'use strict';

const state = { csrf: null, reviewer: null, readOnly: false };

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null) continue;
    if (k === 'text') e.textContent = String(v);
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, String(v));
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

async function api(path, opts = {}) {
  const headers = { 'accept': 'application/json' };
  if (opts.body !== undefined) headers['content-type'] = 'application/json';
  if (opts.method && opts.method !== 'GET' && state.csrf) headers['x-csrf-token'] = state.csrf;
  const r = await fetch(path, { method: opts.method || 'GET', headers, credentials: 'same-origin',
    body: opts.body === undefined ? undefined : JSON.stringify(opts.body) });
  if (r.status === 401) { showLogin(); throw new Error('sign in'); }
  const j = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(j.error || ('HTTP ' + r.status));
  return j;
}

function showLogin() {
  document.getElementById('login').hidden = false;
  document.getElementById('view').replaceChildren();
}

async function login(ev) {
  ev.preventDefault();
  const name = document.getElementById('login-name').value;
  const password = document.getElementById('login-password').value;
  const msg = document.getElementById('login-error');
  try {
    const r = await fetch('/api/review/login', { method: 'POST', credentials: 'same-origin',
      headers: { 'content-type': 'application/json' }, body: JSON.stringify({ name, password }) });
    const j = await r.json();
    if (!r.ok) { msg.textContent = j.error || 'sign-in failed'; return; }
    setSession(j);
    document.getElementById('login').hidden = true;
    route();
  } catch (e) { msg.textContent = String(e.message || e); }
}

function setSession(j) {
  state.csrf = j.csrf; state.reviewer = j.reviewer; state.readOnly = !!j.read_only;
  const who = document.getElementById('who');
  who.replaceChildren(el('span', { text: j.reviewer + (j.read_only ? ' (read-only)' : '') + ' ' }),
    el('button', { id: 'logout', onclick: async () => { await api('/api/review/logout', { method: 'POST' }); location.reload(); } }, 'Sign out'));
}

const fmtTime = (ms) => ms == null ? '' : new Date(ms).toISOString().replace('T', ' ').replace('Z', '');
const fmtScore = (s) => s == null ? '' : Number(s).toFixed(4);

function table(head, rows) {
  return el('table', {}, el('thead', {}, el('tr', {}, ...head.map((h) => el('th', { text: h })))),
    el('tbody', {}, ...rows));
}

// A bar chart (SVG); series: [{label, value, base?}].
function bars(series, width = 560, height = 140) {
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('width', width); svg.setAttribute('height', height + 16);
  const max = Math.max(1e-12, ...series.map((s) => Math.max(s.value, s.base || 0)));
  const w = width / Math.max(1, series.length);
  series.forEach((s, i) => {
    for (const [v, cls, off] of [[s.base, 'bar base', 0], [s.value, 'bar', w * 0.45]]) {
      if (v == null) continue;
      const r = document.createElementNS(ns, 'rect');
      const h = (v / max) * height;
      r.setAttribute('x', i * w + off); r.setAttribute('y', height - h);
      r.setAttribute('width', Math.max(1, w * 0.45 - 1)); r.setAttribute('height', h);
      r.setAttribute('class', cls);
      const t = document.createElementNS(ns, 'title'); t.textContent = `${s.label}: ${v}`; r.append(t);
      svg.append(r);
    }
  });
  return svg;
}

async function overview(view) {
  const o = await api('/api/review/overview');
  const c = o.counters || {};
  view.append(el('h2', { text: 'Overview' }),
    el('div', { class: 'cards' },
      ...[['records in', c.records_in], ['passed', c.passed], ['quarantined (files)', o.quarantined],
        ['scoring provider', (o.facts || {}).scoring_provider || 'n/a'],
        ['decisions', Object.entries(o.decisions || {}).map(([k, v]) => `${k} ${v}`).join(', ') || 'none']]
        .filter(([, v]) => v !== undefined)
        .map(([k, v]) => el('div', { class: 'card' }, el('div', { text: k }), el('div', { class: 'n', text: v })))));
  const blocked = o.blocked_sources || [];
  if (blocked.length) {
    const msg = el('span', { id: 'block-msg' });
    view.append(el('h3', { class: 'error', text: `Blocked sources (${blocked.length})` }),
      table(['topic', 'source', 'since', 'why', 'block', ''], blocked.map((b) => el('tr', { class: 'blocked-source' },
        el('td', { text: b.topic }), el('td', {}, el('a', { href: '#/explorer?source=' + encodeURIComponent(b.source), text: b.source })),
        el('td', { text: fmtTime(b.since_ms) }), el('td', { text: b.why }), el('td', { text: b.id }),
        el('td', {}, state.readOnly ? null : el('button', { class: 'release-source', onclick: async () => {
          try {
            const j = await api('/api/review/sources/release', { method: 'POST', body: { topic: b.topic, source: b.source, id: b.id } });
            msg.textContent = j.already ? 'already released' : `released ${b.source}`; setTimeout(route, 300);
          } catch (e) { msg.textContent = 'refused: ' + e.message; msg.className = 'error'; }
        } }, 'Release source'))))), msg);
  }
  const reasons = o.reasons || [];
  view.append(el('h3', { text: 'Quarantined by reason' }),
    table(['reason', 'rows'], reasons.map(([r, n]) => el('tr', {}, el('td', {},
      el('a', { href: '#/explorer?reason=' + encodeURIComponent(r), text: r })), el('td', { text: n })))));
  view.append(el('h3', { text: 'Quarantined per minute, last hour' }),
    bars((o.timeline_minutes || []).map((b) => ({ label: fmtTime(b.t), value: Object.values(b.by_reason).reduce((a, x) => a + x, 0) }))));
  view.append(el('h3', { text: 'Top sources by quarantined rows' }),
    table(['source', 'rows'], (o.top_sources || []).map(([s, n]) => el('tr', {}, el('td', {},
      el('a', { href: '#/explorer?source=' + encodeURIComponent(s), text: s })), el('td', { text: n })))));
  if (o.top_sources_by_quarantine_rate && o.top_sources_by_quarantine_rate.length) {
    view.append(el('h3', { text: 'Top sources by quarantine rate (live)' }),
      table(['source', 'records', 'quarantined', 'rate'], o.top_sources_by_quarantine_rate.map((x) => el('tr', {},
        el('td', { text: x.source }), el('td', { text: x.records }), el('td', { text: x.quarantined }),
        el('td', { text: (x.quarantine_rate * 100).toFixed(1) + ' %' })))));
  }
  const hist = o.counter_history || [];
  if (hist.length > 1) {
    const steps = hist.slice(1).map((h, i) => {
      const a = hist[i].value || {}, b = h.value || {};
      return { t: h.at_ms, in: (b.records_in || 0) - (a.records_in || 0), passed: (b.passed || 0) - (a.passed || 0), q: (b.quarantined || 0) - (a.quarantined || 0) };
    });
    view.append(el('h3', { text: 'Records in (light) and quarantined (dark) per 10 s' }),
      bars(steps.map((x) => ({ label: `${fmtTime(x.t)}: in ${x.in}, passed ${x.passed}, quarantined ${x.q}`, value: x.q, base: x.in }))));
  }
  if (o.drift && o.drift.length) {
    view.append(el('h3', { text: 'Drift per feature (current window)' }), table(['topic', 'feature', 'PSI', 'KS', 'firing', 'alarm'],
      o.drift.flatMap((t) => (t.features || []).map((f) => el('tr', { class: f.alarm ? 'error' : '' },
        el('td', { text: t.topic }), el('td', { text: f.name }), el('td', { text: Number(f.psi || 0).toFixed(4) }),
        el('td', { text: Number(f.ks || 0).toFixed(4) }), el('td', { text: f.firing ? 'yes' : '' }), el('td', { text: f.alarm ? 'ALARM' : '' }))))));
  }
}

const FILTERS = [['from', 'datetime-local'], ['to', 'datetime-local'], ['topic'], ['partition'], ['reason'],
  ['score', 'select:any,anomaly,label'], ['score_min'], ['score_max'], ['source'],
  ['decision', 'select:,undecided,confirmed_poison,false_positive,released'], ['sort', 'select:time,offset,anomaly,label']];

async function explorer(view, params) {
  const form = el('form', { class: 'filters', id: 'filters' });
  for (const [name, kind] of FILTERS) {
    let input;
    if (kind && kind.startsWith('select:')) {
      input = el('select', { name, id: 'f-' + name }, ...kind.slice(7).split(',').map((v) => el('option', { value: v, text: v || '(any)' })));
    } else {
      input = el('input', { name, id: 'f-' + name, type: kind === 'datetime-local' ? 'datetime-local' : 'text', size: 12 });
    }
    let v = params.get(name) || (name === 'sort' ? 'time' : name === 'score' ? 'any' : '');
    if (kind === 'datetime-local' && v) v = new Date(Number(v)).toISOString().slice(0, 16);
    input.value = v;
    form.append(el('label', {}, name, input));
  }
  form.append(el('button', { type: 'submit', id: 'apply' }, 'Apply'));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const q = new URLSearchParams();
    for (const [name, kind] of FILTERS) {
      let v = form.elements[name].value;
      if (kind === 'datetime-local' && v) v = String(Date.parse(v + 'Z'));
      if (v) q.set(name, v);
    }
    location.hash = '#/explorer?' + q.toString();
  });
  view.append(el('h2', { text: 'Quarantine explorer' }), form);
  const q = new URLSearchParams(params);
  const r = await api('/api/review/records?' + q.toString());
  const page = Number(params.get('page') || 0);
  const exp = (fmt) => { const e = new URLSearchParams(params); e.delete('page'); e.set('format', fmt); return '/api/review/export?' + e.toString(); };
  view.append(el('p', { id: 'total' }, `${r.total} records (${r.took_ms.toFixed(1)} ms). Export: `,
    el('a', { href: exp('jsonl'), text: 'JSONL' }), ' · ', el('a', { href: exp('csv'), text: 'CSV' }), ' · ', el('a', { href: exp('parquet'), text: 'Parquet' })));
  view.append(table(['quarantined', 'topic', 'part.', 'offset', 'reasons', 'anomaly', 'label', 'source', 'state'],
    r.rows.map((x) => el('tr', { class: 'row', 'data-key': `${x.topic}/${x.partition}/${x.offset}`,
      onclick: () => { location.hash = `#/record/${encodeURIComponent(x.topic)}/${x.partition}/${x.offset}`; } },
    el('td', { text: fmtTime(x.quarantined_at_ms) }), el('td', { text: x.topic }), el('td', { text: x.partition }),
    el('td', { text: x.offset }), el('td', {}, ...x.reasons.map((c) => el('span', { class: 'tag', text: c }))),
    el('td', { text: fmtScore(x.anomaly_score) }), el('td', { text: fmtScore(x.label_score) }),
    el('td', { text: x.source }), el('td', { class: 'state-' + x.state, text: x.state })))));
  const nav = el('p', {});
  const go = (p) => { const n = new URLSearchParams(params); n.set('page', p); location.hash = '#/explorer?' + n.toString(); };
  if (page > 0) nav.append(el('button', { id: 'prev', onclick: () => go(page - 1) }, 'Previous'));
  if ((page + 1) * r.page_size < r.total) nav.append(el('button', { id: 'next', onclick: () => go(page + 1) }, 'Next'));
  view.append(nav);
}

// Numeric arrays whose length is a square (e.g. 784 = 28 x 28) are drawn as images.
function tensorFields(value, path = '', out = []) {
  if (Array.isArray(value)) {
    const side = Math.round(Math.sqrt(value.length));
    if (value.length >= 64 && side * side === value.length && value.every((x) => typeof x === 'number')) {
      out.push([path || '(root)', value, side]);
      return out;
    }
    value.forEach((v, i) => tensorFields(v, `${path}/${i}`, out));
  } else if (value && typeof value === 'object') {
    for (const [k, v] of Object.entries(value)) tensorFields(v, `${path}/${k}`, out);
  }
  return out;
}

function drawTensor(values, side) {
  const c = el('canvas', { class: 'digit', width: side, height: side });
  // CSSOM, not a style attribute: the page's CSP allows no inline styles.
  c.style.width = `${side * 8}px`;
  c.style.height = `${side * 8}px`;
  const ctx = c.getContext('2d');
  const img = ctx.createImageData(side, side);
  const max = Math.max(1, ...values);
  values.forEach((v, i) => {
    const g = Math.max(0, Math.min(255, Math.round((v / max) * 255)));
    img.data.set([g, g, g, 255], i * 4);
  });
  ctx.putImageData(img, 0, 0);
  return c;
}

async function record(view, topic, partition, offset) {
  const base = `/api/review/records/${encodeURIComponent(topic)}/${partition}/${offset}`;
  const d = await api(base);
  const r = d.record;
  view.append(el('h2', { text: `Record ${r.topic}/${r.partition}/${r.offset}` }),
    el('p', {}, 'State: ', el('strong', { id: 'record-state', class: 'state-' + d.state, text: d.state }),
      d.landed ? ` (released to ${d.landed.topic}/${d.landed.partition}/${d.landed.offset})` : ''));
  const actions = el('div', { class: 'actions' });
  const note = el('input', { id: 'note', placeholder: 'why (goes into the audit log)', size: 40 });
  const msg = el('span', { id: 'action-result' });
  const act = async (path, body) => {
    try { const j = await api(base + path, { method: 'POST', body }); msg.textContent = 'done: ' + JSON.stringify(j); setTimeout(route, 300); }
    catch (e) { msg.textContent = 'refused: ' + e.message; msg.className = 'error'; }
  };
  if (!state.readOnly) {
    actions.append(note,
      el('button', { id: 'confirm', onclick: () => act('/decision', { decision: 'confirmed_poison', note: note.value }) }, 'Confirmed poison'),
      el('button', { id: 'false-positive', onclick: () => act('/decision', { decision: 'false_positive', note: note.value }) }, 'False positive'),
      el('button', { id: 'release', onclick: () => act('/release', { note: note.value }) }, 'Release to clean topic'));
  }
  actions.append(msg);
  view.append(actions);
  const left = el('div', {}), right = el('div', {});
  left.append(el('h3', { text: 'Reasons' }), table(['code', 'where', 'detail'], r.reasons.map((x) =>
    el('tr', {}, el('td', { text: x.code }), el('td', { text: x.path || '' }), el('td', { text: x.detail })))));
  left.append(el('h3', { text: 'Scores' }), table(['anomaly', 'label', 'model'], [el('tr', {},
    el('td', { text: fmtScore(r.anomaly_score) }), el('td', { text: fmtScore(r.label_score) }), el('td', { text: r.model_id || '' }))]));
  if (d.features && d.features.length) {
    left.append(el('h3', { text: 'Features against the baseline' }), table(['feature', 'value', 'baseline quantile', 'baseline mean ± std', 'baseline range'],
      d.features.map((x) => el('tr', { class: x.outside_baseline_range ? 'error' : '' }, el('td', { text: x.name }), el('td', { text: x.value }),
        el('td', { text: x.quantile_low == null ? 'missing' : `${(x.quantile_low * 100).toFixed(0)}–${(x.quantile_high * 100).toFixed(0)} %` }),
        el('td', { text: `${fmtScore(x.baseline_mean)} ± ${fmtScore(x.baseline_std)}` }),
        el('td', { text: `${x.baseline_min} … ${x.baseline_max}${x.outside_baseline_range ? ' (outside)' : ''}` })))));
  }
  if (r.explanation) {
    let ex; try { ex = JSON.parse(r.explanation); } catch (e) { ex = r.explanation; }
    left.append(el('h3', { text: 'Contributing features' }), el('pre', { id: 'explanation', text: JSON.stringify(ex, null, 2) }));
  }
  left.append(el('h3', { text: 'Metadata' }), table(['field', 'value'], [
    ['source', r.source], ['schema', r.schema_id], ['key', r.key], ['kafka timestamp', fmtTime(r.kafka_timestamp_ms)],
    ['quarantined at', fmtTime(r.quarantined_at_ms)], ['payload bytes', r.payload_len + (r.payload_truncated ? ' (truncated)' : '')],
    ['headers', (r.headers || []).map(([k, v]) => `${k}=${v}`).join('; ')]].map(([k, v]) =>
    el('tr', {}, el('td', { text: k }), el('td', { text: v == null ? '' : v })))));
  const tensors = d.payload_json ? tensorFields(d.payload_json) : [];
  for (const [path, values, side] of tensors) {
    right.append(el('h3', { text: `Image ${path} (${side}x${side})` }), drawTensor(values, side));
  }
  right.append(el('h3', { text: 'Payload' }), el('pre', { id: 'payload',
    text: d.payload_json ? JSON.stringify(d.payload_json, (k, v) => (Array.isArray(v) && v.length > 64 ? `[${v.length} values]` : v), 2) : (r.payload || '') }));
  view.append(el('div', { class: 'grid' }, left, right));
  view.append(el('h3', { text: 'History' }), auditTable(d.history));
}

function auditTable(entries) {
  return table(['#', 'when', 'reviewer', 'action', 'record', 'note'], entries.map((e) => el('tr', {},
    el('td', { text: e.seq }), el('td', { text: fmtTime(e.at_ms) }), el('td', { text: e.reviewer }),
    el('td', { text: e.action + (e.landed ? ` → ${e.landed.topic}/${e.landed.partition}/${e.landed.offset}` : '') + (e.error ? ` (${e.error})` : '') }),
    el('td', {}, el('a', { href: `#/record/${encodeURIComponent(e.record.topic)}/${e.record.partition}/${e.record.offset}`,
      text: `${e.record.topic}/${e.record.partition}/${e.record.offset}` })), el('td', { text: e.note }))));
}

async function audit(view, params) {
  const page = Number(params.get('page') || 0);
  const a = await api('/api/review/audit?page=' + page);
  view.append(el('h2', { text: 'Audit log' }), el('p', { id: 'audit-total', text: `${a.total} entries, newest first` }), auditTable(a.entries));
}

async function feedback(view, params) {
  const target = params.get('target_fpr') || '0.05';
  const f = await api('/api/review/feedback?target_fpr=' + encodeURIComponent(target));
  const rates = (m) => table(['', 'reviewed', 'false positive', 'confirmed poison', 'FP rate'], Object.entries(m).map(([k, r]) =>
    el('tr', {}, el('td', { text: k }), el('td', { text: r.reviewed }), el('td', { text: r.false_positive }),
      el('td', { text: r.confirmed_poison }), el('td', { text: (r.false_positive_rate * 100).toFixed(1) + ' %' }))));
  view.append(el('h2', { text: 'Feedback from review decisions' }), el('h3', { text: 'Per reason' }), rates(f.by_reason),
    el('h3', { text: 'Per model' }), rates(f.by_model),
    el('h3', { text: `Threshold suggestions (at most ${(f.target_fpr * 100).toFixed(1)} % false positives among held records)` }),
    table(['topic', 'score', 'reviewed', 'suggested threshold', 'poison still held', 'false positives still held'],
      Object.entries(f.suggestions).flatMap(([t, ss]) => ss.map((s) => el('tr', {}, el('td', { text: t }), el('td', { text: s.score }),
        el('td', { text: s.reviewed }), el('td', { text: s.threshold == null ? 'none reaches the target' : fmtScore(s.threshold) }),
        el('td', { text: s.poison_kept }), el('td', { text: s.false_positives_kept }))))));
}

async function features(view) {
  const f = await api('/api/review/features');
  view.append(el('h2', { text: 'Features: current window against the baseline' }));
  if (!f.available) { view.append(el('p', { text: f.why })); return; }
  const history = f.history || [];
  for (const t of (f.stats.topics || [])) {
    view.append(el('h3', { text: `${t.topic} (baseline ${t.baseline_rows} rows, ${t.current.records} records in the current window)` }));
    for (const ft of (t.current.features || [])) {
      const cur = ft.counts || [];
      const base = ft.baseline_counts || [];
      const ct = cur.reduce((a, x) => a + x, 0) || 1, bt = base.reduce((a, x) => a + x, 0) || 1;
      const d = ft.drift || {};
      view.append(el('h4', { class: 'feature', text: `${ft.name}${ft.firing ? ' (firing)' : ''}${ft.alarm ? ' (alarm)' : ''}` }),
        el('p', { text: `PSI ${Number(d.psi || 0).toFixed(4)} · KS ${Number(d.ks || 0).toFixed(4)} (p ${Number(d.ks_p || 0).toFixed(4)}) · JS ${Number(d.js || 0).toFixed(4)} · n ${ft.count}` }));
      if (cur.length) {
        view.append(el('p', { class: 'legend', text: 'bins: baseline share (light) and current share (dark)' }),
          bars(cur.map((v, i) => ({ label: `bin ${i}`, value: v / ct, base: (base[i] || 0) / bt }))));
      }
      const psi = history.map((h) => ({ label: fmtTime(h.at_ms), value: Number((((h.value || {})[t.topic] || {})[ft.name] || {}).psi || 0) }));
      if (psi.length) view.append(el('p', { class: 'legend', text: 'PSI of the current window, sampled every 10 s' }), bars(psi, 560, 60));
    }
  }
}

async function route() {
  const view = document.getElementById('view');
  const hash = location.hash || '#/overview';
  const [path, query] = hash.slice(1).split('?');
  const params = new URLSearchParams(query || '');
  const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  for (const a of document.querySelectorAll('header nav a')) a.classList.toggle('active', a.getAttribute('href') === '#/' + parts[0]);
  view.replaceChildren();
  try {
    if (!state.csrf) {
      const s = await api('/api/review/session');
      setSession(s);
    }
    document.getElementById('login').hidden = true;
    switch (parts[0]) {
      case 'explorer': await explorer(view, params); break;
      case 'record': await record(view, parts[1], parts[2], parts[3]); break;
      case 'audit': await audit(view, params); break;
      case 'feedback': await feedback(view, params); break;
      case 'features': await features(view); break;
      default: await overview(view);
    }
  } catch (e) {
    if (String(e.message) !== 'sign in') view.append(el('p', { class: 'error', text: 'Error: ' + e.message }));
  }
}

document.addEventListener('DOMContentLoaded', () => {
  document.getElementById('login-form').addEventListener('submit', login);
  window.addEventListener('hashchange', route);
  route();
});
