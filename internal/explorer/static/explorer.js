// The tkms transparency explorer: reads the public API of the tkms that
// serves it, verifies what it shows (verify.js) and renders four views.
// Everything from the server is untrusted: it reaches the page as text
// nodes only (never innerHTML), and an entry is shown as verified only
// once its inclusion in a checkpoint signed by the pinned key is checked.
import * as v from './verify.js';

const PIN = 'tkms.explorer.logkey';
const LAST = 'tkms.explorer.checkpoint:'; // + pinned key: the last verified checkpoint
const MAX_BUNDLES = 64; // entries loaded at start: the newest 64 bundles (16,384 entries)
const LIST_MAX = 200;

const st = {
  vkeyStr: localStorage.getItem(PIN) || '',
  vk: null,
  vkErr: '',
  cp: null,
  cpNote: '',
  cpErr: '',
  sig: { state: 'warn', msg: 'not checked' },
  cons: { state: 'warn', msg: 'not checked' },
  fetchedAt: null,
  entries: new Map(), // index -> {index, leaf, hash, e, err}
  loadedFrom: 0,
  incl: new Map(), // index -> {state, msg}
  keys: null,
  proposals: null,
  members: null,
  constitution: null,
  krp: null,
  serverKey: '',
  problems: new Map(), // id -> message
  inflight: new Set(), // inclusion checks under way
  filter: { kid: '', who: '', code: '' },
};
window.tkmsExplorer = st; // for the curious, and for the tests

// ---- DOM helpers ----

function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  for (const [k, val] of Object.entries(attrs || {})) {
    if (val === undefined || val === null || val === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), val);
    else if (k === 'class') el.className = val;
    else el.setAttribute(k, val === true ? '' : val);
  }
  for (const k of kids.flat(Infinity)) {
    if (k === undefined || k === null || k === false) continue;
    el.append(k instanceof Node ? k : String(k));
  }
  return el;
}

const SVG = 'http://www.w3.org/2000/svg';
function s(tag, attrs, ...kids) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, val] of Object.entries(attrs || {})) el.setAttribute(k, val);
  for (const k of kids) el.append(k instanceof Node ? k : String(k));
  return el;
}

function fmtTime(d) {
  if (!(d instanceof Date) || isNaN(d)) return '';
  return d.toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');
}

function ago(d) {
  const sec = Math.round((Date.now() - d.getTime()) / 1000);
  if (sec < 0) return 'in the future';
  if (sec < 90) return sec + ' s ago';
  if (sec < 5400) return Math.round(sec / 60) + ' min ago';
  if (sec < 172800) return Math.round(sec / 3600) + ' h ago';
  return Math.round(sec / 86400) + ' days ago';
}

function short(x, n = 16) {
  x = String(x ?? '');
  return x.length > n ? x.slice(0, n) + '…' : x;
}

function json(x) {
  return JSON.stringify(sortKeys(x), null, 2);
}

function sortKeys(x) {
  if (Array.isArray(x)) return x.map(sortKeys);
  if (x && typeof x === 'object') {
    const o = {};
    for (const k of Object.keys(x).sort()) o[k] = sortKeys(x[k]);
    return o;
  }
  return x;
}

function problem(id, msg) {
  st.problems.set(id, msg);
  renderBanners();
}

// ---- fetching ----

async function get(path, as = 'json') {
  const r = await fetch(path, { cache: 'no-store', credentials: 'omit' });
  if (!r.ok) throw new Error('GET ' + path + ': ' + r.status);
  if (as === 'text') return r.text();
  if (as === 'bytes') return new Uint8Array(await r.arrayBuffer());
  return r.json();
}

// limit runs at most n calls of f at once.
function limiter(n) {
  let active = 0;
  const queue = [];
  const next = () => {
    if (active >= n || queue.length === 0) return;
    active++;
    const [f, res, rej] = queue.shift();
    f().then(res, rej).finally(() => {
      active--;
      next();
    });
  };
  return (f) => new Promise((res, rej) => {
    queue.push([f, res, rej]);
    next();
  });
}
const proofs = limiter(4);

// ---- loading and verifying ----

async function loadKey() {
  st.vk = null;
  st.vkErr = '';
  if (!st.vkeyStr) return;
  try {
    st.vk = await v.parseVerifierKey(st.vkeyStr);
  } catch (e) {
    st.vkErr = e.message;
    problem('pin', 'The pinned log key is unusable: ' + e.message);
  }
}

async function loadCheckpoint() {
  st.cpNote = await get('/log/checkpoint', 'text');
  st.fetchedAt = new Date();
  try {
    st.cp = v.parseCheckpoint(st.cpNote);
  } catch (e) {
    st.cpErr = e.message;
    st.sig = { state: 'bad', msg: e.message };
    problem('cp', 'The checkpoint is malformed: ' + e.message);
    return;
  }
  if (!st.vk) {
    st.sig = { state: 'warn', msg: 'not verified: no log key is pinned' };
    st.cons = { state: 'warn', msg: 'not checked: no log key is pinned' };
    return;
  }
  try {
    await v.openNote(st.vk, st.cpNote);
    if (st.cp.origin !== st.vk.name) throw new v.VerifyError('the checkpoint origin ' + st.cp.origin + ' is not the pinned key\'s name ' + st.vk.name);
    st.sig = { state: 'ok', msg: 'signed by the pinned log key' };
  } catch (e) {
    st.sig = { state: 'bad', msg: e.message };
    st.cons = { state: 'warn', msg: 'not checked: the checkpoint is not authentic' };
    problem('cp', 'Checkpoint: ' + e.message + '. Nothing this server shows can be trusted.');
    return;
  }
  await checkConsistency();
}

