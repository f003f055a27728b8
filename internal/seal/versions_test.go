package seal_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/tkms-dev/tkms/internal/seal"
)

// rekey makes the next version on the leader and applies it on every
// node given, as a ledger.rekeyed entry does.
func rekey(t *testing.T, leader *seal.Versions, nodes ...*seal.Versions) (blob, prev []byte) {
	t.Helper()
	blob, prev, err := leader.Next()
	if err != nil {
		t.Fatal(err)
	}
	v, _, _ := seal.ParseSecret(blob)
	for _, n := range nodes {
		n.AddPrevious(v, prev)
		if err := n.Install(blob); err != nil {
			t.Fatal(err)
		}
	}
	return blob, prev
}

func TestVersionsRekey(t *testing.T) {
	a := seal.NewVersions()
	v1, err := a.Secret()
	if err != nil {
		t.Fatal(err)
	}
	b := &seal.Versions{}
	if _, err := b.Seal([]byte("x"), nil); !errors.Is(err, seal.ErrNoSecret) {
		t.Fatalf("sealing before the handoff: %v, want ErrNoSecret", err)
	}
	if err := b.Install(v1); err != nil {
		t.Fatal(err)
	}
	// A removed node keeps version 1.
	removed := &seal.Versions{}
	removed.Install(v1)

	old, _ := a.Seal([]byte("before"), []byte("ad"))
	if seal.BlobVersion(old) != 1 {
		t.Fatalf("a version-1 blob names version %d", seal.BlobVersion(old))
	}
	// Version 1 blobs are plain AES-GCM blobs under the key.
	_, k1, _ := seal.ParseSecret(v1)
	plain, _ := seal.New(k1)
	if pt, err := plain.Open(old, []byte("ad")); err != nil || string(pt) != "before" {
		t.Fatalf("a version-1 blob is not an AESGCM blob: %q %v", pt, err)
	}
	_, p2 := rekey(t, a, a, b)
	if a.Current() != 2 || b.Current() != 2 || removed.Current() != 1 {
		t.Fatalf("versions %d %d %d", a.Current(), b.Current(), removed.Current())
	}
	v3, p3 := rekey(t, a, a, b)
	sealed, err := a.Seal([]byte("after"), []byte("ad"))
	if err != nil {
		t.Fatal(err)
	}
	if seal.BlobVersion(sealed) != 3 {
		t.Fatalf("sealed under version %d, want 3", seal.BlobVersion(sealed))
	}
	if pt, err := b.Open(sealed, []byte("ad")); err != nil || string(pt) != "after" {
		t.Fatalf("another node: %q %v", pt, err)
	}
	// The removed node opens nothing written after the rekey, even with
	// the rekeys' public records.
	_, prev2, _ := a.Next() // a record it may have seen: useless without version 2
	removed.AddPrevious(4, prev2)
	if _, err := removed.Open(sealed, []byte("ad")); !errors.Is(err, seal.ErrUnknownVersion) {
		t.Fatalf("a removed node opening a blob sealed after the rekey: %v, want ErrUnknownVersion", err)
	}
	// A node given only the current version opens everything older by
	// walking back the rekeys' records.
	late := &seal.Versions{}
	if err := late.Install(v3); err != nil {
		t.Fatal(err)
	}
	if _, err := late.Open(old, []byte("ad")); !errors.Is(err, seal.ErrUnknownVersion) {
		t.Fatalf("without the rekeys' records: %v, want ErrUnknownVersion", err)
	}
	late.AddPrevious(2, p2)
	late.AddPrevious(3, p3)
	if pt, err := late.Open(old, []byte("ad")); err != nil || string(pt) != "before" {
		t.Fatalf("walking back to version 1: %q %v", pt, err)
	}
	// The blob a node hands over holds every version it holds, the
	// current last: its receiver needs no rekey records.
	all, err := late.Secret()
	if v, _, _ := seal.ParseSecret(all); err != nil || v != 3 || len(all) != 3*seal.SecretSize {
		t.Fatalf("the blob: version %d, %d bytes, %v", v, len(all), err)
	}
	fresh := &seal.Versions{}
	if err := fresh.Install(all); err != nil {
		t.Fatal(err)
	}
	if pt, err := fresh.Open(old, []byte("ad")); err != nil || string(pt) != "before" || fresh.Current() != 3 {
		t.Fatalf("a node given the whole blob: %q %v (version %d)", pt, err, fresh.Current())
	}
	mid, err := late.SealVersion(2, []byte("mid"), nil)
	if err != nil || seal.BlobVersion(mid) != 2 {
		t.Fatalf("SealVersion(2): version %d, %v", seal.BlobVersion(mid), err)
	}
	if pt, err := b.Open(mid, nil); err != nil || string(pt) != "mid" {
		t.Fatalf("%q %v", pt, err)
	}
	// Wrong associated data, a flipped byte, a flipped version.
	for name, bad := range map[string][]byte{
		"flipped byte":    flip(sealed, len(sealed)-1),
		"flipped version": flip(sealed, 7),
		"short":           sealed[:10],
	} {
		if _, err := b.Open(bad, []byte("ad")); err == nil {
			t.Errorf("%s: opened", name)
		}
	}
	if _, err := b.Open(sealed, []byte("other")); !errors.Is(err, seal.ErrOpen) {
		t.Errorf("wrong ad: %v, want ErrOpen", err)
	}
	// Another key under a known version is refused.
	if err := b.Install(seal.MarshalSecret(2, seal.NewKey())); err == nil {
		t.Error("another key for version 2 installed")
	}
}

func flip(b []byte, i int) []byte {
	c := bytes.Clone(b)
	c[i] ^= 1
	return c
}

func TestParseSecret(t *testing.T) {
	for _, tc := range []struct {
		name string
		blob []byte
		v    uint32
		ok   bool
	}{
		{"bare key", make([]byte, 32), 1, true},
		{"versioned", seal.MarshalSecret(7, make([]byte, 32)), 7, true},
		{"version 0", seal.MarshalSecret(0, make([]byte, 32)), 0, false},
		{"short", make([]byte, 31), 0, false},
		{"long", make([]byte, 37), 0, false},
		{"two versions", append(seal.MarshalSecret(1, make([]byte, 32)), seal.MarshalSecret(2, make([]byte, 32))...), 2, true},
		{"out of order", append(seal.MarshalSecret(2, make([]byte, 32)), seal.MarshalSecret(1, make([]byte, 32))...), 0, false},
	} {
		v, _, err := seal.ParseSecret(tc.blob)
		if (err == nil) != tc.ok || v != tc.v {
			t.Errorf("%s: version %d, %v", tc.name, v, err)
		}
	}
}

// FuzzVersionsOpen: any bytes given as a sealed blob (read from a data
// directory the host controls) fail cleanly or open to what was sealed.
func FuzzVersionsOpen(f *testing.F) {
	vs := seal.NewVersions()
	b1, _ := vs.Seal([]byte("one"), nil)
	blob, prev, _ := vs.Next()
	vs.AddPrevious(2, prev)
	vs.Install(blob)
	b2, _ := vs.Seal([]byte("two"), nil)
	f.Add(b1)
	f.Add(b2)
	f.Add([]byte{0xf5, 't', 'k', 'v', 0xff, 0xff, 0xff, 0xff, 1, 2, 3})
	f.Fuzz(func(t *testing.T, b []byte) {
		pt, err := vs.Open(b, nil)
		if err == nil && string(pt) != "one" && string(pt) != "two" {
			t.Fatalf("opened to %q", pt)
		}
		seal.ParseSecret(b)
	})
}
