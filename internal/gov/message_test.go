package gov

import (
	"bytes"
	"crypto/ecdsa"
	"encoding/json"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/veraison/go-cose"
)

var rotate = []Action{{Name: ActRotateKeyNow, Args: json.RawMessage(`{"reason":"test"}`)}}

func TestRoundTrip(t *testing.T) {
	for _, kind := range memberKinds {
		k := genKey(t, kind)
		s := k.signer(t)
		for form, p := range map[string]string{"public key": k.pubPEM(t), "certificate": k.certPEM(t)} {
			t.Run(kind+"/"+form, func(t *testing.T) {
				m, err := NewMember("sro-a", p, "")
				if err != nil {
					t.Fatal(err)
				}
				if s.MemberID() != m.ID {
					t.Fatalf("signer id %s, member id %s", s.MemberID(), m.ID)
				}
				prop, err := s.SignProposal(rotate, t0)
				if err != nil {
					t.Fatal(err)
				}
				ballot, err := s.SignBallot(ProposalID(prop), true, t0.Add(time.Second))
				if err != nil {
					t.Fatal(err)
				}
				reject, err := s.SignBallot(ProposalID(prop), false, t0.Add(time.Second))
				if err != nil {
					t.Fatal(err)
				}
				withdraw, err := s.SignWithdrawal(ProposalID(prop), t0.Add(2*time.Second))
				if err != nil {
					t.Fatal(err)
				}
				for _, tt := range []struct {
					raw  []byte
					typ  MessageType
					pid  string
					at   time.Time
					vote string
				}{
					{prop, MsgProposal, "", t0, ""},
					{ballot, MsgBallot, ProposalID(prop), t0.Add(time.Second), VoteApprove},
					{reject, MsgBallot, ProposalID(prop), t0.Add(time.Second), VoteReject},
					{withdraw, MsgWithdrawal, ProposalID(prop), t0.Add(2 * time.Second), ""},
				} {
					msg, err := ParseMessage(tt.raw)
					if err != nil {
						t.Fatal(err)
					}
					if msg.Type != tt.typ || msg.Signer != m.ID || msg.Alg != int64(k.alg) || !msg.CreatedAt.Equal(tt.at) || msg.ProposalID != tt.pid || !bytes.Equal(msg.Raw, tt.raw) {
						t.Errorf("%s: parsed %+v", tt.typ, msg)
					}
					if err := msg.Verify(m); err != nil {
						t.Errorf("%s: Verify: %v", tt.typ, err)
					}
					switch tt.typ {
					case MsgProposal:
						acts, err := DecodeProposal(msg)
						if err != nil || len(acts) != 1 || acts[0].Name != ActRotateKeyNow || string(acts[0].Args) != `{"reason":"test"}` {
							t.Errorf("DecodeProposal = %+v, %v", acts, err)
						}
					case MsgBallot:
						approve, err := DecodeBallot(msg)
						if err != nil || approve != (tt.vote == VoteApprove) {
							t.Errorf("DecodeBallot = %v, %v; want %s", approve, err, tt.vote)
						}
					}
				}
			})
		}
	}
}

func TestProposalID(t *testing.T) {
	// SHA-256("abc")
	if got := ProposalID([]byte("abc")); got != "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad" {
		t.Errorf("ProposalID = %s", got)
	}
}

