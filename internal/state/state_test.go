package state

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tkms-dev/tkms/internal/keys"
	"github.com/tkms-dev/tkms/internal/ledger"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// builder appends entries to a state as the kms package would.
type builder struct {
	t  *testing.T
	st *State
}

func newBuilder(t *testing.T) *builder {
	b := &builder{t: t, st: New()}
	b.must(ledger.TypeGenesis, t0, Genesis{Service: "test", Format: 1}, nil)
	return b
}

func (b *builder) entry(typ ledger.Type, at time.Time, body any, sealed []byte) *ledger.Entry {
	raw, err := json.Marshal(body)
	if err != nil {
		b.t.Fatal(err)
	}
	return &ledger.Entry{Seq: b.st.Seq + 1, Time: at, Type: typ, Body: raw, Sealed: sealed}
}

func (b *builder) must(typ ledger.Type, at time.Time, body any, sealed []byte) {
	b.t.Helper()
	if err := b.st.Apply(b.entry(typ, at, body, sealed)); err != nil {
		b.t.Fatal(err)
	}
}

// keyCreated returns a valid key.created body for the next key number.
func (b *builder) keyCreated(at time.Time, id int) KeyCreated {
	b.t.Helper()
	_, pub, err := keys.X25519.Generate()
	if err != nil {
		b.t.Fatal(err)
	}
	pem, _ := keys.PublicPEM(keys.X25519, pub)
	n := uint64(len(b.st.Keys)) + 1
	return KeyCreated{
		Number: n, Kid: keys.KID(pem, n), ID: id, Suite: "x25519",
		KEM: keys.X25519.KEM, KDF: keys.X25519.KDF, AEAD: keys.X25519.AEAD, PublicKey: pub,
		NotBefore: at, NotAfter: at.Add(10 * time.Hour), ReleaseUntil: at.Add(13 * time.Hour), DestroyAfter: at.Add(14 * time.Hour),
		Reason: "scheduled",
	}
}

func TestPhase(t *testing.T) {
	k := &Key{KeyCreated: KeyCreated{NotBefore: t0.Add(2 * time.Hour), NotAfter: t0.Add(12 * time.Hour), ReleaseUntil: t0.Add(15 * time.Hour), DestroyAfter: t0.Add(16 * time.Hour)}}
	for _, tc := range []struct {
		at   time.Duration
		want Phase
	}{
		{0, Created}, {2*time.Hour - 1, Created}, {2 * time.Hour, Published}, {12*time.Hour - 1, Published},
		{12 * time.Hour, Retired}, {15*time.Hour - 1, Retired}, {15 * time.Hour, Expired}, {100 * time.Hour, Expired},
	} {
		if got := k.Phase(t0.Add(tc.at)); got != tc.want {
			t.Errorf("Phase(t0+%v) = %v, want %v", tc.at, got, tc.want)
		}
	}
	// Markers win over the clock: a recorded transition is never undone.
	k.RetiredSeq = 9
	if got := k.Phase(t0); got != Retired {
		t.Errorf("with retired marker, Phase(t0) = %v", got)
	}
	k.DestroyedSeq = 10
	if got := k.Phase(t0); got != Destroyed {
		t.Errorf("with destroyed marker, Phase(t0) = %v", got)
	}
}

