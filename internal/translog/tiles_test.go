package translog_test

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/tkms-dev/tkms/internal/ledger"
	"github.com/tkms-dev/tkms/internal/translog"
	"golang.org/x/mod/sumdb/tlog"
)

func tile(l int, n int64, w int) tlog.Tile {
	return tlog.Tile{H: translog.TileHeight, L: l, N: n, W: w}
}

// tilePaths are C2SP tlog-tiles paths and their tiles.
var tilePaths = []struct {
	path string
	tile tlog.Tile
}{
	{"tile/0/000", tile(0, 0, 256)},
	{"tile/0/000.p/1", tile(0, 0, 1)},
	{"tile/0/000.p/255", tile(0, 0, 255)},
	{"tile/0/001", tile(0, 1, 256)},
	{"tile/0/999.p/7", tile(0, 999, 7)},
	{"tile/0/x001/000", tile(0, 1000, 256)},
	{"tile/1/x001/x234/067", tile(1, 1234067, 256)},
	{"tile/1/x001/x234/067.p/8", tile(1, 1234067, 8)},
	{"tile/2/000.p/3", tile(2, 0, 3)},
	{"tile/7/000.p/1", tile(7, 0, 1)},
	{"tile/entries/000", tile(-1, 0, 256)},
	{"tile/entries/000.p/1", tile(-1, 0, 1)},
	{"tile/entries/x123/x456/789.p/255", tile(-1, 123456789, 255)},
	{"tile/0/x009/x223/x372/x036/x854/x775/807", tile(0, math.MaxInt64, 256)},
	{"tile/entries/x009/x223/x372/x036/x854/x775/807.p/2", tile(-1, math.MaxInt64, 2)},
}

func TestTilePath(t *testing.T) {
	for _, tt := range tilePaths {
		t.Run(tt.path, func(t *testing.T) {
			if got := translog.TilePath(tt.tile); got != tt.path {
				t.Errorf("TilePath(%+v) = %q, want %q", tt.tile, got, tt.path)
			}
			got, err := translog.ParseTilePath(tt.path)
			if err != nil || got != tt.tile {
				t.Errorf("ParseTilePath(%q) = %+v, %v, want %+v", tt.path, got, err, tt.tile)
			}
		})
	}
}

func TestTilePathRoundTrip(t *testing.T) {
	for l := -1; l <= 7; l++ {
		for _, n := range []int64{0, 1, 9, 99, 999, 1000, 1001, 999999, 1000000, 1 << 40, math.MaxInt64} {
			for _, w := range []int{1, 2, 128, 255, 256} {
				tl := tile(l, n, w)
				p := translog.TilePath(tl)
				got, err := translog.ParseTilePath(p)
				if err != nil || got != tl {
					t.Errorf("ParseTilePath(TilePath(%+v) = %q) = %+v, %v", tl, p, got, err)
				}
			}
		}
	}
}

// badTilePaths are malformed or non-canonical spellings: each tile has
// exactly one path.
var badTilePaths = []string{
	"",
	"tile",
	"tile/",
	"tile/0",
	"tile/0/",
	"tile/0/0",        // N in 3 digits
	"tile/0/00",       // N in 3 digits
	"tile/0/0000",     // N in 3 digits
	"tile/0/1000",     // 3 digits per element
	"tile/0/x000/001", // leading zero group
	"tile/0/x001",     // x on the last element
	"tile/0/001/",
	"tile/0/00a",
	"tile/0/+01",
	"tile/0/-01",
	"tile/0/ 01",
	"tile/0/000.p/256", // a full tile has no .p
	"tile/0/000.p/257",
	"tile/0/000.p/0",
	"tile/0/000.p/-1",
	"tile/0/000.p/01",
	"tile/0/000.p/+1",
	"tile/0/000.p/",
	"tile/0/000.p",
	"tile/0/000.p/1/2",
	"tile/0/000.P/1",
	"tile/0/000.p.p/1",
	"tile/00/000", // L canonical
	"tile/+0/000",
	"tile/-1/000", // entries are spelt "entries"
	"tile/data/000",
	"tile/data/000.p/1",
	"tile/8/0/000", // x/mod sumdb spelling with the height
	"tile/8/data/000",
	"tile/entries",
	"tile/entries/",
	"tile/entries/0",
	"tile/entries/000.p/256",
	"tile/entries/entries/000",
	"tile/entries/data/000",
	"tile/entries/0/000",
	"/tile/0/000",
	"./tile/0/000",
	"tile//0/000",
	"tile/0//000",
	"tiles/0/000",
	"TILE/0/000",
	"log/tile/0/000",
	"tile/99999999999999999999/000",
	"tile/0/x999/x999/x999/x999/x999/x999/x999/999", // overflows int64
	"tile/0/x010/x000/x000/x000/x000/x000/x000/000", // overflows int64
	"tile/0/000\x00",
	"tile/0/000?x",
	"tile/0/%30%30%30",
}