// reencode returns raw with its Sign1Message edited and re-encoded, keeping
// the signature.
func reencode(t *testing.T, raw []byte, edit func(*cose.Sign1Message)) []byte {
	t.Helper()
	var sm cose.Sign1Message
	if err := sm.UnmarshalCBOR(raw); err != nil {
		t.Fatal(err)
	}
	edit(&sm)
	out, err := sm.MarshalCBOR()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestVerifyCheats tries every way to pass off a message as another's or as
// other content.
func TestVerifyCheats(t *testing.T) {
	a, b := genKey(t, "P-256"), genKey(t, "Ed25519")
	p384 := genKey(t, "P-384")
	ma, mb := a.member(t, "sro-a"), b.member(t, "sro-b")
	sa := a.signer(t)
	prop, err := sa.SignProposal(rotate, t0)
	if err != nil {
		t.Fatal(err)
	}
	// A message claiming to be a's, signed by b.
	hA := headers(t, a, MsgProposal, t0, "")
	hA[cose.HeaderLabelAlgorithm] = b.alg
	forged := signRaw(t, b, 0, hA, nil, []byte(`{"actions":[{"name":"rotate_key_now","args":{}}]}`))
	// A message of b's whose kid says a.
	hB := headers(t, b, MsgProposal, t0, "")
	hB[cose.HeaderLabelKeyID] = []byte(ma.ID)
	kidSwap := signRaw(t, b, 0, hB, nil, []byte(`{"actions":[{"name":"rotate_key_now","args":{}}]}`))

	tests := []struct {
		name   string
		raw    []byte
		member Member
	}{
		{"payload changed", reencode(t, prop, func(m *cose.Sign1Message) {
			m.Payload = []byte(`{"actions":[{"name":"destroy_key","args":{"kid":"` + kid + `"}}]}`)
		}), ma},
		{"payload byte flipped", reencode(t, prop, func(m *cose.Sign1Message) { m.Payload = bytes.Replace(m.Payload, []byte("test"), []byte("tesu"), 1) }), ma},
		{"created_at changed", reencode(t, prop, func(m *cose.Sign1Message) {
			m.Headers.RawProtected = nil
			m.Headers.Protected[HeaderCreatedAt] = t0.Add(time.Hour).Unix()
		}), ma},
		{"type changed", reencode(t, prop, func(m *cose.Sign1Message) {
			m.Headers.RawProtected = nil
			m.Headers.Protected[HeaderType] = string(MsgWithdrawal)
			m.Headers.Protected[HeaderProposalID] = pid
			m.Payload = []byte(`{}`)
		}), ma},
		{"signature byte flipped", reencode(t, prop, func(m *cose.Sign1Message) { m.Signature[5] ^= 0x80 }), ma},
		{"signature truncated", reencode(t, prop, func(m *cose.Sign1Message) { m.Signature = m.Signature[:63] }), ma},
		{"wrong member", prop, mb},
		{"forged kid, other key", forged, ma},
		{"kid swapped, verified against kid's member", kidSwap, ma},
		{"kid swapped, verified against signer", kidSwap, mb},
		{"alg ES384 on a P-256 key", signRaw(t, a, cose.AlgorithmES384, func() cose.ProtectedHeader {
			h := headers(t, a, MsgProposal, t0, "")
			h[cose.HeaderLabelAlgorithm] = cose.AlgorithmES384
			return h
		}(), nil, []byte(`{"actions":[]}`)), ma},
		{"alg ES256 on an Ed25519 key", signRaw(t, b, cose.AlgorithmES256, func() cose.ProtectedHeader {
			h := headers(t, b, MsgProposal, t0, "")
			h[cose.HeaderLabelAlgorithm] = cose.AlgorithmES256
			return h
		}(), nil, []byte(`{"actions":[]}`)), mb},
		{"alg ES256 on a P-384 key", signRaw(t, p384, cose.AlgorithmES256, func() cose.ProtectedHeader {
			h := headers(t, p384, MsgProposal, t0, "")
			h[cose.HeaderLabelAlgorithm] = cose.AlgorithmES256
			return h
		}(), nil, []byte(`{"actions":[]}`)), p384.member(t, "sro-c")},
		{"member with tampered id", prop, func() Member { m := mb; m.ID = ma.ID; return m }()},
		{"member with broken key", prop, func() Member { m := ma; m.SigningKey = "x"; return m }()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msg, err := ParseMessage(tt.raw)
			if err != nil {
				t.Fatalf("ParseMessage: %v", err) // these are all well-formed
			}
			err = msg.Verify(tt.member)
			if !errors.Is(err, ErrBadSignature) || Code(err) != CodeBadSignature {
				t.Fatalf("Verify = %v, want ErrBadSignature", err)
			}
		})
	}

	// A Message whose fields were changed after parsing.
	msg, err := ParseMessage(prop)
	if err != nil {
		t.Fatal(err)
	}
	for name, edit := range map[string]func(*Message){
		"payload":    func(m *Message) { m.Payload = []byte(`{"actions":[]}`) },
		"type":       func(m *Message) { m.Type = MsgBallot },
		"created_at": func(m *Message) { m.CreatedAt = m.CreatedAt.Add(time.Hour) },
		"signer":     func(m *Message) { m.Signer = mb.ID },
		"alg":        func(m *Message) { m.Alg = int64(cose.AlgorithmEdDSA) },
		"proposal":   func(m *Message) { m.ProposalID = pid },
	} {
		c := *msg
		edit(&c)
		if err := c.Verify(ma); !errors.Is(err, ErrBadSignature) {
			t.Errorf("edited %s: Verify = %v", name, err)
		}
	}
	c := *msg
	c.Raw = []byte("junk")
	if err := c.Verify(ma); !errors.Is(err, ErrInvalidMessage) {
		t.Errorf("junk Raw: Verify = %v", err)
	}
}