async function checkConsistency() {
  const key = LAST + st.vkeyStr;
  let prev = null;
  try {
    prev = JSON.parse(localStorage.getItem(key) || 'null');
  } catch { /* a damaged record is a first visit */ }
  const cp = st.cp;
  if (!prev) {
    st.cons = { state: 'ok', msg: 'first checkpoint this browser has seen for this key; saved' };
    localStorage.setItem(key, JSON.stringify({ size: cp.size, root: cp.rootB64, note: st.cpNote, seen: Date.now() }));
    return;
  }
  try {
    let proof = [];
    if (prev.size > 0 && prev.size < cp.size) {
      const r = await get('/v1/log/proof/consistency?from=' + prev.size + '&to=' + cp.size);
      proof = (r.proof || []).map(v.b64decode);
    }
    await v.verifyConsistency(prev.size, cp.size, proof, v.b64decode(prev.root), cp.root);
  } catch (e) {
    if (e instanceof TypeError) {
      // The network failed (fetch's TypeError): unknown, not failed. The
      // saved checkpoint stays; the next visit checks again. A server
      // that answers but will not prove consistency fails the check.
      st.cons = { state: 'warn', msg: 'not checked: ' + e.message, prev };
      return;
    }
    const what = cp.size < prev.size ? 'rolled back' : 'forked';
    st.cons = { state: 'bad', msg: e.message + ' (this browser saw size ' + prev.size + ', root ' + prev.root + ')', prev };
    problem('cons', 'The log has been ' + what + ': ' + e.message + '. This browser saw a tree of size ' + prev.size +
      ' on ' + fmtTime(new Date(prev.seen)) + '; the saved checkpoint is kept as evidence.');
    return;
  }
  st.cons = { state: 'ok', msg: 'consistent with the checkpoint of size ' + prev.size + ' seen before', prev };
  localStorage.setItem(key, JSON.stringify({ size: cp.size, root: cp.rootB64, note: st.cpNote, seen: Date.now() }));
}

async function loadBundle(n) {
  const size = st.cp.size;
  const w = Math.min(256, size - n * 256);
  const leaves = v.splitBundle(await get('/log/' + v.tilePath('entries', n, w), 'bytes'));
  if (leaves.length !== w) throw new v.VerifyError('entry bundle ' + n + ' holds ' + leaves.length + ' entries, want ' + w);
  await Promise.all(leaves.map(async (leaf, j) => {
    const index = n * 256 + j;
    const ent = { index, leaf, hash: await v.leafHash(leaf), e: null, err: '' };
    try {
      ent.e = v.parseLeaf(leaf);
      ent.e.json = JSON.parse(ent.e.body);
      if (ent.e.seq !== index + 1) ent.err = 'leaf ' + index + ' holds entry seq ' + ent.e.seq + ', want ' + (index + 1);
    } catch (e) {
      ent.err = 'undecodable leaf: ' + e.message;
    }
    if (ent.err) {
      st.incl.set(index, { state: 'bad', msg: ent.err });
      problem('leaf' + index, 'Entry ' + index + ': ' + ent.err);
    }
    st.entries.set(index, ent);
  }));
}

async function loadEntries() {
  const size = st.cp.size;
  const tiles = Math.ceil(size / 256);
  const first = Math.max(0, tiles - MAX_BUNDLES);
  st.loadedFrom = first * 256;
  const jobs = [];
  for (let n = first; n < tiles; n++) jobs.push(loadBundle(n));
  const res = await Promise.allSettled(jobs);
  for (const r of res) if (r.status === 'rejected') problem('bundles', 'Cannot read the log\'s entries: ' + r.reason.message);
}

// verifyEntries checks the loaded entries against the checkpoint: at once
// when the whole log is loaded and hashes to the checkpoint's root, else
// one inclusion proof per entry (queued as entries are displayed).
async function verifyEntries() {
  if (!st.cp || st.sig.state !== 'ok') return;
  const size = st.cp.size;
  if (st.loadedFrom === 0 && st.entries.size === size) {
    const hashes = [];
    for (let i = 0; i < size; i++) hashes.push(st.entries.get(i).hash);
    if (v.equal(await v.treeRoot(hashes), st.cp.root)) {
      for (let i = 0; i < size; i++) {
        if (!st.incl.has(i)) st.incl.set(i, { state: 'ok', msg: 'in the tree of the signed checkpoint (size ' + size + ')' });
      }
      return;
    }
    problem('root', 'The entries served do not hash to the checkpoint\'s root: some were changed, dropped or added. Entries that fail their inclusion proof are marked.');
  }
  if (st.entries.size <= 4096) await Promise.all([...st.entries.keys()].map(checkInclusion));
}

