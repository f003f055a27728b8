package kms

import (
	"bytes"
	"context"
	"crypto/hpke"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/tkms-dev/tkms/internal/keyring"
	"github.com/tkms-dev/tkms/internal/keys"
	"github.com/tkms-dev/tkms/internal/ledger"
	"github.com/tkms-dev/tkms/internal/node"
	"github.com/tkms-dev/tkms/internal/seal"
	"github.com/tkms-dev/tkms/internal/state"
	"github.com/tkms-dev/tkms/internal/store"
	bolt "go.etcd.io/bbolt"
)

// clock is an injected clock that only moves when told to.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Set(t time.Time) { c.mu.Lock(); c.t = t; c.mu.Unlock() }

const day = 24 * time.Hour

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func testPolicy() state.RotationPolicy {
	return state.RotationPolicy{
		RotationInterval: state.Seconds(10 * day),
		PublishDelay:     state.Seconds(2 * day),
		GracePeriod:      state.Seconds(3 * day),
		Retention:        state.Seconds(1 * day),
		Suite:            "x25519",
	}
}

type fixture struct {
	t       *testing.T
	dir     string
	key     []byte
	clock   *clock
	policy  state.RotationPolicy
	release []byte   // Config.ReleasePolicy
	gov     *GovInit // Config.Governance
	// versions and identity, if set, make the service a cluster node's:
	// its sealer is versions (key is unused), identity its node.
	versions *seal.Versions
	identity *node.Identity
	svc      *Service
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	return newFixtureWith(t, nil)
}

// newFixtureWith returns a fixture; setup, if not nil, adjusts it before
// the service first opens.
func newFixtureWith(t *testing.T, setup func(*fixture)) *fixture {
	t.Helper()
	f := &fixture{t: t, dir: t.TempDir(), key: seal.NewKey(), clock: &clock{t: t0}, policy: testPolicy()}
	if setup != nil {
		setup(f)
	}
	f.open()
	t.Cleanup(func() {
		if f.svc != nil {
			f.svc.Close()
		}
	})
	return f
}

func (f *fixture) open() {
	f.t.Helper()
	var sealer seal.Sealer = f.versions
	if f.versions == nil {
		s, err := seal.New(f.key)
		if err != nil {
			f.t.Fatal(err)
		}
		sealer = s
	}
	var err error
	f.svc, err = Open(context.Background(), Config{
		DataDir: f.dir, Sealer: sealer, ServiceName: "test", RotationPolicy: f.policy,
		Settings:      state.Settings{Service: state.ServiceSettings{Name: "test"}},
		ReleasePolicy: f.release, Governance: f.gov,
		Now: f.clock.Now, SnapshotEvery: 1 << 40, Logger: slog.New(slog.DiscardHandler),
		Versions: f.versions, Identity: f.identity,
	})
	if err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) reopen() {
	f.t.Helper()
	if err := f.svc.Close(); err != nil {
		f.t.Fatal(err)
	}
	f.open()
}

// at moves the clock to t0+d and runs the scheduler.
func (f *fixture) at(d time.Duration) {
	f.t.Helper()
	f.clock.Set(t0.Add(d))
	if _, err := f.svc.Tick(context.Background()); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) keys() []state.Key {
	var out []state.Key
	f.svc.Read(func(st *state.State) {
		for _, k := range st.Keys {
			out = append(out, *k)
		}
	})
	return out
}

func (f *fixture) primary() string {
	var kid string
	f.svc.Read(func(st *state.State) {
		if p := st.Primary(f.clock.Now()); p != nil {
			kid = p.Kid
		}
	})
	return kid
}

func (f *fixture) phase(kid string) state.Phase {
	var p state.Phase = -1
	f.svc.Read(func(st *state.State) {
		if k := st.Key(kid); k != nil {
			p = k.Phase(f.clock.Now())
		}
	})
	return p
}

func (f *fixture) entries() []*ledger.Entry {
	var out []*ledger.Entry
	if err := f.svc.store.Scan(1, func(e *ledger.Entry) error { out = append(out, e); return nil }); err != nil {
		f.t.Fatal(err)
	}
	return out
}

