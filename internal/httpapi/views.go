package httpapi

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"reflect"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tkms-dev/tkms/api"
	"github.com/tkms-dev/tkms/internal/keys"
	"github.com/tkms-dev/tkms/internal/kms"
	"github.com/tkms-dev/tkms/internal/state"
)

// emptyMaxAge is the cache lifetime of a key list with no key in it: a key
// may appear at any moment.
const emptyMaxAge = 60 * time.Second

// view holds the pre-serialised public-key responses for one state of the
// ledger and one stretch of time in which no key changes phase.
type view struct {
	seq        uint64
	built      time.Time
	validUntil time.Time // next phase change; zero if none is scheduled
	// maxCache bounds max-age from any request time: the publish delay
	// while a key is advertised (a key created by a forced rotation is
	// advertised one publish delay after it is created), or emptyMaxAge.
	maxCache time.Duration

	// in is what the bytes below were built from: a ledger state whose
	// entries since (releases, governance) leave it unchanged is served
	// the same bytes (viewCache.build).
	in viewInputs

	listPubKeys []byte   // /app/listpubkeys
	v1Keys      []byte   // /v1/keys
	v1ETag      []string // the ETag header value, shared: do not modify
	ohttp       []byte   // /v1/keys/ohttp
}

// viewCache rebuilds the view when the ledger moves or the clock passes a
// phase change, and otherwise serves the same bytes.
type viewCache struct {
	svc *kms.Service
	cur atomic.Pointer[view]
	mu  sync.Mutex // one rebuild at a time

	stamps atomic.Pointer[cacheStamp] // the last one built
}