function checkInclusion(i) {
  if (st.incl.has(i) || !st.cp || st.sig.state !== 'ok' || !st.entries.has(i)) return Promise.resolve();
  st.incl.set(i, { state: 'pending', msg: 'checking inclusion…' });
  const job = proofs(async () => {
    const ent = st.entries.get(i);
    let res;
    try {
      const r = await get('/v1/log/proof/inclusion?index=' + i + '&size=' + st.cp.size);
      await v.verifyInclusion(ent.hash, i, st.cp.size, (r.proof || []).map(v.b64decode), st.cp.root);
      res = { state: 'ok', msg: 'inclusion proof verified against the signed checkpoint (size ' + st.cp.size + ')' };
    } catch (e) {
      res = { state: 'bad', msg: e.message + ': this entry was changed after it was logged' };
      problem('incl' + i, 'Entry ' + i + (ent.e ? ' (' + ent.e.type + ')' : '') + ' fails its inclusion proof: ' + e.message + '.');
    }
    st.incl.set(i, res);
    updateBadges(i);
  });
  st.inflight.add(job);
  return job.finally(() => st.inflight.delete(job));
}

function status(i) {
  if (!st.vk) return { state: 'warn', msg: 'not verified: no log key is pinned' };
  if (st.sig.state !== 'ok') return { state: 'warn', msg: 'not verified: the checkpoint is not authentic' };
  return st.incl.get(i) || { state: 'pending', msg: 'not checked yet' };
}

function badge(i) {
  // While loading, verifyEntries decides how to check; afterwards an entry
  // displayed for the first time is checked on its own.
  if (document.body.dataset.state === 'ready') checkInclusion(i);
  const x = status(i);
  const label = { ok: 'verified', bad: 'FAILED', warn: 'unverified', pending: 'checking' }[x.state];
  return h('span', { class: 'badge ' + x.state, 'data-badge': i, title: x.msg }, label, h('span', { class: 'sr' }, ': ' + x.msg));
}

function updateBadges(i) {
  for (const el of document.querySelectorAll('[data-badge="' + i + '"]')) el.replaceWith(badge(i));
  for (const el of document.querySelectorAll('[data-index="' + i + '"]')) el.classList.toggle('bad', status(i).state === 'bad');
  renderBanners();
}

function entryLink(i) {
  return h('a', { href: '#log/' + i }, '#' + i);
}

// item wraps an element that shows entry i: red when its check failed.
function item(tag, i, attrs, ...kids) {
  const bad = status(i).state === 'bad';
  return h(tag, { ...attrs, 'data-index': i, class: ((attrs && attrs.class) || '') + (bad ? ' bad' : '') }, ...kids);
}

function ofType(...types) {
  const out = [];
  for (const ent of [...st.entries.values()].sort((a, b) => a.index - b.index)) {
    if (ent.e && types.includes(ent.e.type)) out.push(ent);
  }
  return out;
}

// ---- banners ----

function renderBanners() {
  const box = document.getElementById('banners');
  box.replaceChildren();
  if (!st.vkeyStr) {
    box.append(h('p', { class: 'banner warn', id: 'nopin' }, 'No log key is pinned: nothing on this page is verified. ',
      h('a', { href: '#pin' }, 'Pin the log\'s verifier key'), ' (confirm it out of band, not from this server).'));
  }
  for (const [id, msg] of st.problems) box.append(h('p', { class: 'banner bad', 'data-problem': id }, msg));
  document.body.dataset.problems = st.problems.size;
}

// ---- views ----

const views = {
  keys: viewKeys,
  releases: viewReleases,
  governance: viewGovernance,
  log: viewLog,
  pin: viewPin,
};

