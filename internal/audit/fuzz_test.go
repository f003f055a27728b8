package audit

import (
	"bytes"
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// mapSource serves a mirror held in memory.
type mapSource map[string][]byte

func (m mapSource) Fetch(ctx context.Context, path string) ([]byte, error) {
	if b, ok := m[path]; ok {
		return b, nil
	}
	return nil, fs.ErrNotExist
}

// smallMirror returns the mirror of a small log (genesis, a key, one
// release), by path, and its log key, for the tests that serve it with one
// file changed.
func smallMirror(tb testing.TB) (mapSource, string) {
	tb.Helper()
	b := newBuilder(testRotation())
	b.advance(time.Minute)
	b.release([]string{b.st.Keys[0].Kid}, goodClaims(), nil)
	dir := tb.TempDir()
	b.mirror(dir, -1)
	src := mapSource{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(path)
		rel, _ := filepath.Rel(dir, path)
		src[filepath.ToSlash(rel)] = data
		return err
	})
	if err != nil {
		tb.Fatal(err)
	}
	return src, b.vkey
}

// FuzzAuditBundle serves a log whose entry bundle is replaced by the fuzzed
// bytes: the audit never panics, and passes only on the original bundle.
func FuzzAuditBundle(f *testing.F) {
	src, logKey := smallMirror(f)
	const bundle = "tile/entries/000.p/7"
	orig := src[bundle]
	if orig == nil {
		f.Fatalf("no %s in the mirror", bundle)
	}
	f.Add(orig)
	f.Add(orig[:len(orig)-1])
	f.Add(append(bytes.Clone(orig), 0, 0))
	f.Fuzz(func(t *testing.T, data []byte) {
		s := mapSource{}
		for k, v := range src {
			s[k] = v
		}
		s[bundle] = data
		r, err := Run(context.Background(), Options{Source: s, LogKey: logKey})
		if err != nil {
			t.Fatal(err)
		}
		if r.Passed() != bytes.Equal(data, orig) {
			t.Fatalf("passed %v on a bundle that is the original: %v\n%s", r.Passed(), bytes.Equal(data, orig), text(r))
		}
	})
}
