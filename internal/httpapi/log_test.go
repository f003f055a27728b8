package httpapi

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/tkms-dev/tkms/internal/kms"
	"github.com/tkms-dev/tkms/internal/ledger"
	"github.com/tkms-dev/tkms/internal/seal"
	"github.com/tkms-dev/tkms/internal/state"
	"github.com/tkms-dev/tkms/internal/translog"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// logClient reads the log over HTTP, as an auditor or a mirror would,
// trusting nothing but the verifier key it fetched first.
type logClient struct {
	e        *env
	verifier note.Verifier
}

func newLogClient(e *env) *logClient {
	e.t.Helper()
	resp, body := e.get("/v1/log/key")
	if resp.StatusCode != http.StatusOK {
		e.t.Fatalf("/v1/log/key: %d %s", resp.StatusCode, body)
	}
	if ct, cc := resp.Header.Get("Content-Type"), resp.Header.Get("Cache-Control"); ct != "text/plain; charset=utf-8" || cc != "public, max-age=86400" {
		e.t.Fatalf("/v1/log/key: content-type %q, cache-control %q", ct, cc)
	}
	if !bytes.HasSuffix(body, []byte("\n")) || string(body) != e.svc.LogVerifierKey()+"\n" {
		e.t.Fatalf("/v1/log/key: %q", body)
	}
	v, err := translog.NewVerifier(string(body))
	if err != nil {
		e.t.Fatal(err)
	}
	if v.Name() != e.svc.LogOrigin() {
		e.t.Fatalf("key for %q, log origin %q", v.Name(), e.svc.LogOrigin())
	}
	return &logClient{e: e, verifier: v}
}

// checkpoint fetches and verifies the latest checkpoint.
func (c *logClient) checkpoint() translog.Signed {
	c.e.t.Helper()
	resp, body := c.e.get("/log/checkpoint")
	if resp.StatusCode != http.StatusOK {
		c.e.t.Fatalf("/log/checkpoint: %d %s", resp.StatusCode, body)
	}
	if ct, cc := resp.Header.Get("Content-Type"), resp.Header.Get("Cache-Control"); ct != "text/plain; charset=utf-8" || cc != "no-cache" {
		c.e.t.Fatalf("/log/checkpoint: content-type %q, cache-control %q", ct, cc)
	}
	cp, err := translog.Verify(body, c.verifier)
	if err != nil {
		c.e.t.Fatal(err)
	}
	return cp
}

// tile fetches one tile and checks its headers.
func (c *logClient) tile(t tlog.Tile) []byte {
	c.e.t.Helper()
	p := "/log/" + translog.TilePath(t)
	resp, body := c.e.get(p)
	if resp.StatusCode != http.StatusOK {
		c.e.t.Fatalf("%s: %d %s", p, resp.StatusCode, body)
	}
	if ct, cc := resp.Header.Get("Content-Type"), resp.Header.Get("Cache-Control"); ct != "application/octet-stream" || cc != "public, max-age=31536000, immutable" {
		c.e.t.Fatalf("%s: content-type %q, cache-control %q", p, ct, cc)
	}
	return body
}

