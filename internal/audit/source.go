package audit

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/tkms-dev/tkms/internal/ledger"
	"github.com/tkms-dev/tkms/internal/translog"
	"golang.org/x/mod/sumdb/tlog"
)

// A Source serves a log's resources by their path under the log's prefix,
// as C2SP tlog-tiles names them: "checkpoint", "tile/0/000",
// "tile/entries/001.p/17". A resource that does not exist is reported with
// an error wrapping fs.ErrNotExist.
type Source interface {
	Fetch(ctx context.Context, path string) ([]byte, error)
}

var (
	_ Source = (*HTTPSource)(nil)
	_ Source = (*DirSource)(nil)
)

// Size limits of the resources, so that a hostile server cannot make the
// auditor read without end.
const (
	maxCheckpoint = 64 << 10
	maxHashTile   = translog.TileWidth * tlog.HashSize
	maxBundle     = translog.TileWidth * (2 + ledger.MaxLeafSize)
)

func maxSize(path string) int64 {
	switch {
	case path == "checkpoint":
		return maxCheckpoint
	case strings.HasPrefix(path, "tile/entries/"):
		return maxBundle
	default:
		return maxHashTile
	}
}

// HTTPSource reads a log served under a tkms base URL, at /log/.
type HTTPSource struct {
	base   string // ends in "/log/"
	client *http.Client
}

// NewHTTPSource returns a source for the log of the tkms at kmsURL (such as
// https://kms.example): it fetches kmsURL/log/checkpoint and the tiles
// under kmsURL/log/tile/. A nil client means http.DefaultClient; requests
// are bounded by the context given to Fetch.
func NewHTTPSource(kmsURL string, client *http.Client) (*HTTPSource, error) {
	u, err := url.Parse(kmsURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("audit: %q is not an http or https URL", kmsURL)
	}
	if client == nil {
		client = http.DefaultClient
	}
	return &HTTPSource{base: strings.TrimRight(kmsURL, "/") + "/log/", client: client}, nil
}

// Fetch GETs the resource at path.
func (s *HTTPSource) Fetch(ctx context.Context, path string) ([]byte, error) {
	u := s.base + path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", u, err)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		var ue *url.Error // names the URL again
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("GET %s: %w", u, err)
	}
	defer resp.Body.Close()
	limit := maxSize(path)
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
		msg := strings.TrimSpace(strings.ToValidUTF8(string(b), "?"))
		if resp.StatusCode == http.StatusNotFound {
			return nil, &notFoundError{"GET " + u + ": " + resp.Status}
		}
		return nil, fmt.Errorf("GET %s: %s: %s", u, resp.Status, msg)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", u, err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("GET %s: response larger than %d bytes", u, limit)
	}
	return b, nil
}

// notFoundError is a 404: it is fs.ErrNotExist, with the request's words.
type notFoundError struct{ msg string }

func (e *notFoundError) Error() string        { return e.msg }
func (e *notFoundError) Is(target error) bool { return target == fs.ErrNotExist }

// DirSource reads an offline mirror: a directory laid out like the log's
// URL space under /log/ (DIR/checkpoint, DIR/tile/0/000, ...).
type DirSource struct {
	dir string
}

// NewDirSource returns a source reading the mirror in dir.
func NewDirSource(dir string) *DirSource { return &DirSource{dir: dir} }

// Fetch reads the file at path under the directory.
func (s *DirSource) Fetch(ctx context.Context, path string) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if !fs.ValidPath(path) {
		return nil, fmt.Errorf("audit: invalid resource path %q", path)
	}
	name := filepath.Join(s.dir, filepath.FromSlash(path))
	f, err := os.Open(name)
	if err != nil {
		return nil, err // *PathError names the file and wraps fs.ErrNotExist
	}
	defer f.Close()
	limit := maxSize(path)
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s: larger than %d bytes", name, limit)
	}
	return b, nil
}

// mirror copies everything its source serves into a directory, so that a
// later audit can read it with DirSource. Tiles are written as they are
// fetched; the checkpoint is held back until commit, so that a mirror never
// names a tree whose tiles it lacks.
type mirror struct {
	src        Source
	dir        string
	checkpoint []byte
}

func (m *mirror) Fetch(ctx context.Context, path string) ([]byte, error) {
	b, err := m.src.Fetch(ctx, path)
	if err != nil {
		return nil, err
	}
	if path == "checkpoint" {
		m.checkpoint = b
		return b, nil
	}
	if err := writeFileAtomic(filepath.Join(m.dir, filepath.FromSlash(path)), b, fileMode); err != nil {
		return nil, fmt.Errorf("mirror: %w", err)
	}
	return b, nil
}

// commit writes the checkpoint.
func (m *mirror) commit() error {
	if m.checkpoint == nil {
		return nil
	}
	if err := writeFileAtomic(filepath.Join(m.dir, "checkpoint"), m.checkpoint, fileMode); err != nil {
		return fmt.Errorf("mirror: %w", err)
	}
	return nil
}

// The modes of what the audit writes (mirror and state): like every file
// tkms writes, its owner's alone. The mirror's tiles are public, but a
// mirror is the auditor's evidence, and nobody else should be able to
// change it or see which log it follows.
const (
	fileMode = 0o600
	dirMode  = 0o700
)

// writeFileAtomic writes b to name through a temporary file and a rename,
// creating the parent directories.
func writeFileAtomic(name string, b []byte, perm os.FileMode) error {
	dir := filepath.Dir(name)
	if err := os.MkdirAll(dir, dirMode); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(name)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(b)
	if err == nil {
		err = f.Chmod(perm)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, name)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

// fetchTile fetches tile t. A partial tile that the source does not have is
// taken from the full tile, if that exists (C2SP tlog-tiles: a log may
// stop serving partial tiles once the full one is published); full then
// reports that the data may hold more than t.W hashes or entries.
func fetchTile(ctx context.Context, src Source, t tlog.Tile) (data []byte, path string, full bool, err error) {
	path = translog.TilePath(t)
	data, err = src.Fetch(ctx, path)
	if err == nil || !errors.Is(err, fs.ErrNotExist) || t.W == translog.TileWidth {
		return data, path, false, err
	}
	ft := t
	ft.W = translog.TileWidth
	fdata, ferr := src.Fetch(ctx, translog.TilePath(ft))
	if ferr != nil {
		return nil, path, false, err // report the partial tile's error
	}
	return fdata, translog.TilePath(ft), true, nil
}

// LocalSource reads the tiles of a ledger held locally (a copy a
// recovering node audits before it opens anything): it serves them from
// the ledger's stored hashes and leaves as the service would, but no
// checkpoint (Options.Head gives the tree head instead).
type LocalSource struct {
	size   int64
	hashes tlog.HashReader
	leaves translog.LeafReader
}

var _ Source = (*LocalSource)(nil)

// NewLocalSource returns a source for the first size entries of a local
// ledger.
func NewLocalSource(size int64, hashes tlog.HashReader, leaves translog.LeafReader) *LocalSource {
	return &LocalSource{size: size, hashes: hashes, leaves: leaves}
}

// Fetch returns the tile at path; there is no checkpoint.
func (s *LocalSource) Fetch(_ context.Context, path string) ([]byte, error) {
	t, err := translog.ParseTilePath(path)
	if err != nil {
		return nil, &notFoundError{path + ": " + err.Error()}
	}
	return translog.ReadTile(t, s.size, s.hashes, s.leaves)
}
