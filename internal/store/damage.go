package store

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"io"
	"os"

	"github.com/tkms-dev/tkms/internal/ledger"
)

// A damaged ledger file is refused with an error naming it (never a panic,
// never an empty ledger in its place), except for the one damage bbolt
// recovers from by design: one of its two meta pages failing its checksum,
// when it opens the file at the transaction the other records. That is
// reported (checkMeta) so that the operator can tell whether acknowledged
// entries went with it.

// bbolt's meta page (go.etcd.io/bbolt/internal/common: Page, Meta): a
// 16-byte page header, then magic, version, page size, flags (4 bytes
// each), the root bucket (16), the freelist and high water mark page ids
// and the transaction id (8 each), and an FNV-64a checksum of the fields
// before it, all in the machine's byte order (little-endian here).
const (
	boltMagic      = 0xED0CDAED
	metaOff        = 16
	metaPgidOff    = metaOff + 40
	metaTxidOff    = metaOff + 48
	metaSumOff     = metaOff + 56
	metaPageSizeAt = metaOff + 8
)

// metaState is what checkMeta found in the two meta pages.
type metaState struct {
	valid   [2]bool
	txid    [2]uint64 // as stored, trustworthy only where valid
	pages   [2]uint64 // the high water mark: pages in use, from 0
	page    int64     // page size
	size    int64     // file size
	checked bool      // the file was large enough to hold both pages
}

// readMeta reads the two meta pages of the bbolt file at path. A missing
// or short file (a new ledger) is not checked.
func readMeta(path string) metaState {
	var ms metaState
	f, err := os.Open(path)
	if err != nil {
		return ms
	}
	defer f.Close()
	page := os.Getpagesize()
	var first [4096]byte
	if _, err := io.ReadFull(f, first[:]); err != nil {
		return ms
	}
	if ok, _ := validMeta(first[:]); ok {
		page = int(binary.LittleEndian.Uint32(first[metaPageSizeAt:]))
	}
	buf := make([]byte, 2*page)
	if _, err := f.ReadAt(buf, 0); err != nil {
		return ms
	}
	fi, err := f.Stat()
	if err != nil {
		return ms
	}
	ms.checked, ms.page, ms.size = true, int64(page), fi.Size()
	for i := range 2 {
		p := buf[i*page : (i+1)*page]
		ms.valid[i], ms.txid[i] = validMeta(p)
		ms.pages[i] = binary.LittleEndian.Uint64(p[metaPgidOff:])
	}
	return ms
}

func validMeta(p []byte) (bool, uint64) {
	if len(p) < metaSumOff+8 {
		return false, 0
	}
	txid := binary.LittleEndian.Uint64(p[metaTxidOff:])
	if binary.LittleEndian.Uint32(p[metaOff:]) != boltMagic {
		return false, txid
	}
	h := fnv.New64a()
	h.Write(p[metaOff:metaSumOff])
	return h.Sum64() == binary.LittleEndian.Uint64(p[metaSumOff:]), txid
}

// short returns an error if the file ends before the pages that its
// newest valid meta page says are in use: it was cut short, and bbolt
// would read past its end.
func (ms metaState) short(path string) error {
	i := -1
	for j := range 2 {
		if ms.valid[j] && (i < 0 || ms.txid[j] > ms.txid[i]) {
			i = j
		}
	}
	if !ms.checked || i < 0 {
		return nil
	}
	if need := int64(ms.pages[i]) * ms.page; ms.size < need {
		return fmt.Errorf("store: %s: %w: the file is cut short: %d bytes, but its pages reach %d", path, ledger.ErrCorrupt, ms.size, need)
	}
	return nil
}

// damage describes a damaged meta page that bbolt opens past, or "".
func (ms metaState) damage(path string) string {
	if !ms.checked || ms.valid[0] == ms.valid[1] {
		return "" // both fine, or both bad (bbolt refuses the file)
	}
	bad := 0
	if ms.valid[0] {
		bad = 1
	}
	good := ms.txid[1-bad]
	switch ms.txid[bad] {
	case good - 1:
		return fmt.Sprintf("%s: meta page %d is damaged; it recorded the transaction before the last (%d), so nothing is lost; the next write replaces it", path, bad, good-1)
	case good + 1:
		return fmt.Sprintf("%s: meta page %d, which recorded the last transaction (%d), is damaged: the ledger opens at transaction %d; "+
			"unless tkms crashed while writing, the entries of the last commit are lost: check with tkms audit --state against an auditor's saved checkpoint", path, bad, good+1, good)
	}
	return fmt.Sprintf("%s: meta page %d is damaged and the ledger opens at transaction %d, which may not be the last: check with tkms audit --state against an auditor's saved checkpoint", path, bad, good)
}

// recoverCorrupt turns r, a recovered panic of bbolt reading a damaged
// file, into an ErrCorrupt error naming the file.
func recoverCorrupt(path string, err *error, r any) {
	if r != nil {
		*err = fmt.Errorf("store: %s: %w: the file is damaged (%v)", path, ledger.ErrCorrupt, r)
	}
}
