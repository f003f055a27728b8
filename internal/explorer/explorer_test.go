package explorer_test

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/tkms-dev/tkms/internal/explorer"
	"github.com/tkms-dev/tkms/internal/explorer/explorertest"
	"github.com/tkms-dev/tkms/internal/ledger"
	"github.com/tkms-dev/tkms/internal/translog"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// failJSON answers as tkms's API does, for the tests.
func failJSON(w http.ResponseWriter, r *http.Request, status int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{"code": status, "message": msg}})
}

func TestHandler(t *testing.T) {
	mux := http.NewServeMux()
	mux.Handle(explorer.Prefix, explorer.Handler(failJSON))
	ts := httptest.NewServer(mux)
	defer ts.Close()
	for _, tc := range []struct {
		method, path string
		status       int
		ctype        string
		body         string
	}{
		{"GET", "/explorer/", 200, "text/html", "<title>tkms transparency explorer</title>"},
		{"GET", "/explorer/explorer.js", 200, "text/javascript", "import * as v from './verify.js'"},
		{"GET", "/explorer/verify.js", 200, "text/javascript", "export async function verifyInclusion"},
		{"GET", "/explorer/explorer.css", 200, "text/css", ":root"},
		{"HEAD", "/explorer/verify.js", 200, "text/javascript", ""},
		{"GET", "/explorer/index.html", 301, "", ""},
		{"GET", "/explorer/nothing.js", 404, "application/json", `"the explorer has no file \"/explorer/nothing.js\"; open /explorer/"`},
		{"GET", "/explorer/%2e%2e/go.mod", 404, "application/json", "no file"},
		{"GET", "/explorer/static/verify.js", 404, "application/json", "no file"},
		{"POST", "/explorer/", 405, "application/json", "POST is not allowed on /explorer/; use GET"},
	} {
		req, _ := http.NewRequest(tc.method, ts.URL+tc.path, nil)
		resp, err := http.DefaultTransport.RoundTrip(req) // no redirects followed
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.status {
			t.Errorf("%s %s: %d, want %d", tc.method, tc.path, resp.StatusCode, tc.status)
		}
		if got := resp.Header.Get("Content-Security-Policy"); got != explorer.CSP {
			t.Errorf("%s %s: Content-Security-Policy %q, want %q", tc.method, tc.path, got, explorer.CSP)
		}
		if resp.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("%s %s: no X-Content-Type-Options: nosniff", tc.method, tc.path)
		}
		if tc.ctype != "" && !strings.HasPrefix(resp.Header.Get("Content-Type"), tc.ctype) {
			t.Errorf("%s %s: Content-Type %q, want %s", tc.method, tc.path, resp.Header.Get("Content-Type"), tc.ctype)
		}
		if !strings.Contains(string(body), tc.body) {
			t.Errorf("%s %s: body lacks %q", tc.method, tc.path, tc.body)
		}
	}
	// The page names nothing outside its own origin.
	for _, f := range []string{"index.html", "explorer.js", "verify.js", "explorer.css"} {
		resp, err := http.Get(ts.URL + explorer.Prefix + f)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, bad := range []string{"https://", "http://", "//cdn", "@import"} {
			if bytes.Contains(b, []byte(bad)) && !(f == "explorer.js" && bad == "http://" && bytes.Contains(b, []byte("'http://www.w3.org/2000/svg'"))) {
				t.Errorf("%s mentions %q: the explorer must not load anything from another origin", f, bad)
			}
		}
	}
}

// vectors are known answers for verify.js, made by the Go packages that
// tkms itself uses: golang.org/x/mod/sumdb/note and /tlog, translog and
// ledger.
type vectors struct {
	Vkey       string     `json:"vkey"`
	Keys       []keyCase  `json:"keys"`
	Notes      []noteCase `json:"notes"`
	Checkpoint struct {
		Note   string `json:"note"`
		Origin string `json:"origin"`
		Size   int64  `json:"size"`
		Root   string `json:"root"`
	} `json:"checkpoint"`
	BadCheckpoints []string    `json:"badCheckpoints"`
	Leaves         [][]byte    `json:"leaves"`
	LeafHashes     []tlog.Hash `json:"leafHashes"`
	Roots          []tlog.Hash `json:"roots"` // roots[k]: tree of size k+1
	Inclusion      []proofCase `json:"inclusion"`
	Consistency    []proofCase `json:"consistency"`
	TkmsLeaves     []leafCase  `json:"tkmsLeaves"`
	BadLeaves      [][]byte    `json:"badLeaves"`
	Bundle         struct {
		Data   []byte   `json:"data"`
		Leaves [][]byte `json:"leaves"`
	} `json:"bundle"`
	Tiles []tileCase `json:"tiles"`
}