// TestLifecycle walks two rotations with an injected clock: the first key
// is published at once, the next is created one publish delay before the
// first retires, a retired key stays releasable through grace, then
// expires and is destroyed after retention.
func TestLifecycle(t *testing.T) {
	f := newFixture(t)
	f.at(0)
	ks := f.keys()
	if len(ks) != 1 {
		t.Fatalf("after first tick: %d keys, want 1", len(ks))
	}
	k1 := ks[0]
	if !k1.NotBefore.Equal(t0) || !k1.NotAfter.Equal(t0.Add(10*day)) || !k1.ReleaseUntil.Equal(t0.Add(13*day)) || !k1.DestroyAfter.Equal(t0.Add(14*day)) {
		t.Fatalf("key 1 times: %+v", k1)
	}
	if f.primary() != k1.Kid || k1.PublishedSeq == 0 {
		t.Fatalf("key 1 not primary/published at t0")
	}

	f.at(8*day - time.Second) // just before rotation is due
	if n := len(f.keys()); n != 1 {
		t.Fatalf("rotation too early: %d keys", n)
	}
	f.at(8 * day) // k1.NotAfter - publish delay
	ks = f.keys()
	if len(ks) != 2 {
		t.Fatalf("rotation not done at 8d: %d keys", len(ks))
	}
	k2 := ks[1]
	if k2.Reason != ReasonScheduled || !k2.NotBefore.Equal(t0.Add(10*day)) {
		t.Fatalf("key 2: reason %q not_before %v", k2.Reason, k2.NotBefore)
	}
	if f.phase(k2.Kid) != state.Created || f.primary() != k1.Kid {
		t.Fatalf("at 8d: key 2 phase %v, primary %s", f.phase(k2.Kid), f.primary())
	}
	// Created keys are fetchable by services before they are advertised.
	if _, err := f.svc.PrivateKey(k2.Kid); err != nil {
		t.Fatalf("private key of created key: %v", err)
	}

	f.at(10 * day)
	if f.primary() != k2.Kid || f.phase(k1.Kid) != state.Retired {
		t.Fatalf("at 10d: primary %s, key 1 %v", f.primary(), f.phase(k1.Kid))
	}
	if _, err := f.svc.PrivateKey(k1.Kid); err != nil {
		t.Fatalf("retired key must stay available during grace: %v", err)
	}
	f.at(13 * day)
	if f.phase(k1.Kid) != state.Expired {
		t.Fatalf("at 13d key 1 is %v, want expired", f.phase(k1.Kid))
	}
	f.at(14 * day)
	if f.phase(k1.Kid) != state.Destroyed {
		t.Fatalf("at 14d key 1 is %v, want destroyed", f.phase(k1.Kid))
	}
	if _, err := f.svc.PrivateKey(k1.Kid); !errors.Is(err, ErrKeyDestroyed) {
		t.Fatalf("PrivateKey(destroyed) = %v, want ErrKeyDestroyed", err)
	}

	// Every transition left its marker entry, in order.
	var types []ledger.Type
	for _, e := range f.entries() {
		types = append(types, e.Type)
	}
	want := []ledger.Type{
		ledger.TypeGenesis, ledger.TypeLogKey, ledger.TypeKeyRotationPolicy, ledger.TypeSettingsPolicy,
		ledger.TypeKeyCreated, ledger.TypeKeyPublished, // k1 at 0
		ledger.TypeKeyCreated,                          // k2 at 8d
		ledger.TypeKeyRetired, ledger.TypeKeyPublished, // k1, k2 at 10d
		ledger.TypeKeyExpired,   // k1 at 13d
		ledger.TypeKeyDestroyed, // k1 at 14d
	}
	if len(types) != len(want) {
		t.Fatalf("ledger types %v, want %v", types, want)
	}
	for i := range want {
		if types[i] != want[i] {
			t.Fatalf("ledger types %v, want %v", types, want)
		}
	}
}

// TestLateStart: a server that was down through several slots creates one
// key, not one per missed slot, and publishes it at once.
func TestLateStart(t *testing.T) {
	f := newFixture(t)
	f.at(0)
	f.at(100 * day)
	ks := f.keys()
	if len(ks) != 2 {
		t.Fatalf("%d keys after a long outage, want 2", len(ks))
	}
	if !ks[1].NotBefore.Equal(t0.Add(100*day)) || f.primary() != ks[1].Kid {
		t.Fatalf("the catch-up key must be published at once: %+v", ks[1])
	}
	if f.phase(ks[0].Kid) != state.Destroyed {
		t.Fatalf("key 1 is %v after 100 days, want destroyed", f.phase(ks[0].Kid))
	}
	f.at(100 * day) // idempotent
	if len(f.keys()) != 2 {
		t.Fatal("a second tick at the same time created a key")
	}
}

