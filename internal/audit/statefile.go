package audit

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"github.com/tkms-dev/tkms/internal/translog"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// savedState is the state file: the last checkpoint an audit verified and
// passed, the auditor's memory of the log. The signed checkpoint is kept so
// that two auditors can show each other a fork.
type savedState struct {
	Origin     string    `json:"origin"`
	Size       int64     `json:"size"`
	Root       tlog.Hash `json:"root"` // standard base64
	Checkpoint string    `json:"checkpoint"`
	Time       time.Time `json:"time"` // when it was verified
}

// readState reads the state file, nil if it does not exist. The saved
// checkpoint must verify against the log key and agree with the saved
// size and root.
func readState(path string, v note.Verifier) (*savedState, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrStateFile, err)
	}
	var s savedState
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("%w %s: %w", ErrStateFile, path, err)
	}
	cp, err := translog.Verify([]byte(s.Checkpoint), v)
	if err != nil {
		return nil, fmt.Errorf("%w %s: its checkpoint does not verify against the log key (is it the state of another log?): %w", ErrStateFile, path, err)
	}
	if cp.Origin != s.Origin || cp.Size != s.Size || cp.Root != s.Root {
		return nil, fmt.Errorf("%w %s: origin, size or root differ from its checkpoint's", ErrStateFile, path)
	}
	return &s, nil
}

// writeState replaces the state file atomically, readable by its owner
// only.
func writeState(path string, s *savedState) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	if err := writeFileAtomic(path, append(b, '\n'), fileMode); err != nil {
		return fmt.Errorf("%w: %w", ErrStateFile, err)
	}
	return nil
}
