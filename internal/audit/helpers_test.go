package audit

// Test logs: a builder that writes ledger entries the way tkms does (and,
// on request, the way it must not), and the writer of a static mirror,
// which is also how an operator publishes one: translog.ReadTile for every
// tile of the tree, at translog.TilePath.

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/tkms-dev/tkms/internal/keys"
	"github.com/tkms-dev/tkms/internal/kms"
	"github.com/tkms-dev/tkms/internal/ledger"
	"github.com/tkms-dev/tkms/internal/policy"
	"github.com/tkms-dev/tkms/internal/state"
	"github.com/tkms-dev/tkms/internal/translog"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

const testPolicyJSON = `{"claims":{"x-ms-sevsnpvm-is-debuggable":false},"gte":{"x-ms-sevsnpvm-guestsvn":3}}`

// goodClaims satisfy testPolicyJSON.
func goodClaims() map[string]any {
	return map[string]any{"x-ms-sevsnpvm-is-debuggable": false, "x-ms-sevsnpvm-guestsvn": 4}
}

// builder builds a ledger entry by entry, applying each to a state as the
// service does, and signs checkpoints with its own log key.
type builder struct {
	origin  string
	signer  note.Signer
	vkey    string
	now     time.Time
	entries []*ledger.Entry
	st      *state.State
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// newBuilder starts a log as kms.Open does on a new data directory:
// genesis, log key, policies; then the first key, as the scheduler does.
func newBuilder(rot state.RotationPolicy) *builder {
	origin := "audit.test/log"
	skey, vkey := must2(translog.GenerateKey(origin))
	b := &builder{origin: origin, signer: must(note.NewSigner(skey)), vkey: vkey, now: t0, st: state.New()}
	b.add(ledger.TypeGenesis, state.Genesis{Service: "test", Format: 1})
	b.addSealed(ledger.TypeLogKey, state.LogKey{Origin: origin, VerifierKey: vkey})
	b.add(ledger.TypeKeyRotationPolicy, rot)
	b.add(ledger.TypeSettingsPolicy, state.Settings{Service: state.ServiceSettings{Name: "test"}})
	b.add(ledger.TypeKeyReleasePolicy, policy.Marshal(must(policy.Parse([]byte(testPolicyJSON)))))
	b.key(kms.ReasonScheduled)
	return b
}

func must2[T, U any](a T, b U, err error) (T, U) {
	if err != nil {
		panic(err)
	}
	return a, b
}

func testRotation() state.RotationPolicy {
	return state.RotationPolicy{
		RotationInterval: state.Seconds(10 * time.Hour), PublishDelay: state.Seconds(2 * time.Hour),
		GracePeriod: state.Seconds(3 * time.Hour), Retention: state.Seconds(time.Hour), Suite: "x25519",
	}
}

func (b *builder) advance(d time.Duration) { b.now = b.now.Add(d) }

// add appends an entry at the builder's time; body is marshalled unless
// it is a []byte. It does not care whether the state accepts it.
func (b *builder) add(typ ledger.Type, body any) *ledger.Entry { return b.append(typ, body, nil) }

func (b *builder) addSealed(typ ledger.Type, body any) *ledger.Entry {
	return b.append(typ, body, []byte("sealed part "+fmt.Sprint(len(b.entries)+1)))
}

func (b *builder) append(typ ledger.Type, body any, sealed []byte) *ledger.Entry {
	raw, ok := body.([]byte)
	if !ok {
		raw = must(json.Marshal(body))
	}
	e := &ledger.Entry{Seq: uint64(len(b.entries)) + 1, Time: b.now, Type: typ, Body: raw, Sealed: sealed}
	b.entries = append(b.entries, e)
	b.st.Apply(e)
	return e
}

// keyBody returns the body of the next key as kms.createKeyLocked makes it.
func (b *builder) keyBody(reason string) state.KeyCreated {
	p := b.st.Rotation
	suite := must(keys.ParseSuite(p.Suite))
	_, pub := must2(suite.Generate())
	kc := state.KeyCreated{Number: uint64(len(b.st.Keys)) + 1, Suite: suite.Name, KEM: suite.KEM, KDF: suite.KDF, AEAD: suite.AEAD, PublicKey: pub, Reason: reason}
	kc.Kid = keys.KID(must(keys.PublicPEM(suite, pub)), kc.Number)
	kc.ID = must(keys.AssignID(kc.Number, func(id int) bool { return b.st.IDHeld(id, b.now) }))
	kc.NotBefore = b.now.Add(p.PublishDelay.D())
	if b.st.Primary(b.now) == nil {
		kc.NotBefore = b.now
	}
	kc.NotAfter = kc.NotBefore.Add(p.RotationInterval.D())
	kc.ReleaseUntil = kc.NotAfter.Add(p.GracePeriod.D())
	kc.DestroyAfter = kc.ReleaseUntil.Add(p.Retention.D())
	return kc
}

func (b *builder) key(reason string) state.KeyCreated {
	kc := b.keyBody(reason)
	b.addSealed(ledger.TypeKeyCreated, kc)
	return kc
}

// tick does what kms.Service.Tick does at the builder's time.
func (b *builder) tick() {
	if due(b.st, b.now) {
		b.key(kms.ReasonScheduled)
	}
	for _, k := range b.st.Live() {
		kid := k.Kid
		if k.PublishedSeq == 0 && !b.now.Before(k.NotBefore) {
			b.add(ledger.TypeKeyPublished, state.KeyEvent{Kid: kid})
		}
		if k.RetiredSeq == 0 && !b.now.Before(k.NotAfter) {
			b.add(ledger.TypeKeyRetired, state.KeyEvent{Kid: kid})
		}
		if k.ExpiredSeq == 0 && !b.now.Before(k.ReleaseUntil) {
			b.add(ledger.TypeKeyExpired, state.KeyEvent{Kid: kid})
		}
		if !b.now.Before(k.DestroyAfter) {
			b.add(ledger.TypeKeyDestroyed, state.KeyEvent{Kid: kid, Reason: "retention ended"})
		}
	}
}

// due is kms.dueLocked.
func due(st *state.State, now time.Time) bool {
	n := st.Newest()
	if n == nil || n.Phase(now) >= state.Retired {
		return true
	}
	p := st.Rotation
	if !now.Before(n.Created.Add(p.RotationInterval.D())) {
		return true
	}
	return !now.Before(n.NotAfter.Add(-p.PublishDelay.D()))
}

// release is what release.Service.record writes for a release of kids
// under the policy in force; edit may change it first.
func (b *builder) release(kids []string, claims map[string]any, edit func(*state.KeyReleased)) *ledger.Entry {
	h := policy.Hash(must(policy.Parse(b.st.ReleasePolicy)))
	r := state.KeyReleased{
		Kids: kids, API: "app/unwrapKey", Format: "jwk", Issuer: "https://issuer.test", Identity: "oid-1",
		EvidenceType: "snp-aci", Measurement: "aa", HostData: "bb", ReportSHA256: "cc", WrappingKeySHA256: "dd",
		PolicySeq: b.st.ReleasePolicySeq, PolicySHA256: hex.EncodeToString(h[:]), Claims: claims,
	}
	if edit != nil {
		edit(&r)
	}
	return b.add(ledger.TypeKeyReleased, r)
}

func (b *builder) leaves() [][]byte {
	out := make([][]byte, len(b.entries))
	for i, e := range b.entries {
		out[i] = ledger.LeafBytes(e)
	}
	return out
}

// mirror writes the first n entries (all if n < 0) as a static mirror.
func (b *builder) mirror(dir string, n int) {
	ls := b.leaves()
	if n >= 0 {
		ls = ls[:n]
	}
	must(0, writeMirror(dir, ls, b.origin, b.signer))
}

// leafSlice is a translog.LeafReader over leaves in memory.
type leafSlice [][]byte

func (l leafSlice) ReadLeaves(start, n int64) ([][]byte, error) {
	if start < 0 || n < 0 || start+n > int64(len(l)) {
		return nil, fmt.Errorf("leaves %d+%d of %d", start, n, len(l))
	}
	return l[start : start+n], nil
}

// writeMirror computes the tree of leaves and writes its checkpoint, every
// hash tile and every entry bundle into dir.
func writeMirror(dir string, leaves [][]byte, origin string, signer note.Signer) error {
	var hashes memHashes
	for i, l := range leaves {
		hs, err := tlog.StoredHashes(int64(i), l, hashes)
		if err != nil {
			return err
		}
		hashes = append(hashes, hs...)
	}
	size := int64(len(leaves))
	root, err := tlog.TreeHash(size, hashes)
	if err != nil {
		return err
	}
	cp, err := translog.Sign(translog.Checkpoint{Origin: origin, Size: size, Root: root}, signer)
	if err != nil {
		return err
	}
	return writeTiles(dir, cp, hashes, leafSlice(leaves))
}

// writeTiles writes checkpoint cp and the tiles of its tree into dir.
func writeTiles(dir string, cp translog.Signed, hashes tlog.HashReader, leaves translog.LeafReader) error {
	for _, t := range tlog.NewTiles(translog.TileHeight, 0, cp.Size) {
		ts := []tlog.Tile{t}
		if t.L == 0 {
			e := t
			e.L = -1
			ts = append(ts, e)
		}
		for _, t := range ts {
			data, err := translog.ReadTile(t, cp.Size, hashes, leaves)
			if err != nil {
				return err
			}
			if err := writeFile(filepath.Join(dir, translog.TilePath(t)), data); err != nil {
				return err
			}
		}
	}
	return writeFile(filepath.Join(dir, "checkpoint"), cp.Note)
}

func writeFile(name string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
		return err
	}
	return os.WriteFile(name, data, 0o644)
}

// mirrorService writes the log of a running service into dir.
func mirrorService(dir string, svc *kms.Service) error {
	return writeTiles(dir, svc.Checkpoint(), svc.LogHashes(), svc)
}

// audit runs an audit of the mirror in dir.
func auditDir(dir, vkey, stateFile string) (*Report, error) {
	return Run(context.Background(), Options{Source: NewDirSource(dir), LogKey: vkey, StateFile: stateFile, Now: func() time.Time { return t0 }})
}