func TestParseTilePathRejects(t *testing.T) {
	for _, p := range badTilePaths {
		if tl, err := translog.ParseTilePath(p); !errors.Is(err, translog.ErrBadPath) {
			t.Errorf("ParseTilePath(%q) = %+v, %v, want ErrBadPath", p, tl, err)
		}
	}
}

func TestTileInTree(t *testing.T) {
	const l1 = 1 << 16 // leaves under one level-1 hash tile entry
	for _, tt := range []struct {
		tile tlog.Tile
		size int64
		want bool
	}{
		// Size 0: nothing.
		{tile(0, 0, 1), 0, false},
		{tile(-1, 0, 1), 0, false},
		{tile(1, 0, 1), 0, false},
		// Partial tiles up to the size, no further.
		{tile(0, 0, 1), 1, true},
		{tile(0, 0, 2), 1, false},
		{tile(-1, 0, 1), 1, true},
		{tile(-1, 0, 2), 1, false},
		{tile(0, 0, 255), 255, true},
		{tile(0, 0, 256), 255, false},
		// Exact multiples of 256.
		{tile(0, 0, 256), 256, true},
		{tile(-1, 0, 256), 256, true},
		{tile(0, 0, 7), 256, true}, // a narrower view of a full tile
		{tile(0, 1, 1), 256, false},
		{tile(-1, 1, 1), 256, false},
		{tile(0, 1, 1), 257, true},
		{tile(0, 1, 2), 257, false},
		{tile(0, 1, 256), 512, true},
		{tile(0, 2, 1), 512, false},
		{tile(0, 255, 256), l1, true},
		{tile(0, 256, 1), l1, false},
		// Level 1: hash i of level 8 exists once (i+1)<<8 leaves do.
		{tile(1, 0, 1), 256, true},
		{tile(1, 0, 1), 511, true},
		{tile(1, 0, 2), 511, false},
		{tile(1, 0, 2), 512, true},
		{tile(1, 0, 256), l1 - 1, false},
		{tile(1, 0, 256), l1, true},
		{tile(1, 1, 1), l1, false},
		{tile(1, 1, 1), l1 + 256, true},
		{tile(2, 0, 1), l1 - 1, false},
		{tile(2, 0, 1), l1, true},
		{tile(2, 0, 2), 2 * l1, true},
		{tile(7, 0, 1), 1 << 56, true},
		{tile(7, 0, 1), 1<<56 - 1, false},
		// Huge N and sizes, without overflow.
		{tile(0, math.MaxInt64, 256), math.MaxInt64, false},
		{tile(0, math.MaxInt64/256, 256), math.MaxInt64, false},
		{tile(0, math.MaxInt64/256, 255), math.MaxInt64, true},
		{tile(0, math.MaxInt64/256-1, 256), math.MaxInt64, true},
		{tile(-1, math.MaxInt64/256, 256), math.MaxInt64, false},
		{tile(-1, 1<<54-1, 256), 1 << 62, true},
		{tile(-1, 1<<54, 1), 1 << 62, false},
		{tile(1, math.MaxInt64/256, 1), math.MaxInt64, false},
		{tile(1, 1<<46-1, 256), 1 << 62, true},
		{tile(1, 1<<46, 1), 1 << 62, false},
		// Not tiles of this log.
		{tile(0, -1, 1), 1000, false},
		{tile(0, math.MinInt64, 1), 1000, false},
		{tile(0, 0, 0), 1000, false},
		{tile(0, 0, -1), 1000, false},
		{tile(0, 0, 257), 1000, false},
		{tile(-2, 0, 1), 1000, false},
		{tile(8, 0, 1), math.MaxInt64, false},
		{tile(64, 0, 1), math.MaxInt64, false},
		{tlog.Tile{H: 4, L: 0, N: 0, W: 16}, 1000, false},
		{tlog.Tile{H: 0, L: 0, N: 0, W: 1}, 1000, false},
		// Negative sizes hold nothing.
		{tile(0, 0, 1), -1, false},
		{tile(0, 0, 1), math.MinInt64, false},
	} {
		if got := translog.TileInTree(tt.tile, tt.size); got != tt.want {
			t.Errorf("TileInTree(%+v, %d) = %v, want %v", tt.tile, tt.size, got, tt.want)
		}
	}
}

