// Package translog is the transparency log over the tkms ledger: an RFC 6962
// Merkle tree whose leaf i is the canonical public encoding
// (ledger.LeafBytes) of the entry with sequence number i+1, signed
// checkpoints, tiles, proofs and receipts.
//
// The formats are those of generic transparency tooling:
//
//   - checkpoints follow C2SP tlog-checkpoint
//     (https://c2sp.org/tlog-checkpoint): a signed note
//     (golang.org/x/mod/sumdb/note, Ed25519) whose text is the origin line,
//     the tree size and the base64 root hash;
//   - tiles follow C2SP tlog-tiles (https://c2sp.org/tlog-tiles): hash
//     tiles of height 8 at tile/<L>/<N>[.p/<W>] and entry bundles at
//     tile/entries/<N>[.p/<W>], each entry prefixed by its 16-bit length;
//   - proofs are RFC 6962 inclusion and consistency proofs, computed and
//     checked by golang.org/x/mod/sumdb/tlog.
//
// The package does no I/O of its own: hashes come through a
// tlog.HashReader and leaves through a LeafReader, so the same code serves
// a live store, an offline mirror and tests. docs/transparency.md
// describes what is logged and how to verify it by hand.
package translog

import (
	"crypto/rand"
	"errors"
	"fmt"
	"strings"

	"github.com/transparency-dev/formats/log"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// TileHeight is the height of every tile: 256 hashes or entries per full
// tile, as C2SP tlog-tiles requires.
const TileHeight = 8

// TileWidth is the number of hashes or entries in a full tile.
const TileWidth = 1 << TileHeight

// A Checkpoint is a tree head: the log named Origin had Size leaves and
// the Merkle tree hash Root.
type Checkpoint struct {
	Origin string
	Size   int64
	Root   tlog.Hash
}

// Signed is a checkpoint with its signed note text.
type Signed struct {
	Checkpoint
	Note []byte // the C2SP checkpoint as a signed note, ready to serve
}

// Errors.
var (
	ErrBadCheckpoint = errors.New("translog: checkpoint does not verify")
	ErrOrigin        = errors.New("translog: invalid log origin")
)

// ValidOrigin reports whether origin can name a log and its key: a
// non-empty note key name (UTF-8, no spaces, no '+').
func ValidOrigin(origin string) error {
	if origin == "" || strings.ContainsAny(origin, "+ \t\r\n\u00a0\u2028\u2029") || len(origin) > 200 {
		return fmt.Errorf("%w %q: want a non-empty name of at most 200 bytes without spaces or '+', such as kms.example.org/depa", ErrOrigin, origin)
	}
	return nil
}

// GenerateKey returns a new Ed25519 note signer key and its verifier key,
// both named origin, in the encodings of golang.org/x/mod/sumdb/note.
func GenerateKey(origin string) (signerKey, verifierKey string, err error) {
	if err := ValidOrigin(origin); err != nil {
		return "", "", err
	}
	return note.GenerateKey(rand.Reader, origin)
}

// Sign returns c as a signed C2SP checkpoint. The signer's name must be
// the checkpoint's origin. Ed25519 signatures are deterministic, so one
// tree head always gives the same checkpoint text. Cosigners add their
// signatures after the signer's: the log keys of the same origin replaced
// by a recovery (docs/recovery.md), so that a verifier holding any of them
// accepts the checkpoint.
func Sign(c Checkpoint, signer note.Signer, cosigners ...note.Signer) (Signed, error) {
	if signer.Name() != c.Origin {
		return Signed{}, fmt.Errorf("translog: signer %q cannot sign for origin %q", signer.Name(), c.Origin)
	}
	text := log.Checkpoint{Origin: c.Origin, Size: uint64(c.Size), Hash: c.Root[:]}.Marshal()
	msg, err := note.Sign(&note.Note{Text: string(text)}, append([]note.Signer{signer}, cosigners...)...)
	if err != nil {
		return Signed{}, fmt.Errorf("translog: sign checkpoint: %w", err)
	}
	return Signed{Checkpoint: c, Note: msg}, nil
}

// Verify checks a signed checkpoint against the log's verifier key: the
// signature, and that the origin line names the key's log. It ignores
// signatures by other keys (witnesses, say).
func Verify(msg []byte, verifier note.Verifier) (Signed, error) {
	cp, _, _, err := log.ParseCheckpoint(msg, verifier.Name(), verifier)
	if err != nil {
		return Signed{}, fmt.Errorf("%w: %w", ErrBadCheckpoint, err)
	}
	if len(cp.Hash) != tlog.HashSize || cp.Size > 1<<62 {
		return Signed{}, fmt.Errorf("%w: root hash of %d bytes or size %d", ErrBadCheckpoint, len(cp.Hash), cp.Size)
	}
	s := Signed{Checkpoint: Checkpoint{Origin: cp.Origin, Size: int64(cp.Size)}, Note: msg}
	copy(s.Root[:], cp.Hash)
	return s, nil
}

// NewVerifier parses a verifier key as served at /v1/log/key.
func NewVerifier(vkey string) (note.Verifier, error) {
	v, err := note.NewVerifier(strings.TrimSpace(vkey))
	if err != nil {
		return nil, fmt.Errorf("translog: log key: %w", err)
	}
	return v, nil
}