// TestRefreshResetsSchedule: a forced rotation is published after the
// publish delay, and the next scheduled rotation counts from it.
func TestRefreshResetsSchedule(t *testing.T) {
	f := newFixture(t)
	f.at(0)
	f.clock.Set(t0.Add(3 * day))
	k, err := f.svc.Rotate(context.Background(), ReasonRefresh)
	if err != nil {
		t.Fatal(err)
	}
	if k.Reason != ReasonRefresh || !k.NotBefore.Equal(t0.Add(5*day)) || k.Number != 2 {
		t.Fatalf("refresh key: %+v", k)
	}
	f.at(5 * day)
	if f.primary() != k.Kid {
		t.Fatalf("refresh key not primary after the publish delay")
	}
	// Key 1 stays advertised (not primary) until its own not_after.
	var adv int
	f.svc.Read(func(st *state.State) { adv = len(st.Advertised(f.clock.Now())) })
	if adv != 2 {
		t.Fatalf("%d keys advertised at 5d, want 2", adv)
	}
	f.at(10*day + 1) // key 1's slot would have been due at 8d; now refresh+interval-publish = 13d
	if n := len(f.keys()); n != 2 {
		t.Fatalf("%d keys at 10d, want 2: the refresh moved the schedule", n)
	}
	f.at(13 * day)
	if n := len(f.keys()); n != 3 {
		t.Fatalf("%d keys at 13d, want 3", n)
	}
}

// TestRestartPersistence: state after a restart is exactly the state
// before, and no key is created twice for one slot.
func TestRestartPersistence(t *testing.T) {
	f := newFixture(t)
	f.at(0)
	f.at(8 * day)
	if _, err := f.svc.Rotate(context.Background(), ReasonRefresh); err != nil {
		t.Fatal(err)
	}
	before := f.keys()
	privBefore, err := f.svc.PrivateKey(before[2].Kid)
	if err != nil {
		t.Fatal(err)
	}
	privBefore = bytes.Clone(privBefore)
	f.reopen()
	after := f.keys()
	if len(after) != len(before) {
		t.Fatalf("%d keys after restart, want %d", len(after), len(before))
	}
	for i := range before {
		if before[i].Kid != after[i].Kid || before[i].ID != after[i].ID || !bytes.Equal(before[i].PublicKey, after[i].PublicKey) {
			t.Fatalf("key %d changed across restart", i+1)
		}
	}
	privAfter, err := f.svc.PrivateKey(before[2].Kid)
	if err != nil || !bytes.Equal(privAfter, privBefore) {
		t.Fatalf("private key after restart differs (err %v)", err)
	}
	// The private key matches the public key.
	suite, _ := keys.ParseSuite(after[2].Suite)
	pk, err := suite.PrivateKey(privAfter)
	if err != nil || !bytes.Equal(pk.PublicKey().Bytes(), after[2].PublicKey) {
		t.Fatalf("unsealed private key does not match its public key")
	}
	f.at(8 * day)
	if len(f.keys()) != len(before) {
		t.Fatal("tick after restart created a key for a slot that already has one")
	}
}

// TestSnapshotReplayEquivalence: starting from a snapshot gives the same
// state as replaying the whole ledger.
func TestSnapshotReplayEquivalence(t *testing.T) {
	f := newFixture(t)
	for d := time.Duration(0); d < 60*day; d += day {
		f.at(d)
	}
	if err := f.svc.Snapshot(); err != nil {
		t.Fatal(err)
	}
	for d := 60 * day; d < 70*day; d += day {
		f.at(d)
	}
	var want []byte
	f.svc.Read(func(st *state.State) { want, _ = st.Marshal() })
	f.reopen() // snapshot + tail
	var got []byte
	f.svc.Read(func(st *state.State) { got, _ = st.Marshal() })
	if !bytes.Equal(got, want) {
		t.Fatalf("snapshot+tail state differs from the live state")
	}
	// Full replay from the entries alone gives the same bytes.
	full := state.New()
	for _, e := range f.entries() {
		if err := full.Apply(e); err != nil {
			t.Fatal(err)
		}
	}
	fb, _ := full.Marshal()
	if !bytes.Equal(fb, want) {
		t.Fatalf("full replay differs from the live state")
	}
}