type keyCase struct {
	Name string `json:"name"`
	Vkey string `json:"vkey"`
	OK   bool   `json:"ok"`
}

type noteCase struct {
	Name string `json:"name"`
	Note string `json:"note"`
	Text string `json:"text"`
	OK   bool   `json:"ok"`
}

// leafCase is a tkms leaf and what it decodes to.
type leafCase struct {
	Leaf   []byte `json:"leaf"`
	Seq    uint64 `json:"seq"`
	TimeNs string `json:"timeNs"`
	Type   string `json:"type"`
	Body   string `json:"body"`
	Sealed string `json:"sealed"`
}

type tileCase struct {
	Level string `json:"level"`
	N     int64  `json:"n"`
	W     int    `json:"w"`
	Path  string `json:"path"`
}

type proofCase struct {
	Name     string      `json:"name"`
	OK       bool        `json:"ok"`
	Index    int64       `json:"index"`
	Size     int64       `json:"size"`
	LeafHash tlog.Hash   `json:"leafHash,omitzero"`
	Root     tlog.Hash   `json:"root,omitzero"`
	From     int64       `json:"from"`
	To       int64       `json:"to"`
	RootFrom tlog.Hash   `json:"rootFrom,omitzero"`
	RootTo   tlog.Hash   `json:"rootTo,omitzero"`
	Proof    []tlog.Hash `json:"proof"`
}

func flip(p []tlog.Hash, i int) []tlog.Hash {
	q := append([]tlog.Hash(nil), p...)
	q[i][7] ^= 1
	return q
}

