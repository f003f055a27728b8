package kms

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/tkms-dev/tkms/internal/ledger"
	"github.com/tkms-dev/tkms/internal/state"
	"github.com/tkms-dev/tkms/internal/store"
	"github.com/tkms-dev/tkms/internal/translog"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// The transparency log: the store keeps the Merkle tree of the ledger's
// leaves and hands the committer the tree head of every durable batch; the
// service holds the log's signing key (sealed in the log.key entry,
// generated at genesis) and signs each tree head the first time anyone
// needs its checkpoint: a receipt, a tile request, /log/checkpoint. The
// head is recorded before any append of its batch returns, so a writer
// that has appended an entry can answer with its receipt at once, without
// a 202 loop; and the signature (an Ed25519 signing, ~30 us) is made once
// per tree head, outside the committer, so it neither delays the group
// commit nor is repeated for the entries of one batch.

// A treeHead is a durable tree head and the origin of the log it belongs
// to ("" before the log key is in the state).
type treeHead struct {
	origin string
	size   int64
	root   tlog.Hash
}

// newLogKey generates the log's signing key and returns the log.key entry
// that records it. The signer is installed at once: the checkpoint of the
// batch that makes the entry durable is the first one signed.
func (s *Service) newLogKey(now time.Time) (store.Proposal, error) {
	origin := s.cfg.LogOrigin
	if origin == "" {
		var r [4]byte
		rand.Read(r[:])
		name := strings.Map(func(c rune) rune {
			if c == '+' || c == '/' || c <= ' ' || c == 0x7f {
				return '-'
			}
			return c
		}, s.cfg.ServiceName)
		if name == "" {
			name = "kms"
		}
		origin = "tkms/" + name + "/" + hex.EncodeToString(r[:])
	}
	skey, vkey, err := translog.GenerateKey(origin)
	if err != nil {
		return store.Proposal{}, fmt.Errorf("kms: log key: %w", err)
	}
	signer, err := note.NewSigner(skey)
	if err != nil {
		return store.Proposal{}, fmt.Errorf("kms: log key: %w", err)
	}
	body, _ := json.Marshal(state.LogKey{Origin: origin, VerifierKey: vkey})
	s.logMu.Lock()
	s.logSigner, s.logVKey = signer, vkey
	s.logMu.Unlock()
	return store.Proposal{Time: now, Type: ledger.TypeLogKey, Body: body, Secret: []byte(skey)}, nil
}

// loadLogKey unseals the log's signing key recorded in the ledger, if any,
// and signs the checkpoint of the ledger as it is.
func (s *Service) loadLogKey() error {
	var lk *state.LogKey
	var seq uint64
	var prev []state.PreviousLogKey
	s.Read(func(st *state.State) { lk, seq, prev = st.LogKey, st.LogKeySeq, st.PreviousLogKeys })
	if lk == nil {
		return nil // written by bootstrap
	}
	signer, err := s.unsealLogKey(seq, lk.VerifierKey)
	if err != nil {
		return err
	}
	// The keys before each recovery cosign the checkpoints: an auditor
	// who knew one follows the log across the recovery.
	var cos []note.Signer
	for _, p := range prev {
		c, err := s.unsealLogKey(p.Seq, p.VerifierKey)
		if err != nil {
			return err
		}
		cos = append(cos, c)
	}
	s.logMu.Lock()
	s.logSigner, s.logVKey, s.cosigners = signer, lk.VerifierKey, cos
	s.logMu.Unlock()
	size, root := s.store.TreeHead()
	s.setHead(lk, size, root)
	if len(s.Checkpoint().Note) == 0 {
		return errors.New("kms: cannot sign the log's checkpoint")
	}
	return nil
}