// TestTileInTreeNewTiles checks TileInTree against tlog.NewTiles: every
// tile a tree of size n publishes is in it, and the next wider one is not.
func TestTileInTreeNewTiles(t *testing.T) {
	for _, n := range []int64{1, 2, 255, 256, 257, 511, 512, 65535, 65536, 65537, 1<<20 + 5, 1 << 40, 1<<62 - 1, 1 << 62} {
		// All tiles of small trees; the right edge of big ones.
		old := int64(0)
		if n > 1<<20 {
			old = n - 1
		}
		for _, tl := range tlog.NewTiles(translog.TileHeight, old, n) {
			if !translog.TileInTree(tl, n) {
				t.Errorf("size %d: tile %v not in tree", n, tl.Path())
			}
			if tl.W < translog.TileWidth {
				w := tl
				w.W++
				if translog.TileInTree(w, n) {
					t.Errorf("size %d: tile %v in tree", n, w.Path())
				}
			}
			if tl.L == 0 {
				e := tl
				e.L = -1
				if !translog.TileInTree(e, n) {
					t.Errorf("size %d: entries tile %v not in tree", n, e.Path())
				}
			}
		}
	}
}

// tileReader serves tiles read by translog.ReadTile, via their paths,
// to tlog.TileHashReader, which checks them against the tree hash.
type tileReader struct {
	size   int64
	log    *memLog
	served int
}

func (r *tileReader) Height() int { return translog.TileHeight }

func (r *tileReader) ReadTiles(tiles []tlog.Tile) ([][]byte, error) {
	out := make([][]byte, len(tiles))
	for i, tl := range tiles {
		pt, err := translog.ParseTilePath(translog.TilePath(tl))
		if err != nil {
			return nil, err
		}
		if out[i], err = translog.ReadTile(pt, r.size, r.log, r.log); err != nil {
			return nil, err
		}
		r.served++
	}
	return out, nil
}

func (r *tileReader) SaveTiles([]tlog.Tile, [][]byte) {}

