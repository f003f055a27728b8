package translog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"github.com/tkms-dev/tkms/internal/ledger"
	"golang.org/x/mod/sumdb/tlog"
)

// A LeafReader returns the leaves (ledger.LeafBytes) with indexes start to
// start+n-1, all of which exist.
type LeafReader interface {
	ReadLeaves(start, n int64) ([][]byte, error)
}

// ErrNotFound is returned for a tile or leaf beyond the tree.
var ErrNotFound = errors.New("translog: beyond the tree")

// ErrBadPath is returned for a malformed tile path.
var ErrBadPath = errors.New("translog: malformed tile path")

// TilePath returns the C2SP tlog-tiles path of t, relative to the log's
// prefix: "tile/<L>/<N>[.p/<W>]", or "tile/entries/<N>[.p/<W>]" for the
// entry bundle (t.L == -1). N is written in 3-digit groups, all but the
// last prefixed by "x".
func TilePath(t tlog.Tile) string {
	// x/mod's sumdb paths are "tile/<H>/<L>/<N>" with L "data" for
	// record tiles; C2SP drops H (always 8) and names data "entries".
	p := strings.TrimPrefix(t.Path(), fmt.Sprintf("tile/%d/", TileHeight))
	if t.L == -1 {
		p = "entries" + strings.TrimPrefix(p, "data")
	}
	return "tile/" + p
}

// ParseTilePath parses a C2SP tlog-tiles path made by TilePath.
func ParseTilePath(path string) (tlog.Tile, error) {
	rest, ok := strings.CutPrefix(path, "tile/")
	if !ok || strings.HasPrefix(rest, "data/") {
		return tlog.Tile{}, fmt.Errorf("%w %q", ErrBadPath, path)
	}
	if r, ok := strings.CutPrefix(rest, "entries/"); ok {
		rest = "data/" + r
	}
	t, err := tlog.ParseTilePath(fmt.Sprintf("tile/%d/%s", TileHeight, rest))
	if err != nil {
		return tlog.Tile{}, fmt.Errorf("%w %q", ErrBadPath, path)
	}
	// Only the canonical spelling is accepted, so that one tile has one
	// path (and one cache entry).
	if TilePath(t) != path {
		return tlog.Tile{}, fmt.Errorf("%w %q (not canonical)", ErrBadPath, path)
	}
	return t, nil
}

// TileInTree reports whether every hash or entry of t exists in a tree of
// the given size.
func TileInTree(t tlog.Tile, size int64) bool {
	if t.H != TileHeight || t.N < 0 || t.W < 1 || t.W > TileWidth || t.L < -1 || t.L > 7 {
		return false
	}
	level := 0
	if t.L > 0 {
		level = t.L * TileHeight
	}
	// Entries or level-`level` hashes N*256 .. N*256+W-1 exist when
	// (N*256+W) << level <= size; check without overflowing: once
	// N <= units/256, units-N*256 is in range and non-negative.
	units := size >> level
	if t.N > units/TileWidth {
		return false
	}
	return int64(t.W) <= units-t.N*TileWidth
}

// ReadTile returns the contents of tile t of a tree of the given size:
// W hashes of 32 bytes for a hash tile, an entry bundle for an entries
// tile. It returns ErrNotFound if the tile is not (yet) in the tree.
func ReadTile(t tlog.Tile, size int64, hashes tlog.HashReader, leaves LeafReader) ([]byte, error) {
	if !TileInTree(t, size) {
		return nil, ErrNotFound
	}
	if t.L >= 0 {
		return tlog.ReadTileData(t, hashes)
	}
	ls, err := leaves.ReadLeaves(t.N*TileWidth, int64(t.W))
	if err != nil {
		return nil, err
	}
	// A tile is served as immutable: never let a short read become one.
	if len(ls) != t.W {
		return nil, fmt.Errorf("translog: read %d leaves from %d, want %d", len(ls), t.N*TileWidth, t.W)
	}
	var n int
	for _, l := range ls {
		n += 2 + len(l)
	}
	b := make([]byte, 0, n)
	for _, l := range ls {
		if b, err = AppendBundleEntry(b, l); err != nil {
			return nil, err
		}
	}
	return b, nil
}

// AppendBundleEntry appends one entry to a C2SP entry bundle: its 16-bit
// big-endian length, then its bytes.
func AppendBundleEntry(b, leaf []byte) ([]byte, error) {
	if len(leaf) > ledger.MaxLeafSize {
		return b, fmt.Errorf("translog: leaf of %d bytes does not fit an entry bundle", len(leaf))
	}
	b = binary.BigEndian.AppendUint16(b, uint16(len(leaf)))
	return append(b, leaf...), nil
}

// SplitBundle splits an entry bundle into its entries. The entries alias
// data.
func SplitBundle(data []byte) ([][]byte, error) {
	var out [][]byte
	for len(data) > 0 {
		if len(data) < 2 {
			return nil, fmt.Errorf("translog: entry bundle: truncated length after %d entries", len(out))
		}
		n := int(binary.BigEndian.Uint16(data))
		if len(data)-2 < n {
			return nil, fmt.Errorf("translog: entry bundle: entry %d truncated (%d of %d bytes)", len(out), len(data)-2, n)
		}
		out = append(out, data[2:2+n:2+n])
		data = data[2+n:]
		if len(out) > TileWidth {
			return nil, fmt.Errorf("translog: entry bundle holds more than %d entries", TileWidth)
		}
	}
	return out, nil
}
