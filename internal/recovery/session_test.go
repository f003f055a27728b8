package recovery

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/tkms-dev/tkms/api"
	"github.com/tkms-dev/tkms/internal/gov"
	"github.com/tkms-dev/tkms/internal/keys"
)

// signingMember is a member with its signing and encryption keys.
type signingMember struct {
	member
	gm     gov.Member
	signer *gov.Signer
}

func newSigningMembers(t testing.TB, n int) []signingMember {
	t.Helper()
	var out []signingMember
	for i, m := range newMembers(t, n, keys.X25519) {
		priv, pub, err := gov.GenerateDevKey()
		if err != nil {
			t.Fatal(err)
		}
		s, err := gov.NewFileSigner(priv)
		if err != nil {
			t.Fatal(err)
		}
		gm, err := gov.NewMember(string(rune('a'+i)), string(pub), "")
		if err != nil {
			t.Fatal(err)
		}
		m.id = gm.ID
		gm.EncryptionKey = &m.key
		out = append(out, signingMember{member: m, gm: gm, signer: s})
	}
	return out
}

type fixture struct {
	ms      []signingMember
	shares  *Shares
	sess    *Session
	secret  []byte
	now     time.Time
	members map[string]gov.Member
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	f := &fixture{ms: newSigningMembers(t, 3), secret: bytes.Repeat([]byte{0x42}, 32), now: time.Unix(1_800_000_000, 0), members: map[string]gov.Member{}}
	var rs []Recipient
	for _, m := range f.ms {
		rs = append(rs, Recipient{MemberID: m.id, Key: m.key})
		f.members[m.id] = m.gm
	}
	var err error
	if f.shares, err = Split(f.secret, rs, 2, 3); err != nil {
		t.Fatal(err)
	}
	f.sess = NewSession(SessionConfig{
		ID: NewSessionID(), Shares: f.shares, SharesSeq: 40, Window: time.Minute, Now: func() time.Time { return f.now },
		Member: func(kid string) (gov.Member, bool) { m, ok := f.members[kid]; return m, ok },
	})
	return f
}