func TestReadTileHashes(t *testing.T) {
	m := rawLog(1<<16 + 300)
	for _, size := range []int64{1, 2, 3, 255, 256, 257, 511, 512, 1000, 1 << 16, 1<<16 + 1, 1<<16 + 256, 1<<16 + 300} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			root := m.root(t, size)
			tr := &tileReader{size: size, log: m}
			hr := tlog.TileHashReader(tlog.Tree{N: size, Hash: root}, tr)
			// The tree hash over tiles is the root: TileHashReader
			// checks every tile it loads against it.
			if got, err := tlog.TreeHash(size, hr); err != nil || got != root {
				t.Fatalf("TreeHash over tiles = %v, %v, want %v", got, err, root)
			}
			// Proofs over tiles are those over the store.
			for _, i := range []int64{0, size / 2, size - 1} {
				p, err := tlog.ProveRecord(size, i, hr)
				if err != nil {
					t.Fatal(err)
				}
				if err := tlog.CheckRecord(p, size, root, i, tlog.RecordHash(m.leaves[i])); err != nil {
					t.Errorf("leaf %d: %v", i, err)
				}
			}
			if tr.served == 0 {
				t.Fatal("no tile read")
			}
		})
	}
}

// TestReadTileHashFromTile checks every hash of every tile a tree
// publishes against the store, with tlog.HashFromTile.
func TestReadTileHashFromTile(t *testing.T) {
	m := rawLog(1<<16 + 513)
	size := m.size()
	// Level 0: 258 full tiles and one of width 1; level 1: one full
	// tile and one of width 2; level 2: one of width 1.
	tiles := tlog.NewTiles(translog.TileHeight, 0, size)
	if len(tiles) != 262 {
		t.Fatalf("%d tiles, want 262", len(tiles))
	}
	for _, tl := range tiles {
		data, err := translog.ReadTile(tl, size, m, m)
		if err != nil {
			t.Fatalf("%v: %v", tl.Path(), err)
		}
		if len(data) != tl.W*tlog.HashSize {
			t.Fatalf("%v: %d bytes", tl.Path(), len(data))
		}
		for j := range int64(tl.W) {
			n := tl.N*translog.TileWidth + j
			idx := tlog.StoredHashIndex(tl.L*translog.TileHeight, n)
			h, err := tlog.HashFromTile(tl, data, idx)
			if err != nil || h != m.hashes[idx] {
				t.Fatalf("%v: hash %d = %v, %v, want %v", tl.Path(), idx, h, err, m.hashes[idx])
			}
		}
	}
}

func TestReadTileEntries(t *testing.T) {
	m := ledgerLog(600)
	for _, tt := range []struct {
		tile tlog.Tile
		size int64
	}{
		{tile(-1, 0, 1), 1},
		{tile(-1, 0, 5), 5},
		{tile(-1, 0, 5), 600},
		{tile(-1, 0, 256), 256},
		{tile(-1, 1, 256), 600},
		{tile(-1, 2, 88), 600},
	} {
		data, err := translog.ReadTile(tt.tile, tt.size, m, m)
		if err != nil {
			t.Fatalf("%v in %d: %v", tt.tile.Path(), tt.size, err)
		}
		got, err := translog.SplitBundle(data)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != tt.tile.W {
			t.Fatalf("%v: %d entries", tt.tile.Path(), len(got))
		}
		for j, leaf := range got {
			i := tt.tile.N*translog.TileWidth + int64(j)
			if !bytes.Equal(leaf, m.leaves[i]) {
				t.Fatalf("%v: entry %d differs from leaf %d", tt.tile.Path(), j, i)
			}
			l, err := ledger.UnmarshalLeaf(leaf)
			if err != nil || l.Seq != uint64(i)+1 {
				t.Fatalf("%v: entry %d: %+v, %v", tt.tile.Path(), j, l, err)
			}
		}
	}
}

func TestReadTileNotFound(t *testing.T) {
	m := ledgerLog(300)
	for _, tt := range []struct {
		tile tlog.Tile
		size int64
	}{
		{tile(0, 0, 1), 0},
		{tile(-1, 0, 1), 0},
		{tile(-1, 1, 45), 300},
		{tile(0, 1, 45), 300},
		{tile(-1, 0, 256), 255},
		{tile(1, 0, 2), 300},
		{tile(0, math.MaxInt64, 256), 300},
		{tile(9, 0, 1), 300},
		{tlog.Tile{H: 4, L: 0, N: 0, W: 16}, 300},
	} {
		if _, err := translog.ReadTile(tt.tile, tt.size, m, m); !errors.Is(err, translog.ErrNotFound) {
			t.Errorf("ReadTile(%+v, %d) = %v, want ErrNotFound", tt.tile, tt.size, err)
		}
	}
}

