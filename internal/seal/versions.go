package seal

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
)

// Ledger-secret versions (docs/security.md "Ledger secrets and rekey").
//
// The ledger secret of a cluster is a 256-bit master key with a version:
// 1 when the cluster is founded, one more at each rekey (after governance
// removes a node). [Versions] holds the versions a node knows, seals
// under the current one and opens blobs of any version it knows or can
// derive: each rekey records the previous version's secret sealed under
// the new one ([Versions.Next]), so a node that holds only the current
// version opens everything older by walking back ([Versions.AddPrevious]).
//
// The ledger secret travels between nodes (HPKE-sealed, internal/node) and
// to recovery (docs/recovery.md) as one opaque blob: [Versions.Secret] returns it,
// [Versions.Install] installs it. It holds every version the node holds,
// oldest first, the current one last:
//
//	( version (4 bytes, big endian) || key (32 bytes) )+
//
// A bare 32-byte key is version 1 (a master key file's). A blob of the
// current version alone installs as well: the older versions then open by
// walking back the ledger's rekeys.
//
// A blob sealed under version 1 has the format of [AESGCM] (nonce ||
// ciphertext || tag), so a single node's data and a cluster's from before
// its first rekey are the same bytes; a blob sealed under version v > 1 is
//
//	versionMagic (4 bytes) || v (4 bytes, big endian) || nonce || ciphertext || tag
//
// A version-1 blob whose random nonce happens to start with versionMagic
// still opens: Open falls back to version 1 when the versioned reading
// fails.

// SecretSize is the size of one version's record in a ledger secret blob.
const SecretSize = 4 + KeySize

var versionMagic = [4]byte{0xf5, 't', 'k', 'v'}

// ErrUnknownVersion means a blob is sealed under a ledger-secret version
// this node neither holds nor can derive (a newer one than it was given:
// a removed node's position).
var ErrUnknownVersion = errors.New("seal: sealed under a ledger-secret version this node does not hold")

// ErrNoSecret means no ledger secret is installed yet (a node that has
// not received its handoff).
var ErrNoSecret = errors.New("seal: the ledger secret has not arrived yet")

// previousAD is the associated data of the previous version's secret
// sealed under version v.
func previousAD(v uint32) []byte {
	return fmt.Appendf(nil, "tkms/ledger-secret/previous/v%d", v)
}

// Versions is a node's ledger secret: every version it knows, and which is
// current. The zero value holds none; it is safe for concurrent use.
type Versions struct {
	mu   sync.Mutex
	cur  uint32
	keys map[uint32]*versionKey
	// prev[v] is version v-1's blob sealed under version v.
	prev map[uint32][]byte
}

type versionKey struct {
	raw  []byte
	aead *AESGCM
}

var _ Sealer = (*Versions)(nil)

// ParseSecret returns the newest version of a ledger secret blob and
// its key (a copy).
func ParseSecret(blob []byte) (uint32, []byte, error) {
	recs, err := parseSecret(blob)
	if err != nil {
		return 0, nil, err
	}
	last := recs[len(recs)-1]
	for _, r := range recs[:len(recs)-1] {
		clear(r.key)
	}
	return last.v, last.key, nil
}

type secretRecord struct {
	v   uint32
	key []byte
}

func parseSecret(blob []byte) ([]secretRecord, error) {
	if len(blob) == KeySize {
		return []secretRecord{{1, bytes.Clone(blob)}}, nil
	}
	if len(blob) == 0 || len(blob)%SecretSize != 0 {
		return nil, fmt.Errorf("seal: a ledger secret of %d bytes, want a multiple of %d", len(blob), SecretSize)
	}
	var recs []secretRecord
	for b := blob; len(b) > 0; b = b[SecretSize:] {
		v := binary.BigEndian.Uint32(b)
		if v == 0 || (len(recs) > 0 && v <= recs[len(recs)-1].v) {
			for _, r := range recs {
				clear(r.key)
			}
			return nil, fmt.Errorf("seal: a ledger secret with version %d out of order", v)
		}
		recs = append(recs, secretRecord{v, bytes.Clone(b[4:SecretSize])})
	}
	return recs, nil
}