func TestApplyRejects(t *testing.T) {
	b := newBuilder(t)
	good := b.keyCreated(t0, 11)
	b.must(ledger.TypeKeyCreated, t0, good, []byte("sealed"))

	for _, tc := range []struct {
		name   string
		mutate func(kc *KeyCreated)
		sealed []byte
		want   string
	}{
		{"duplicate number", func(kc *KeyCreated) { kc.Number = 1 }, []byte("s"), "a second key for one rotation"},
		{"kid not of key", func(kc *KeyCreated) { kc.Kid = good.Kid[:len(good.Kid)-1] + "2" }, []byte("s"), "does not match the public key"},
		{"id held", func(kc *KeyCreated) { kc.ID = 11 }, []byte("s"), "held by unexpired key"},
		{"id out of range", func(kc *KeyCreated) { kc.ID = 100 }, []byte("s"), "out of range"},
		{"times out of order", func(kc *KeyCreated) { kc.ReleaseUntil = kc.NotBefore }, []byte("s"), "out of order"},
		{"published before creation", func(kc *KeyCreated) { kc.NotBefore = t0.Add(-time.Hour) }, []byte("s"), "out of order"},
		{"no sealed key", func(kc *KeyCreated) {}, nil, "no sealed private key"},
		{"suite mismatch", func(kc *KeyCreated) { kc.KEM = keys.KEMP256HKDFSHA256 }, []byte("s"), "do not match suite"},
		{"unknown suite", func(kc *KeyCreated) { kc.Suite = "rsa" }, []byte("s"), "unknown suite"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kc := b.keyCreated(t0, 12)
			tc.mutate(&kc)
			before := len(b.st.Keys)
			err := b.st.Apply(b.entry(ledger.TypeKeyCreated, t0, kc, tc.sealed))
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Apply = %v, want ErrInvalid containing %q", err, tc.want)
			}
			if len(b.st.Keys) != before {
				t.Fatal("a rejected entry changed the key set")
			}
		})
	}

	t.Run("marker twice", func(t *testing.T) {
		b.must(ledger.TypeKeyPublished, t0, KeyEvent{Kid: good.Kid}, nil)
		if err := b.st.Apply(b.entry(ledger.TypeKeyPublished, t0, KeyEvent{Kid: good.Kid}, nil)); !errors.Is(err, ErrInvalid) {
			t.Fatalf("second published marker: %v", err)
		}
	})
	t.Run("unknown kid", func(t *testing.T) {
		if err := b.st.Apply(b.entry(ledger.TypeKeyRetired, t0, KeyEvent{Kid: "nope_7"}, nil)); !errors.Is(err, ErrInvalid) {
			t.Fatalf("marker for unknown kid: %v", err)
		}
	})
	t.Run("event after destroy", func(t *testing.T) {
		b.must(ledger.TypeKeyDestroyed, t0, KeyEvent{Kid: good.Kid}, nil)
		if err := b.st.Apply(b.entry(ledger.TypeKeyExpired, t0, KeyEvent{Kid: good.Kid}, nil)); !errors.Is(err, ErrInvalid) {
			t.Fatalf("expired after destroyed: %v", err)
		}
	})
	t.Run("out of sequence", func(t *testing.T) {
		e := b.entry(ledger.TypeKeyRetired, t0, KeyEvent{Kid: good.Kid}, nil)
		e.Seq += 5
		if err := b.st.Apply(e); !errors.Is(err, ErrSequence) {
			t.Fatalf("gap: %v", err)
		}
	})
	t.Run("bad policy", func(t *testing.T) {
		before := b.st.Rotation
		err := b.st.Apply(b.entry(ledger.TypeKeyRotationPolicy, t0, RotationPolicy{Suite: "x25519"}, nil))
		if !errors.Is(err, ErrInvalid) || b.st.Rotation != before {
			t.Fatalf("zero interval policy: %v", err)
		}
	})
}

func TestApplyNeedsGenesisFirst(t *testing.T) {
	st := New()
	body, _ := json.Marshal(DefaultRotationPolicy())
	if err := st.Apply(&ledger.Entry{Seq: 1, Time: t0, Type: ledger.TypeKeyRotationPolicy, Body: body}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("policy before genesis: %v", err)
	}
}

func TestIDFreedAfterExpiry(t *testing.T) {
	b := newBuilder(t)
	b.must(ledger.TypeKeyCreated, t0, b.keyCreated(t0, 11), []byte("s"))
	if !b.st.IDHeld(11, t0.Add(12*time.Hour)) {
		t.Fatal("id 11 must be held during grace")
	}
	later := t0.Add(13 * time.Hour) // key 1's release_until
	if b.st.IDHeld(11, later) {
		t.Fatal("id 11 must be free once key 1 expired")
	}
	b.must(ledger.TypeKeyCreated, later, b.keyCreated(later, 11), []byte("s"))
}

func TestAdvertisedAndNextChange(t *testing.T) {
	b := newBuilder(t)
	b.must(ledger.TypeKeyCreated, t0, b.keyCreated(t0, 11), []byte("s"))
	kc := b.keyCreated(t0.Add(time.Hour), 12)
	kc.NotBefore = t0.Add(3 * time.Hour)
	kc.NotAfter, kc.ReleaseUntil, kc.DestroyAfter = kc.NotBefore.Add(10*time.Hour), kc.NotBefore.Add(13*time.Hour), kc.NotBefore.Add(14*time.Hour)
	b.must(ledger.TypeKeyCreated, t0.Add(time.Hour), kc, []byte("s"))

	at := t0.Add(2 * time.Hour)
	if adv := b.st.Advertised(at); len(adv) != 1 || adv[0].Number != 1 {
		t.Fatalf("at 2h advertised %v", adv)
	}
	if nc := b.st.NextChange(at); !nc.Equal(t0.Add(3 * time.Hour)) {
		t.Fatalf("next change %v, want 3h", nc)
	}
	at = t0.Add(4 * time.Hour)
	adv := b.st.Advertised(at)
	if len(adv) != 2 || adv[0].Number != 2 || b.st.Primary(at).Number != 2 {
		t.Fatalf("at 4h: newest published key must be primary")
	}
	if b.st.Key(kc.Kid) == nil || b.st.Key("x_1") != nil || b.st.Key("garbage") != nil {
		t.Fatal("Key lookup")
	}
}