// shortReader breaks the LeafReader contract by returning one leaf less.
type shortReader struct{ *memLog }

func (r shortReader) ReadLeaves(start, n int64) ([][]byte, error) {
	ls, err := r.memLog.ReadLeaves(start, n)
	return ls[:len(ls)-1], err
}

type failReader struct{}

var errRead = errors.New("read failed")

func (failReader) ReadLeaves(start, n int64) ([][]byte, error) { return nil, errRead }
func (failReader) ReadHashes([]int64) ([]tlog.Hash, error)     { return nil, errRead }

func TestReadTileErrors(t *testing.T) {
	m := ledgerLog(10)
	if _, err := translog.ReadTile(tile(-1, 0, 10), 10, failReader{}, failReader{}); !errors.Is(err, errRead) {
		t.Errorf("entries: %v, want the reader's error", err)
	}
	if _, err := translog.ReadTile(tile(0, 0, 10), 10, failReader{}, failReader{}); !errors.Is(err, errRead) {
		t.Errorf("hashes: %v, want the reader's error", err)
	}
	if b, err := translog.ReadTile(tile(-1, 0, 10), 10, m, shortReader{m}); err == nil {
		t.Errorf("short read served as a tile of %d bytes", len(b))
	}
	big := &memLog{}
	big.add(make([]byte, ledger.MaxLeafSize+1))
	if _, err := translog.ReadTile(tile(-1, 0, 1), 1, big, big); err == nil {
		t.Error("leaf too long for a bundle was served")
	}
}

func TestBundleRoundTrip(t *testing.T) {
	for _, leaves := range [][][]byte{
		{{}},
		{[]byte("a")},
		{{}, {}, {}},
		{[]byte("one"), {}, bytes.Repeat([]byte{0xff}, 300), []byte("four")},
		{make([]byte, ledger.MaxLeafSize)},
		ledgerLog(256).leaves,
	} {
		var b []byte
		for _, l := range leaves {
			var err error
			if b, err = translog.AppendBundleEntry(b, l); err != nil {
				t.Fatal(err)
			}
		}
		got, err := translog.SplitBundle(b)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(leaves) {
			t.Fatalf("%d entries, want %d", len(got), len(leaves))
		}
		for i := range got {
			if !bytes.Equal(got[i], leaves[i]) {
				t.Fatalf("entry %d differs", i)
			}
		}
	}
}

func TestBundleFormat(t *testing.T) {
	b, _ := translog.AppendBundleEntry([]byte("x"), []byte("abc"))
	b, _ = translog.AppendBundleEntry(b, nil)
	if want := "x\x00\x03abc\x00\x00"; string(b) != want {
		t.Errorf("bundle %q, want %q", b, want)
	}
	if _, err := translog.AppendBundleEntry(nil, make([]byte, ledger.MaxLeafSize+1)); err == nil {
		t.Error("leaf of 65536 bytes appended")
	}
}

func TestSplitBundleTruncated(t *testing.T) {
	var b []byte
	var ends []int // offsets at which an entry ends
	for _, l := range [][]byte{[]byte("first"), {}, []byte("third entry")} {
		b, _ = translog.AppendBundleEntry(b, l)
		ends = append(ends, len(b))
	}
	for n := range len(b) {
		got, err := translog.SplitBundle(b[:n])
		complete := n == 0
		k := 0
		for i, e := range ends {
			if e == n {
				complete, k = true, i+1
			}
		}
		switch {
		case complete && (err != nil || len(got) != k):
			t.Errorf("prefix of %d bytes: %d entries, %v, want %d", n, len(got), err, k)
		case !complete && err == nil:
			t.Errorf("prefix of %d bytes split into %d entries", n, len(got))
		}
	}
}

