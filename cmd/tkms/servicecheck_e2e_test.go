package main

// client/servicecheck against a real tkms dev --cluster founding node (it
// lists itself in GET /v1/service): the dev node policy passes, a policy
// naming another measurement is refused with servicecheck.ErrUntrusted.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tkms-dev/tkms/client/servicecheck"
	"github.com/tkms-dev/tkms/internal/attest"
	"github.com/tkms-dev/tkms/internal/attest/simsnp"
	"github.com/tkms-dev/tkms/internal/node"
	"golang.org/x/mod/sumdb/note"
)

func TestServiceCheck(t *testing.T) {
	a := &devNode{data: filepath.Join(t.TempDir(), "a"), args: []string{"--cluster"}}
	a.start(t)
	waitCluster(t, "a leader", a.p.URL, voters(1))
	svc := getService(t, a.p.URL)

	var ac attest.Config
	ac.Simulated = true
	chain, err := simsnp.LoadOrCreate(a.data)
	if err != nil {
		t.Fatal(err)
	}
	chain.Trust(&ac)
	other, _ := json.Marshal(map[string]any{"claims": map[string]any{
		"x-ms-sevsnpvm-launchmeasurement": []string{hex.EncodeToString(bytes.Repeat([]byte{0x42}, 48))},
	}})
	check := func(pol []byte, logKey string) error {
		t.Helper()
		c, err := servicecheck.New(servicecheck.Config{NodePolicy: pol, Attest: ac})
		if err != nil {
			t.Fatal(err)
		}
		return c(context.Background(), http.DefaultClient, a.p.URL, logKey)
	}

	// The founder's node.joined entry is endorsed once a checkpoint covers it.
	deadline := time.Now().Add(time.Minute)
	for {
		err := check(devReleasePolicy(), svc.LogKey)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the dev node policy: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}

	err = check(other, svc.LogKey)
	var ne *servicecheck.NodeError
	var ae *attest.Error
	if !errors.Is(err, servicecheck.ErrUntrusted) || !errors.As(err, &ne) || ne.NodeID != svc.Nodes[0].NodeID || !errors.As(err, &ae) || ae.Code != node.CodePolicyDenied {
		t.Fatalf("a policy naming another measurement: %v", err)
	}
	if err := check(devReleasePolicy(), ""); !errors.Is(err, servicecheck.ErrUntrusted) {
		t.Fatalf("without a log key: %v", err)
	}
	// Another log's key does not verify the endorsement.
	_, otherKey, err := note.GenerateKey(rand.Reader, strings.SplitN(svc.LogKey, "+", 2)[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := check(devReleasePolicy(), otherKey); !errors.Is(err, servicecheck.ErrUntrusted) {
		t.Fatalf("another log key: %v", err)
	}
}
