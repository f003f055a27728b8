// Command image builds the tkms container image that the repository's
// Dockerfile describes, without a container daemon or a registry, and
// checks it: CI runs it where no Docker engine is available.
//
// The Dockerfile's build stage is a go build; this program runs the same go
// build on the host (CGO_ENABLED=0, -trimpath, the same -ldflags) and makes
// the same /etc files, then interprets the final stage's instructions
// (FROM scratch, COPY --from=build, USER, WORKDIR, VOLUME, EXPOSE,
// ENTRYPOINT, CMD) with go-containerregistry. An instruction it does not
// know fails the build, so the Dockerfile cannot drift from what is built
// and checked here.
//
// The checks: the entrypoint is a static ELF binary, the image runs as a
// user other than root, it holds no shell, and `tkms version` runs from
// the image's extracted file system.
//
//	go run . -repo ../.. -out tkms-image.tar      # a tarball for docker load / podman load
package main

import (
	"archive/tar"
	"bufio"
	"bytes"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// file is one of the files the Dockerfile's build stage makes under /out.
type file struct {
	mode int64
	dir  bool
	data []byte
}

// buildStage runs the Dockerfile's build stage on the host: the static
// binary, the CA roots and the tkms user. It returns the files of /out by
// their path under /out.
func buildStage(repo, version, work string) (map[string]file, error) {
	bin := filepath.Join(work, "tkms")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w -X main.version="+version, "-o", bin, "./cmd/tkms")
	cmd.Dir = repo
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("go build: %v\n%s", err, out)
	}
	b, err := os.ReadFile(bin)
	if err != nil {
		return nil, err
	}
	roots, err := os.ReadFile("/etc/ssl/certs/ca-certificates.crt")
	if err != nil {
		return nil, fmt.Errorf("the CA roots (Debian's ca-certificates): %w", err)
	}
	return map[string]file{
		"tkms":                              {mode: 0o755, data: b},
		"etc/":                              {mode: 0o755, dir: true},
		"etc/ssl/":                          {mode: 0o755, dir: true},
		"etc/ssl/certs/":                    {mode: 0o755, dir: true},
		"etc/ssl/certs/ca-certificates.crt": {mode: 0o644, data: roots},
		"etc/passwd":                        {mode: 0o644, data: []byte("tkms:x:65532:65532:tkms:/var/lib/tkms:/nonexistent\n")},
		"etc/group":                         {mode: 0o644, data: []byte("tkms:x:65532:\n")},
		"var/lib/tkms/":                     {mode: 0o755, dir: true},
	}, nil
}

// finalStage is the Dockerfile's last stage.
type finalStage struct {
	copies []copyInstr
	config v1.Config
}

type copyInstr struct {
	src, dst string
	uid, gid int
}

// parseFinalStage reads the instructions of the Dockerfile's last stage.
func parseFinalStage(dockerfile []byte) (finalStage, error) {
	var st finalStage
	var lines []string
	sc := bufio.NewScanner(bytes.NewReader(dockerfile))
	cont := ""
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		if strings.HasSuffix(l, "\\") {
			cont += strings.TrimSuffix(l, "\\") + " "
			continue
		}
		lines = append(lines, cont+l)
		cont = ""
	}
	last := -1
	for i, l := range lines {
		if strings.HasPrefix(strings.ToUpper(l), "FROM ") {
			last = i
		}
	}
	if last < 0 || strings.TrimSpace(lines[last][5:]) != "scratch" {
		return st, errors.New("the final stage must be FROM scratch")
	}
	st.config.Env = []string{"PATH=/usr/local/bin", "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"}
	for _, l := range lines[last+1:] {
		instr, args, _ := strings.Cut(l, " ")
		args = strings.TrimSpace(args)
		switch strings.ToUpper(instr) {
		case "COPY":
			c := copyInstr{}
			f := strings.Fields(args)
			var rest []string
			for _, a := range f {
				switch {
				case a == "--from=build":
				case strings.HasPrefix(a, "--chown="):
					u, g, _ := strings.Cut(strings.TrimPrefix(a, "--chown="), ":")
					var err1, err2 error
					c.uid, err1 = strconv.Atoi(u)
					c.gid, err2 = strconv.Atoi(g)
					if err1 != nil || err2 != nil {
						return st, fmt.Errorf("COPY %s: want a numeric --chown", args)
					}
				case strings.HasPrefix(a, "--"):
					return st, fmt.Errorf("COPY %s: unknown option %s", args, a)
				default:
					rest = append(rest, a)
				}
			}
			if !strings.Contains(args, "--from=build") || len(rest) != 2 || !strings.HasPrefix(rest[0], "/out/") {
				return st, fmt.Errorf("COPY %s: want COPY --from=build /out/... DEST", args)
			}
			c.src, c.dst = strings.TrimPrefix(rest[0], "/out/"), rest[1]
			st.copies = append(st.copies, c)
		case "USER":
			st.config.User = args
		case "WORKDIR":
			st.config.WorkingDir = args
		case "VOLUME":
			st.config.Volumes = map[string]struct{}{args: {}}
		case "EXPOSE":
			st.config.ExposedPorts = map[string]struct{}{}
			for _, p := range strings.Fields(args) {
				st.config.ExposedPorts[p+"/tcp"] = struct{}{}
			}
		case "ENTRYPOINT":
			if err := json.Unmarshal([]byte(args), &st.config.Entrypoint); err != nil {
				return st, fmt.Errorf("ENTRYPOINT: want the exec form: %w", err)
			}
		case "CMD":
			if err := json.Unmarshal([]byte(args), &st.config.Cmd); err != nil {
				return st, fmt.Errorf("CMD: want the exec form: %w", err)
			}
		default:
			return st, fmt.Errorf("final stage: %s is not supported by this builder; teach deploy/image", instr)
		}
	}
	return st, nil
}