// TestSealedPartsNeedMasterKey: with another master key neither the ledger's
// sealed parts nor the keyring open, and the service refuses to start.
func TestSealedPartsNeedMasterKey(t *testing.T) {
	f := newFixture(t)
	f.at(0)
	kid := f.keys()[0].Kid
	priv, err := f.svc.PrivateKey(kid)
	if err != nil {
		t.Fatal(err)
	}
	priv = bytes.Clone(priv)
	if err := f.svc.Close(); err != nil {
		t.Fatal(err)
	}
	f.svc = nil

	other, _ := seal.New(seal.NewKey())
	if _, err := Open(context.Background(), Config{DataDir: f.dir, Sealer: other, RotationPolicy: f.policy, Now: f.clock.Now, Logger: slog.New(slog.DiscardHandler)}); err == nil {
		t.Fatal("service opened with the wrong master key")
	}
	st, err := store.Open(f.dir, store.Options{Sealer: other})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var sealedSeen int
	err = st.Scan(1, func(e *ledger.Entry) error {
		if len(e.Sealed) == 0 {
			return nil
		}
		sealedSeen++
		if _, err := st.Unseal(e); !errors.Is(err, seal.ErrOpen) {
			t.Errorf("entry %d unsealed with the wrong master key: %v", e.Seq, err)
		}
		if bytes.Contains(e.Sealed, priv) || bytes.Contains(e.Body, priv) {
			t.Errorf("entry %d holds the private key in clear", e.Seq)
		}
		return nil
	})
	if err != nil || sealedSeen == 0 {
		t.Fatalf("scan: %v, %d sealed entries", err, sealedSeen)
	}
	raw, _ := os.ReadFile(filepath.Join(f.dir, store.FileName))
	if bytes.Contains(raw, priv) {
		t.Fatal("ledger file holds the private key in clear")
	}
}

// TestDestroyedKeyUnrecoverable: after destruction the private key cannot be
// recovered even with the master key and the old key.created entry.
func TestDestroyedKeyUnrecoverable(t *testing.T) {
	f := newFixture(t)
	f.at(0)
	k1 := f.keys()[0]
	f.at(14 * day) // k1 destroyed (a new key was created on the way)
	if f.phase(k1.Kid) != state.Destroyed {
		t.Fatalf("key 1 is %v", f.phase(k1.Kid))
	}
	f.reopen()
	if _, err := f.svc.PrivateKey(k1.Kid); !errors.Is(err, ErrKeyDestroyed) {
		t.Fatalf("after restart PrivateKey(destroyed) = %v", err)
	}
	// The master key still opens the outer layer of the creation entry,
	// but the data key is gone from the keyring, so the inner layer stays
	// shut.
	e, err := f.svc.store.Get(k1.Seq)
	if err != nil {
		t.Fatal(err)
	}
	inner, err := f.svc.store.Unseal(e)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.svc.keyring.Get(k1.Kid); !errors.Is(err, keyring.ErrNoDEK) {
		t.Fatalf("keyring still has the destroyed key's data key: %v", err)
	}
	for _, kid := range f.svc.keyring.Kids() {
		dek, _ := f.svc.keyring.Get(kid)
		if _, err := openWithDEK(dek, k1.Kid, inner); err == nil {
			t.Fatalf("data key of %s opens the destroyed key", kid)
		}
	}
}

// TestKeyringReconciled: a data key left behind by a crash between the
// keyring write and the ledger append is removed at the next start.
func TestKeyringReconciled(t *testing.T) {
	f := newFixture(t)
	f.at(0)
	if _, err := f.svc.keyring.Add("orphan_99"); err != nil {
		t.Fatal(err)
	}
	f.reopen()
	for _, kid := range f.svc.keyring.Kids() {
		if kid == "orphan_99" {
			t.Fatal("orphan data key survived a restart")
		}
	}
}

// TestIDsNeverReusedWhileUnexpired: forced rotations stop when only the
// reserved ids are free; scheduled ones take the rest; with all 90 ids held
// creation is refused rather than handing out a held id.
func TestIDsNeverReusedWhileUnexpired(t *testing.T) {
	f := newFixture(t)
	f.at(0)
	seen := map[int]string{}
	for _, k := range f.keys() {
		seen[k.ID] = k.Kid
	}
	add := func(reason string) error {
		k, err := f.svc.Rotate(context.Background(), reason)
		if err != nil {
			return err
		}
		if prev, ok := seen[k.ID]; ok {
			t.Fatalf("id %d handed to %s while %s holds it", k.ID, k.Kid, prev)
		}
		seen[k.ID] = k.Kid
		return nil
	}
	for len(seen) < 90-ReservedIDs {
		if err := add(ReasonRefresh); err != nil {
			t.Fatalf("after %d keys: %v", len(seen), err)
		}
	}
	if err := add(ReasonRefresh); !errors.Is(err, ErrKeyLimit) {
		t.Fatalf("refresh into the reserve: %v, want ErrKeyLimit", err)
	}
	for len(seen) < 90 {
		if err := add(ReasonScheduled); err != nil {
			t.Fatalf("scheduled rotation with %d ids held: %v", len(seen), err)
		}
	}
	if err := add(ReasonScheduled); !errors.Is(err, keys.ErrNoFreeID) {
		t.Fatalf("91st unexpired key: %v, want ErrNoFreeID", err)
	}
	// Once the early keys expire their ids come free again.
	f.at(100 * day)
	clear(seen)
	if err := add(ReasonRefresh); err != nil {
		t.Fatalf("after expiry: %v", err)
	}
}