// MarshalSecret is the blob of version v's key alone.
func MarshalSecret(v uint32, key []byte) []byte {
	return append(binary.BigEndian.AppendUint32(make([]byte, 0, SecretSize), v), key...)
}

// NewVersions returns the versions of a new ledger secret: version 1, a
// fresh random key, generated in memory.
func NewVersions() *Versions {
	k := NewKey()
	defer clear(k)
	v := &Versions{}
	if err := v.Install(MarshalSecret(1, k)); err != nil {
		panic(err) // a fresh 32-byte key always installs
	}
	return v
}

// Install installs a ledger secret blob (as [Versions.Secret] returns it):
// its version becomes current unless a newer one is installed already.
// Installing a version again is a no-op; another key under a known
// version is an error.
func (vs *Versions) Install(blob []byte) error {
	recs, err := parseSecret(blob)
	if err != nil {
		return err
	}
	defer func() {
		for _, r := range recs {
			clear(r.key)
		}
	}()
	vs.mu.Lock()
	defer vs.mu.Unlock()
	for _, r := range recs {
		if err := vs.addLocked(r.v, r.key); err != nil {
			return err
		}
	}
	vs.cur = max(vs.cur, recs[len(recs)-1].v)
	return nil
}

func (vs *Versions) addLocked(v uint32, key []byte) error {
	if old, ok := vs.keys[v]; ok {
		if !bytes.Equal(old.raw, key) {
			return fmt.Errorf("seal: another key for ledger-secret version %d", v)
		}
		return nil
	}
	a, err := New(key)
	if err != nil {
		return err
	}
	if vs.keys == nil {
		vs.keys = map[uint32]*versionKey{}
	}
	vs.keys[v] = &versionKey{raw: bytes.Clone(key), aead: a}
	return nil
}

// Secret returns the ledger secret blob: every version this node holds
// or derives, the current one last. The caller clears it after use.
func (vs *Versions) Secret() ([]byte, error) {
	vs.mu.Lock()
	defer vs.mu.Unlock()
	if vs.keys[vs.cur] == nil {
		return nil, ErrNoSecret
	}
	var blob []byte
	for v := uint32(1); v <= vs.cur; v++ {
		if k, err := vs.keyLocked(v); err == nil {
			blob = append(binary.BigEndian.AppendUint32(blob, v), k.raw...)
		}
	}
	return blob, nil
}

// current returns the current version's blob alone.
func (vs *Versions) current() ([]byte, error) {
	vs.mu.Lock()
	defer vs.mu.Unlock()
	k := vs.keys[vs.cur]
	if k == nil {
		return nil, ErrNoSecret
	}
	return MarshalSecret(vs.cur, k.raw), nil
}

// Current returns the current version, 0 if none is installed.
func (vs *Versions) Current() uint32 {
	vs.mu.Lock()
	defer vs.mu.Unlock()
	return vs.cur
}

// Next makes the secret of the version after the current one: it returns
// the new blob and the current blob sealed under the new key (what a rekey
// records). It installs nothing: every node, this one too, installs the
// new version when the rekey is applied.
func (vs *Versions) Next() (blob, previous []byte, err error) {
	cur, err := vs.current()
	if err != nil {
		return nil, nil, err
	}
	defer clear(cur)
	v := binary.BigEndian.Uint32(cur) + 1
	k := NewKey()
	defer clear(k)
	a, err := New(k)
	if err != nil {
		return nil, nil, err
	}
	previous, err = a.Seal(cur, previousAD(v))
	if err != nil {
		return nil, nil, err
	}
	return MarshalSecret(v, k), previous, nil
}

// AddPrevious records what the rekey to version v recorded: version v-1's
// blob sealed under version v. A node that holds v then opens v-1's
// blobs, and so on back to version 1.
func (vs *Versions) AddPrevious(v uint32, previous []byte) {
	vs.mu.Lock()
	defer vs.mu.Unlock()
	if vs.prev == nil {
		vs.prev = map[uint32][]byte{}
	}
	vs.prev[v] = bytes.Clone(previous)
}

