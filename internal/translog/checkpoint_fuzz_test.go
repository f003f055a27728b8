package translog_test

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	"github.com/tkms-dev/tkms/internal/translog"
	"golang.org/x/mod/sumdb/note"
)

// FuzzVerifyCheckpoint feeds arbitrary checkpoints (what an auditor or a
// client reads from /v1/log/checkpoint, a receipt or a state file) to
// Verify. With sign set, the input is taken as note text and signed with
// the log's key first, so that the checkpoint body parser is reached past
// the signature check. Nothing may panic; every rejection is
// ErrBadCheckpoint; an accepted checkpoint names the verifier's log, has a
// size of at most 2^62, keeps the exact input as its note, and signing
// its tree head again gives a note that verifies to the same tree head.
func FuzzVerifyCheckpoint(f *testing.F) {
	signer := testSigner(f)
	v := testVerifier(f)
	for _, size := range []int64{0, 1, 7, 1 << 62} {
		s, err := translog.Sign(translog.Checkpoint{Origin: testOrigin, Size: size, Root: testRoot()}, signer)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(s.Note, false)
		f.Add([]byte(fmt.Sprintf("%s\n%d\n%s\n", testOrigin, size, testRoot())), true)
	}
	f.Add([]byte(fmt.Sprintf("%s\n1\n%s\nextension line\n", testOrigin, testRoot())), true)
	f.Add([]byte(fmt.Sprintf("%s\n-1\n%s\n", testOrigin, testRoot())), true)
	f.Add([]byte(fmt.Sprintf("%s\n01\n%s\n", testOrigin, testRoot())), true)
	f.Add([]byte(fmt.Sprintf("%s\n4611686018427387905\n%s\n", testOrigin, testRoot())), true)
	f.Add([]byte(fmt.Sprintf("%s\n1\nAAAA\n", testOrigin)), true)
	f.Add([]byte("other.example/log\n1\n"+testRoot().String()+"\n"), true)
	f.Add([]byte{}, false)
	f.Fuzz(func(t *testing.T, b []byte, sign bool) {
		msg := b
		if sign {
			signed, err := note.Sign(&note.Note{Text: string(b)}, signer)
			if err != nil {
				return // not note text (no final newline, say)
			}
			msg = signed
		}
		in := bytes.Clone(msg)
		s, err := translog.Verify(msg, v)
		if err != nil {
			if !errors.Is(err, translog.ErrBadCheckpoint) {
				t.Fatalf("error %v is not ErrBadCheckpoint", err)
			}
			return
		}
		if s.Origin != v.Name() || s.Size < 0 || s.Size > 1<<62 {
			t.Fatalf("accepted checkpoint %+v", s.Checkpoint)
		}
		if !bytes.Equal(s.Note, in) {
			t.Fatal("the verified note is not the input")
		}
		again, err := translog.Sign(s.Checkpoint, signer)
		if err != nil {
			t.Fatal(err)
		}
		s2, err := translog.Verify(again.Note, v)
		if err != nil || s2.Checkpoint != s.Checkpoint {
			t.Fatalf("re-signed %+v verifies as %+v, %v", s.Checkpoint, s2.Checkpoint, err)
		}
	})
}
