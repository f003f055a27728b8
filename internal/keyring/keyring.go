// Package keyring holds the per-key data encryption keys (DEKs) that make
// key destruction final.
//
// The private key of an HPKE key pair is stored in the ledger encrypted
// twice: under its own random DEK, then (as the entry's sealed part) under
// the master key. The DEKs live here, in one small file beside the ledger,
// sealed as a whole under the master key and rewritten atomically on every
// change. Destroying a key deletes its DEK; since ledger entries are never
// rewritten, the old sealed copies of the private key then remain in the
// ledger but can no longer be decrypted by anyone, even with the master key.
//
// The file is small (one 32-byte DEK per live key), so it is rewritten
// whole: written to a temporary file, fsynced, renamed over the old one, and
// the directory fsynced.
package keyring

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"sync"

	"github.com/tkms-dev/tkms/internal/seal"
)

// FileName is the name of the keyring file in the data directory.
const FileName = "keyring"

// DEKSize is the size of a data encryption key.
const DEKSize = 32

var ad = []byte("tkms/keyring/v1")

// ErrNoDEK means the key's DEK is not in the keyring: the key was destroyed
// (or never completed creation).
var ErrNoDEK = errors.New("keyring: no data key (key destroyed)")

// Keyring is the set of live DEKs, by kid.
type Keyring struct {
	path   string
	sealer seal.Sealer

	mu   sync.Mutex
	deks map[string][]byte
}

// Open loads the keyring file in dir, or starts an empty one if the file
// does not exist yet.
func Open(dir string, sealer seal.Sealer) (*Keyring, error) {
	k := &Keyring{path: filepath.Join(dir, FileName), sealer: sealer, deks: map[string][]byte{}}
	// A crash during a rewrite leaves its temporary file behind; the
	// rename never happened, so the file in place is the current one.
	if stale, err := filepath.Glob(filepath.Join(dir, FileName+".tmp*")); err == nil {
		for _, f := range stale {
			os.Remove(f)
		}
	}
	raw, err := os.ReadFile(k.path)
	if errors.Is(err, fs.ErrNotExist) {
		return k, nil
	}
	if err != nil {
		return nil, fmt.Errorf("keyring: %w", err)
	}
	pt, err := sealer.Open(raw, ad)
	if err != nil {
		return nil, fmt.Errorf("keyring %s: cannot be opened with this master key: %w", k.path, err)
	}
	defer clear(pt)
	if err := json.Unmarshal(pt, &k.deks); err != nil {
		return nil, fmt.Errorf("keyring %s: %w", k.path, err)
	}
	if k.deks == nil { // the file held JSON null
		k.deks = map[string][]byte{}
	}
	for kid, dek := range k.deks {
		if len(dek) != DEKSize {
			return nil, fmt.Errorf("keyring %s: data key for %s has %d bytes", k.path, kid, len(dek))
		}
	}
	return k, nil
}

// Get returns a copy of the DEK for kid.
func (k *Keyring) Get(kid string) ([]byte, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	dek, ok := k.deks[kid]
	if !ok {
		return nil, ErrNoDEK
	}
	return append([]byte(nil), dek...), nil
}

// Add stores a new random DEK for kid, durably, and returns a copy of it.
func (k *Keyring) Add(kid string) ([]byte, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if _, ok := k.deks[kid]; ok {
		return nil, fmt.Errorf("keyring: %s already has a data key", kid)
	}
	dek := seal.NewKey()
	k.deks[kid] = dek
	if err := k.writeLocked(); err != nil {
		delete(k.deks, kid)
		return nil, err
	}
	return append([]byte(nil), dek...), nil
}

// Put stores dek, made by another node of a cluster, as the DEK of kid,
// durably. Putting the DEK kid already has is a no-op; another one is an
// error.
func (k *Keyring) Put(kid string, dek []byte) error {
	if len(dek) != DEKSize {
		return fmt.Errorf("keyring: a data key of %d bytes", len(dek))
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if old, ok := k.deks[kid]; ok {
		if !bytes.Equal(old, dek) {
			return fmt.Errorf("keyring: %s already has another data key", kid)
		}
		return nil
	}
	k.deks[kid] = bytes.Clone(dek)
	if err := k.writeLocked(); err != nil {
		delete(k.deks, kid)
		return err
	}
	return nil
}

// Delete erases the DEKs of the given kids, durably. Unknown kids are
// ignored.
func (k *Keyring) Delete(kids ...string) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	removed := map[string][]byte{}
	for _, kid := range kids {
		if dek, ok := k.deks[kid]; ok {
			removed[kid] = dek
			delete(k.deks, kid)
		}
	}
	if len(removed) == 0 {
		return nil
	}
	if err := k.writeLocked(); err != nil {
		for kid, dek := range removed {
			k.deks[kid] = dek
		}
		return err
	}
	for _, dek := range removed {
		clear(dek)
	}
	return nil
}

// Reseal rewrites the keyring file under the sealer's current key: after
// a rekey, so the file no longer opens with the previous ledger secret.
func (k *Keyring) Reseal() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.writeLocked()
}

// Kids lists the kids that have a DEK, sorted.
func (k *Keyring) Kids() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	kids := make([]string, 0, len(k.deks))
	for kid := range k.deks {
		kids = append(kids, kid)
	}
	sort.Strings(kids)
	return kids
}

func (k *Keyring) writeLocked() error {
	pt, err := json.Marshal(k.deks)
	if err != nil {
		return err
	}
	sealed, err := k.sealer.Seal(pt, ad)
	clear(pt)
	if err != nil {
		return fmt.Errorf("keyring: %w", err)
	}
	dir := filepath.Dir(k.path)
	tmp, err := os.CreateTemp(dir, FileName+".tmp*")
	if err != nil {
		return fmt.Errorf("keyring: %w", err)
	}
	defer os.Remove(tmp.Name()) // no-op after a successful rename
	if _, err := tmp.Write(sealed); err != nil {
		tmp.Close()
		return fmt.Errorf("keyring: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("keyring: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("keyring: %w", err)
	}
	if err := os.Rename(tmp.Name(), k.path); err != nil {
		return fmt.Errorf("keyring: %w", err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("keyring: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("keyring: %w", err)
	}
	return nil
}
