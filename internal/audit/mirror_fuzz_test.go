package audit

import (
	"bytes"
	"context"
	"slices"
	"testing"
)

// FuzzAuditMirror serves a log mirror in which one file, other than the
// entry bundle that FuzzAuditBundle covers (the signed checkpoint, a hash
// tile), is replaced by the fuzzed bytes. Only files the audit reads are
// chosen: each is checked in setup to fail the audit when it is garbage.
// Nothing may panic; the audit either returns an error or a report; and
// it passes only on the original file.
func FuzzAuditMirror(f *testing.F) {
	src, logKey := smallMirror(f)
	passes := func(path string, data []byte) (bool, error) {
		s := mapSource{}
		for k, v := range src {
			s[k] = v
		}
		s[path] = data
		r, err := Run(context.Background(), Options{Source: s, LogKey: logKey})
		if err != nil {
			return false, err
		}
		return r.Passed(), nil
	}
	var paths []string
	for p := range src {
		if ok, _ := passes(p, []byte("garbage")); !ok && !bytes.HasPrefix([]byte(p), []byte("tile/entries/")) {
			paths = append(paths, p)
		}
	}
	slices.Sort(paths)
	if len(paths) == 0 {
		f.Fatal("no file of the mirror is read")
	}
	for i, p := range paths {
		orig := src[p]
		f.Add(uint8(i), orig)
		f.Add(uint8(i), orig[:len(orig)-1])
		f.Add(uint8(i), append(bytes.Clone(orig), '\n'))
	}
	f.Fuzz(func(t *testing.T, which uint8, data []byte) {
		p := paths[int(which)%len(paths)]
		ok, err := passes(p, data)
		if err == nil && ok != bytes.Equal(data, src[p]) {
			t.Fatalf("%s replaced by %q: passed %v", p, data, ok)
		}
	})
}