// getJSON fetches a JSON answer into v and returns the response.
func (c *logClient) getJSON(p string, v any) *http.Response {
	c.e.t.Helper()
	resp, body := c.e.get(p)
	if resp.StatusCode != http.StatusOK {
		c.e.t.Fatalf("%s: %d %s", p, resp.StatusCode, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		c.e.t.Fatalf("%s: content-type %q", p, ct)
	}
	if err := json.Unmarshal(body, v); err != nil {
		c.e.t.Fatalf("%s: %v: %s", p, err, body)
	}
	return resp
}

// httpTiles is a tlog.TileReader over the HTTP tile endpoints. tamper,
// if set, may change a tile after it is fetched, as a hostile server or
// mirror would.
type httpTiles struct {
	c      *logClient
	tamper func(tlog.Tile, []byte)
}

func (r httpTiles) Height() int { return translog.TileHeight }

func (r httpTiles) ReadTiles(tiles []tlog.Tile) ([][]byte, error) {
	out := make([][]byte, len(tiles))
	for i, t := range tiles {
		out[i] = r.c.tile(t)
		if r.tamper != nil {
			r.tamper(t, out[i])
		}
	}
	return out, nil
}

func (httpTiles) SaveTiles([]tlog.Tile, [][]byte) {}

// appendReleases appends n key.released entries, concurrently so that
// the store commits them in batches.
func appendReleases(tb testing.TB, svc *kms.Service, n int) {
	tb.Helper()
	var kid string
	svc.Read(func(st *state.State) {
		if k := st.Newest(); k != nil {
			kid = k.Kid
		}
	})
	if kid == "" {
		tb.Fatal("no key to record releases of")
	}
	var wg sync.WaitGroup
	errs := make(chan error, n)
	work := make(chan int)
	for range 32 {
		wg.Go(func() {
			for i := range work {
				_, err := svc.RecordRelease(context.Background(), state.KeyReleased{
					Kids: []string{kid}, API: "v1/release", Issuer: "https://issuer.example",
					Identity: "oid-" + strconv.Itoa(i), EvidenceType: "test",
				})
				if err != nil {
					errs <- err
				}
			}
		})
	}
	for i := range n {
		work <- i
	}
	close(work)
	wg.Wait()
	close(errs)
	for err := range errs {
		tb.Fatal(err)
	}
}

func TestLogCheckpoint(t *testing.T) {
	e := newEnv(t, nil, false)
	c := newLogClient(e)
	cp := c.checkpoint()
	want := e.svc.Checkpoint()
	if cp.Checkpoint != want.Checkpoint || int64(e.svc.Seq()) != cp.Size || cp.Origin != e.svc.LogOrigin() {
		t.Fatalf("checkpoint %+v, service %+v at seq %d", cp.Checkpoint, want.Checkpoint, e.svc.Seq())
	}
	resp, body := e.do(http.MethodHead, "/log/checkpoint", nil)
	if resp.StatusCode != http.StatusOK || len(body) != 0 {
		t.Fatalf("HEAD /log/checkpoint: %d %q", resp.StatusCode, body)
	}
	if _, err := e.svc.Rotate(context.Background(), kms.ReasonRefresh); err != nil {
		t.Fatal(err)
	}
	if next := c.checkpoint(); next.Size <= cp.Size {
		t.Fatalf("checkpoint after a rotation: size %d, before %d", next.Size, cp.Size)
	}
}

// checkTiles fetches every tile of the checkpoint's tree over HTTP and
// checks that they give its root hash, that the entry bundles hold the
// ledger's leaves, and that those leaves hash to the level-0 tiles.
func checkTiles(t *testing.T, e *env, c *logClient, cp translog.Signed) {
	t.Helper()
	hr := tlog.TileHashReader(tlog.Tree{N: cp.Size, Hash: cp.Root}, httpTiles{c: c})
	if root, err := tlog.TreeHash(cp.Size, hr); err != nil || root != cp.Root {
		t.Fatalf("tree hash over tiles %v, %v, checkpoint says %v", root, err, cp.Root)
	}
	for _, ht := range tlog.NewTiles(translog.TileHeight, 0, cp.Size) {
		data := c.tile(ht)
		if len(data) != ht.W*tlog.HashSize {
			t.Fatalf("%v: %d bytes", translog.TilePath(ht), len(data))
		}
		if ht.L != 0 {
			continue
		}
		et := ht
		et.L = -1
		leaves, err := translog.SplitBundle(c.tile(et))
		if err != nil || len(leaves) != et.W {
			t.Fatalf("%v: %d entries, %v", translog.TilePath(et), len(leaves), err)
		}
		for j, leaf := range leaves {
			seq := uint64(et.N)*translog.TileWidth + uint64(j) + 1
			ent, err := e.svc.Entry(seq)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(leaf, ledger.LeafBytes(ent)) {
				t.Fatalf("%v: entry %d is not the ledger's leaf of seq %d", translog.TilePath(et), j, seq)
			}
			if h := tlog.RecordHash(leaf); !bytes.Equal(h[:], data[j*tlog.HashSize:(j+1)*tlog.HashSize]) {
				t.Fatalf("%v: entry %d does not hash to hash %d of %v", translog.TilePath(et), j, j, translog.TilePath(ht))
			}
		}
	}
}

func TestLogTiles(t *testing.T) {
	e := newEnv(t, nil, false)
	c := newLogClient(e)
	cp := c.checkpoint()
	checkTiles(t, e, c, cp)
	// Past one full tile: a full level-0 tile, a partial one, and a
	// level-1 tile; every tile served before is served unchanged.
	before := map[string][]byte{}
	for _, tl := range tlog.NewTiles(translog.TileHeight, 0, cp.Size) {
		before[translog.TilePath(tl)] = c.tile(tl)
		tl.L = -1
		before[translog.TilePath(tl)] = c.tile(tl)
	}
	appendReleases(t, e.svc, 300)
	cp = c.checkpoint()
	if cp.Size < 300 {
		t.Fatalf("size %d after 300 appends", cp.Size)
	}
	checkTiles(t, e, c, cp)
	for p, b := range before {
		if resp, body := e.get("/log/" + p); resp.StatusCode != http.StatusOK || !bytes.Equal(body, b) {
			t.Fatalf("%s changed as the log grew: %d", p, resp.StatusCode)
		}
	}
	resp, body := e.do(http.MethodHead, "/log/tile/0/000", nil)
	if resp.StatusCode != http.StatusOK || len(body) != 0 {
		t.Fatalf("HEAD tile: %d %q", resp.StatusCode, body)
	}
	// A client that checks tiles against the checkpoint reads every hash,
	// and catches a changed bit in any hash tile.
	var all []int64
	for i := range tlog.StoredHashCount(cp.Size) {
		all = append(all, i)
	}
	if _, err := tlog.TileHashReader(tlog.Tree{N: cp.Size, Hash: cp.Root}, httpTiles{c: c}).ReadHashes(all); err != nil {
		t.Fatal(err)
	}
	for _, ht := range tlog.NewTiles(translog.TileHeight, 0, cp.Size) {
		for _, at := range []int{0, ht.W*tlog.HashSize - 1} {
			tamper := func(t tlog.Tile, data []byte) {
				if t.L == ht.L && t.N == ht.N {
					data[at] ^= 0x10
				}
			}
			hr := tlog.TileHashReader(tlog.Tree{N: cp.Size, Hash: cp.Root}, httpTiles{c: c, tamper: tamper})
			if _, err := hr.ReadHashes(all); err == nil {
				t.Fatalf("byte %d of %v changed: not detected", at, translog.TilePath(ht))
			}
		}
	}
}

func TestLogEntries(t *testing.T) {
	e := newEnv(t, nil, false)
	if _, err := e.svc.Rotate(context.Background(), kms.ReasonRefresh); err != nil {
		t.Fatal(err)
	}
	c := newLogClient(e)
	cp := c.checkpoint()
	sealed := 0
	for i := range cp.Size {
		p := "/v1/log/entries/" + strconv.FormatInt(i, 10)
		var got LogEntry
		resp := c.getJSON(p, &got)
		if cc := resp.Header.Get("Cache-Control"); cc != "public, max-age=31536000, immutable" {
			t.Fatalf("%s: cache-control %q", p, cc)
		}
		want, err := e.svc.Entry(uint64(i) + 1)
		if err != nil {
			t.Fatal(err)
		}
		leaf := ledger.LeafBytes(want)
		if got.Index != i || got.Seq != want.Seq || !got.Time.Equal(want.Time) || got.Type != want.Type ||
			!bytes.Equal(got.Body, want.Body) || got.LeafHash != tlog.RecordHash(leaf) || !bytes.Equal(got.Leaf, leaf) {
			t.Fatalf("%s: %+v, want entry %+v", p, got, want)
		}
		if len(want.Sealed) > 0 {
			sealed++
			if sum := sha256.Sum256(want.Sealed); got.SealedSHA256 != hex.EncodeToString(sum[:]) {
				t.Fatalf("%s: sealed_sha256 %q", p, got.SealedSHA256)
			}
		} else if got.SealedSHA256 != "" {
			t.Fatalf("%s: sealed_sha256 %q for an entry without a sealed part", p, got.SealedSHA256)
		}
		// The leaf hash served is the one the tree holds.
		var proof LogInclusionProof
		c.getJSON(fmt.Sprintf("/v1/log/proof/inclusion?index=%d", i), &proof)
		if err := tlog.CheckRecord(proof.Proof, cp.Size, cp.Root, i, got.LeafHash); err != nil {
			t.Fatalf("%s: %v", p, err)
		}
	}
	if sealed < 3 { // the log key and two keys
		t.Fatalf("only %d entries with a sealed part", sealed)
	}
}

// TestLogEntryFields checks the JSON shape of an entry, and that nothing
// sealed appears in it.
func TestLogEntryFields(t *testing.T) {
	e := newEnv(t, nil, false)
	var seq uint64
	e.svc.Read(func(st *state.State) { seq = st.LogKeySeq })
	ent, err := e.svc.Entry(seq)
	if err != nil || len(ent.Sealed) == 0 {
		t.Fatalf("log.key entry %d: %+v, %v", seq, ent, err)
	}
	resp, body := e.get("/v1/log/entries/" + strconv.FormatUint(seq-1, 10))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(body, &fields); err != nil {
		t.Fatal(err)
	}
	var names []string
	for k := range fields {
		names = append(names, k)
	}
	if len(fields) != 8 || fields["sealed_sha256"] == nil || fields["body"][0] != '{' || !bytes.Equal(fields["body"], ent.Body) {
		t.Fatalf("entry fields %v: %s", names, body)
	}
	var ts string
	json.Unmarshal(fields["time"], &ts)
	if ts != ent.Time.Format("2006-01-02T15:04:05.999999999Z07:00") {
		t.Fatalf("time %s, want RFC 3339 of %v", fields["time"], ent.Time)
	}
	for _, secret := range [][]byte{ent.Sealed, []byte(hex.EncodeToString(ent.Sealed)), []byte("PRIVATE+KEY")} {
		if bytes.Contains(body, secret) {
			t.Fatalf("entry answer holds sealed material: %s", body)
		}
	}
	var b64 bytes.Buffer
	json.NewEncoder(&b64).Encode(ent.Sealed)
	if bytes.Contains(body, bytes.Trim(b64.Bytes(), "\"\n")) {
		t.Fatalf("entry answer holds the sealed part in base64: %s", body)
	}
}

// TestLogProofs grows the log and checks, at every size, the inclusion
// proof of every leaf and the consistency proof from every earlier
// checkpoint, all fetched over HTTP and checked against verified
// checkpoints only.
func TestLogProofs(t *testing.T) {
	e := newEnv(t, nil, false)
	c := newLogClient(e)
	var cps []translog.Signed
	for round := range 6 {
		if round > 0 {
			if _, err := e.svc.Rotate(context.Background(), kms.ReasonRefresh); err != nil {
				t.Fatal(err)
			}
		}
		cp := c.checkpoint()
		cps = append(cps, cp)
		for i := range cp.Size {
			leaf, err := e.svc.Entry(uint64(i) + 1)
			if err != nil {
				t.Fatal(err)
			}
			leafHash := tlog.RecordHash(ledger.LeafBytes(leaf))
			// Against the latest checkpoint, which comes with it.
			var p LogInclusionProof
			resp := c.getJSON(fmt.Sprintf("/v1/log/proof/inclusion?index=%d", i), &p)
			if p.Index != i || p.Size != cp.Size || p.Root != cp.Root || p.LeafHash != leafHash || resp.Header.Get("Cache-Control") != "no-cache" {
				t.Fatalf("inclusion of %d: %+v (cache-control %q)", i, p, resp.Header.Get("Cache-Control"))
			}
			got, err := translog.Verify([]byte(p.Checkpoint), c.verifier)
			if err != nil || got.Checkpoint != cp.Checkpoint {
				t.Fatalf("inclusion of %d: checkpoint %+v, %v", i, got.Checkpoint, err)
			}
			if err := tlog.CheckRecord(p.Proof, cp.Size, cp.Root, i, leafHash); err != nil {
				t.Fatalf("inclusion of %d in %d: %v", i, cp.Size, err)
			}
			// Against every earlier checkpoint that holds the leaf.
			for _, old := range cps[:len(cps)-1] {
				if i >= old.Size {
					continue
				}
				var p LogInclusionProof
				resp := c.getJSON(fmt.Sprintf("/v1/log/proof/inclusion?index=%d&size=%d", i, old.Size), &p)
				if p.Root != old.Root || p.Checkpoint != "" || resp.Header.Get("Cache-Control") != "public, max-age=31536000, immutable" {
					t.Fatalf("inclusion of %d in %d: %+v (cache-control %q)", i, old.Size, p, resp.Header.Get("Cache-Control"))
				}
				if err := tlog.CheckRecord(p.Proof, old.Size, old.Root, i, leafHash); err != nil {
					t.Fatalf("inclusion of %d in %d: %v", i, old.Size, err)
				}
			}
		}
		for _, old := range cps {
			for _, q := range []string{
				fmt.Sprintf("from=%d&to=%d", old.Size, cp.Size),
				fmt.Sprintf("from=%d", old.Size),
			} {
				var p LogConsistencyProof
				c.getJSON("/v1/log/proof/consistency?"+q, &p)
				if p.From != old.Size || p.To != cp.Size || p.RootFrom != old.Root || p.RootTo != cp.Root || p.Proof == nil {
					t.Fatalf("consistency %s: %+v", q, p)
				}
				if err := tlog.CheckTree(p.Proof, cp.Size, cp.Root, old.Size, old.Root); err != nil {
					t.Fatalf("consistency %s: %v", q, err)
				}
			}
		}
	}
	// A proof does not check against another tree.
	first, last := cps[0], cps[len(cps)-1]
	var p LogConsistencyProof
	c.getJSON(fmt.Sprintf("/v1/log/proof/consistency?from=%d&to=%d", first.Size, last.Size), &p)
	bad := last.Root
	bad[0] ^= 1
	if tlog.CheckTree(p.Proof, last.Size, bad, first.Size, first.Root) == nil {
		t.Fatal("consistency proof checks against a wrong root")
	}
}

// TestLogProofOneLeaf checks the answers for the smallest trees: a leaf
// alone in its tree, and a tree consistent with itself, have empty
// proofs, served as [] rather than null.
func TestLogProofOneLeaf(t *testing.T) {
	e := newEnv(t, nil, false)
	for _, p := range []string{"/v1/log/proof/inclusion?index=0&size=1", "/v1/log/proof/consistency?from=1&to=1", "/v1/log/proof/consistency?from=2&to=2"} {
		resp, body := e.get(p)
		if resp.StatusCode != http.StatusOK || !bytes.Contains(body, []byte(`"proof":[]`)) {
			t.Errorf("%s: %d %s", p, resp.StatusCode, body)
		}
	}
}

func TestLogBadRequests(t *testing.T) {
	e := newEnv(t, nil, false)
	size := e.svc.Checkpoint().Size
	if size < 3 || size > 200 {
		t.Fatalf("tree size %d: the table below wants 3 to 200", size)
	}
	n := strconv.FormatInt(size, 10)
	n1 := strconv.FormatInt(size+1, 10)
	for _, tt := range []struct {
		method, path string
		status       int
		code         string
	}{
		{"GET", "/log/tile/0/0", 400, CodeInvalidTilePath},
		{"GET", "/log/tile/", 400, CodeInvalidTilePath},
		{"GET", "/log/tile/0", 400, CodeInvalidTilePath},
		{"GET", "/log/tile/0/000.p/0", 400, CodeInvalidTilePath},
		{"GET", "/log/tile/0/000.p/256", 400, CodeInvalidTilePath},
		{"GET", "/log/tile/0/000.p/01", 400, CodeInvalidTilePath},
		{"GET", "/log/tile/data/000.p/1", 400, CodeInvalidTilePath},
		{"GET", "/log/tile/8/0/000.p/1", 400, CodeInvalidTilePath},
		{"GET", "/log/tile/entries/x000/000.p/1", 400, CodeInvalidTilePath},
		{"GET", "/log/tile/0/%30%30%30.p/1", 400, CodeInvalidTilePath},
		{"GET", "/log/tile/0/000.p%2f1", 400, CodeInvalidTilePath},
		{"GET", "/log/tile/0/x999/x999/x999/x999/x999/x999/x999/999", 400, CodeInvalidTilePath},
		{"GET", "/log/tile/0/000", 404, CodeNotFound},
		{"GET", "/log/tile/0/000.p/" + n1, 404, CodeNotFound},
		{"GET", "/log/tile/entries/000.p/" + n1, 404, CodeNotFound},
		{"GET", "/log/tile/entries/001.p/1", 404, CodeNotFound},
		{"GET", "/log/tile/1/000.p/1", 404, CodeNotFound},
		{"GET", "/log/tile/9/000.p/1", 404, CodeNotFound},
		{"GET", "/log/tile/1000/000", 404, CodeNotFound},
		{"GET", "/log/tile/0/x009/x223/x372/x036/x854/x775/807", 404, CodeNotFound},
		{"GET", "/log/tiles/0/000", 404, CodeNotFound},
		{"POST", "/log/tile/0/000.p/1", 405, CodeMethodNotAllowed},
		{"DELETE", "/log/tile/0/000.p/1", 405, CodeMethodNotAllowed},
		{"POST", "/log/checkpoint", 405, CodeMethodNotAllowed},
		{"POST", "/v1/log/key", 405, CodeMethodNotAllowed},
		{"PUT", "/v1/log/entries/0", 405, CodeMethodNotAllowed},
		{"POST", "/v1/log/proof/inclusion?index=0", 405, CodeMethodNotAllowed},

		{"GET", "/v1/log/entries/-1", 400, CodeInvalidIndex},
		{"GET", "/v1/log/entries/+1", 400, CodeInvalidIndex},
		{"GET", "/v1/log/entries/01", 400, CodeInvalidIndex},
		{"GET", "/v1/log/entries/1.0", 400, CodeInvalidIndex},
		{"GET", "/v1/log/entries/0x1", 400, CodeInvalidIndex},
		{"GET", "/v1/log/entries/%20", 400, CodeInvalidIndex},
		{"GET", "/v1/log/entries/first", 400, CodeInvalidIndex},
		{"GET", "/v1/log/entries/9223372036854775808", 400, CodeInvalidIndex},
		{"GET", "/v1/log/entries/99999999999999999999", 400, CodeInvalidIndex},
		{"GET", "/v1/log/entries/" + n, 404, CodeNotFound},
		{"GET", "/v1/log/entries/9223372036854775807", 404, CodeNotFound},
		{"GET", "/v1/log/entries/", 404, CodeNotFound},
		{"GET", "/v1/log/entries/0/x", 404, CodeNotFound},

		{"GET", "/v1/log/proof/inclusion", 400, CodeInvalidIndex},
		{"GET", "/v1/log/proof/inclusion?index=", 400, CodeInvalidIndex},
		{"GET", "/v1/log/proof/inclusion?index=-1", 400, CodeInvalidIndex},
		{"GET", "/v1/log/proof/inclusion?index=x", 400, CodeInvalidIndex},
		{"GET", "/v1/log/proof/inclusion?index=1e3", 400, CodeInvalidIndex},
		{"GET", "/v1/log/proof/inclusion?index=0&size=", 400, CodeInvalidSize},
		{"GET", "/v1/log/proof/inclusion?index=0&size=0", 400, CodeInvalidSize},
		{"GET", "/v1/log/proof/inclusion?index=0&size=-3", 400, CodeInvalidSize},
		{"GET", "/v1/log/proof/inclusion?index=0&size=abc", 400, CodeInvalidSize},
		{"GET", "/v1/log/proof/inclusion?index=2&size=2", 400, CodeInvalidIndex},
		{"GET", "/v1/log/proof/inclusion?index=5&size=2", 400, CodeInvalidIndex},
		{"GET", "/v1/log/proof/inclusion?index=0&size=" + n1, 404, CodeNotFound},
		{"GET", "/v1/log/proof/inclusion?index=0&size=9223372036854775807", 404, CodeNotFound},
		{"GET", "/v1/log/proof/inclusion?index=" + n, 404, CodeNotFound},
		{"GET", "/v1/log/proof/inclusion?index=9223372036854775807", 404, CodeNotFound},

		{"GET", "/v1/log/proof/consistency", 400, CodeInvalidSize},
		{"GET", "/v1/log/proof/consistency?from=0", 400, CodeInvalidSize},
		{"GET", "/v1/log/proof/consistency?from=-1", 400, CodeInvalidSize},
		{"GET", "/v1/log/proof/consistency?from=one", 400, CodeInvalidSize},
		{"GET", "/v1/log/proof/consistency?from=1&to=", 400, CodeInvalidSize},
		{"GET", "/v1/log/proof/consistency?from=1&to=0", 400, CodeInvalidSize},
		{"GET", "/v1/log/proof/consistency?from=1&to=x", 400, CodeInvalidSize},
		{"GET", "/v1/log/proof/consistency?from=3&to=2", 400, CodeInvalidSize},
		{"GET", "/v1/log/proof/consistency?from=1&to=" + n1, 404, CodeNotFound},
		{"GET", "/v1/log/proof/consistency?from=" + n1, 404, CodeNotFound},
		{"GET", "/v1/log/proof/consistency?from=9223372036854775807", 404, CodeNotFound},
	} {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			resp, body := e.do(tt.method, tt.path, nil)
			wantError(t, resp, body, tt.status, tt.code)
			if resp.Header.Get("Cache-Control") != "no-store" {
				t.Errorf("error cached: %q", resp.Header.Get("Cache-Control"))
			}
			if tt.status == 404 && strings.HasPrefix(tt.path, "/log/tile/0/") && !strings.Contains(string(body), "size "+n) {
				t.Errorf("404 does not name the tree size %s: %s", n, body)
			}
		})
	}
}