// ECDSA signatures are malleable: (r, n-s) verifies too. The bytes, and so
// the proposal id, differ; ContentID does not.
func TestECDSAMalleability(t *testing.T) {
	for _, kind := range []string{"P-256", "P-384"} {
		k := genKey(t, kind)
		m := k.member(t, "sro-a")
		prop, err := k.signer(t).SignProposal(rotate, t0)
		if err != nil {
			t.Fatal(err)
		}
		n := k.priv.Public().(*ecdsa.PublicKey).Curve.Params().N
		mall := reencode(t, prop, func(sm *cose.Sign1Message) {
			size := len(sm.Signature) / 2
			s := new(big.Int).SetBytes(sm.Signature[size:])
			s.Sub(n, s)
			s.FillBytes(sm.Signature[size:])
		})
		m1, err := ParseMessage(prop)
		if err != nil {
			t.Fatal(err)
		}
		m2, err := ParseMessage(mall)
		if err != nil {
			t.Fatal(err)
		}
		if err := m2.Verify(m); err != nil {
			t.Fatalf("%s: malleated signature does not verify (%v): update this test and ContentID's doc", kind, err)
		}
		if ProposalID(prop) == ProposalID(mall) {
			t.Errorf("%s: same proposal id", kind)
		}
		if ContentID(m1) != ContentID(m2) {
			t.Errorf("%s: ContentID differs", kind)
		}
		other, err := k.signer(t).SignProposal(rotate, t0.Add(time.Second))
		if err != nil {
			t.Fatal(err)
		}
		m3, _ := ParseMessage(other)
		if ContentID(m3) == ContentID(m1) {
			t.Errorf("%s: different content, same ContentID", kind)
		}
	}
}

