// Package seal protects secrets at rest with AES-256-GCM under the
// service master key.
//
// A Sealer is the small interface the rest of tkms depends on. This package
// provides two: [AESGCM], one 256-bit key (a single node's, kept in a 0600
// file), and [Versions], a cluster's ledger secret, held in memory only,
// whose versions change at each rekey (versions.go).
//
// A sealed blob is nonce(12) || ciphertext || tag(16). The associated data
// binds each blob to its place (for ledger entries: the sequence number and
// entry type), so a sealed part cannot be moved to another entry.
package seal

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// KeySize is the size in bytes of a master key.
const KeySize = 32

// ErrOpen is returned when a sealed blob does not authenticate: wrong key,
// wrong associated data, or modified bytes. The message is fixed on purpose.
var ErrOpen = errors.New("seal: message authentication failed")

// A Sealer encrypts and authenticates secrets at rest.
type Sealer interface {
	// Seal encrypts plaintext, binding it to ad.
	Seal(plaintext, ad []byte) ([]byte, error)
	// Open decrypts a blob made by Seal with the same ad. It returns ErrOpen
	// if the blob does not authenticate.
	Open(sealed, ad []byte) ([]byte, error)
}

// AESGCM is a Sealer backed by a raw 256-bit AES-GCM key held in memory.
type AESGCM struct {
	aead cipher.AEAD
}

var _ Sealer = (*AESGCM)(nil)

// New returns an AESGCM sealer for a 32-byte key. The key slice is not
// retained.
func New(key []byte) (*AESGCM, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("seal: master key must be %d bytes, got %d", KeySize, len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &AESGCM{aead: aead}, nil
}

// Seal implements Sealer.
func (s *AESGCM) Seal(plaintext, ad []byte) ([]byte, error) {
	nonce := make([]byte, s.aead.NonceSize(), s.aead.NonceSize()+len(plaintext)+s.aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	return s.aead.Seal(nonce, nonce, plaintext, ad), nil
}

// Open implements Sealer.
func (s *AESGCM) Open(sealed, ad []byte) ([]byte, error) {
	n := s.aead.NonceSize()
	if len(sealed) < n+s.aead.Overhead() {
		return nil, ErrOpen
	}
	pt, err := s.aead.Open(nil, sealed[:n], sealed[n:], ad)
	if err != nil {
		return nil, ErrOpen
	}
	return pt, nil
}

// NewKey returns a fresh random 256-bit key.
func NewKey() []byte {
	k := make([]byte, KeySize)
	if _, err := rand.Read(k); err != nil {
		panic("seal: crypto/rand failed: " + err.Error())
	}
	return k
}

// LoadFile reads a master key file: 64 hex characters, optionally followed
// by a newline. It refuses files readable by group or others.
func LoadFile(path string) (*AESGCM, error) {
	key, err := ReadKeyFile(path)
	if err != nil {
		return nil, err
	}
	defer clear(key)
	return New(key)
}

// ReadKeyFile returns the key of a master key file, as LoadFile reads it:
// for a node of a cluster that hands it to a joining node. The caller
// clears it after use.
func ReadKeyFile(path string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("master key: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("master key %s: permissions %v are too open; run chmod 600 %s", path, fi.Mode().Perm(), path)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("master key: %w", err)
	}
	defer clear(raw)
	// Decode in place rather than through a string, which could not be
	// cleared afterwards.
	text := bytes.TrimSpace(raw)
	if len(text) != 2*KeySize {
		return nil, fmt.Errorf("master key %s: want %d hex characters", path, 2*KeySize)
	}
	key := make([]byte, KeySize)
	if _, err := hex.Decode(key, text); err != nil {
		clear(key)
		return nil, fmt.Errorf("master key %s: want %d hex characters", path, 2*KeySize)
	}
	return key, nil
}

// CreateFile writes a new random master key to path with mode 0600 and
// returns a sealer for it. It fails if the file exists.
func CreateFile(path string) (*AESGCM, error) {
	key := NewKey()
	defer clear(key)
	return WriteFile(path, key)
}

// WriteFile writes key to path as a master key file, mode 0600, and
// returns a sealer for it: a new key (CreateFile), or the key a cluster
// handed to a node that joined it. It fails if the file exists.
func WriteFile(path string, key []byte) (*AESGCM, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("master key: want %d bytes", KeySize)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("master key: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("master key: %w", err)
	}
	text := make([]byte, hex.EncodedLen(len(key))+1)
	defer clear(text)
	hex.Encode(text, key)
	text[len(text)-1] = '\n'
	if _, err := f.Write(text); err != nil {
		f.Close()
		return nil, fmt.Errorf("master key: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return nil, fmt.Errorf("master key: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("master key: %w", err)
	}
	// Make the new directory entry durable too: data sealed under this key
	// may be written as soon as we return.
	if err := SyncDir(filepath.Dir(path)); err != nil {
		return nil, fmt.Errorf("master key: %w", err)
	}
	return New(key)
}

// LoadOrCreateFile loads the key at path, creating it first if it does not
// exist. It is meant for development; production requires the file to exist.
func LoadOrCreateFile(path string) (s *AESGCM, created bool, err error) {
	_, err = os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		s, err = CreateFile(path)
		return s, err == nil, err
	}
	s, err = LoadFile(path)
	return s, false, err
}

// SyncDir makes the entries of directory dir (a file created or renamed
// in it) durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