// keyLocked returns version v's key, deriving it from a newer version it
// holds by walking back.
func (vs *Versions) keyLocked(v uint32) (*versionKey, error) {
	if k := vs.keys[v]; k != nil {
		return k, nil
	}
	if v == 0 || v > vs.cur {
		return nil, ErrUnknownVersion
	}
	// The oldest version held above v, then back one version at a time.
	w := v + 1
	for vs.keys[w] == nil {
		if w >= vs.cur {
			return nil, ErrUnknownVersion
		}
		w++
	}
	for ; w > v; w-- {
		sealed, ok := vs.prev[w]
		if !ok {
			return nil, fmt.Errorf("%w: the rekey to version %d is not known here", ErrUnknownVersion, w)
		}
		blob, err := vs.keys[w].aead.Open(sealed, previousAD(w))
		if err != nil {
			return nil, fmt.Errorf("seal: the previous ledger secret recorded by the rekey to version %d: %w", w, err)
		}
		pv, key, err := ParseSecret(blob)
		clear(blob)
		if err == nil && pv != w-1 {
			err = fmt.Errorf("seal: the rekey to version %d recorded version %d as its previous", w, pv)
		}
		if err == nil {
			err = vs.addLocked(pv, key)
		}
		clear(key)
		if err != nil {
			return nil, err
		}
	}
	return vs.keys[v], nil
}

// Seal implements [Sealer]: it seals under the current version.
func (vs *Versions) Seal(plaintext, ad []byte) ([]byte, error) {
	vs.mu.Lock()
	v, k := vs.cur, vs.keys[vs.cur]
	vs.mu.Unlock()
	if k == nil {
		return nil, ErrNoSecret
	}
	return sealVersion(v, k.aead, plaintext, ad)
}

// SealVersion seals under version v (which this node holds or derives):
// a snapshot seals each entry's data key under the version in force at
// that entry.
func (vs *Versions) SealVersion(v uint32, plaintext, ad []byte) ([]byte, error) {
	vs.mu.Lock()
	k, err := vs.keyLocked(v)
	vs.mu.Unlock()
	if err != nil {
		return nil, err
	}
	return sealVersion(v, k.aead, plaintext, ad)
}

func sealVersion(v uint32, a *AESGCM, plaintext, ad []byte) ([]byte, error) {
	if v == 1 {
		return a.Seal(plaintext, ad)
	}
	b, err := a.Seal(plaintext, ad)
	if err != nil {
		return nil, err
	}
	hdr := binary.BigEndian.AppendUint32(versionMagic[:], v)
	return append(hdr, b...), nil
}

// BlobVersion returns the ledger-secret version a blob names (1 for a
// blob without a version header).
func BlobVersion(sealed []byte) uint32 {
	if len(sealed) > 8 && [4]byte(sealed[:4]) == versionMagic {
		if v := binary.BigEndian.Uint32(sealed[4:8]); v > 1 {
			return v
		}
	}
	return 1
}

// Open implements [Sealer]: it opens a blob of any version this node
// holds or derives. A blob of a version it cannot derive fails with an
// error that wraps [ErrUnknownVersion].
func (vs *Versions) Open(sealed, ad []byte) ([]byte, error) {
	v := BlobVersion(sealed)
	vs.mu.Lock()
	k, err := vs.keyLocked(v)
	var k1 *versionKey
	if v != 1 {
		k1, _ = vs.keyLocked(1)
	}
	vs.mu.Unlock()
	if err == nil {
		body := sealed
		if v != 1 {
			body = sealed[8:]
		}
		if pt, err := k.aead.Open(body, ad); err == nil || k1 == nil {
			return pt, err
		}
	}
	if k1 != nil {
		// A version-1 blob whose nonce starts like a version header.
		if pt, err1 := k1.aead.Open(sealed, ad); err1 == nil {
			return pt, nil
		}
	}
	if err != nil {
		return nil, err
	}
	return nil, ErrOpen
}
