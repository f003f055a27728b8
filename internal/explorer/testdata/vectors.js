// Runs the explorer's verification code (verify.js) against the vectors
// that explorer_test.go makes with golang.org/x/mod/sumdb/note and /tlog.
// Evaluated in Chromium on a page of the test server; resolves to
// {n, fails}.
(async () => {
  const v = await import('/explorer/verify.js');
  const T = await (await fetch('/vectors.json')).json();
  const B = v.b64decode;
  const fails = [];
  let n = 0;
  const expect = async (name, ok, f) => {
    n++;
    try {
      const r = await f();
      if (!ok) fails.push(name + ': accepted, want refused');
      return r;
    } catch (e) {
      if (ok) fails.push(name + ': ' + e.message);
    }
  };
  const same = (name, got, want) => {
    n++;
    if (String(got) !== String(want)) fails.push(name + ': got ' + got + ', want ' + want);
  };

  for (const c of T.keys) await expect('verifier key ' + c.name, c.ok, () => v.parseVerifierKey(c.vkey));
  const vk = await v.parseVerifierKey(T.vkey);
  for (const c of T.notes) {
    const text = await expect('note ' + c.name, c.ok, () => v.openNote(vk, c.note));
    if (c.ok) same('note text ' + c.name, text, c.text);
  }
  const cp = v.parseCheckpoint(T.checkpoint.note);
  same('checkpoint origin', cp.origin, T.checkpoint.origin);
  same('checkpoint size', cp.size, T.checkpoint.size);
  same('checkpoint root', cp.rootB64, T.checkpoint.root);
  for (const bad of T.badCheckpoints) await expect('malformed checkpoint ' + JSON.stringify(bad), false, () => v.parseCheckpoint(bad));

  const hashes = await Promise.all(T.leaves.map((l) => v.leafHash(B(l))));
  for (const [i, hsh] of hashes.entries()) same('leaf hash ' + i, v.b64encode(hsh), T.leafHashes[i]);
  for (const [k, root] of T.roots.entries()) {
    same('tree root of size ' + (k + 1), v.b64encode(await v.treeRoot(hashes.slice(0, k + 1))), root);
  }
  for (const c of T.inclusion) {
    await expect(`inclusion ${c.index} in ${c.size} (${c.name})`, c.ok,
      () => v.verifyInclusion(B(c.leafHash), c.index, c.size, c.proof.map(B), B(c.root)));
  }
  for (const c of T.consistency) {
    await expect(`consistency ${c.from} to ${c.to} (${c.name})`, c.ok,
      () => v.verifyConsistency(c.from, c.to, c.proof.map(B), B(c.rootFrom), B(c.rootTo)));
  }
  for (const c of T.tkmsLeaves) {
    const l = v.parseLeaf(B(c.leaf));
    same('leaf seq', l.seq, c.seq);
    same('leaf time', l.timeNs, c.timeNs);
    same('leaf type', l.type, c.type);
    same('leaf body', l.body, c.body);
    same('leaf sealed', l.sealedSha256, c.sealed);
  }
  for (const bad of T.badLeaves) await expect('malformed leaf ' + bad, false, () => v.parseLeaf(B(bad)));
  const split = v.splitBundle(B(T.bundle.data));
  same('bundle length', split.length, T.bundle.leaves.length);
  for (const [i, l] of split.entries()) same('bundle leaf ' + i, v.b64encode(l), T.bundle.leaves[i]);
  await expect('truncated bundle', false, () => v.splitBundle(B(T.bundle.data).slice(0, -1)));
  for (const c of T.tiles) same('tile path', v.tilePath(c.level, c.n, c.w), c.path);
  return { n, fails };
})()
