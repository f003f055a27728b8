package audit

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// TestHashTileOfWrongSize is the regression test of FuzzAuditMirror's
// first find: the partial hash tile tile/0/000.p/7 served with one byte
// more ("\n" appended) passed the audit, which read only the first 7*32
// bytes. A tile holds exactly its hashes; only a full tile fetched in place
// of a partial one may hold more.
func TestHashTileOfWrongSize(t *testing.T) {
	src, logKey := smallMirror(t)
	const tile = "tile/0/000.p/7"
	orig := src[tile]
	if len(orig) != 7*32 {
		t.Fatalf("%s has %d bytes", tile, len(orig))
	}
	for _, tc := range []struct {
		name string
		data []byte
		pass bool
	}{
		{"original", orig, true},
		{"one byte more", append(bytes.Clone(orig), '\n'), false},
		{"one hash more", append(bytes.Clone(orig), make([]byte, 32)...), false},
		{"one byte less", orig[:len(orig)-1], false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := mapSource{}
			for k, v := range src {
				s[k] = v
			}
			s[tile] = tc.data
			r, err := Run(context.Background(), Options{Source: s, LogKey: logKey})
			if err != nil {
				t.Fatal(err)
			}
			if r.Passed() != tc.pass {
				t.Fatalf("passed %v, want %v\n%s", r.Passed(), tc.pass, text(r))
			}
			if !tc.pass && !strings.Contains(text(r), "hash tile "+tile+" holds ") {
				t.Fatalf("no hash tile size violation:\n%s", text(r))
			}
		})
	}
}
