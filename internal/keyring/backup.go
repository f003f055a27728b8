package keyring

import (
	"errors"
	"io"
	"io/fs"
	"os"
)

// Backup writes the keyring file as it is now (sealed under the master
// key) to w; with no file yet (no key made), it writes nothing.
func (k *Keyring) Backup(w io.Writer) (int64, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	b, err := os.ReadFile(k.path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	n, err := w.Write(b)
	return int64(n), err
}