function render() {
  const [name, arg] = (location.hash.slice(1) || 'keys').split('/');
  const view = views[name] || viewKeys;
  const main = document.getElementById('main');
  main.replaceChildren(...[view(arg)].flat(Infinity));
  main.dataset.view = views[name] ? name + (arg !== undefined ? '/' + arg : '') : 'keys';
  for (const a of document.querySelectorAll('nav a')) {
    if (a.getAttribute('href') === '#' + (views[name] ? name : 'keys')) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  renderBanners();
}

function loading() {
  return h('p', { class: 'muted' }, document.body.dataset.state === 'ready' ? 'Nothing here.' : 'Loading…');
}

function viewKeys() {
  const out = [h('h2', { tabindex: -1 }, 'Keys')];
  const byKid = new Map();
  for (const ent of ofType('key.created', 'key.published', 'key.retired', 'key.expired', 'key.destroyed')) {
    const kid = ent.e.json.kid;
    if (ent.e.type === 'key.created') byKid.set(kid, { kid, created: ent });
    else if (byKid.has(kid)) byKid.get(kid)[ent.e.type.slice(4)] = ent;
  }
  const api = new Map((st.keys || []).map((k) => [k.kid, k]));
  for (const k of api.values()) if (!byKid.has(k.kid)) byKid.set(k.kid, { kid: k.kid, created: null, api: k });
  if (byKid.size === 0) return [...out, loading()];
  const keys = [...byKid.values()];
  out.push(h('p', {}, keys.length + ' keys. Times come from the verified ledger entries; the state column (primary, published, …) is what the server says now (',
    h('code', {}, '/v1/keys?all=true'), ').'));
  out.push(keyTimeline(keys, api));
  const rows = keys.map((k) => {
    const b = k.created ? k.created.e.json : api.get(k.kid) || {};
    const a = api.get(k.kid);
    const primary = a && a.state === 'primary';
    const i = k.created ? k.created.index : null;
    const tr = h('tr', { 'data-kid': k.kid, 'data-index': i ?? undefined, class: (primary ? 'primary' : '') + (i !== null && status(i).state === 'bad' ? ' bad' : '') },
      h('td', {}, h('code', { class: 'kid', title: k.kid }, k.kid), primary ? h('strong', { class: 'tag' }, ' ★ primary') : ''),
      h('td', {}, b.id ?? ''),
      h('td', {}, b.suite ?? ''),
      h('td', {}, a ? a.state : 'not served'),
      h('td', {}, k.created ? fmtTime(k.created.e.time) : ''),
      h('td', {}, fmtTime(new Date(b.not_before)), k.published ? h('span', { class: 'muted' }, ' (logged ', entryLink(k.published.index), ')') : ''),
      h('td', {}, fmtTime(new Date(b.release_until))),
      h('td', {}, k.destroyed ? [fmtTime(k.destroyed.e.time), ' ', entryLink(k.destroyed.index)] : h('span', { class: 'muted' }, 'due ' + fmtTime(new Date(b.destroy_after)))),
      h('td', {}, i !== null ? [entryLink(i), ' ', badge(i)] : h('span', { class: 'muted' }, 'key.created not loaded')),
      h('td', {}, b.reason ?? ''));
    return tr;
  });
  out.push(h('div', { class: 'scroll' }, h('table', { id: 'keys' },
    h('caption', { class: 'sr' }, 'Every key, oldest first'),
    h('thead', {}, h('tr', {}, ['kid', 'id', 'suite', 'state', 'created', 'published', 'releasable until', 'destroyed', 'receipt (key.created)', 'reason'].map((c) => h('th', { scope: 'col' }, c)))),
    h('tbody', {}, rows))));
  return out;
}

function keyTimeline(keys, api) {
  const spans = keys.filter((k) => k.created).map((k) => {
    const b = k.created.e.json;
    return { k, t0: k.created.e.time.getTime(), pub: Date.parse(b.not_before), adv: Date.parse(b.not_after), rel: Date.parse(b.release_until), des: k.destroyed ? k.destroyed.e.time.getTime() : null };
  });
  if (spans.length === 0) return '';
  const now = Date.now();
  const lo = Math.min(...spans.map((x) => x.t0));
  const hi = Math.max(now, ...spans.map((x) => (isNaN(x.rel) ? x.t0 : x.rel)));
  const W = 1000, L = 70, row = 18, H = spans.length * row + 24;
  const x = (t) => L + ((Math.min(Math.max(t, lo), hi) - lo) / Math.max(1, hi - lo)) * (W - L - 10);
  const g = s('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', class: 'chart', 'aria-label': `Timeline of ${spans.length} keys from ${fmtTime(new Date(lo))} to ${fmtTime(new Date(hi))}` });
  spans.forEach((p, r) => {
    const y = r * row + 4;
    const a = api.get(p.k.kid);
    const cls = a && a.state === 'primary' ? ' primary' : '';
    const title = s('title', {}, `${p.k.kid}: created ${fmtTime(new Date(p.t0))}, published ${fmtTime(new Date(p.pub))}, releasable until ${fmtTime(new Date(p.rel))}` + (p.des ? `, destroyed ${fmtTime(new Date(p.des))}` : ''));
    g.append(s('text', { x: 2, y: y + 11, class: 'label' }, 'id ' + p.k.created.e.json.id));
    g.append(s('rect', { x: x(p.t0), y: y + 5, width: Math.max(1, x(p.rel) - x(p.t0)), height: 4, class: 'span' + cls }, title));
    g.append(s('rect', { x: x(p.pub), y: y + 1, width: Math.max(2, x(p.adv) - x(p.pub)), height: 12, class: 'adv' + cls }));
    if (p.des) g.append(s('rect', { x: x(p.des) - 1, y: y, width: 3, height: 14, class: 'destroyed' }));
  });
  g.append(s('line', { x1: x(now), x2: x(now), y1: 0, y2: H - 20, class: 'now' }));
  g.append(s('text', { x: Math.min(x(now), W - 30), y: H - 6, class: 'label' }, 'now'));
  return h('figure', {}, g, h('figcaption', { class: 'legend' },
    h('span', { class: 'sw adv' }), ' advertised (published to not after) ',
    h('span', { class: 'sw span' }), ' releasable (created to release until) ',
    h('span', { class: 'sw destroyed' }), ' destroyed'));
}

function releaseItems() {
  return ofType('key.released', 'release.denied').reverse().map((ent) => {
    const b = ent.e.json;
    return { ent, code: ent.e.type === 'key.released' ? 'released' : b.code, kids: b.kids || [], who: (b.iss || '') + ' ' + (b.oid || ''), n: ent.e.type === 'key.released' ? 1 : 1 + (b.suppressed || 0) };
  });
}