// message is member i's share message, as tkms gov share makes it.
func (f *fixture) message(t testing.TB, m signingMember, recoveryID string, seq uint64, keyHash string, share []byte) []byte {
	t.Helper()
	if share == nil {
		var err error
		if share, err = f.shares.OpenShare(m.id, m.key, m.priv); err != nil {
			t.Fatal(err)
		}
	}
	if keyHash == "" {
		keyHash = m.key.Hash()
	}
	p, _ := json.Marshal(api.RecoveryShare{SharesSeq: seq, KeyHash: keyHash, Share: share})
	raw, err := m.signer.SignRecoveryShare(recoveryID, p, f.now)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func TestSessionRecovers(t *testing.T) {
	f := newFixture(t)
	id := f.sess.Status().RecoveryID
	res, err := f.sess.Submit(f.message(t, f.ms[2], id, 40, "", nil))
	if err != nil || res.Received != 1 || res.Recovered {
		t.Fatalf("first share: %+v, %v", res, err)
	}
	select {
	case <-f.sess.Done():
		t.Fatal("done below the threshold")
	default:
	}
	res, err = f.sess.Submit(f.message(t, f.ms[0], id, 40, "", nil))
	if err != nil || !res.Recovered {
		t.Fatalf("second share: %+v, %v", res, err)
	}
	<-f.sess.Done()
	secret, used := f.sess.Result()
	if !bytes.Equal(secret, f.secret) || len(used) != 2 || used[0] != f.ms[2].id {
		t.Fatalf("Result = %x, %v", secret, used)
	}
	if _, err := f.sess.Submit(f.message(t, f.ms[1], id, 40, "", nil)); CodeOf(err) != CodeDone {
		t.Fatalf("a share after the recovery: %v", err)
	}
}

// Every refusal has its own code and leaves the accepted shares alone.
func TestSessionRefusals(t *testing.T) {
	f := newFixture(t)
	id := f.sess.Status().RecoveryID
	if _, err := f.sess.Submit(f.message(t, f.ms[0], id, 40, "", nil)); err != nil {
		t.Fatal(err)
	}
	stranger := newSigningMembers(t, 1)[0]
	s1, _ := f.shares.OpenShare(f.ms[1].id, f.ms[1].key, f.ms[1].priv)
	altered := bytes.Clone(s1)
	altered[5] ^= 1
	proposal, _ := f.ms[1].signer.SignProposal([]gov.Action{{Name: gov.ActRotateKeyNow}}, f.now)
	for _, tc := range []struct {
		name string
		raw  func() []byte
		code string
	}{
		{"not COSE", func() []byte { return []byte("share") }, CodeBadMessage},
		{"a proposal", func() []byte { return proposal }, CodeBadMessage},
		{"another recovery", func() []byte { return f.message(t, f.ms[1], NewSessionID(), 40, "", nil) }, CodeWrongRecovery},
		{"a non-member", func() []byte {
			return f.message(t, stranger, id, 40, "", bytes.Repeat([]byte{1}, shareSize))
		}, CodeNotMember},
		{"replayed", func() []byte { return f.message(t, f.ms[0], id, 40, "", nil) }, CodeReplayed},
		{"older shares", func() []byte { return f.message(t, f.ms[1], id, 39, "", nil) }, CodeShareInvalid},
		{"sealed to another key", func() []byte { return f.message(t, f.ms[1], id, 40, stranger.key.Hash(), nil) }, CodeWrongKey},
		{"altered share", func() []byte { return f.message(t, f.ms[1], id, 40, "", altered) }, CodeShareInvalid},
		{"another member's share", func() []byte {
			s2, _ := f.shares.OpenShare(f.ms[2].id, f.ms[2].key, f.ms[2].priv)
			return f.message(t, f.ms[1], id, 40, "", s2)
		}, CodeShareInvalid},
		{"stale", func() []byte {
			p, _ := json.Marshal(api.RecoveryShare{SharesSeq: 40, KeyHash: f.ms[1].key.Hash(), Share: s1})
			raw, _ := f.ms[1].signer.SignRecoveryShare(id, p, f.now.Add(-time.Hour))
			return raw
		}, CodeBadMessage},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := f.sess.Submit(tc.raw())
			if got := CodeOf(err); got != tc.code {
				t.Fatalf("code %q (%v), want %q", got, err, tc.code)
			}
			if st := f.sess.Status(); len(st.Received) != 1 || st.State != api.RecoveryWaiting {
				t.Fatalf("status after the refusal: %+v", st)
			}
		})
	}
}

func TestSessionHandler(t *testing.T) {
	f := newFixture(t)
	srv := httptest.NewServer(f.sess.Handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/v1/recovery")
	if err != nil {
		t.Fatal(err)
	}
	var st api.RecoveryStatus
	json.NewDecoder(resp.Body).Decode(&st)
	resp.Body.Close()
	if st.RecoveryID == "" || st.Threshold != 2 || len(st.Holders) != 3 || st.State != api.RecoveryWaiting {
		t.Fatalf("status %+v", st)
	}
	resp, err = http.Get(srv.URL + "/app/listpubkeys")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("x-ms-kms-error-code") != CodeWaiting {
		t.Fatalf("another path: %s %s", resp.Status, resp.Header.Get("x-ms-kms-error-code"))
	}
	raw := f.message(t, f.ms[0], NewSessionID(), 40, "", nil)
	resp, err = http.Post(srv.URL+"/v1/recovery/share", "application/cose", bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	var e api.ErrorResponse
	json.NewDecoder(resp.Body).Decode(&e)
	resp.Body.Close()
	if resp.StatusCode != http.StatusConflict || e.Error.Code != CodeWrongRecovery {
		t.Fatalf("share for another recovery: %s %+v", resp.Status, e)
	}
}
