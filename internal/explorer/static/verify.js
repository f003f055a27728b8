// Verification logic of the tkms explorer: no DOM, no network. Everything
// that decides whether what the page shows is authentic is here, so that
// it can be tested on its own against vectors made by Go's
// golang.org/x/mod/sumdb/note and /tlog (internal/explorer tests).
//
// Formats (docs/transparency.md):
//   - C2SP signed-note with Ed25519 keys as golang.org/x/mod/sumdb/note
//     writes them: verifier key "<name>+<hash>+<base64(0x01 || pub)>",
//     signature lines "— <name> <base64(key hash(4) || sig(64))>".
//   - C2SP tlog-checkpoint: origin, tree size, base64 root hash.
//   - RFC 6962 / RFC 9162 Merkle trees: leaf hash SHA-256(0x00 || leaf),
//     node hash SHA-256(0x01 || left || right); inclusion and consistency
//     proofs verified as RFC 9162 sections 2.1.3.2 and 2.1.4.2 say.
//   - C2SP tlog-tiles entry bundles: big-endian uint16 length || leaf.
//   - The tkms leaf: version(1)=1 || seq(8) || time(8) || uvarint(len type)
//     || type || uvarint(len body) || body || sha256(sealed) (32).
// Hashing and signature checks are WebCrypto's (crypto.subtle).

const enc = new TextEncoder();
const dec = new TextDecoder('utf-8', { fatal: true });

export class VerifyError extends Error {}