function viewReleases() {
  const out = [h('h2', { tabindex: -1 }, 'Releases and denials')];
  const all = releaseItems();
  if (all.length === 0) return [...out, loading()];
  // Releases first (green), then each denial code.
  const codes = [...new Set(all.map((x) => x.code))].sort((a, b) => (a === 'released' ? -1 : b === 'released' ? 1 : a < b ? -1 : 1));
  const list = h('div', { id: 'release-list' });
  const f = st.filter;
  const apply = () => {
    const sel = all.filter((x) => (!f.kid || x.kids.some((k) => k.includes(f.kid))) && (!f.who || x.who.includes(f.who)) && (!f.code || x.code === f.code));
    list.replaceChildren(h('p', { 'aria-live': 'polite' }, sel.length + ' of ' + all.length + ' shown' + (sel.length > LIST_MAX ? ' (the newest ' + LIST_MAX + ' listed)' : '')),
      ...sel.slice(0, LIST_MAX).map(releaseCard));
  };
  const input = (name, label, ph) => h('label', {}, label, h('input', { type: 'search', name, value: f[name], placeholder: ph, oninput: (e) => { f[name] = e.target.value.trim(); apply(); } }));
  out.push(releaseChart(all, codes));
  out.push(h('form', { class: 'filters', role: 'search', onsubmit: (e) => e.preventDefault() },
    input('kid', 'kid ', 'part of a kid'), input('who', 'identity ', 'issuer or object id'),
    h('label', {}, 'code ', h('select', { name: 'code', onchange: (e) => { f.code = e.target.value; apply(); } },
      h('option', { value: '' }, 'all'), codes.map((c) => h('option', { value: c, selected: f.code === c }, c))))));
  apply();
  out.push(list);
  return out;
}

function releaseCard(x) {
  const { ent } = x;
  const b = ent.e.json;
  const released = ent.e.type === 'key.released';
  const rows = released ? [
    ['kids', b.kids && b.kids.join(', ')], ['api', b.api + (b.format ? ' (' + b.format + ')' : '')],
    ['identity', b.iss + ' / ' + b.oid], ['evidence', b.evidence_type + (b.simulated ? ' (SIMULATED)' : '')],
    ['measurement', b.measurement], ['host data', b.host_data], ['report sha256', b.report_sha256],
    ['wrapping key sha256', b.wrapping_key_sha256], ['policy', 'version seq ' + b.policy_seq + ', sha256 ' + b.policy_sha256],
  ] : [['identity', b.iss + ' / ' + b.oid], ['api', b.api], ['code', b.code], ['suppressed since', b.suppressed || 0]];
  return item('article', ent.index, { class: 'card ' + (released ? 'released' : 'denied'), 'data-kind': ent.e.type, 'data-code': x.code },
    h('h3', {}, released ? 'Released' : 'Denied: ' + b.code, ' ', h('span', { class: 'muted' }, fmtTime(ent.e.time)), ' ', entryLink(ent.index), ' ', badge(ent.index)),
    h('dl', {}, rows.filter((r) => r[1] !== undefined && r[1] !== '').map(([k, val]) => [h('dt', {}, k), h('dd', {}, h('code', {}, String(val)))])),
    released && b.claims ? h('details', {}, h('summary', {}, 'claims the policy was evaluated on'), h('pre', {}, json(b.claims))) : '');
}

function releaseChart(all, codes) {
  const times = all.map((x) => x.ent.e.time.getTime());
  const lo = Math.min(...times), hi = Math.max(...times);
  const nb = hi > lo ? 24 : 1;
  const width = Math.max(1, hi - lo) / nb;
  const buckets = Array.from({ length: nb }, () => ({}));
  for (const x of all) {
    const b = Math.min(nb - 1, Math.floor((x.ent.e.time.getTime() - lo) / width));
    buckets[b][x.code] = (buckets[b][x.code] || 0) + x.n;
  }
  const max = Math.max(1, ...buckets.map((b) => Object.values(b).reduce((a, c) => a + c, 0)));
  const W = 1000, H = 160, L = 40, B = 20;
  const bw = (W - L) / nb;
  const g = s('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', class: 'chart', id: 'release-chart' });
  const totals = codes.map((c) => c + ': ' + all.filter((x) => x.code === c).reduce((a, x) => a + x.n, 0));
  g.setAttribute('aria-label', 'Releases and denials over time by code. ' + totals.join(', '));
  g.append(s('text', { x: 0, y: 12, class: 'label' }, String(max)), s('text', { x: 0, y: H - B, class: 'label' }, '0'));
  buckets.forEach((b, i) => {
    let y = H - B;
    for (const c of codes) {
      const n = b[c] || 0;
      if (!n) continue;
      const hgt = (n / max) * (H - B - 10);
      y -= hgt;
      g.append(s('rect', { x: L + i * bw + 1, y, width: Math.max(1, bw - 2), height: hgt, class: 'c' + (codes.indexOf(c) % 8), 'data-code': c },
        s('title', {}, `${c}: ${n} between ${fmtTime(new Date(lo + i * width))} and ${fmtTime(new Date(lo + (i + 1) * width))}`)));
    }
  });
  g.append(s('text', { x: L, y: H - 4, class: 'label' }, fmtTime(new Date(lo))));
  g.append(s('text', { x: W - 170, y: H - 4, class: 'label' }, fmtTime(new Date(hi))));
  return h('figure', {}, g, h('figcaption', { class: 'legend' }, codes.map((c, i) => [h('span', { class: 'sw c' + (i % 8) }), ' ' + c + ' '])));
}