// cleanPath is net/http's: the mux redirects a request for an unclean
// path to this one.
func cleanPath(p string) string {
	if p == "" {
		return "/"
	}
	if p[0] != '/' {
		p = "/" + p
	}
	np := path.Clean(p)
	if p[len(p)-1] == '/' && np != "/" {
		if len(p) == len(np)+1 && strings.HasPrefix(p, np) {
			np = p
		} else {
			np += "/"
		}
	}
	return np
}

// newLogServer opens a service (as newEnv does, for any testing.TB) and
// appends n key.released entries.
func newLogServer(tb testing.TB, n int) (*Server, *kms.Service) {
	tb.Helper()
	sealer, err := seal.New(seal.NewKey())
	if err != nil {
		tb.Fatal(err)
	}
	quiet := slog.New(slog.DiscardHandler)
	svc, err := kms.Open(context.Background(), kms.Config{
		DataDir: tb.TempDir(), Sealer: sealer, ServiceName: "log-test", RotationPolicy: state.DefaultRotationPolicy(),
		Settings: state.Settings{Service: state.ServiceSettings{Name: "log-test"}}, Now: (&clock{t: t0}).Now, Logger: quiet,
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { svc.Close() })
	if _, err := svc.Tick(context.Background()); err != nil {
		tb.Fatal(err)
	}
	appendReleases(tb, svc, n)
	return New(svc, Options{Logger: quiet}), svc
}

// FuzzLogTilePath requests arbitrary tile paths: the answer is a tile, 400
// or 404, never a 500 or a panic (or, through the mux, a redirect to the
// clean spelling of an unclean path).
func FuzzLogTilePath(f *testing.F) {
	for _, p := range []string{
		"0/000", "0/001.p/7", "0/000.p/255", "1/000.p/1", "entries/000", "entries/001.p/44", "entries/000.p/300",
		"0/x001/000", "7/000.p/1", "0/0", "data/000", "0/000.p/256", "0/000.p/0", "8/0/000", "", "/", "0/../000",
		"0/x009/x223/x372/x036/x854/x775/807", "0/x999/x999/x999/x999/x999/x999/x999/999", "entries/%30", "0/000\x00",
	} {
		f.Add(p)
	}
	s, svc := newLogServer(f, 300)
	size := svc.Checkpoint().Size
	f.Fuzz(func(t *testing.T, p string) {
		for _, direct := range []bool{true, false} {
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			r.URL.Path = "/log/tile/" + p
			w := httptest.NewRecorder()
			if direct {
				s.logTile(w, r)
			} else {
				s.ServeHTTP(w, r)
			}
			switch w.Code {
			case http.StatusOK:
				tl, err := translog.ParseTilePath("tile/" + p)
				if err != nil || !translog.TileInTree(tl, size) {
					t.Fatalf("%q served: %v", p, err)
				}
			case http.StatusBadRequest, http.StatusNotFound:
			case http.StatusMovedPermanently, http.StatusTemporaryRedirect, http.StatusPermanentRedirect:
				if direct || cleanPath(r.URL.Path) == r.URL.Path {
					t.Fatalf("%q (direct %v): redirected to %q", p, direct, w.Header().Get("Location"))
				}
			default:
				t.Fatalf("%q (direct %v): status %d: %s", p, direct, w.Code, w.Body)
			}
		}
	})
}

// BenchmarkInclusionProof serves inclusion proofs in a log of a few
// thousand entries, against the latest checkpoint (with it) and against
// an older tree.
func BenchmarkInclusionProof(b *testing.B) {
	s, svc := newLogServer(b, 3000)
	size := svc.Checkpoint().Size
	for _, bb := range []struct {
		name string
		url  func(i int64) string
	}{
		{"latest", func(i int64) string { return fmt.Sprintf("/v1/log/proof/inclusion?index=%d", i) }},
		{"older", func(i int64) string { return fmt.Sprintf("/v1/log/proof/inclusion?index=%d&size=%d", i/2, size/2) }},
	} {
		b.Run(bb.name, func(b *testing.B) {
			var i int64
			for b.Loop() {
				r := httptest.NewRequest(http.MethodGet, bb.url(i%size), nil)
				w := httptest.NewRecorder()
				s.ServeHTTP(w, r)
				if w.Code != http.StatusOK {
					b.Fatalf("%d %s", w.Code, w.Body)
				}
				i += 97
			}
		})
	}
}