func TestParseMessageHeaders(t *testing.T) {
	k := genKey(t, "P-256")
	id := k.member(t, "x").ID
	propPayload := []byte(`{"actions":[{"name":"rotate_key_now","args":{}}]}`)
	edit := func(typ MessageType, proposal string, f func(cose.ProtectedHeader)) cose.ProtectedHeader {
		h := headers(t, k, typ, t0, proposal)
		f(h)
		return h
	}
	tests := []struct {
		name    string
		h       cose.ProtectedHeader
		unprot  cose.UnprotectedHeader
		payload []byte
		want    string // "" for valid
	}{
		{"proposal", headers(t, k, MsgProposal, t0, ""), nil, propPayload, ""},
		{"ballot", headers(t, k, MsgBallot, t0, pid), nil, []byte(`{"vote":"approve"}`), ""},
		{"withdrawal", headers(t, k, MsgWithdrawal, t0, pid), nil, []byte(`{}`), ""},
		{"withdrawal empty payload", headers(t, k, MsgWithdrawal, t0, pid), nil, []byte{}, ""},
		{"created_at zero", edit(MsgProposal, "", func(h cose.ProtectedHeader) { h[HeaderCreatedAt] = int64(0) }), nil, propPayload, ""},
		{"missing alg", edit(MsgProposal, "", func(h cose.ProtectedHeader) { delete(h, cose.HeaderLabelAlgorithm) }), nil, propPayload, "missing"},
		{"missing kid", edit(MsgProposal, "", func(h cose.ProtectedHeader) { delete(h, cose.HeaderLabelKeyID) }), nil, propPayload, "protected header 4 missing"},
		{"missing type", edit(MsgProposal, "", func(h cose.ProtectedHeader) { delete(h, HeaderType) }), nil, propPayload, "ccf.gov.msg.type missing"},
		{"missing created_at", edit(MsgProposal, "", func(h cose.ProtectedHeader) { delete(h, HeaderCreatedAt) }), nil, propPayload, "ccf.gov.msg.created_at missing"},
		{"ballot without proposal id", headers(t, k, MsgBallot, t0, ""), nil, []byte(`{"vote":"approve"}`), "needs ccf.gov.msg.proposal_id"},
		{"withdrawal without proposal id", headers(t, k, MsgWithdrawal, t0, ""), nil, []byte(`{}`), "needs ccf.gov.msg.proposal_id"},
		{"proposal with proposal id", headers(t, k, MsgProposal, t0, pid), nil, propPayload, "carries no"},
		{"extra content type", edit(MsgProposal, "", func(h cose.ProtectedHeader) { h[cose.HeaderLabelContentType] = "application/json" }), nil, propPayload, "unexpected protected header 3"},
		{"extra crit", edit(MsgProposal, "", func(h cose.ProtectedHeader) { h[cose.HeaderLabelCritical] = []any{HeaderType} }), nil, propPayload, "unexpected protected header 2"},
		{"extra ccf header", edit(MsgProposal, "", func(h cose.ProtectedHeader) { h["ccf.gov.msg.extra"] = "x" }), nil, propPayload, "unexpected protected header ccf.gov.msg.extra"},
		{"unprotected kid", headers(t, k, MsgProposal, t0, ""), cose.UnprotectedHeader{cose.HeaderLabelKeyID: []byte(id)}, propPayload, "unprotected header must be empty"},
		{"unprotected extra", headers(t, k, MsgProposal, t0, ""), cose.UnprotectedHeader{"x": 1}, propPayload, "unprotected header must be empty"},
		{"type vote", edit(MsgProposal, "", func(h cose.ProtectedHeader) { h[HeaderType] = "vote" }), nil, propPayload, "ccf.gov.msg.type: want"},
		{"type as int", edit(MsgProposal, "", func(h cose.ProtectedHeader) { h[HeaderType] = 1 }), nil, propPayload, "ccf.gov.msg.type: want"},
		{"type as bstr", edit(MsgProposal, "", func(h cose.ProtectedHeader) { h[HeaderType] = []byte("proposal") }), nil, propPayload, "ccf.gov.msg.type: want"},
		{"created_at string", edit(MsgProposal, "", func(h cose.ProtectedHeader) { h[HeaderCreatedAt] = "1764237600" }), nil, propPayload, "created_at: want"},
		{"created_at negative", edit(MsgProposal, "", func(h cose.ProtectedHeader) { h[HeaderCreatedAt] = int64(-1) }), nil, propPayload, "created_at: want"},
		{"created_at float", edit(MsgProposal, "", func(h cose.ProtectedHeader) { h[HeaderCreatedAt] = 1.5 }), nil, propPayload, "created_at: want"},
		{"kid uppercase", edit(MsgProposal, "", func(h cose.ProtectedHeader) { h[cose.HeaderLabelKeyID] = []byte(strings.ToUpper(id)) }), nil, propPayload, "kid"},
		{"kid raw hash", edit(MsgProposal, "", func(h cose.ProtectedHeader) { h[cose.HeaderLabelKeyID] = []byte(id[:32]) }), nil, propPayload, "kid"},
		{"proposal id uppercase", headers(t, k, MsgBallot, t0, strings.ToUpper(pid)), nil, []byte(`{"vote":"approve"}`), "proposal_id: want"},
		{"proposal id bstr", edit(MsgBallot, "", func(h cose.ProtectedHeader) { h[HeaderProposalID] = []byte(pid) }), nil, []byte(`{"vote":"approve"}`), "proposal_id: want"},
		{"alg PS256", edit(MsgProposal, "", func(h cose.ProtectedHeader) { h[cose.HeaderLabelAlgorithm] = cose.AlgorithmPS256 }), nil, propPayload, "alg -37"},
		{"alg ES512", edit(MsgProposal, "", func(h cose.ProtectedHeader) { h[cose.HeaderLabelAlgorithm] = cose.AlgorithmES512 }), nil, propPayload, "alg -36"},
		{"payload not JSON", headers(t, k, MsgProposal, t0, ""), nil, []byte(`actions`), "not a JSON object"},
		{"payload array", headers(t, k, MsgProposal, t0, ""), nil, []byte(`[]`), "not a JSON object"},
		{"payload empty", headers(t, k, MsgBallot, t0, pid), nil, []byte{}, "not a JSON object"},
		{"withdrawal with fields", headers(t, k, MsgWithdrawal, t0, pid), nil, []byte(`{"reason":"x"}`), "withdrawal payload"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var signAlg cose.Algorithm
			if a, err := tt.h.Algorithm(); err == nil {
				signAlg = a
			}
			if _, ok := tt.h[cose.HeaderLabelAlgorithm]; !ok {
				signAlg = 0
			}
			raw := signRawNoAlg(t, k, signAlg, tt.h, tt.unprot, tt.payload)
			m, err := ParseMessage(raw)
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if err := m.Verify(k.member(t, "x")); err != nil {
					t.Errorf("Verify: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) || !errors.Is(err, ErrInvalidMessage) || Code(err) != CodeInvalidMessage {
				t.Fatalf("err = %v, want ErrInvalidMessage containing %q", err, tt.want)
			}
		})
	}
}