func makeVectors(t *testing.T) vectors {
	var v vectors
	const origin = "tkms/test/explorer"
	skey, vkey, err := translog.GenerateKey(origin)
	if err != nil {
		t.Fatal(err)
	}
	oskey, ovkey, _ := translog.GenerateKey(origin)
	v.Vkey = vkey
	parts := strings.SplitN(vkey, "+", 3)
	raw, _ := base64.StdEncoding.DecodeString(parts[2])
	raw[0] = 2
	add := func(name, k string, ok bool) { v.Keys = append(v.Keys, keyCase{name, k, ok}) }
	add("valid", vkey, true)
	add("other valid", ovkey, true)
	add("wrong hash", parts[0]+"+00000000+"+parts[2], false)
	add("not Ed25519", parts[0]+"+"+parts[1]+"+"+base64.StdEncoding.EncodeToString(raw), false)
	add("two parts", parts[0]+"+"+parts[1], false)
	add("garbage", "hello", false)

	// The tree: 37 leaves, the stored hashes x/mod's tlog keeps.
	var stored []tlog.Hash
	hr := tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(idx))
		for i, x := range idx {
			out[i] = stored[x]
		}
		return out, nil
	})
	const N = 37
	for i := range N {
		leaf := make([]byte, 1+i%5*20)
		rand.Read(leaf)
		hs, err := tlog.StoredHashes(int64(i), leaf, hr)
		if err != nil {
			t.Fatal(err)
		}
		stored = append(stored, hs...)
		v.Leaves = append(v.Leaves, leaf)
		v.LeafHashes = append(v.LeafHashes, tlog.RecordHash(leaf))
		root, err := tlog.TreeHash(int64(i+1), hr)
		if err != nil {
			t.Fatal(err)
		}
		v.Roots = append(v.Roots, root)
	}
	for size := int64(1); size <= N; size++ {
		for i := int64(0); i < size; i++ {
			p, err := tlog.ProveRecord(size, i, hr)
			if err != nil {
				t.Fatal(err)
			}
			c := proofCase{Name: "valid", OK: true, Index: i, Size: size, LeafHash: v.LeafHashes[i], Root: v.Roots[size-1], Proof: p}
			v.Inclusion = append(v.Inclusion, c)
			if (size+i)%7 != 0 {
				continue // the negative cases on a sample
			}
			if len(p) > 0 {
				bad := c
				bad.Name, bad.OK, bad.Proof = "flipped proof", false, flip(p, int(i)%len(p))
				v.Inclusion = append(v.Inclusion, bad)
				bad = c
				bad.Name, bad.OK, bad.Proof = "short proof", false, p[:len(p)-1]
				v.Inclusion = append(v.Inclusion, bad)
			}
			bad := c
			bad.Name, bad.OK, bad.Proof = "long proof", false, append(append([]tlog.Hash(nil), p...), v.LeafHashes[0])
			v.Inclusion = append(v.Inclusion, bad)
			bad = c
			bad.Name, bad.OK, bad.LeafHash = "other leaf", false, v.LeafHashes[(i+1)%N]
			v.Inclusion = append(v.Inclusion, bad)
			if i+1 < size {
				bad = c
				bad.Name, bad.OK, bad.Index = "other index", false, i+1
				v.Inclusion = append(v.Inclusion, bad)
			}
			bad = c
			bad.Name, bad.OK, bad.Index = "index beyond the tree", false, size
			v.Inclusion = append(v.Inclusion, bad)
		}
		for from := int64(1); from <= size; from++ {
			p, err := tlog.ProveTree(size, from, hr)
			if err != nil {
				t.Fatal(err)
			}
			c := proofCase{Name: "valid", OK: true, From: from, To: size, RootFrom: v.Roots[from-1], RootTo: v.Roots[size-1], Proof: p}
			v.Consistency = append(v.Consistency, c)
			if (size+from)%5 != 0 {
				continue
			}
			if len(p) > 0 {
				bad := c
				bad.Name, bad.OK, bad.Proof = "flipped proof", false, flip(p, int(from)%len(p))
				v.Consistency = append(v.Consistency, bad)
			}
			if from < size {
				bad := c
				bad.Name, bad.OK, bad.RootFrom = "forked old root", false, v.Roots[size-1]
				v.Consistency = append(v.Consistency, bad)
				bad = c
				bad.Name, bad.OK, bad.From, bad.To, bad.RootFrom, bad.RootTo = "rollback", false, size, from, v.Roots[size-1], v.Roots[from-1]
				v.Consistency = append(v.Consistency, bad)
			} else if size > 1 {
				bad := c
				bad.Name, bad.OK, bad.RootTo = "fork at one size", false, v.Roots[size-2]
				v.Consistency = append(v.Consistency, bad)
			}
		}
	}

	// A checkpoint of the whole tree and signed notes around it.
	signer, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := note.NewSigner(oskey)
	cp, err := translog.Sign(translog.Checkpoint{Origin: origin, Size: N, Root: v.Roots[N-1]}, signer)
	if err != nil {
		t.Fatal(err)
	}
	v.Checkpoint.Note, v.Checkpoint.Origin, v.Checkpoint.Size = string(cp.Note), origin, N
	v.Checkpoint.Root = base64.StdEncoding.EncodeToString(v.Roots[N-1][:])
	text := string(cp.Note[:bytes.Index(cp.Note, []byte("\n\n"))+1])
	both, _ := note.Sign(&note.Note{Text: text}, other, signer)
	byOther, _ := note.Sign(&note.Note{Text: text}, other)
	sigAt := strings.LastIndex(string(cp.Note), " ") + 1
	sig, _ := base64.StdEncoding.DecodeString(strings.TrimSpace(string(cp.Note[sigAt:])))
	sig[10] ^= 1
	flipped := string(cp.Note[:sigAt]) + base64.StdEncoding.EncodeToString(sig) + "\n"
	addNote := func(name, n, text string, ok bool) { v.Notes = append(v.Notes, noteCase{name, n, text, ok}) }
	addNote("checkpoint", string(cp.Note), text, true)
	addNote("two signatures", string(both), text, true)
	addNote("signed by another key", string(byOther), "", false)
	addNote("changed size", strings.Replace(string(cp.Note), fmt.Sprintf("\n%d\n", N), fmt.Sprintf("\n%d\n", N+1), 1), "", false)
	addNote("flipped signature", flipped, "", false)
	addNote("no signature", text, "", false)
	addNote("unterminated", strings.TrimSuffix(string(cp.Note), "\n"), "", false)
	v.BadCheckpoints = []string{origin + "\n", origin + "\n-1\n" + v.Checkpoint.Root + "\n", origin + "\n5\nnot base64!\n", origin + "\n05\n" + v.Checkpoint.Root + "\n", origin + "\n5\nAAAA\n"}

	// tkms leaves, entry bundles and tile paths.
	for _, e := range []*ledger.Entry{
		{Seq: 5, Time: time.Unix(0, 1733300000123456789), Type: "key.created", Body: []byte(`{"kid":"x","long":"` + strings.Repeat("é", 200) + `"}`), Sealed: []byte("sealed")},
		{Seq: 1 << 40, Time: time.Unix(-5, 0), Type: "genesis", Body: []byte(`{}`)},
	} {
		leaf := ledger.LeafBytes(e)
		l, err := ledger.UnmarshalLeaf(leaf)
		if err != nil {
			t.Fatal(err)
		}
		sealed := ""
		if l.HasSealed() {
			sealed = fmt.Sprintf("%x", l.SealedSHA256)
		}
		v.TkmsLeaves = append(v.TkmsLeaves, leafCase{leaf, l.Seq, fmt.Sprint(l.Time.UnixNano()), string(l.Type), string(l.Body), sealed})
		v.BadLeaves = append(v.BadLeaves, leaf[:len(leaf)-1], append([]byte{2}, leaf[1:]...))
	}
	bad := ledger.LeafBytes(&ledger.Entry{Seq: 1, Type: "genesis", Body: []byte{'"', 0xff, '"'}})
	v.BadLeaves = append(v.BadLeaves, bad)
	for _, l := range v.Leaves[:5] {
		if v.Bundle.Data, err = translog.AppendBundleEntry(v.Bundle.Data, l); err != nil {
			t.Fatal(err)
		}
	}
	v.Bundle.Leaves = v.Leaves[:5]
	for _, tile := range []tlog.Tile{{H: 8, L: -1, N: 1234067, W: 5}, {H: 8, L: -1, N: 0, W: 256}, {H: 8, L: 0, N: 999, W: 255}, {H: 8, L: 0, N: 1000, W: 256}} {
		level := fmt.Sprint(tile.L)
		if tile.L == -1 {
			level = "entries"
		}
		v.Tiles = append(v.Tiles, tileCase{level, tile.N, tile.W, translog.TilePath(tile)})
	}
	return v
}

