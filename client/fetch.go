package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/tkms-dev/tkms/api"
	"github.com/tkms-dev/tkms/internal/keys"
)

// releasable reports whether the KMS releases a key in this listed state.
func releasable(state string) bool {
	switch state {
	case "created", "published", "primary", "retired":
		return true
	}
	return false
}

// checkListed checks that a listed key is self-consistent: a known suite with
// its algorithm ids, a public key of that suite, a kid that names that
// public key (kid = base64url(SHA-256(PEM)) + "_" + N) and a numeric id of
// 10..99 with its OHTTP key id.
func checkListed(l *api.V1Key) error {
	s, err := keys.ParseSuite(l.Suite)
	if err != nil {
		return err
	}
	if s.KEM != l.KEM || s.KDF != l.KDF || s.AEAD != l.AEAD {
		return fmt.Errorf("key %s: algorithm ids 0x%04x/0x%04x/0x%04x do not match suite %s", l.Kid, l.KEM, l.KDF, l.AEAD, l.Suite)
	}
	pemText, err := keys.PublicPEM(s, l.PublicKey)
	if err != nil {
		return fmt.Errorf("key %s: %w", l.Kid, err)
	}
	n, ok := keys.ParseKIDNumber(l.Kid)
	if !ok || keys.KID(pemText, n) != l.Kid {
		return fmt.Errorf("key %s: the kid does not name its public key", l.Kid)
	}
	if l.ID < keys.MinID || l.ID > keys.MaxID || l.OHTTPKeyID != int(keys.OHTTPKeyID(l.ID)) {
		return fmt.Errorf("key %s: id %d with OHTTP key id %d", l.Kid, l.ID, l.OHTTPKeyID)
	}
	return nil
}

// list returns the KMS's key list, read again if kid-less or older than
// a second (so a burst of unknown ids reads it once).
func (k *Keys) list(ctx context.Context) (map[string]api.V1Key, error) {
	k.mu.Lock()
	fresh := !k.listedAt.IsZero() && k.cfg.Now().Sub(k.listedAt) < time.Second
	l := k.listed
	k.mu.Unlock()
	if fresh {
		return l, nil
	}
	return k.refreshList(ctx)
}