export function b64decode(s) {
  let bin;
  try {
    bin = atob(s);
  } catch {
    throw new VerifyError('malformed base64');
  }
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

export function b64encode(b) {
  let s = '';
  for (const x of b) s += String.fromCharCode(x);
  return btoa(s);
}

export function hex(b) {
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
}

export function concat(...parts) {
  const n = parts.reduce((a, p) => a + p.length, 0);
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

export function equal(a, b) {
  if (a.length !== b.length) return false;
  let d = 0;
  for (let i = 0; i < a.length; i++) d |= a[i] ^ b[i];
  return d === 0;
}

export async function sha256(b) {
  return new Uint8Array(await crypto.subtle.digest('SHA-256', b));
}

export function leafHash(leaf) {
  return sha256(concat(Uint8Array.of(0), leaf));
}

export function nodeHash(left, right) {
  return sha256(concat(Uint8Array.of(1), left, right));
}

// parseVerifierKey parses a note verifier key of algorithm Ed25519 (1) and
// checks its key hash. It returns {name, hash, pub, key} with key a
// WebCrypto public key.
export async function parseVerifierKey(vkey) {
  vkey = vkey.trim();
  // The base64 key may itself hold '+': split at the first two only.
  const a = vkey.indexOf('+'), b = vkey.indexOf('+', a + 1);
  const parts = a < 0 || b < 0 ? [] : [vkey.slice(0, a), vkey.slice(a + 1, b), vkey.slice(b + 1)];
  if (parts.length !== 3 || parts[0] === '' || !/^[0-9a-f]{8}$/.test(parts[1])) {
    throw new VerifyError('not a note verifier key: want <name>+<8 hex digits>+<base64 key>');
  }
  const [name, hash] = parts;
  if (/[\s+]/.test(name)) throw new VerifyError('malformed verifier key name');
  const raw = b64decode(parts[2]);
  if (raw.length !== 33 || raw[0] !== 1) throw new VerifyError('not an Ed25519 verifier key');
  const h = (await sha256(concat(enc.encode(name + '\n'), raw))).slice(0, 4);
  if (hex(h) !== hash) throw new VerifyError('the verifier key hash does not match its key');
  let key;
  try {
    key = await crypto.subtle.importKey('raw', raw.slice(1), { name: 'Ed25519' }, false, ['verify']);
  } catch (e) {
    throw new VerifyError('this browser cannot verify Ed25519 signatures (' + e.message + ')');
  }
  return { name, hash: h, pub: raw.slice(1), key };
}

// openNote verifies a signed note against a parsed verifier key and
// returns its text (ending in a newline). It throws if the note is
// malformed or carries no valid signature by that key.
export async function openNote(vk, note) {
  const i = note.lastIndexOf('\n\n');
  if (i < 0) throw new VerifyError('malformed note: no signature block');
  const text = note.slice(0, i + 1);
  const sigs = note.slice(i + 2);
  if (!sigs.endsWith('\n')) throw new VerifyError('malformed note: unterminated signature');
  let seen = false;
  for (const line of sigs.slice(0, -1).split('\n')) {
    const m = /^\u2014 (\S+) (\S+)$/.exec(line);
    if (!m) throw new VerifyError('malformed note signature line');
    if (m[1] !== vk.name) continue;
    const sig = b64decode(m[2]);
    if (sig.length !== 68 || !equal(sig.slice(0, 4), vk.hash)) continue;
    seen = true;
    if (await crypto.subtle.verify({ name: 'Ed25519' }, vk.key, sig.slice(4), enc.encode(text))) return text;
  }
  throw new VerifyError(seen ? 'the checkpoint signature does not verify under the pinned log key'
    : 'the checkpoint carries no signature by the pinned log key');
}

// parseCheckpoint parses the text of a C2SP tlog-checkpoint (signed or
// not: it reads the text before the signatures).
export function parseCheckpoint(note) {
  const i = note.indexOf('\n\n');
  const text = i < 0 ? note : note.slice(0, i + 1);
  const lines = text.split('\n');
  if (lines.length < 4 || lines[0] === '' || !/^(0|[1-9][0-9]{0,15})$/.test(lines[1])) {
    throw new VerifyError('malformed checkpoint');
  }
  const root = b64decode(lines[2]);
  if (root.length !== 32) throw new VerifyError('malformed checkpoint root hash');
  return { origin: lines[0], size: Number(lines[1]), root, rootB64: lines[2] };
}

// verifyInclusion checks an RFC 9162 inclusion proof (section 2.1.3.2) of
// the leaf with hash `leaf` at `index` in a tree of `size` with `root`.
export async function verifyInclusion(leaf, index, size, proof, root) {
  if (!(index >= 0 && index < size)) throw new VerifyError('leaf index outside the tree');
  let fn = index, sn = size - 1, r = leaf;
  for (const p of proof) {
    if (p.length !== 32) throw new VerifyError('malformed inclusion proof');
    if (sn === 0) throw new VerifyError('inclusion proof too long');
    if (fn % 2 === 1 || fn === sn) {
      r = await nodeHash(p, r);
      while (fn % 2 === 0 && fn !== 0) {
        fn /= 2;
        sn = Math.floor(sn / 2);
      }
    } else {
      r = await nodeHash(r, p);
    }
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  if (sn !== 0) throw new VerifyError('inclusion proof too short');
  if (!equal(r, root)) throw new VerifyError('the entry is not in the checkpoint\'s tree');
}

// verifyConsistency checks an RFC 9162 consistency proof (section
// 2.1.4.2) that the tree of size1 with root1 is a prefix of the tree of
// size2 with root2.
export async function verifyConsistency(size1, size2, proof, root1, root2) {
  if (size2 < size1) throw new VerifyError('the log is smaller than one seen before: rolled back');
  if (size1 === size2) {
    if (proof.length !== 0) throw new VerifyError('malformed consistency proof');
    if (!equal(root1, root2)) throw new VerifyError('two checkpoints of one size with different roots: a fork');
    return;
  }
  if (size1 === 0) return;
  if (proof.some((p) => p.length !== 32)) throw new VerifyError('malformed consistency proof');
  const path = isPow2(size1) ? [root1, ...proof] : proof;
  if (path.length === 0) throw new VerifyError('empty consistency proof');
  let fn = size1 - 1, sn = size2 - 1;
  while (fn % 2 === 1) {
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  let fr = path[0], sr = path[0];
  for (const c of path.slice(1)) {
    if (sn === 0) throw new VerifyError('consistency proof too long');
    if (fn % 2 === 1 || fn === sn) {
      fr = await nodeHash(c, fr);
      sr = await nodeHash(c, sr);
      while (fn % 2 === 0 && fn !== 0) {
        fn /= 2;
        sn = Math.floor(sn / 2);
      }
    } else {
      sr = await nodeHash(sr, c);
    }
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  if (sn !== 0) throw new VerifyError('consistency proof too short');
  if (!equal(fr, root1) || !equal(sr, root2)) {
    throw new VerifyError('the log is not consistent with the checkpoint seen before: a fork');
  }
}

function isPow2(n) {
  while (n % 2 === 0) n /= 2;
  return n === 1;
}

// treeRoot returns the RFC 6962 Merkle tree hash of a list of leaf hashes.
export async function treeRoot(hashes) {
  if (hashes.length === 0) return sha256(new Uint8Array(0));
  let level = hashes;
  // Bottom-up, carrying an odd last node up unchanged: the same tree as
  // RFC 6962's recursive split at the largest power of two below n.
  while (level.length > 1) {
    const next = [];
    for (let i = 0; i + 1 < level.length; i += 2) next.push(nodeHash(level[i], level[i + 1]));
    const up = await Promise.all(next);
    if (level.length % 2 === 1) up.push(level[level.length - 1]);
    level = up;
  }
  return level[0];
}

// splitBundle splits a C2SP tlog-tiles entry bundle into its leaves.
export function splitBundle(b) {
  const out = [];
  let o = 0;
  while (o < b.length) {
    if (o + 2 > b.length) throw new VerifyError('truncated entry bundle');
    const n = (b[o] << 8) | b[o + 1];
    if (o + 2 + n > b.length) throw new VerifyError('truncated entry bundle');
    out.push(b.slice(o + 2, o + 2 + n));
    o += 2 + n;
  }
  return out;
}

function uvarint(b, o) {
  let x = 0, mul = 1;
  for (let i = 0; i < 10; i++) {
    if (o + i >= b.length) throw new VerifyError('truncated leaf');
    const c = b[o + i];
    x += (c & 0x7f) * mul;
    if (c < 0x80) {
      if (x > Number.MAX_SAFE_INTEGER) throw new VerifyError('malformed leaf length');
      return [x, o + i + 1];
    }
    mul *= 128;
  }
  throw new VerifyError('malformed leaf length');
}

// parseLeaf decodes a tkms leaf (docs/ledger.md, "Leaf").
export function parseLeaf(b) {
  if (b.length < 17 + 2 + 32 || b[0] !== 1) throw new VerifyError('unknown leaf version');
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const seq = dv.getBigUint64(1);
  const timeNs = dv.getBigInt64(9);
  let [n, o] = uvarint(b, 17);
  if (o + n > b.length) throw new VerifyError('truncated leaf');
  let type, body;
  try {
    type = dec.decode(b.subarray(o, o + n));
    o += n;
    [n, o] = uvarint(b, o);
    if (o + n + 32 !== b.length) throw new VerifyError('malformed leaf');
    body = dec.decode(b.subarray(o, o + n));
  } catch (e) {
    throw e instanceof VerifyError ? e : new VerifyError('leaf is not valid UTF-8');
  }
  const sealed = b.subarray(o + n);
  return {
    seq: Number(seq), timeNs, time: new Date(Number(timeNs / 1000000n)), type, body,
    sealedSha256: sealed.every((x) => x === 0) ? '' : hex(sealed),
  };
}

// tilePath returns the C2SP tlog-tiles path of tile index n at a level
// ("entries" for entry bundles), with width w when partial (< 256).
export function tilePath(level, n, w) {
  let s = String(n % 1000).padStart(3, '0');
  for (n = Math.floor(n / 1000); n > 0; n = Math.floor(n / 1000)) {
    s = 'x' + String(n % 1000).padStart(3, '0') + '/' + s;
  }
  return 'tile/' + level + '/' + s + (w && w < 256 ? '.p/' + w : '');
}