func TestSnapshotRoundTrip(t *testing.T) {
	b := newBuilder(t)
	b.must(ledger.TypeKeyCreated, t0, b.keyCreated(t0, 11), []byte("s"))
	data, err := b.st.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	got, err := Unmarshal(data)
	if err != nil {
		t.Fatal(err)
	}
	again, _ := got.Marshal()
	if string(again) != string(data) {
		t.Fatal("snapshot round trip changed the state")
	}
	if _, err := Unmarshal([]byte(`{"keys":[{"number":2}]}`)); err == nil {
		t.Fatal("snapshot with keys out of order accepted")
	}
}

func TestRotationPolicyValidate(t *testing.T) {
	ok := DefaultRotationPolicy()
	if err := ok.Validate(); err != nil {
		t.Fatalf("default policy: %v", err)
	}
	for _, tc := range []struct {
		name   string
		mutate func(p *RotationPolicy)
		want   string
	}{
		{"zero interval", func(p *RotationPolicy) { p.RotationInterval = 0 }, "must be positive"},
		{"negative grace", func(p *RotationPolicy) { p.GracePeriod = -1 }, "must not be negative"},
		{"unknown suite", func(p *RotationPolicy) { p.Suite = "rsa" }, "unknown suite"},
		{"ids cannot suffice", func(p *RotationPolicy) { p.GracePeriod = 41 * p.RotationInterval }, "rotation intervals"},
	} {
		p := ok
		tc.mutate(&p)
		if err := p.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Validate() = %v, want %q", tc.name, err, tc.want)
		}
	}
}

func TestSecondsJSON(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"2678400", 31 * 24 * time.Hour, true}, {"0.25", 250 * time.Millisecond, true}, {"0", 0, true},
		{"-1", 0, false}, {`"10"`, 0, false}, {"1e12", 0, false},
	} {
		var s Seconds
		err := json.Unmarshal([]byte(tc.in), &s)
		if (err == nil) != tc.ok || (tc.ok && s.D() != tc.want) {
			t.Errorf("Unmarshal(%s) = %v, %v", tc.in, s.D(), err)
		}
	}
	out, _ := json.Marshal(DefaultRotationPolicy())
	want := `{"rotation_interval_seconds":2678400,"grace_period_seconds":604800,"publish_delay_seconds":604800,"retention_seconds":604800,"suite":"x25519"}`
	if string(out) != want {
		t.Fatalf("default policy JSON\n got %s\nwant %s", out, want)
	}
}

// FuzzApply feeds arbitrary bodies of every type to a state that holds one
// key: Apply must never panic, and a rejected entry must leave the key set
// alone.
func FuzzApply(f *testing.F) {
	f.Add(uint8(0), []byte(`{"service":"x","format":1}`))
	f.Add(uint8(3), []byte(`{"number":2,"kid":"a_2","id":12}`))
	f.Add(uint8(4), []byte(`{"kid":"a_1"}`))
	f.Add(uint8(1), []byte(`{"rotation_interval_seconds":1,"suite":"x25519"}`))
	f.Add(uint8(9), []byte(`{"id":"00","proposer":"00","cose":"2IRDoQEmoFhAYQ=="}`))
	types := []ledger.Type{ledger.TypeGenesis, ledger.TypeKeyRotationPolicy, ledger.TypeSettingsPolicy, ledger.TypeKeyCreated,
		ledger.TypeKeyPublished, ledger.TypeKeyRetired, ledger.TypeKeyExpired, ledger.TypeKeyDestroyed,
		ledger.TypeGovInit, ledger.TypeGovProposal, ledger.TypeGovBallot, ledger.TypeGovWithdrawal,
		ledger.TypeNodeJoined, ledger.TypeLedgerRekeyed}
	f.Add(uint8(13), []byte(`{"version":2,"proposal_id":"p","removed_node":"n","remove_seq":3,"nodes":[],"previous":"AA=="}`))
	f.Fuzz(func(t *testing.T, typ uint8, body []byte) {
		b := newBuilder(t)
		b.must(ledger.TypeKeyCreated, t0, b.keyCreated(t0, 11), []byte("s"))
		n := len(b.st.Keys)
		e := &ledger.Entry{Seq: b.st.Seq + 1, Time: t0, Type: types[int(typ)%len(types)], Body: body, Sealed: []byte("s")}
		if err := b.st.Apply(e); err != nil && (len(b.st.Keys) != n || len(b.st.Rekeys) != 0) {
			t.Fatal("rejected entry changed the key set or the ledger-secret versions")
		}
	})
}

// FuzzUnmarshalSnapshot: a snapshot is read from disk; garbage must be an
// error, never a panic.
func FuzzUnmarshalSnapshot(f *testing.F) {
	f.Add([]byte(`{"seq":3,"keys":[]}`))
	f.Add([]byte(`{"keys":[null]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		Unmarshal(data)
	})
}
