package kmstest_test

import (
	"bytes"
	"errors"
	"log/slog"
	"testing"

	"github.com/tkms-dev/tkms/client"
	"github.com/tkms-dev/tkms/kmstest"
)

func TestServer(t *testing.T) {
	for _, suite := range []string{"", "p256"} {
		t.Run("suite "+suite, func(t *testing.T) {
			srv, err := kmstest.Start(kmstest.Options{Suite: suite})
			if err != nil {
				t.Fatal(err)
			}
			defer srv.Close()
			cfg := srv.KeysConfig()
			cfg.Logger = slog.New(slog.DiscardHandler)
			keys, err := client.NewKeys(cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer keys.Close()
			all, err := keys.All(t.Context())
			if err != nil || len(all) != 1 {
				t.Fatalf("All = %v, %v", all, err)
			}
			if want := map[string]string{"": "x25519", "p256": "p256"}[suite]; all[0].Suite != want {
				t.Errorf("suite %s, want %s", all[0].Suite, want)
			}
			kid, err := srv.Rotate(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if k, err := keys.ByKID(t.Context(), kid); err != nil || k.Kid != kid {
				t.Fatalf("ByKID(rotated) = %v, %v", k, err)
			}
			if st := keys.State(); st.ReceiptsVerified != 2 || srv.Releases() != 2 {
				t.Fatalf("%d receipts verified, %d releases; want 2 and 2", st.ReceiptsVerified, srv.Releases())
			}

			// Evidence of another container group is refused, for good.
			cfg.Attester = srv.NewAttester(bytes.Repeat([]byte{1}, 32))
			other, err := client.NewKeys(cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer other.Close()
			var ke *client.KMSError
			if _, err := other.All(t.Context()); !errors.As(err, &ke) || !ke.Permanent() || !errors.Is(err, client.ErrUnavailable) {
				t.Fatalf("release with other host data: %v", err)
			}
		})
	}
	srv, err := kmstest.Start(kmstest.Options{HostData: []byte{1}})
	if err == nil {
		srv.Close()
		t.Fatal("Start with 1 byte of host data succeeded")
	}
}