// lineDiff returns the lines of a and b as [' '|'-'|'+', line] (LCS).
function lineDiff(a, b) {
  const A = a ? a.split('\n') : [], B = b.split('\n');
  const n = A.length, m = B.length;
  const L = Array.from({ length: n + 1 }, () => new Array(m + 1).fill(0));
  for (let i = n - 1; i >= 0; i--) for (let j = m - 1; j >= 0; j--) L[i][j] = A[i] === B[j] ? L[i + 1][j + 1] + 1 : Math.max(L[i + 1][j], L[i][j + 1]);
  const out = [];
  let i = 0, j = 0;
  while (i < n || j < m) {
    if (i < n && j < m && A[i] === B[j]) { out.push([' ', A[i]]); i++; j++; }
    else if (j < m && (i === n || L[i][j + 1] >= L[i + 1][j])) out.push(['+', B[j++]]);
    else out.push(['-', A[i++]]);
  }
  return out;
}

function diffView(before, after) {
  return h('pre', { class: 'diff' }, lineDiff(before, after).map(([op, line]) => h('span', { class: op === '+' ? 'add' : op === '-' ? 'del' : '' }, op + ' ' + line + '\n')));
}

function viewGovernance() {
  const out = [h('h2', { tabindex: -1 }, 'Governance')];
  const names = new Map();
  for (const m of st.members || []) names.set(m.id, m.name);
  const init = ofType('gov.init')[0];
  if (init) for (const m of init.e.json.members || []) names.set(m.id, m.name);
  const who = (id) => h('span', { title: id }, (names.get(id) || 'member') + ' ', h('code', {}, short(id, 12)));
  const api = new Map(((st.proposals && st.proposals.proposals) || []).map((p) => [p.id, p]));

  out.push(h('h3', {}, 'Members in force'));
  out.push(st.members ? h('ul', { id: 'members' }, st.members.map((m) => h('li', { 'data-member': m.id }, m.name, ' ', h('code', {}, m.id)))) : loading());
  if (init) out.push(h('p', {}, 'Governed since entry ', entryLink(init.index), ' ', badge(init.index), ' (gov.init, ', (init.e.json.members || []).length, ' founding members).'));
  out.push(h('details', {}, h('summary', {}, 'Constitution in force'), h('pre', {}, st.constitution ? json(st.constitution) : '…')));

  // Policies: the value each action last set, to diff the next against.
  const cur = new Map();
  const history = [];
  const policyEntry = { 'policy.key_release': 'set_key_release_policy', 'policy.key_rotation': 'set_key_rotation_policy', 'policy.settings': 'set_settings_policy' };
  const cards = [];
  const ballots = new Map();
  for (const ent of ofType('gov.ballot', 'gov.withdrawal')) {
    const id = ent.e.json.proposal_id;
    if (!ballots.has(id)) ballots.set(id, []);
    ballots.get(id).push(ent);
  }
  for (const ent of ofType('gov.init', 'gov.proposal', ...Object.keys(policyEntry))) {
    const b = ent.e.json;
    if (ent.e.type === 'gov.init') {
      if (b.constitution) cur.set('set_constitution', json(b.constitution));
      continue;
    }
    if (policyEntry[ent.e.type]) {
      cur.set(policyEntry[ent.e.type], json(b));
      if (ent.e.type === 'policy.key_release') {
        // A version from the configuration (at genesis, or on a ledger
        // not governed then); its seq is what releases name (policy_seq).
        const seq = ent.index + 1;
        history.push([seq, item('li', ent.index, { 'data-seq': seq, 'data-proposal': '' },
          h('strong', {}, 'version seq ' + seq), ' — ', fmtTime(ent.e.time), ' ', entryLink(ent.index), ' ', badge(ent.index),
          ' — a policy.key_release entry: from the configuration, not by a proposal',
          h('details', {}, h('summary', {}, 'this version'), h('pre', {}, json(b))))]);
      }
      continue;
    }
    const p = api.get(b.id) || {};
    const accepted = p.state === 'accepted';
    const acts = (b.actions || []).map((a, k) => {
      const desc = p.actions && p.actions[k] ? p.actions[k].description : '';
      let diff = '';
      if (a.name.startsWith('set_')) {
        const isFull = a.name !== 'set_key_release_policy' || a.args.policy;
        const after = json(a.name === 'set_key_release_policy' && a.args.policy ? a.args.policy : a.args);
        diff = h('details', { open: true }, h('summary', {}, isFull && cur.has(a.name) ? 'change against the policy in force before' : 'change'),
          diffView(isFull ? cur.get(a.name) || '' : '', after));
        if (accepted) {
          if (isFull) cur.set(a.name, after); else cur.delete(a.name);
          // A version set by this proposal: its seq is that of the
          // message that decided it (the server reports which), as
          // releases name it (policy_seq).
          if (a.name === 'set_key_release_policy' && p.decided_seq) {
            history.push([p.decided_seq, item('li', p.decided_seq - 1, { 'data-seq': p.decided_seq, 'data-proposal': b.id },
              h('strong', {}, 'version seq ' + p.decided_seq), ' — set by proposal ', h('code', { title: b.id }, short(b.id, 12)),
              ', decided by entry ', entryLink(p.decided_seq - 1), ' ', badge(p.decided_seq - 1), ' (its change: the proposal below)')]);
          }
        }
      }
      return h('li', {}, h('code', {}, a.name), desc ? ' — ' + desc : '', a.name.startsWith('set_') ? diff : h('pre', {}, json(a.args)));
    });
    const bl = (ballots.get(b.id) || []).map((be) => item('li', be.index, { 'data-ballot': be.e.json.member },
      be.e.type === 'gov.withdrawal' ? 'withdrawn by ' : (be.e.json.vote === 'approve' ? 'approve' : 'reject') + ' — ', who(be.e.json.member), ' ', fmtTime(be.e.time), ' ', entryLink(be.index), ' ', badge(be.index)));
    cards.push(item('article', ent.index, { class: 'card proposal state-' + (p.state || 'unknown'), 'data-proposal': b.id },
      h('h4', {}, 'Proposal ', h('code', { title: b.id }, short(b.id, 16)), ' — ', h('strong', { class: 'outcome' }, p.state || 'unknown'),
        p.state ? ' (' + p.approvals + ' approvals, ' + p.rejections + ' rejections, ' + p.needed + ' needed' + (p.decided_seq ? ', decided by entry #' + (p.decided_seq - 1) : '') + ')' : ''),
      h('p', {}, 'Proposed by ', who(b.proposer), ' at ', fmtTime(new Date(typeof b.created_at === 'number' ? b.created_at * 1000 : b.created_at)), b.compat ? ' (through /app/proposals)' : '', ' — ', entryLink(ent.index), ' ', badge(ent.index)),
      h('ol', { class: 'actions' }, acts),
      h('p', {}, 'Ballots (the proposer\'s submission is its approval):'),
      bl.length ? h('ul', { class: 'ballots' }, bl) : h('p', { class: 'muted' }, 'none')));
  }
  out.push(h('h3', {}, 'Key release policy in force'));
  out.push(h('pre', { id: 'policy' }, st.krp ? json(st.krp) : '…'), h('p', { class: 'muted' }, 'As the server serves it (/app/keyReleasePolicy); its versions from the verified ledger (a release names the version it was decided under), oldest first (which proposal set each is what the server reports):'));
  history.sort((x, y) => x[0] - y[0]);
  out.push(history.length ? h('ol', { id: 'policy-history' }, history.map((x) => x[1])) : h('p', { class: 'muted' }, 'no version recorded in the loaded entries'));
  out.push(h('h3', {}, 'Proposals (newest first)'));
  out.push(h('p', { class: 'muted' }, 'Actions and ballots are read from the verified ledger; the outcome is what the server reports (tkms audit recounts every ballot).'));
  out.push(cards.length ? cards.reverse() : h('p', { class: 'muted' }, 'none'));
  return out;
}