// layer makes the image's one layer from the final stage's COPYs.
func layer(st finalStage, out map[string]file) (v1.Layer, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	epoch := time.Unix(0, 0)
	dirs := map[string]bool{}
	mkdirs := func(p string) error {
		parts := strings.Split(strings.Trim(path.Dir(p), "/"), "/")
		for i := range parts {
			d := strings.Join(parts[:i+1], "/") + "/"
			if d == "/" || d == "./" || dirs[d] {
				continue
			}
			dirs[d] = true
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d, Mode: 0o755, ModTime: epoch}); err != nil {
				return err
			}
		}
		return nil
	}
	for _, c := range st.copies {
		var srcs []string
		for p := range out {
			if p == c.src || p == c.src+"/" || (strings.HasSuffix(c.src, "/") && strings.HasPrefix(p, c.src)) {
				srcs = append(srcs, p)
			}
		}
		if len(srcs) == 0 {
			return nil, fmt.Errorf("COPY /out/%s: the build stage makes no such file", c.src)
		}
		slices.Sort(srcs)
		for _, p := range srcs {
			name := strings.TrimPrefix(path.Join(c.dst, strings.TrimPrefix(p, strings.TrimSuffix(c.src, "/"))), "/")
			f := out[p]
			if err := mkdirs(name); err != nil {
				return nil, err
			}
			h := &tar.Header{Name: name, Mode: f.mode, Uid: c.uid, Gid: c.gid, ModTime: epoch, Typeflag: tar.TypeReg, Size: int64(len(f.data))}
			if f.dir {
				h.Typeflag, h.Size, h.Name = tar.TypeDir, 0, name+"/"
				if dirs[h.Name] {
					continue
				}
				dirs[h.Name] = true
			}
			if err := tw.WriteHeader(h); err != nil {
				return nil, err
			}
			if _, err := tw.Write(f.data); err != nil {
				return nil, err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	b := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil })
}

// Build builds the image of the repository at repo.
func Build(repo, version string) (v1.Image, error) {
	df, err := os.ReadFile(filepath.Join(repo, "Dockerfile"))
	if err != nil {
		return nil, err
	}
	st, err := parseFinalStage(df)
	if err != nil {
		return nil, fmt.Errorf("the Dockerfile: %w", err)
	}
	work, err := os.MkdirTemp("", "tkms-image-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	out, err := buildStage(repo, version, work)
	if err != nil {
		return nil, err
	}
	l, err := layer(st, out)
	if err != nil {
		return nil, err
	}
	img, err := mutate.AppendLayers(empty.Image, l)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.Config = st.config
	cf.OS, cf.Architecture = "linux", goarch()
	return mutate.ConfigFile(img, cf)
}

func goarch() string {
	b, err := exec.Command("go", "env", "GOARCH").Output()
	if err != nil {
		return "amd64"
	}
	return strings.TrimSpace(string(b))
}

// Check extracts img's file system into dir and checks it: a non-root
// user, no shell, a static entrypoint, and `tkms version` runs. It returns
// what tkms version printed.
func Check(img v1.Image, dir string) (string, error) {
	cf, err := img.ConfigFile()
	if err != nil {
		return "", err
	}
	u, _, _ := strings.Cut(cf.Config.User, ":")
	if n, err := strconv.Atoi(u); u == "" || u == "root" || (err == nil && n == 0) {
		return "", fmt.Errorf("the image runs as %q: want a non-root user", cf.Config.User)
	}
	rc := mutate.Extract(img)
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return "", err
		}
		name := filepath.Join(dir, filepath.FromSlash(h.Name))
		if !strings.HasPrefix(name, filepath.Clean(dir)+string(os.PathSeparator)) {
			return "", fmt.Errorf("the layer's %s leaves the file system", h.Name)
		}
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(name, 0o755); err != nil {
				return "", err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
				return "", err
			}
			f, err := os.OpenFile(name, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, os.FileMode(h.Mode)&0o777)
			if err != nil {
				return "", err
			}
			_, err = io.Copy(f, tr)
			f.Close()
			if err != nil {
				return "", err
			}
		default:
			return "", fmt.Errorf("the image holds %s of type %c: want files and directories only", h.Name, h.Typeflag)
		}
	}
	for _, sh := range []string{"bin/sh", "bin/bash", "bin/busybox", "usr/bin/sh"} {
		if _, err := os.Lstat(filepath.Join(dir, sh)); err == nil {
			return "", fmt.Errorf("the image holds a shell, /%s", sh)
		}
	}
	if len(cf.Config.Entrypoint) == 0 {
		return "", errors.New("the image has no entrypoint")
	}
	bin := filepath.Join(dir, filepath.FromSlash(strings.TrimPrefix(cf.Config.Entrypoint[0], "/")))
	ef, err := elf.Open(bin)
	if err != nil {
		return "", fmt.Errorf("the entrypoint: %w", err)
	}
	defer ef.Close()
	for _, p := range ef.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			return "", errors.New("the entrypoint is dynamically linked: want a static binary")
		}
	}
	out, err := exec.Command(bin, "version").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("tkms version from the image: %v\n%s", err, out)
	}
	return string(out), nil
}
