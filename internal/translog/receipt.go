package translog

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/tkms-dev/tkms/internal/ledger"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// A Receipt proves that a ledger entry is in the log: the entry's leaf, a
// signed checkpoint and the RFC 6962 inclusion proof of the leaf in that
// checkpoint's tree. Anyone holding the log's verifier key can check it
// offline (Verify) and read what the entry says (its body is public).
//
// In JSON, hashes and the leaf are standard base64 and the checkpoint is
// the signed note text:
//
//	{"index":41,"leaf":"AQAA…","leaf_hash":"q8V…","checkpoint":"kms.example/depa\n42\n…","inclusion_proof":["…","…"]}
type Receipt struct {
	Index      int64       `json:"index"`     // leaf index: the entry's seq - 1
	Leaf       []byte      `json:"leaf"`      // ledger.LeafBytes of the entry
	LeafHash   tlog.Hash   `json:"leaf_hash"` // RFC 6962 SHA-256(0x00 || leaf)
	Checkpoint string      `json:"checkpoint"`
	Proof      []tlog.Hash `json:"inclusion_proof"`
}

// NewReceipt builds the receipt of leaf index in the tree of cp. The
// leaf must be the entry's ledger.LeafBytes.
func NewReceipt(index int64, leaf []byte, cp Signed, hashes tlog.HashReader) (*Receipt, error) {
	if index < 0 || index >= cp.Size {
		return nil, fmt.Errorf("%w: leaf %d, tree size %d", ErrNotFound, index, cp.Size)
	}
	proof, err := tlog.ProveRecord(cp.Size, index, hashes)
	if err != nil {
		return nil, fmt.Errorf("translog: inclusion proof of leaf %d in %d: %w", index, cp.Size, err)
	}
	return &Receipt{Index: index, Leaf: leaf, LeafHash: tlog.RecordHash(leaf), Checkpoint: string(cp.Note), Proof: proof}, nil
}

// ErrBadReceipt is returned by Verify.
var ErrBadReceipt = errors.New("translog: receipt does not verify")

// Verify checks the receipt against the log's verifier key: the checkpoint
// signature, the leaf hash, the inclusion proof, and that the leaf is the
// entry at the receipt's index. It returns the decoded leaf and the
// checkpoint.
func (r *Receipt) Verify(verifier note.Verifier) (*ledger.Leaf, Signed, error) {
	cp, err := Verify([]byte(r.Checkpoint), verifier)
	if err != nil {
		return nil, Signed{}, fmt.Errorf("%w: %w", ErrBadReceipt, err)
	}
	if h := tlog.RecordHash(r.Leaf); h != r.LeafHash {
		return nil, Signed{}, fmt.Errorf("%w: leaf hashes to %v, receipt says %v", ErrBadReceipt, h, r.LeafHash)
	}
	if r.Index < 0 || r.Index >= cp.Size {
		return nil, Signed{}, fmt.Errorf("%w: leaf %d is outside the checkpoint's tree of size %d", ErrBadReceipt, r.Index, cp.Size)
	}
	if err := tlog.CheckRecord(r.Proof, cp.Size, cp.Root, r.Index, r.LeafHash); err != nil {
		return nil, Signed{}, fmt.Errorf("%w: inclusion proof of leaf %d in tree %d: %w", ErrBadReceipt, r.Index, cp.Size, err)
	}
	leaf, err := ledger.UnmarshalLeaf(r.Leaf)
	if err != nil {
		return nil, Signed{}, fmt.Errorf("%w: %w", ErrBadReceipt, err)
	}
	if leaf.Seq != uint64(r.Index)+1 {
		return nil, Signed{}, fmt.Errorf("%w: leaf %d holds entry %d", ErrBadReceipt, r.Index, leaf.Seq)
	}
	return leaf, cp, nil
}

// Marshal returns the receipt's JSON.
func (r *Receipt) Marshal() []byte {
	b, _ := json.Marshal(r) // a Receipt always marshals
	return b
}

// ParseReceipt decodes a receipt's JSON (or a JSON string holding it, as
// the /app responses carry it). It does not verify it.
func ParseReceipt(b []byte) (*Receipt, error) {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return nil, fmt.Errorf("translog: receipt: %w", err)
		}
		b = []byte(s)
	}
	var r Receipt
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("translog: receipt: %w", err)
	}
	if len(r.Proof) > 64 {
		return nil, fmt.Errorf("translog: receipt: inclusion proof of %d hashes", len(r.Proof))
	}
	return &r, nil
}
