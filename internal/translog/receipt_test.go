package translog_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/tkms-dev/tkms/internal/ledger"
	"github.com/tkms-dev/tkms/internal/translog"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

func newReceipt(t testing.TB, m *memLog, index, size int64) *translog.Receipt {
	t.Helper()
	r, err := translog.NewReceipt(index, m.leaves[index], m.checkpoint(t, size), m)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestReceiptVerify(t *testing.T) {
	m := ledgerLog(20)
	v := testVerifier(t)
	for size := int64(1); size <= m.size(); size++ {
		for i := range size {
			r := newReceipt(t, m, i, size)
			leaf, cp, err := r.Verify(v)
			if err != nil {
				t.Fatalf("leaf %d in %d: %v", i, size, err)
			}
			e := testEntry(uint64(i) + 1)
			if leaf.Seq != e.Seq || !leaf.Time.Equal(e.Time) || leaf.Type != e.Type || !bytes.Equal(leaf.Body, e.Body) || leaf.HasSealed() != (e.Sealed != nil) {
				t.Fatalf("leaf %d: %+v, want entry %+v", i, leaf, e)
			}
			if cp.Size != size || cp.Root != m.root(t, size) || cp.Origin != testOrigin {
				t.Fatalf("leaf %d in %d: checkpoint %+v", i, size, cp.Checkpoint)
			}
		}
	}
}

func TestNewReceiptNotFound(t *testing.T) {
	m := ledgerLog(5)
	cp := m.checkpoint(t, 3)
	for _, i := range []int64{-1, 3, 4, math.MaxInt64, math.MinInt64} {
		if r, err := translog.NewReceipt(i, nil, cp, m); !errors.Is(err, translog.ErrNotFound) {
			t.Errorf("NewReceipt(%d) = %+v, %v, want ErrNotFound", i, r, err)
		}
	}
	if _, err := translog.NewReceipt(0, m.leaves[0], cp, failReader{}); !errors.Is(err, errRead) {
		t.Errorf("NewReceipt over a failing store: %v", err)
	}
}

// clone returns a deep copy of r.
func clone(r *translog.Receipt) *translog.Receipt {
	c := *r
	c.Leaf = bytes.Clone(r.Leaf)
	c.Proof = append([]tlog.Hash(nil), r.Proof...)
	return &c
}

// mustFail checks that r does not verify, with ErrBadReceipt.
func mustFail(t *testing.T, v note.Verifier, r *translog.Receipt, what string) {
	t.Helper()
	if leaf, cp, err := r.Verify(v); !errors.Is(err, translog.ErrBadReceipt) {
		t.Fatalf("%s: Verify = %+v, %+v, %v, want ErrBadReceipt", what, leaf, cp.Checkpoint, err)
	}
}

// TestReceiptTampered changes every part of a receipt: its leaf, leaf
// hash, proof, index and checkpoint. None verifies.
func TestReceiptTampered(t *testing.T) {
	m := ledgerLog(13)
	v := testVerifier(t)
	good := newReceipt(t, m, 6, 13)
	if _, _, err := good.Verify(v); err != nil {
		t.Fatal(err)
	}
	for i := range good.Leaf {
		r := clone(good)
		r.Leaf[i] ^= 0x01
		mustFail(t, v, r, fmt.Sprintf("leaf byte %d", i))
		r.LeafHash = tlog.RecordHash(r.Leaf) // consistent, but not in the tree
		mustFail(t, v, r, fmt.Sprintf("leaf byte %d, leaf hash updated", i))
	}
	for i := range good.LeafHash {
		r := clone(good)
		r.LeafHash[i] ^= 0x80
		mustFail(t, v, r, fmt.Sprintf("leaf hash byte %d", i))
	}
	for j := range good.Proof {
		for i := range good.Proof[j] {
			r := clone(good)
			r.Proof[j][i] ^= 0x01
			mustFail(t, v, r, fmt.Sprintf("proof hash %d byte %d", j, i))
		}
	}
	for _, idx := range []int64{-1, 0, 5, 7, 12, 13, 14, math.MaxInt64, math.MinInt64} {
		r := clone(good)
		r.Index = idx
		mustFail(t, v, r, fmt.Sprintf("index %d", idx))
	}
	for i := range good.Checkpoint {
		for bit := range 8 {
			r := clone(good)
			b := []byte(r.Checkpoint)
			b[i] ^= 1 << bit
			r.Checkpoint = string(b)
			// A few spellings of the signature's base64 verify to the
			// same checkpoint (see TestVerifyFlippedByte): the receipt
			// still holds, but says nothing else.
			if _, cp, err := r.Verify(v); err == nil && cp.Checkpoint == m.checkpoint(t, 13).Checkpoint {
				continue
			}
			mustFail(t, v, r, fmt.Sprintf("checkpoint byte %d bit %d", i, bit))
		}
	}

	// Structural changes.
	r := clone(good)
	r.Proof = r.Proof[:len(r.Proof)-1]
	mustFail(t, v, r, "proof one hash short")
	r = clone(good)
	r.Proof = append(r.Proof, tlog.Hash{})
	mustFail(t, v, r, "proof one hash long")
	r = clone(good)
	r.Proof = nil
	mustFail(t, v, r, "no proof")
	r = clone(good)
	r.Proof = newReceipt(t, m, 7, 13).Proof
	mustFail(t, v, r, "the proof of the next leaf")
	r = clone(good)
	r.Checkpoint = string(m.checkpoint(t, 12).Note)
	mustFail(t, v, r, "the checkpoint of a smaller tree")
	r = clone(good)
	r.Leaf, r.LeafHash = m.leaves[7], tlog.RecordHash(m.leaves[7])
	mustFail(t, v, r, "the next leaf")
	r = clone(good)
	r.Checkpoint = ""
	mustFail(t, v, r, "no checkpoint")
	mustFail(t, v, &translog.Receipt{}, "zero receipt")

	// The same tree, signed by another key.
	skey, _, err := translog.GenerateKey(testOrigin)
	if err != nil {
		t.Fatal(err)
	}
	signer, _ := note.NewSigner(skey)
	other, _ := translog.Sign(m.checkpoint(t, 13).Checkpoint, signer)
	r = clone(good)
	r.Checkpoint = string(other.Note)
	mustFail(t, v, r, "checkpoint signed by another key")
}

// TestReceiptLeafMismatch checks the tie between the leaf index and the
// entry's sequence number, and that the leaf must decode: a log whose
// leaves are not the ledger's in order gives no receipt that verifies.
func TestReceiptLeafMismatch(t *testing.T) {
	m := new(memLog)
	m.add(ledger.LeafBytes(testEntry(1)))
	m.add(ledger.LeafBytes(testEntry(5))) // leaf 1 holds entry 5
	m.add([]byte("not a ledger leaf"))
	m.add(ledger.LeafBytes(testEntry(4)))
	v := testVerifier(t)
	if _, _, err := newReceipt(t, m, 0, 4).Verify(v); err != nil {
		t.Fatal(err)
	}
	if _, _, err := newReceipt(t, m, 3, 4).Verify(v); err != nil {
		t.Fatal(err)
	}
	mustFail(t, v, newReceipt(t, m, 1, 4), "leaf 1 holds entry 5")
	mustFail(t, v, newReceipt(t, m, 2, 4), "leaf 2 is not a ledger leaf")
}

func TestReceiptJSON(t *testing.T) {
	m := ledgerLog(9)
	r := newReceipt(t, m, 4, 9)
	js := r.Marshal()
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(js, &fields); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"index", "leaf", "leaf_hash", "checkpoint", "inclusion_proof"} {
		if _, ok := fields[k]; !ok {
			t.Errorf("receipt JSON has no %q: %s", k, js)
		}
	}
	str, _ := json.Marshal(string(js)) // as the /app responses carry it
	for _, in := range [][]byte{js, str, append(append([]byte(" \n"), str...), '\n'), append(bytes.Clone(js), "\t"...)} {
		got, err := translog.ParseReceipt(in)
		if err != nil {
			t.Fatalf("ParseReceipt(%.40q...): %v", in, err)
		}
		if !bytes.Equal(got.Marshal(), js) {
			t.Fatalf("ParseReceipt(%.40q...) = %s, want %s", in, got.Marshal(), js)
		}
		if _, _, err := got.Verify(testVerifier(t)); err != nil {
			t.Fatal(err)
		}
	}
}

