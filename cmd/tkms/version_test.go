package main

import (
	"runtime/debug"
	"testing"
)

// TestBuildVersionOf: tkms version takes the module version go install
// recorded (unless the link set one), the VCS revision, its time and
// whether the tree was modified, and the Go version.
func TestBuildVersionOf(t *testing.T) {
	vcs := []debug.BuildSetting{{Key: "vcs.revision", Value: "478d7fc0"}, {Key: "vcs.time", Value: "2026-12-04T21:00:00Z"}, {Key: "vcs.modified", Value: "true"}}
	for _, tc := range []struct {
		name, linked, module string
		settings             []debug.BuildSetting
		want                 buildVersion
	}{
		{"go install @version", "dev", "v0.2.0", nil, buildVersion{Version: "v0.2.0", Go: "go1.26.8"}},
		{"a clone", "dev", "(devel)", vcs, buildVersion{Version: "dev", Revision: "478d7fc0", Time: "2026-12-04T21:00:00Z", Modified: true, Go: "go1.26.8"}},
		{"linked version wins", "v0.3.0-rc1", "v0.2.0", vcs[:1], buildVersion{Version: "v0.3.0-rc1", Revision: "478d7fc0", Go: "go1.26.8"}},
	} {
		bi := &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Path: "github.com/tkms-dev/tkms", Version: tc.module}, Settings: tc.settings}
		if got := buildVersionOf(tc.linked, bi); got != tc.want {
			t.Errorf("%s: %+v, want %+v", tc.name, got, tc.want)
		}
	}
}