// TestPolicyChangeRecorded: a different policy at start is recorded in the
// ledger and used for new keys; the same policy records nothing.
func TestPolicyChangeRecorded(t *testing.T) {
	f := newFixture(t)
	f.at(0)
	n := len(f.entries())
	f.reopen()
	if len(f.entries()) != n {
		t.Fatal("reopening with the same policy appended entries")
	}
	f.policy.Suite = "mlkem768-x25519"
	f.reopen()
	es := f.entries()
	if len(es) != n+1 || es[n].Type != ledger.TypeKeyRotationPolicy {
		t.Fatalf("policy change not recorded")
	}
	k, err := f.svc.Rotate(context.Background(), ReasonRefresh)
	if err != nil {
		t.Fatal(err)
	}
	if k.KEM != keys.KEMMLKEM768X25519 {
		t.Fatalf("new key suite %s", k.Suite)
	}
	priv, err := f.svc.PrivateKey(k.Kid)
	if err != nil {
		t.Fatal(err)
	}
	// The stored key pair works end to end with crypto/hpke.
	suite, _ := keys.ParseSuite(k.Suite)
	pub, _ := suite.PublicKey(k.PublicKey)
	sk, _ := suite.PrivateKey(priv)
	kdf, _ := hpke.NewKDF(k.KDF)
	aead, _ := hpke.NewAEAD(k.AEAD)
	ct, err := hpke.Seal(pub, kdf, aead, []byte("info"), []byte("hello"))
	if err != nil {
		t.Fatal(err)
	}
	pt, err := hpke.Open(sk, kdf, aead, []byte("info"), ct)
	if err != nil || string(pt) != "hello" {
		t.Fatalf("hpke round trip: %q %v", pt, err)
	}
}

// TestConcurrentRotations: concurrent forced rotations each get their own
// key number and the ledger stays dense.
func TestConcurrentRotations(t *testing.T) {
	f := newFixture(t)
	f.at(0)
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			if _, err := f.svc.Rotate(context.Background(), ReasonRefresh); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	ks := f.keys()
	if len(ks) != 21 {
		t.Fatalf("%d keys, want 21", len(ks))
	}
	for i, k := range ks {
		if k.Number != uint64(i+1) {
			t.Fatalf("key %d has number %d", i, k.Number)
		}
	}
}

// TestAutomaticSnapshots: with a small SnapshotEvery the service writes
// snapshots by itself, and a restart starts from one.
func TestAutomaticSnapshots(t *testing.T) {
	f := newFixture(t)
	f.svc.cfg.SnapshotEvery = 3
	for d := time.Duration(0); d < 40*day; d += day {
		f.at(d)
	}
	f.reopen()
	seq, data, err := f.svc.store.LoadSnapshot()
	if err != nil || seq == 0 || data == nil {
		t.Fatalf("no automatic snapshot: seq %d, %v", seq, err)
	}
	if f.svc.snapSeq != seq {
		t.Fatalf("restart did not start from the snapshot at %d (started from %d)", seq, f.svc.snapSeq)
	}
	if len(f.keys()) < 4 {
		t.Fatalf("state after snapshot restart has %d keys", len(f.keys()))
	}
}

// TestCorruptSnapshotIgnored: a snapshot that fails its checksum is only a
// lost shortcut: the service replays the whole ledger and starts.
func TestCorruptSnapshotIgnored(t *testing.T) {
	f := newFixture(t)
	f.at(0)
	f.at(8 * day)
	if err := f.svc.Snapshot(); err != nil {
		t.Fatal(err)
	}
	want := f.keys()
	if err := f.svc.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := bolt.Open(filepath.Join(f.dir, store.FileName), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("snapshot"))
		v := bytes.Clone(b.Get([]byte("latest")))
		v[len(v)/2] ^= 0xff
		return b.Put([]byte("latest"), v)
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	f.open()
	if got := f.keys(); len(got) != len(want) || got[1].Kid != want[1].Kid || f.svc.snapSeq != 0 {
		t.Fatalf("after a corrupt snapshot: %d keys (want %d), started from %d", len(got), len(want), f.svc.snapSeq)
	}
}