func TestParseReceiptRejects(t *testing.T) {
	long := fmt.Sprintf(`{"index":0,"inclusion_proof":[%s"%s"]}`, bytes.Repeat([]byte(`"`+tlog.Hash{}.String()+`",`), 64), tlog.Hash{})
	for _, in := range []string{
		"",
		" ",
		"{",
		"[]",
		"123",
		"null x",
		`"`,
		`"{"`,
		`"\"`,
		`""`,
		`"\"{}\""`,
		`{"index":"1"}`,
		`{"index":1.5}`,
		`{"leaf":"!!"}`,
		`{"leaf_hash":"AAAA"}`,
		`{"inclusion_proof":["AAAA"]}`,
		`{"inclusion_proof":"AAAA"}`,
		`{"checkpoint":1}`,
		long,
	} {
		if r, err := translog.ParseReceipt([]byte(in)); err == nil {
			t.Errorf("ParseReceipt(%.60q) = %+v", in, r)
		}
	}
}

func ExampleReceipt_Verify() {
	// A log of two ledger entries, and its checkpoint.
	m := new(memLog)
	for seq := uint64(1); seq <= 2; seq++ {
		m.add(ledger.LeafBytes(&ledger.Entry{
			Seq:    seq,
			Time:   time.Date(2026, 3, 1, 12, 0, int(seq), 0, time.UTC),
			Type:   ledger.TypeKeyCreated,
			Body:   fmt.Appendf(nil, `{"kid":"k%d"}`, seq),
			Sealed: []byte("sealed private key"),
		}))
	}
	signer, _ := note.NewSigner("PRIVATE+KEY+example.com/log+dd39a8b4+AdYELk6bVZndhYJjXypRfGA2NAH6S6Z8KO3kWWIWZQIh")
	root, _ := tlog.TreeHash(2, m)
	cp, _ := translog.Sign(translog.Checkpoint{Origin: "example.com/log", Size: 2, Root: root}, signer)

	// The receipt of entry 2 (leaf index 1), checked offline with the
	// log's verifier key alone.
	r, err := translog.NewReceipt(1, m.leaves[1], cp, m)
	if err != nil {
		panic(err)
	}
	received, err := translog.ParseReceipt(r.Marshal())
	if err != nil {
		panic(err)
	}
	v, _ := translog.NewVerifier("example.com/log+dd39a8b4+AcgVwznwKPmffh3w8Kb1oegJnNXmA/LTI6OgF1fjdlr9")
	leaf, signed, err := received.Verify(v)
	if err != nil {
		panic(err)
	}
	fmt.Println("entry", leaf.Seq, leaf.Type, string(leaf.Body), leaf.Time.Format(time.RFC3339))
	fmt.Println("sealed part logged:", leaf.HasSealed())
	fmt.Println("in", signed.Origin, "of size", signed.Size)

	// Another entry's leaf does not verify under this receipt.
	received.Leaf = m.leaves[0]
	received.LeafHash = tlog.RecordHash(received.Leaf)
	_, _, err = received.Verify(v)
	fmt.Println(errors.Is(err, translog.ErrBadReceipt))
	// Output:
	// entry 2 key.created {"kid":"k2"} 2026-03-01T12:00:02Z
	// sealed part logged: true
	// in example.com/log of size 2
	// true
}

