package main

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestImage builds the image the repository's Dockerfile describes,
// without a daemon, checks it (non-root, no shell, a static entrypoint)
// and runs tkms version from its file system; then writes the tarball.
func TestImage(t *testing.T) {
	img, err := Build("../..", "v0.0.0-ci")
	if err != nil {
		t.Fatal(err)
	}
	out, err := Check(img, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "tkms v0.0.0-ci") || !strings.Contains(out, "go go1.") {
		t.Errorf("tkms version from the image printed %q", out)
	}
	cf, _ := img.ConfigFile()
	if cf.Config.User != "65532:65532" || strings.Join(cf.Config.Cmd, " ") != "serve --config /etc/tkms/tkms.json" {
		t.Errorf("image config %+v", cf.Config)
	}
	if err := writeTarball(img, filepath.Join(t.TempDir(), "tkms.tar"), "ghcr.io/tkms-dev/tkms:dev"); err != nil {
		t.Fatal(err)
	}
}

// TestFinalStageRefusesTheUnknown: an instruction the builder does not
// interpret fails, so the Dockerfile and the checked image cannot drift.
func TestFinalStageRefusesTheUnknown(t *testing.T) {
	for _, df := range []string{
		"FROM golang AS build\nFROM debian\nCOPY --from=build /out/tkms /tkms\n",
		"FROM scratch\nRUN echo hi\n",
		"FROM scratch\nCOPY tkms /tkms\n",
		"FROM scratch\nENTRYPOINT /tkms\n",
	} {
		if _, err := parseFinalStage([]byte(df)); err == nil {
			t.Errorf("accepted:\n%s", df)
		}
	}
}