func TestSplitBundleLimits(t *testing.T) {
	var b []byte
	for range translog.TileWidth {
		b, _ = translog.AppendBundleEntry(b, []byte("e"))
	}
	if got, err := translog.SplitBundle(b); err != nil || len(got) != translog.TileWidth {
		t.Fatalf("full bundle: %d entries, %v", len(got), err)
	}
	b, _ = translog.AppendBundleEntry(b, []byte("e"))
	if got, err := translog.SplitBundle(b); err == nil {
		t.Errorf("bundle of %d entries accepted", len(got))
	}
	// Entries alias the input but cannot grow into their neighbours.
	b, _ = translog.AppendBundleEntry(nil, []byte("ab"))
	b, _ = translog.AppendBundleEntry(b, []byte("cd"))
	got, _ := translog.SplitBundle(b)
	_ = append(got[0], 'X')
	if string(got[1]) != "cd" {
		t.Errorf("appending to entry 0 changed entry 1 to %q", got[1])
	}
}

func FuzzParseTilePath(f *testing.F) {
	for _, tt := range tilePaths {
		f.Add(tt.path)
	}
	for _, p := range badTilePaths {
		f.Add(p)
	}
	m := ledgerLog(300)
	f.Fuzz(func(t *testing.T, path string) {
		tl, err := translog.ParseTilePath(path)
		if err != nil {
			if !errors.Is(err, translog.ErrBadPath) {
				t.Fatalf("ParseTilePath(%q): %v, not ErrBadPath", path, err)
			}
			return
		}
		if got := translog.TilePath(tl); got != path {
			t.Fatalf("TilePath(ParseTilePath(%q)) = %q", path, got)
		}
		if tl.H != translog.TileHeight || !strings.HasPrefix(path, "tile/") {
			t.Fatalf("ParseTilePath(%q) = %+v", path, tl)
		}
		for _, size := range []int64{0, 1, 255, 256, 257, 300} {
			data, err := translog.ReadTile(tl, size, m, m)
			in := translog.TileInTree(tl, size)
			switch {
			case !in && !errors.Is(err, translog.ErrNotFound):
				t.Fatalf("ReadTile(%q, %d) = %v, want ErrNotFound", path, size, err)
			case in && err != nil:
				t.Fatalf("ReadTile(%q, %d) = %v", path, size, err)
			case in && tl.L >= 0 && len(data) != tl.W*tlog.HashSize:
				t.Fatalf("ReadTile(%q, %d): %d bytes", path, size, len(data))
			case in && tl.L == -1:
				if es, err := translog.SplitBundle(data); err != nil || len(es) != tl.W {
					t.Fatalf("ReadTile(%q, %d): %d entries, %v", path, size, len(es), err)
				}
			}
		}
	})
}

func FuzzSplitBundle(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{0})
	f.Add([]byte{0, 0})
	f.Add([]byte{0, 1, 'a', 0})
	f.Add([]byte{0xff, 0xff, 'a'})
	b, _ := translog.ReadTile(tile(-1, 0, 3), 3, ledgerLog(3), ledgerLog(3))
	f.Add(b)
	f.Fuzz(func(t *testing.T, data []byte) {
		es, err := translog.SplitBundle(data)
		if err != nil {
			return
		}
		if len(es) > translog.TileWidth {
			t.Fatalf("%d entries", len(es))
		}
		var again []byte
		for _, e := range es {
			if cap(e) != len(e) {
				t.Fatalf("entry of length %d has capacity %d", len(e), cap(e))
			}
			if again, err = translog.AppendBundleEntry(again, e); err != nil {
				t.Fatal(err)
			}
		}
		if !bytes.Equal(again, data) {
			t.Fatalf("re-encoding gives %x, want %x", again, data)
		}
	})
}
