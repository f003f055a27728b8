// Package devfile keeps the files of development-only state (the simulated
// TEEs' chains) that are created once and then only read.
package devfile

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
)

// LoadOrCreate returns the contents of dir/name. When the file does not
// exist it creates dir (mode 0700) and the file (mode 0600) holding what
// create returns, atomically: the file appears complete or not at all and
// never replaces an existing one. When two processes create it at once,
// both get the contents that reached the disk first. created says whether
// this call wrote the file.
func LoadOrCreate(dir, name string, create func() ([]byte, error)) (b []byte, created bool, err error) {
	path := filepath.Join(dir, name)
	b, err = os.ReadFile(path)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return b, false, err
	}
	if b, err = create(); err != nil {
		return nil, false, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, false, err
	}
	// Write a temporary file and hard-link it into place.
	tmp, err := os.CreateTemp(dir, "."+name+"-*.tmp") // mode 0600
	if err != nil {
		return nil, false, err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return nil, false, err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return nil, false, err
	}
	if err := tmp.Close(); err != nil {
		return nil, false, err
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		if !errors.Is(err, fs.ErrExist) {
			return nil, false, err
		}
		b, err := os.ReadFile(path)
		return b, false, err
	}
	return b, true, nil
}