// signRawNoAlg is signRaw that can also sign without an alg header (the
// signature is then computed with the key's own algorithm over the header
// as given).
func signRawNoAlg(t *testing.T, k testKey, alg cose.Algorithm, prot cose.ProtectedHeader, unprot cose.UnprotectedHeader, payload []byte) []byte {
	t.Helper()
	if alg != 0 {
		return signRaw(t, k, alg, prot, unprot, payload)
	}
	// go-cose requires alg unless external data is given; sign a message
	// with the header as raw bytes and external data, then drop nothing:
	// the signature will not verify, which is fine for a parse test.
	ph, err := cbor.Marshal(map[any]any(prot))
	if err != nil {
		t.Fatal(err)
	}
	bstr, _ := cbor.Marshal(ph)
	if unprot == nil {
		unprot = cose.UnprotectedHeader{}
	}
	msg := cose.Sign1Message{Headers: cose.Headers{RawProtected: bstr, Protected: prot, Unprotected: unprot}, Payload: payload, Signature: make([]byte, 64)}
	raw, err := msg.MarshalCBOR()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func TestParseMessageEncoding(t *testing.T) {
	k := genKey(t, "Ed25519")
	prop, err := k.signer(t).SignProposal(rotate, t0)
	if err != nil {
		t.Fatal(err)
	}
	var sm cose.Sign1Message
	if err := sm.UnmarshalCBOR(prop); err != nil {
		t.Fatal(err)
	}
	untagged, err := (*cose.UntaggedSign1Message)(&sm).MarshalCBOR()
	if err != nil {
		t.Fatal(err)
	}
	// The same message with a non-minimal length of the payload bstr.
	nonMinimal := func() []byte {
		plen := len(sm.Payload)
		enc, _ := cbor.Marshal(sm.Payload) // 0x58 len (plen < 256)
		if enc[0] != 0x58 {
			t.Fatalf("payload header %x", enc[0])
		}
		long := append([]byte{0x59, 0, byte(plen)}, sm.Payload...)
		return bytes.Replace(prop, enc, long, 1)
	}()
	detached := func() []byte {
		var arr []cbor.RawMessage
		if err := cbor.Unmarshal(prop[1:], &arr); err != nil {
			t.Fatal(err)
		}
		arr[2] = cbor.RawMessage{0xf6}
		b, _ := cbor.Marshal(arr)
		return append([]byte{0xd2}, b...)
	}()
	big := make([]byte, MaxMessageSize+1)
	copy(big, prop)
	tests := []struct {
		name string
		raw  []byte
	}{
		{"empty", nil},
		{"not CBOR", []byte("hello")},
		{"untagged", untagged},
		{"trailing byte", append(bytes.Clone(prop), 0)},
		{"trailing message", append(bytes.Clone(prop), prop...)},
		{"non-minimal length", nonMinimal},
		{"detached payload", detached},
		{"too big", big},
		{"truncated", prop[:len(prop)-1]},
		{"COSE_Sign tag", append([]byte{0xd8, 0x62}, prop[1:]...)},
		{"JSON", []byte(`{"actions":[]}`)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseMessage(tt.raw)
			if !errors.Is(err, ErrInvalidMessage) {
				t.Fatalf("err = %v, want ErrInvalidMessage", err)
			}
		})
	}
	if _, err := ParseMessage(prop); err != nil {
		t.Fatal(err)
	}
}