function viewLog(arg) {
  const out = [h('h2', { tabindex: -1 }, 'Log')];
  if (!st.cp) return [...out, st.cpErr ? h('p', { class: 'bad' }, st.cpErr) : loading()];
  const last = st.entries.get(st.cp.size - 1);
  const cpBad = st.sig.state === 'bad' || st.cons.state === 'bad';
  out.push(h('section', { id: 'checkpoint', class: 'card' + (cpBad ? ' bad' : '') },
    h('h3', {}, 'Checkpoint'),
    h('dl', {},
      h('dt', {}, 'origin'), h('dd', {}, h('code', {}, st.cp.origin)),
      h('dt', {}, 'size'), h('dd', { id: 'cp-size' }, st.cp.size + ' entries'),
      h('dt', {}, 'root'), h('dd', {}, h('code', {}, st.cp.rootB64)),
      h('dt', {}, 'age'), h('dd', {}, last && last.e ? 'newest entry written ' + fmtTime(last.e.time) + ' (' + ago(last.e.time) + ')' : '?', '; fetched ' + fmtTime(st.fetchedAt)),
      h('dt', {}, 'signature'), h('dd', { id: 'cp-sig', class: st.sig.state }, st.sig.msg),
      h('dt', {}, 'consistency'), h('dd', { id: 'cp-cons', class: st.cons.state }, st.cons.msg)),
    h('details', {}, h('summary', {}, 'signed note'), h('pre', {}, st.cpNote))));
  // Entry browser.
  const idx = arg !== undefined && /^\d+$/.test(arg) ? Number(arg) : st.cp.size - 1;
  const form = h('form', { class: 'browse', onsubmit: (e) => { e.preventDefault(); location.hash = '#log/' + e.target.index.value; } },
    h('label', {}, 'entry index ', h('input', { name: 'index', type: 'number', min: 0, max: st.cp.size - 1, value: idx, inputmode: 'numeric' })),
    h('button', {}, 'Show'),
    idx > 0 ? h('a', { href: '#log/' + (idx - 1) }, '← previous') : '',
    idx < st.cp.size - 1 ? h('a', { href: '#log/' + (idx + 1) }, 'next →') : '');
  out.push(h('h3', {}, 'Entry browser'), form, h('div', { id: 'entry' }, entryDetail(idx)));
  // Newest entries.
  const rows = [];
  for (let i = st.cp.size - 1; i >= Math.max(0, st.cp.size - 50); i--) {
    const ent = st.entries.get(i);
    if (!ent) continue;
    rows.push(item('tr', i, {}, h('td', {}, entryLink(i)), h('td', {}, ent.e ? fmtTime(ent.e.time) : ''), h('td', {}, ent.e ? ent.e.type : '?'), h('td', {}, badge(i))));
  }
  out.push(h('h3', {}, 'Newest entries'), h('div', { class: 'scroll' }, h('table', { id: 'recent' },
    h('thead', {}, h('tr', {}, ['index', 'time', 'type', 'check'].map((c) => h('th', { scope: 'col' }, c)))), h('tbody', {}, rows))));
  return out;
}

