package translog_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/tkms-dev/tkms/internal/ledger"
	"github.com/tkms-dev/tkms/internal/translog"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// Fixed keys, made once with note.GenerateKey, so that examples and fuzz
// seeds are deterministic (Ed25519 signatures are).
const (
	testOrigin      = "example.com/log"
	testSignerKey   = "PRIVATE+KEY+example.com/log+dd39a8b4+AdYELk6bVZndhYJjXypRfGA2NAH6S6Z8KO3kWWIWZQIh"
	testVerifierKey = "example.com/log+dd39a8b4+AcgVwznwKPmffh3w8Kb1oegJnNXmA/LTI6OgF1fjdlr9"

	witnessSignerKey   = "PRIVATE+KEY+witness.example/w+3acc8f89+AQYRPGR/2IAePoGLzFUFjC3B/Clnd0OF4DeVtg3CU0lx"
	witnessVerifierKey = "witness.example/w+3acc8f89+ATMpenVA7qPab4fQ8uDrAQIQKG72Gig9wjeB/m9gA50n"
)

var testTime = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// memLog is an in-memory log: leaves and the stored hashes of their tree,
// as tlog.StoredHashes computes them. It is a tlog.HashReader and a
// translog.LeafReader.
type memLog struct {
	leaves [][]byte
	hashes []tlog.Hash
}

var (
	_ tlog.HashReader     = (*memLog)(nil)
	_ translog.LeafReader = (*memLog)(nil)
)

func (m *memLog) size() int64 { return int64(len(m.leaves)) }

func (m *memLog) add(leaf []byte) {
	hs, err := tlog.StoredHashes(m.size(), leaf, m)
	if err != nil {
		panic(err) // the tree is consistent by construction
	}
	m.hashes = append(m.hashes, hs...)
	m.leaves = append(m.leaves, leaf)
}

func (m *memLog) ReadHashes(indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	for i, x := range indexes {
		if x < 0 || x >= int64(len(m.hashes)) {
			return nil, fmt.Errorf("memLog: no stored hash %d", x)
		}
		out[i] = m.hashes[x]
	}
	return out, nil
}

func (m *memLog) ReadLeaves(start, n int64) ([][]byte, error) {
	if start < 0 || n < 0 || start+n > m.size() {
		return nil, fmt.Errorf("memLog: no leaves %d+%d", start, n)
	}
	return m.leaves[start : start+n], nil
}

func (m *memLog) root(t testing.TB, size int64) tlog.Hash {
	t.Helper()
	h, err := tlog.TreeHash(size, m)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// checkpoint signs the tree head of the first size leaves.
func (m *memLog) checkpoint(t testing.TB, size int64) translog.Signed {
	t.Helper()
	s, err := translog.Sign(translog.Checkpoint{Origin: testOrigin, Size: size, Root: m.root(t, size)}, testSigner(t))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// testEntry returns the entry with sequence number seq: a key creation
// with a sealed part for odd seq, a key publication without one for even.
func testEntry(seq uint64) *ledger.Entry {
	e := &ledger.Entry{Seq: seq, Time: testTime.Add(time.Duration(seq) * time.Second)}
	if seq%2 == 1 {
		e.Type = ledger.TypeKeyCreated
		e.Body = fmt.Appendf(nil, `{"kid":"k%d","id":%d}`, seq, seq)
		e.Sealed = fmt.Appendf(nil, "sealed private key %d", seq)
	} else {
		e.Type = ledger.TypeKeyPublished
		e.Body = fmt.Appendf(nil, `{"kid":"k%d"}`, seq-1)
	}
	return e
}

// ledgerLog returns a log of n ledger leaves, leaf i being entry i+1.
func ledgerLog(n int) *memLog {
	m := new(memLog)
	for i := range n {
		m.add(ledger.LeafBytes(testEntry(uint64(i) + 1)))
	}
	return m
}

// rawLog returns a log of n short leaves that are not ledger leaves, for
// tests of the tree shape only.
func rawLog(n int) *memLog {
	m := &memLog{leaves: make([][]byte, 0, n), hashes: make([]tlog.Hash, 0, 2*n)}
	for i := range n {
		m.add(fmt.Appendf(nil, "leaf %d", i))
	}
	return m
}

func testSigner(t testing.TB) note.Signer {
	t.Helper()
	s, err := note.NewSigner(testSignerKey)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func testVerifier(t testing.TB) note.Verifier {
	t.Helper()
	v, err := translog.NewVerifier(testVerifierKey)
	if err != nil {
		t.Fatal(err)
	}
	return v
}