func TestDecodeProposal(t *testing.T) {
	k := genKey(t, "P-256")
	sign := func(payload string) *Message {
		raw := signRaw(t, k, 0, headers(t, k, MsgProposal, t0, ""), nil, []byte(payload))
		m, err := ParseMessage(raw)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	tests := []struct {
		payload string
		want    error
		n       int
	}{
		{`{"actions":[{"name":"rotate_key_now","args":{}}]}`, nil, 1},
		{`{"actions":[{"name":"rotate_key_now"}]}`, nil, 1},
		{`{"actions":[{"name":"rotate_key_now","args":null},{"name":"set_node_policy","args":{"claims":{"a":["1"]}}}]}`, nil, 2},
		{`{"actions":[]}`, ErrInvalidAction, 0},
		{`{}`, ErrInvalidAction, 0},
		{`{"actions":[{"name":"nope","args":{}}]}`, ErrInvalidAction, 0},
		{`{"actions":[{"name":"destroy_key","args":{}}]}`, ErrInvalidAction, 0},
		{`{"actions":[{"name":"rotate_key_now","args":{}}],"x":1}`, ErrInvalidMessage, 0},
		{`{"actions":[{"name":"rotate_key_now","args":{},"x":1}]}`, ErrInvalidMessage, 0},
		{`{"actions":{}}`, ErrInvalidMessage, 0},
	}
	for _, tt := range tests {
		acts, err := DecodeProposal(sign(tt.payload))
		if tt.want == nil {
			if err != nil || len(acts) != tt.n {
				t.Errorf("%s: %v, %v", tt.payload, acts, err)
			}
			for _, a := range acts {
				if !isObject(a.Args) {
					t.Errorf("%s: args %q", tt.payload, a.Args)
				}
			}
			continue
		}
		if !errors.Is(err, tt.want) {
			t.Errorf("%s: err = %v, want %v", tt.payload, err, tt.want)
		}
	}
	ballot, err := k.signer(t).SignBallot(pid, true, t0)
	if err != nil {
		t.Fatal(err)
	}
	bm, _ := ParseMessage(ballot)
	if _, err := DecodeProposal(bm); !errors.Is(err, ErrInvalidMessage) {
		t.Errorf("DecodeProposal(ballot) = %v", err)
	}
}

func TestDecodeBallot(t *testing.T) {
	k := genKey(t, "P-256")
	sign := func(typ MessageType, payload string) *Message {
		p := pid
		if typ == MsgProposal {
			p = ""
		}
		m, err := ParseMessage(signRaw(t, k, 0, headers(t, k, typ, t0, p), nil, []byte(payload)))
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	tests := []struct {
		typ     MessageType
		payload string
		approve bool
		ok      bool
	}{
		{MsgBallot, `{"vote":"approve"}`, true, true},
		{MsgBallot, `{"vote":"reject"}`, false, true},
		{MsgBallot, `{"vote":"Approve"}`, false, false},
		{MsgBallot, `{"vote":"yes"}`, false, false},
		{MsgBallot, `{"vote":true}`, false, false},
		{MsgBallot, `{}`, false, false},
		{MsgBallot, `{"vote":"approve","weight":2}`, false, false},
		{MsgBallot, `{"ballot":"export function vote() { return true }"}`, false, false},
		{MsgWithdrawal, `{}`, false, false},
		{MsgProposal, `{"vote":"approve"}`, false, false},
	}
	for _, tt := range tests {
		approve, err := DecodeBallot(sign(tt.typ, tt.payload))
		if tt.ok != (err == nil) || approve != tt.approve {
			t.Errorf("%s %s: %v, %v", tt.typ, tt.payload, approve, err)
		}
		if err != nil && !errors.Is(err, ErrInvalidMessage) {
			t.Errorf("%s %s: err %v does not wrap ErrInvalidMessage", tt.typ, tt.payload, err)
		}
	}
}

func TestCheckCreatedAt(t *testing.T) {
	m := &Message{CreatedAt: t0}
	w := 10 * time.Minute
	tests := []struct {
		at time.Time
		ok bool
	}{
		{t0, true},
		{t0.Add(w), true},
		{t0.Add(-w), true},
		{t0.Add(w + time.Nanosecond), false},  // too old
		{t0.Add(-w - time.Nanosecond), false}, // future-dated
		{t0.Add(24 * time.Hour), false},
		{t0.Add(-24 * time.Hour), false},
		{t0.Add(time.Minute + 500*time.Millisecond), true},
	}
	for _, tt := range tests {
		err := CheckCreatedAt(m, tt.at, w)
		if tt.ok != (err == nil) {
			t.Errorf("at %s: %v", tt.at, err)
		}
		if err != nil && (!errors.Is(err, ErrStale) || Code(err) != CodeStale) {
			t.Errorf("at %s: err %v does not wrap ErrStale", tt.at, err)
		}
	}
}