function entryDetail(i) {
  if (!(i >= 0 && i < st.cp.size)) return h('p', { class: 'bad' }, 'index ' + i + ' is outside the tree of size ' + st.cp.size);
  const ent = st.entries.get(i);
  if (!ent && document.body.dataset.state !== 'ready') return h('p', {}, 'Loading entry ' + i + '…');
  if (!ent) {
    loadBundle(Math.floor(i / 256)).then(render, (e) => problem('bundle' + i, 'Cannot read entry ' + i + ': ' + e.message));
    return h('p', {}, 'Loading entry ' + i + '…');
  }
  const e = ent.e;
  return item('article', i, { class: 'card', id: 'entry-' + i },
    h('h4', {}, 'Entry ', i, ' ', e ? h('code', {}, e.type) : '', ' ', badge(i)),
    h('dl', {},
      h('dt', {}, 'seq'), h('dd', {}, e ? e.seq : '?'),
      h('dt', {}, 'time'), h('dd', {}, e ? fmtTime(e.time) + ' (' + e.timeNs + ' ns)' : ''),
      h('dt', {}, 'leaf hash'), h('dd', {}, h('code', {}, v.b64encode(ent.hash))),
      h('dt', {}, 'sealed part'), h('dd', {}, e && e.sealedSha256 ? h('code', {}, 'sha256 ' + e.sealedSha256) : 'none'),
      h('dt', {}, 'check'), h('dd', {}, status(i).msg)),
    ent.err ? h('p', { class: 'bad' }, ent.err) : '',
    h('pre', {}, e ? (e.json ? json(e.json) : e.body) : ''));
}

function viewPin() {
  const input = h('input', { id: 'pin-key', name: 'key', size: 60, value: st.vkeyStr, spellcheck: 'false', autocomplete: 'off', 'aria-describedby': 'pin-help' });
  const out = [h('h2', { tabindex: -1 }, 'Log key')];
  out.push(h('p', { id: 'pin-help' }, 'The explorer checks every checkpoint against the log\'s verifier key that you pin here (kept in this browser\'s local storage). ',
    'Get it from the operator or the consortium, out of band: `tkms dev` prints it and writes it to dev.json as log_public_key. ',
    'A key read from the server you are checking proves nothing about that server.'));
  out.push(h('form', { id: 'pin-form', onsubmit: async (e) => {
    e.preventDefault();
    const val = input.value.trim();
    try {
      await v.parseVerifierKey(val);
    } catch (err) {
      document.getElementById('pin-error').textContent = err.message;
      return;
    }
    localStorage.setItem(PIN, val);
    location.hash = '#log';
    await load();
  } }, h('label', { for: 'pin-key' }, 'verifier key'), input, h('button', { id: 'pin-save' }, 'Pin'),
  st.vkeyStr ? h('button', { type: 'button', onclick: () => { localStorage.removeItem(PIN); load(); } }, 'Unpin') : '',
  h('p', { id: 'pin-error', class: 'bad', role: 'alert' }, st.vkErr)));
  if (st.serverKey) {
    out.push(h('p', {}, 'This server says its key is ', h('code', { id: 'server-key' }, st.serverKey),
      st.vkeyStr && st.serverKey.trim() !== st.vkeyStr ? h('strong', { class: 'bad' }, ' — not the key you pinned') : ''));
  }
  return out;
}

// ---- start ----

// load (re)reads everything from the server and verifies it against the
// key pinned now.
async function load() {
  document.body.dataset.state = 'loading';
  Object.assign(st, {
    vkeyStr: localStorage.getItem(PIN) || '', cp: null, cpNote: '', cpErr: '',
    sig: { state: 'warn', msg: 'not checked' }, cons: { state: 'warn', msg: 'not checked' },
    keys: null, proposals: null, members: null, constitution: null, krp: null, serverKey: '',
  });
  st.entries.clear();
  st.incl.clear();
  st.problems.clear();
  render();
  await loadKey();
  try {
    await loadCheckpoint();
  } catch (e) {
    problem('cp', 'Cannot read the checkpoint: ' + e.message);
  }
  render();
  const side = Promise.allSettled([
    get('/v1/keys?all=true').then((r) => { st.keys = r.keys; }),
    get('/v1/gov/proposals').then((r) => { st.proposals = r; }),
    get('/v1/gov/members').then((r) => { st.members = r.members; }),
    get('/v1/gov/constitution').then((r) => { st.constitution = r; }),
    get('/app/keyReleasePolicy').then((r) => { st.krp = r; }),
    get('/v1/log/key', 'text').then((r) => { st.serverKey = r.trim(); }),
  ]);
  if (st.cp) {
    await loadEntries();
    await verifyEntries();
  }
  await side;
  await Promise.all(st.inflight);
  document.body.dataset.state = 'ready';
  render();
}

// A new view takes the focus to its heading, for keyboards and screen
// readers; re-renders after data arrives leave the focus alone.
addEventListener('hashchange', () => {
  render();
  const h2 = document.querySelector('main h2');
  if (h2) h2.focus();
});
load().catch((e) => {
  problem('fatal', 'The explorer failed: ' + e.message);
  document.body.dataset.state = 'ready';
});
