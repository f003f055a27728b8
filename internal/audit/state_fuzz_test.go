package audit

import (
	"crypto/sha256"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tkms-dev/tkms/internal/translog"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// FuzzReadState feeds arbitrary state files (the auditor's memory of the
// log, which another auditor may hand over to show a fork) to readState.
// Nothing may panic; every failure is ErrStateFile; an accepted state's
// checkpoint verifies under the log key and names the state's origin, size
// and root; and writeState then readState gives it back unchanged. Seeds:
// states written by writeState for checkpoints signed here, and a state
// whose root disagrees with its checkpoint.
func FuzzReadState(f *testing.F) {
	skey, vkey, err := translog.GenerateKey("example.com/audit-fuzz")
	if err != nil {
		f.Fatal(err)
	}
	signer, err := note.NewSigner(skey)
	if err != nil {
		f.Fatal(err)
	}
	v, err := translog.NewVerifier(vkey)
	if err != nil {
		f.Fatal(err)
	}
	dir := f.TempDir()
	for _, size := range []int64{0, 1, 300} {
		root := tlog.Hash(sha256.Sum256([]byte{byte(size)}))
		s, err := translog.Sign(translog.Checkpoint{Origin: v.Name(), Size: size, Root: root}, signer)
		if err != nil {
			f.Fatal(err)
		}
		st := &savedState{Origin: v.Name(), Size: size, Root: root, Checkpoint: string(s.Note), Time: time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)}
		p := filepath.Join(dir, "seed")
		if err := writeState(p, st); err != nil {
			f.Fatal(err)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		st.Root[0] ^= 1
		b, _ = json.Marshal(st)
		f.Add(b)
	}
	f.Add([]byte(`{"checkpoint":""}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		p := filepath.Join(t.TempDir(), "state.json")
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		st, err := readState(p, v)
		if err != nil {
			if st != nil || !errors.Is(err, ErrStateFile) {
				t.Fatalf("state %v, error %v", st, err)
			}
			return
		}
		cp, err := translog.Verify([]byte(st.Checkpoint), v)
		if err != nil || cp.Origin != st.Origin || cp.Size != st.Size || cp.Root != st.Root {
			t.Fatalf("accepted state %+v with checkpoint %+v, %v", st, cp.Checkpoint, err)
		}
		p2 := filepath.Join(t.TempDir(), "again.json")
		if err := writeState(p2, st); err != nil {
			t.Fatal(err)
		}
		again, err := readState(p2, v)
		if err != nil || !again.Time.Equal(st.Time) || again.Origin != st.Origin || again.Size != st.Size ||
			again.Root != st.Root || again.Checkpoint != st.Checkpoint {
			t.Fatalf("written state reads back as %+v, %v", again, err)
		}
	})
}