// FuzzParseReceipt parses and verifies arbitrary receipts against a log
// of fixed content signed by testSignerKey: whatever verifies must be
// true of that log.
func FuzzParseReceipt(f *testing.F) {
	m := ledgerLog(7)
	var cps []translog.Signed
	for size := int64(0); size <= m.size(); size++ {
		cps = append(cps, m.checkpoint(f, size))
	}
	for _, c := range [][2]int64{{0, 1}, {3, 7}, {6, 7}, {2, 5}} {
		js := newReceipt(f, m, c[0], c[1]).Marshal()
		f.Add(js)
		str, _ := json.Marshal(string(js))
		f.Add(str)
	}
	f.Add([]byte(`{}`))
	f.Add([]byte(`""`))
	f.Add([]byte(`{"index":-1,"checkpoint":"` + string(cps[0].Note) + `"}`))
	v := testVerifier(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := translog.ParseReceipt(data)
		if err != nil {
			return
		}
		again, err := translog.ParseReceipt(r.Marshal())
		if err != nil {
			t.Fatalf("re-parse: %v", err)
		}
		if !bytes.Equal(again.Marshal(), r.Marshal()) {
			t.Fatalf("re-parse changed %s to %s", r.Marshal(), again.Marshal())
		}
		leaf, cp, err := r.Verify(v)
		if err != nil {
			if !errors.Is(err, translog.ErrBadReceipt) {
				t.Fatalf("Verify: %v, not ErrBadReceipt", err)
			}
			return
		}
		if cp.Size < 1 || cp.Size > m.size() || cp.Checkpoint != cps[cp.Size].Checkpoint {
			t.Fatalf("verified a checkpoint the log never signed: %+v", cp.Checkpoint)
		}
		if !bytes.Equal(r.Leaf, m.leaves[r.Index]) || leaf.Seq != uint64(r.Index)+1 {
			t.Fatalf("verified leaf %d that is not in the log: %x", r.Index, r.Leaf)
		}
	})
}

// FuzzUnmarshalLeaf checks that the leaf decoder never panics and is
// strict: a leaf that decodes is what LeafBytes makes of the entry.
func FuzzUnmarshalLeaf(f *testing.F) {
	for seq := uint64(1); seq <= 4; seq++ {
		f.Add(ledger.LeafBytes(testEntry(seq)))
	}
	f.Add(ledger.LeafBytes(&ledger.Entry{}))
	f.Add([]byte{})
	f.Add([]byte{ledger.FormatVersion})
	f.Add([]byte{2})
	f.Fuzz(func(t *testing.T, b []byte) {
		in := bytes.Clone(b)
		l, err := ledger.UnmarshalLeaf(in)
		if err != nil {
			return
		}
		// LeafBytes hashes the sealed part; rebuild without one and
		// compare all but the hash, which is taken as is.
		got := ledger.LeafBytes(&ledger.Entry{Seq: l.Seq, Time: l.Time, Type: l.Type, Body: l.Body})
		got = append(got[:len(got)-32], l.SealedSHA256[:]...)
		if !bytes.Equal(got, b) {
			t.Fatalf("leaf %x decodes to %+v, which encodes to %x", b, l, got)
		}
		body := bytes.Clone(l.Body)
		for i := range in {
			in[i] ^= 0xff // the leaf must not alias its input
		}
		if !bytes.Equal(l.Body, body) {
			t.Fatal("decoded leaf aliases its input")
		}
	})
}