func (c *viewCache) get(now time.Time) *view {
	if v := c.cur.Load(); v != nil && v.fresh(c.svc.Seq(), now) {
		return v
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if v := c.cur.Load(); v != nil && v.fresh(c.svc.Seq(), now) {
		return v
	}
	v := c.build(now)
	c.cur.Store(v)
	return v
}

func (v *view) fresh(seq uint64, now time.Time) bool {
	return v.seq == seq && !now.Before(v.built) && (v.validUntil.IsZero() || now.Before(v.validUntil))
}

// maxAge returns the cache-control max-age in whole seconds at now: until
// the next phase change, and no longer than maxCache.
func (v *view) maxAge(now time.Time) int64 {
	d := v.maxCache
	if !v.validUntil.IsZero() {
		d = min(d, v.validUntil.Sub(now))
	}
	d = max(d, 0)
	return int64(d / time.Second)
}

// cacheStamp holds the Date and Cache-Control header values of the
// public-key responses for one second of the clock and one max-age, so
// that they are formatted once and not per request. Its slices are shared
// by every response that uses them and must not be modified (net/http
// copies a handler's header before it writes it).
type cacheStamp struct {
	unix         int64 // the second of date
	maxAge       int64
	date         []string
	cacheControl []string
}

// stamp returns the cache headers for v at now. The values are exactly
// those formatted from now: Date depends only on now's second and
// Cache-Control only on v.maxAge(now), and both are compared.
func (c *viewCache) stamp(v *view, now time.Time) *cacheStamp {
	sec, age := now.Unix(), v.maxAge(now)
	if st := c.stamps.Load(); st != nil && st.unix == sec && st.maxAge == age {
		return st
	}
	st := &cacheStamp{
		unix:         sec,
		maxAge:       age,
		date:         []string{now.UTC().Format(http.TimeFormat)},
		cacheControl: []string{"public, max-age=" + strconv.FormatInt(age, 10)},
	}
	c.stamps.Store(st)
	return st
}

// ListPubKeys is the body of GET /app/listpubkeys.
type ListPubKeys struct {
	Keys []ListPubKey `json:"keys"`
}

// ListPubKey is one key of ListPubKeys: the numeric id as a decimal string
// and the raw public key in standard base64.
type ListPubKey struct {
	ID  string `json:"id"`
	Key string `json:"key"`
}

// viewInputs is what a view's bytes and cache lifetime are built from: the
// key set as the public-key endpoints see it.
type viewInputs struct {
	validUntil   time.Time
	publishDelay time.Duration
	adv          []state.Key // advertised, newest first
}

func (a *viewInputs) equal(b *viewInputs) bool {
	return a.validUntil.Equal(b.validUntil) && a.publishDelay == b.publishDelay && reflect.DeepEqual(a.adv, b.adv)
}

// build returns the view of the current state at now. When the key set is
// the one the current view was built from (the ledger moved by releases or
// other entries that change no key), it is that view's bytes again, under
// the new sequence number: the answers are cached per key-set version, not
// rebuilt after every release.
func (c *viewCache) build(now time.Time) *view {
	v := &view{built: now}
	c.svc.Read(func(st *state.State) {
		v.seq = st.Seq
		v.in.validUntil = st.NextChange(now)
		v.in.publishDelay = st.Rotation.PublishDelay.D()
		for _, k := range st.Advertised(now) {
			v.in.adv = append(v.in.adv, *k)
		}
	})
	if cur := c.cur.Load(); cur != nil && !now.Before(cur.built) && cur.in.equal(&v.in) {
		same := *cur
		same.seq, same.built = v.seq, now
		return &same
	}
	v.validUntil = v.in.validUntil
	v.maxCache = v.in.publishDelay
	if len(v.in.adv) == 0 {
		v.maxCache = emptyMaxAge
	}
	adv := make([]*state.Key, len(v.in.adv))
	for i := range v.in.adv {
		adv[i] = &v.in.adv[i]
	}

	lp := ListPubKeys{Keys: []ListPubKey{}}
	if len(adv) > 0 {
		p := adv[0]
		lp.Keys = append(lp.Keys, ListPubKey{ID: strconv.Itoa(p.ID), Key: base64.StdEncoding.EncodeToString(p.PublicKey)})
	}
	v.listPubKeys, _ = json.Marshal(lp)

	vk := api.V1Keys{Keys: []api.V1Key{}}
	var configs [][]byte
	for i, k := range adv {
		name := "published"
		if i == 0 {
			name = "primary"
		}
		vk.Keys = append(vk.Keys, v1Key(k, name))
		if s, err := keys.ParseSuite(k.Suite); err == nil {
			configs = append(configs, keys.OHTTPConfig(keys.OHTTPKeyID(k.ID), s, k.PublicKey))
		}
	}
	v.v1Keys, _ = json.Marshal(vk)
	sum := sha256.Sum256(v.v1Keys)
	v.v1ETag = []string{`"` + base64.RawURLEncoding.EncodeToString(sum[:18]) + `"`}
	v.ohttp = keys.OHTTPConfigList(configs...)
	return v
}

func v1Key(k *state.Key, phase string) api.V1Key {
	return api.V1Key{
		Kid: k.Kid, ID: k.ID, OHTTPKeyID: int(keys.OHTTPKeyID(k.ID)), Suite: k.Suite,
		KEM: k.KEM, KDF: k.KDF, AEAD: k.AEAD,
		PublicKey: k.PublicKey,
		Created:   k.Created, NotBefore: k.NotBefore, NotAfter: k.NotAfter,
		ReleaseUntil: k.ReleaseUntil, DestroyAfter: k.DestroyAfter, Reason: k.Reason, State: phase,
	}
}

// AllKeys returns every key the ledger knows, oldest first, with its phase
// at now ("primary" for the primary key). Served by GET /v1/keys?all=true
// and used by `tkms keys list`.
func AllKeys(st *state.State, now time.Time) api.V1Keys {
	out := api.V1Keys{Keys: []api.V1Key{}}
	primary := st.Primary(now)
	for _, k := range st.Keys {
		name := k.Phase(now).String()
		if k == primary {
			name = "primary"
		}
		out.Keys = append(out.Keys, v1Key(k, name))
	}
	return out
}