// unsealLogKey returns the log signing key sealed in entry seq, which must
// match verifier key vkey.
func (s *Service) unsealLogKey(seq uint64, vkey string) (note.Signer, error) {
	e, err := s.store.Get(seq)
	if err != nil {
		return nil, fmt.Errorf("kms: log key: %w", err)
	}
	skey, err := s.store.Unseal(e)
	if err != nil {
		return nil, fmt.Errorf("kms: the master key does not open the ledger's sealed entries (the log key at seq %d: %w): "+
			"it is not the master key this ledger was made with, or its file is damaged; start with that master key (restore it from a backup)", seq, err)
	}
	defer clear(skey)
	signer, err := note.NewSigner(string(skey))
	if err != nil {
		return nil, fmt.Errorf("kms: log key at seq %d: %w", seq, err)
	}
	v, err := note.NewVerifier(vkey)
	if err != nil || v.Name() != signer.Name() || v.KeyHash() != signer.KeyHash() {
		return nil, fmt.Errorf("kms: the log signing key at seq %d does not match its verifier key", seq)
	}
	return signer, nil
}

// setHead records the latest durable tree head.
func (s *Service) setHead(lk *state.LogKey, size int64, root tlog.Hash) {
	h := &treeHead{size: size, root: root}
	if lk != nil {
		h.origin = lk.Origin
	}
	s.head.Store(h)
}

// Checkpoint returns the signed checkpoint of the latest durable tree
// head, signing it if nobody has yet. It covers every entry whose append
// has returned. Before the log key exists it returns the zero Signed.
func (s *Service) Checkpoint() translog.Signed {
	h := s.head.Load()
	if cp := s.cp.Load(); cp != nil && (h == nil || cp.Size >= h.size) {
		return *cp
	}
	s.logMu.Lock()
	defer s.logMu.Unlock()
	// Another caller may have signed meanwhile; sign the newest head.
	h = s.head.Load()
	cp := s.cp.Load()
	if cp != nil && (h == nil || cp.Size >= h.size) {
		return *cp
	}
	if h == nil || h.origin == "" || s.logSigner == nil || s.logSigner.Name() != h.origin {
		if cp != nil {
			return *cp
		}
		return translog.Signed{}
	}
	signed, err := translog.Sign(translog.Checkpoint{Origin: h.origin, Size: h.size, Root: h.root}, s.logSigner, s.cosigners...)
	if err != nil {
		s.log.Error("cannot sign the log's checkpoint", "size", h.size, "err", err)
		if cp != nil {
			return *cp
		}
		return translog.Signed{}
	}
	s.cp.Store(&signed)
	return signed
}

// LogOrigin returns the log's origin line.
func (s *Service) LogOrigin() string {
	var o string
	s.Read(func(st *state.State) {
		if st.LogKey != nil {
			o = st.LogKey.Origin
		}
	})
	return o
}

// LogVerifierKey returns the note verifier key of the log's checkpoints.
func (s *Service) LogVerifierKey() string {
	var v string
	s.Read(func(st *state.State) {
		if st.LogKey != nil {
			v = st.LogKey.VerifierKey
		}
	})
	return v
}

// LogHashes reads the log's stored hashes.
func (s *Service) LogHashes() tlog.HashReader { return s.store }

// ReadLeaves returns the log leaves start to start+n-1 (entries start+1
// to start+n). It implements translog.LeafReader.
func (s *Service) ReadLeaves(start, n int64) ([][]byte, error) { return s.store.ReadLeaves(start, n) }

// Receipt returns the receipt of entry seq against the latest checkpoint.
func (s *Service) Receipt(seq uint64) (*translog.Receipt, error) {
	cp := s.Checkpoint()
	if seq == 0 || int64(seq) > cp.Size {
		return nil, fmt.Errorf("kms: receipt of entry %d: %w (checkpoint size %d)", seq, translog.ErrNotFound, cp.Size)
	}
	e, err := s.store.Get(seq)
	if err != nil {
		return nil, err
	}
	return translog.NewReceipt(int64(seq)-1, ledger.LeafBytes(e), cp, s.store)
}