// TestVerifyVectors runs verify.js in Chromium against vectors made by the
// Go packages tkms verifies with: every valid signature, proof and
// encoding is accepted with the same answer, every altered one refused.
func TestVerifyVectors(t *testing.T) {
	ctx := explorertest.Browser(t)
	vec, err := json.Marshal(makeVectors(t))
	if err != nil {
		t.Fatal(err)
	}
	harness, err := os.ReadFile("testdata/vectors.js")
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(explorer.Prefix, explorer.Handler(failJSON))
	mux.HandleFunc("/vectors.json", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write(vec)
	})
	mux.HandleFunc("/blank.html", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", explorer.CSP)
		w.Write([]byte("<!doctype html><title>vectors</title>"))
	})
	ts := httptest.NewServer(mux)
	defer ts.Close()
	type result struct {
		N     int      `json:"n"`
		Fails []string `json:"fails"`
	}
	if err := chromedp.Do(ctx, chromedp.Navigate(ts.URL+"/blank.html")); err != nil {
		t.Fatal(err)
	}
	res, err := chromedp.Run(ctx, chromedp.Evaluate[result](string(harness), chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("running the vectors: %v", err)
	}
	for _, f := range res.Fails {
		t.Error(f)
	}
	if res.N < 1000 {
		t.Errorf("only %d checks ran", res.N)
	}
	t.Logf("%d checks of verify.js against Go's note and tlog", res.N)
}

// Mount the explorer beside an API: the page then reads that API from its
// own origin, as it does on every tkms.
func ExampleHandler() {
	mux := http.NewServeMux()
	mux.Handle(explorer.Prefix, explorer.Handler(func(w http.ResponseWriter, r *http.Request, status int, msg string) {
		http.Error(w, msg, status)
	}))
	ts := httptest.NewServer(mux)
	defer ts.Close()
	resp, err := http.Get(ts.URL + explorer.Prefix)
	if err != nil {
		fmt.Println(err)
		return
	}
	resp.Body.Close()
	fmt.Println(resp.Status, resp.Header.Get("Content-Type"))
	fmt.Println(resp.Header.Get("Content-Security-Policy") == explorer.CSP)
	// Output:
	// 200 OK text/html; charset=utf-8
	// true
}