// refreshList reads GET /v1/keys?all=true.
func (k *Keys) refreshList(ctx context.Context) (map[string]api.V1Key, error) {
	v, err := k.remembering(ctx, "list", func(ctx context.Context) (_ any, err error) {
		defer func() {
			if err != nil {
				k.failed("list keys", err)
			}
		}()
		b, err := k.do(ctx, http.MethodGet, "/v1/keys?all=true", nil, "")
		if err != nil {
			return nil, failedTo("list keys", err)
		}
		var body api.V1Keys
		if err := json.Unmarshal(b, &body); err != nil {
			return nil, fmt.Errorf("%w: GET /v1/keys: %w", ErrRejected, err)
		}
		m := make(map[string]api.V1Key, len(body.Keys))
		for _, l := range body.Keys {
			if !releasable(l.State) {
				continue // expired or destroyed: of no use, and not checked
			}
			if err := checkListed(&l); err != nil {
				return nil, fmt.Errorf("%w: GET /v1/keys: %w", ErrRejected, err)
			}
			m[l.Kid] = l
		}
		k.mu.Lock()
		k.listed, k.listedAt = m, k.cfg.Now()
		k.mu.Unlock()
		return m, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(map[string]api.V1Key), nil
}

// fetch releases kids (or, with all, every valid key), checks the answer
// and caches the keys. On any failed check nothing is cached.
func (k *Keys) fetch(ctx context.Context, kids []string, all bool) (ks []*Key, err error) {
	listed, err := k.list(ctx)
	if err != nil {
		return nil, err // counted and logged by refreshList
	}
	for _, kid := range kids {
		if _, ok := listed[kid]; !ok {
			if listed, err = k.refreshList(ctx); err != nil {
				return nil, err // counted and logged by refreshList
			}
			if _, ok := listed[kid]; !ok {
				return nil, fmt.Errorf("%w: the KMS lists no releasable key %s", ErrKeyNotFound, kid)
			}
		}
	}
	// From here on, each failure is counted and logged once, here.
	defer func() {
		if err != nil {
			k.failed(fmt.Sprintf("release %v (all: %v)", kids, all), err)
		}
	}()
	k.fetches.Add(1)
	if err := k.checkService(ctx); err != nil {
		return nil, err
	}
	var released []released
	if k.cfg.API == APIApp {
		released, err = k.releaseApp(ctx, kids[0])
	} else {
		released, err = k.releaseV1(ctx, kids, all)
	}
	if err != nil {
		return nil, err
	}
	defer func() {
		for _, r := range released {
			clear(r.priv)
		}
	}()
	if all {
		for _, r := range released {
			if _, ok := listed[r.kid]; !ok {
				if listed, err = k.refreshList(ctx); err != nil {
					return nil, err
				}
				break
			}
		}
	}
	now := k.cfg.Now()
	for _, r := range released {
		l, ok := listed[r.kid]
		if !ok {
			return nil, fmt.Errorf("%w: released key %s is not in the KMS's list", ErrRejected, r.kid)
		}
		key, err := newKey(l, r, now)
		if err != nil {
			return nil, err
		}
		if !now.Before(key.ReleaseUntil) {
			// The KMS's clock is behind ours: the key is of no use here.
			if all {
				continue
			}
			return nil, fmt.Errorf("%w: %s expired at %s", ErrKeyExpired, key.Kid, key.ReleaseUntil.Format(time.RFC3339))
		}
		ks = append(ks, key)
	}
	k.mu.Lock()
	for _, key := range ks {
		k.cache[key.Kid] = key
	}
	k.lastOKAt = now
	k.mu.Unlock()
	gotKids := make([]string, len(ks))
	for i, key := range ks {
		gotKids[i] = key.Kid
	}
	k.log.Info("keys fetched", "kids", gotKids, "api", k.cfg.API, "wrapping", k.cfg.Wrapping)
	sortKeys(ks)
	return ks, nil
}

// released is one unwrapped key of a release answer, not yet checked.
type released struct {
	kid  string
	pub  []byte // the public key the release answer names (nil for /app: from the item)
	priv []byte // RFC 9180 SerializePrivateKey
}

// newKey checks a released private key against the listed public key and
// returns the cached form.
func newKey(l api.V1Key, r released, now time.Time) (*Key, error) {
	if r.pub != nil && !bytes.Equal(r.pub, l.PublicKey) {
		return nil, fmt.Errorf("%w: the release answer gives key %s another public key than the KMS lists", ErrRejected, l.Kid)
	}
	s, err := keys.ParseSuite(l.Suite)
	if err != nil {
		return nil, fmt.Errorf("%w: key %s: %w", ErrRejected, l.Kid, err)
	}
	sk, err := s.PrivateKey(r.priv)
	if err != nil {
		return nil, fmt.Errorf("%w: key %s: the released private key is not a %s key", ErrRejected, l.Kid, l.Suite)
	}
	if !bytes.Equal(sk.PublicKey().Bytes(), l.PublicKey) {
		return nil, fmt.Errorf("%w: the released private key of %s does not match its published public key", ErrRejected, l.Kid)
	}
	return &Key{
		Kid: l.Kid, ID: l.ID, OHTTPKeyID: keys.OHTTPKeyID(l.ID), Suite: l.Suite, KEM: l.KEM, KDF: l.KDF, AEAD: l.AEAD,
		PublicKey: slices.Clone(l.PublicKey), NotBefore: l.NotBefore, NotAfter: l.NotAfter, ReleaseUntil: l.ReleaseUntil,
		PrivateKey: sk, FetchedAt: now,
	}, nil
}

// checkService runs KeysConfig.Service until it passes once.
func (k *Keys) checkService(ctx context.Context) error {
	if k.cfg.Service == nil || k.serviceOK.Load() {
		return nil
	}
	if err := k.cfg.Service(ctx, k.cfg.HTTPClient, k.cfg.KMS, k.cfg.LogKey); err != nil {
		return fmt.Errorf("%w: the KMS does not prove itself: %w", ErrRejected, err)
	}
	k.serviceOK.Store(true)
	return nil
}
