package gov

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"strings"
	"testing"

	"github.com/fxamacker/cbor/v2"
	"github.com/veraison/go-cose"
)

// The deployed DEPA KMS's proposal templates, written here from their
// shapes (governance/proposals/*.json of iSPIRT/azure-depa-inferencing-kms).
const (
	peerReleaseAdd    = `{"service":"depa-inferencing","gte":{"x-ms-ver":"2"},"gt":{"x-ms-ver":"1"},"type":"add","claims":{"x-ms-ver":["2","3"],"x-ms-sevsnpvm-smt-allowed":true,"x-ms-sevsnpvm-is-debuggable":false}}`
	peerReleaseRemove = `{"service":"some service","type":"remove","claims":{"x-ms-ver":["2","3"]},"gte":{"x-ms-ver":"2"},"gt":{"x-ms-ver":"1"}}`
	peerRotation      = `{"key_rotation_policy":{"rotation_interval_seconds":2678400,"grace_period_seconds":604800}}`
	peerSettings      = `{"settings_policy":{"service":{"name":"azure-privacy-sandbox-kms","description":"Key Management Service","version":"2.0.0","debug":true}}}`
	peerJWT           = `{"issuer":"https://sts.windows.net/72f988bf-86f1-41af-91ab-2d7cd011db47/","validation_policy":{"iss":"https://sts.windows.net/72f988bf-86f1-41af-91ab-2d7cd011db47/","aud":"https://management.azure.com/","idtyp":"app","oid":["049a48cd-7652-4159-82cf-7a2a42248b38"]}}`
)

func TestMapPeerActions(t *testing.T) {
	for _, tc := range []struct {
		name, args, want string
	}{
		{ActSetKeyReleasePolicy, peerReleaseAdd, `{"claims":{"x-ms-ver":["2","3"],"x-ms-sevsnpvm-smt-allowed":true,"x-ms-sevsnpvm-is-debuggable":false},"gt":{"x-ms-ver":"1"},"gte":{"x-ms-ver":"2"},"type":"add"}`},
		{ActSetKeyReleasePolicy, peerReleaseRemove, `{"claims":{"x-ms-ver":["2","3"]},"gt":{"x-ms-ver":"1"},"gte":{"x-ms-ver":"2"},"type":"remove"}`},
		{ActSetKeyRotationPolicy, peerRotation, `{"rotation_interval_seconds":2678400,"grace_period_seconds":604800}`},
		{ActSetSettingsPolicy, peerSettings, `{"service":{"name":"azure-privacy-sandbox-kms","description":"Key Management Service","version":"2.0.0","debug":true}}`},
		{ActSetJWTValidationPolicy, peerJWT, `{"issuer":"https://sts.windows.net/72f988bf-86f1-41af-91ab-2d7cd011db47/","claims":{"iss":"https://sts.windows.net/72f988bf-86f1-41af-91ab-2d7cd011db47/","aud":"https://management.azure.com/","idtyp":"app","oid":["049a48cd-7652-4159-82cf-7a2a42248b38"]}}`},
		// tkms's own forms pass unchanged
		{ActSetKeyReleasePolicy, `{"type":"add","claims":{"x":"y"}}`, `{"type":"add","claims":{"x":"y"}}`},
		{ActSetKeyRotationPolicy, `{"rotation_interval_seconds":60}`, `{"rotation_interval_seconds":60}`},
		{ActSetJWTValidationPolicy, `{"issuer":"https://i","claims":{"oid":"a"}}`, `{"issuer":"https://i","claims":{"oid":"a"}}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := MapPeerActions([]Action{{Name: tc.name, Args: json.RawMessage(tc.args)}})
			if err != nil {
				t.Fatal(err)
			}
			if string(got[0].Args) != tc.want || got[0].Name != tc.name {
				t.Fatalf("mapped to %s %s\nwant %s", got[0].Name, got[0].Args, tc.want)
			}
			if err := ValidateActions(got); err != nil {
				t.Fatalf("the mapped action does not validate: %v", err)
			}
		})
	}
}

// TestMapPeerActionsRefused: the peer's shapes are validated as tkms's
// grammar is, and a wrapper with company is refused rather than guessed.
func TestMapPeerActionsRefused(t *testing.T) {
	for _, tc := range []struct {
		name, args, want string
	}{
		{ActSetKeyReleasePolicy, `{"service":7,"type":"add","claims":{"x":"y"}}`, "service: want a string"},
		{ActSetKeyReleasePolicy, `{"service":"s\n","type":"add","claims":{"x":"y"}}`, "printable"},
		{ActSetKeyReleasePolicy, `{"service":"s","type":"replace","claims":{"x":"y"}}`, `want "add" or "remove"`},
		{ActSetKeyReleasePolicy, `{"service":"s","type":"add","gte":{"x-ms-ver":"two"}}`, "want a number"},
		{ActSetKeyRotationPolicy, `{"key_rotation_policy":{"rotation_interval_seconds":0,"grace_period_seconds":1}}`, "must be positive"},
		{ActSetKeyRotationPolicy, `{"key_rotation_policy":{"rotation_interval_seconds":10},"suite":"x25519"}`, "takes no other member"},
		{ActSetKeyRotationPolicy, `{"key_rotation_policy":[1]}`, "want a JSON object"},
		{ActSetSettingsPolicy, `{"settings_policy":{"service":{"name":1}}}`, "cannot unmarshal"},
		{ActSetJWTValidationPolicy, `{"issuer":"https://i","validation_policy":{"oid":{}}}`, "want a string, number, boolean"},
		{ActSetJWTValidationPolicy, `{"issuer":"https://i","validation_policy":{},"claims":{}}`, "unknown field"},
		{ActSetJWTValidationPolicy, `{"validation_policy":{"oid":"a"}}`, "no issuer"},
	} {
		t.Run(tc.args, func(t *testing.T) {
			a := []Action{{Name: tc.name, Args: json.RawMessage(tc.args)}}
			m, err := MapPeerActions(a)
			if err == nil {
				err = ValidateActions(m)
			}
			if err == nil || !errors.Is(err, ErrInvalidAction) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v; want an invalid action mentioning %q", err, tc.want)
			}
		})
	}
}

// TestCCFSignerKid: a member registered with a certificate may sign with
// CCF's kid, the hex SHA-256 of the certificate's DER, and the message
// verifies as that member's; a member registered with its bare key may not.
func TestCCFSignerKid(t *testing.T) {
	k := genKey(t, "P-384")
	certPEM := k.certPEM(t)
	withCert, err := NewMember("ccf-member", certPEM, "")
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode([]byte(certPEM))
	sum := sha256.Sum256(block.Bytes)
	ccfKid := hex.EncodeToString(sum[:])
	if withCert.CertID() != ccfKid || withCert.CertID() == withCert.ID {
		t.Fatalf("CertID %s, want %s (and not the member id %s)", withCert.CertID(), ccfKid, withCert.ID)
	}
	if _, err := x509.ParseCertificate(block.Bytes); err != nil {
		t.Fatal(err)
	}
	prot := headers(t, k, MsgProposal, t0, "")
	prot[cose.HeaderLabelKeyID] = []byte(ccfKid)
	raw := signRaw(t, k, 0, prot, nil, []byte(`{"actions":[{"name":"set_key_rotation_policy","args":`+peerRotation+`}]}`))
	m, err := ParseMessage(raw)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Verify(withCert); err != nil {
		t.Fatalf("a CCF-signed proposal of a certificate member: %v", err)
	}
	actions, err := DecodeProposal(m)
	if err != nil || string(actions[0].Args) != `{"rotation_interval_seconds":2678400,"grace_period_seconds":604800}` {
		t.Fatalf("actions %s, err %v", actions, err)
	}
	bare := k.member(t, "bare")
	if bare.CertID() != "" {
		t.Fatalf("a member with a bare key has CertID %q", bare.CertID())
	}
	if err := m.Verify(bare); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("CCF kid against a member registered without a certificate: %v; want a bad signature", err)
	}
	other := genKey(t, "P-384")
	impostor, err := NewMember("impostor", other.certPEM(t), "")
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Verify(impostor); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("verified as another certificate member: %v", err)
	}
}

// FuzzMapPeerActions: mapping never panics, is idempotent (the shapes are
// disjoint), and what it returns fails only with an invalid-action code.
func FuzzMapPeerActions(f *testing.F) {
	for _, s := range []struct{ name, args string }{
		{ActSetKeyReleasePolicy, peerReleaseAdd}, {ActSetKeyReleasePolicy, peerReleaseRemove},
		{ActSetKeyRotationPolicy, peerRotation}, {ActSetSettingsPolicy, peerSettings},
		{ActSetJWTValidationPolicy, peerJWT}, {ActSetKeyReleasePolicy, `{"type":"add","claims":{"x":"y"}}`},
	} {
		f.Add(s.name, []byte(s.args))
	}
	f.Fuzz(func(t *testing.T, name string, args []byte) {
		in := []Action{{Name: name, Args: args}}
		m, err := MapPeerActions(in)
		if err != nil {
			if Code(err) != CodeInvalidAction {
				t.Fatalf("error %v has code %q", err, Code(err))
			}
			return
		}
		again, err := MapPeerActions(m)
		if err != nil || again[0].Name != m[0].Name || string(again[0].Args) != string(m[0].Args) {
			t.Fatalf("mapping twice: %s then %s (%v)", m[0].Args, again[0].Args, err)
		}
		if err := ValidateActions(m); err != nil && Code(err) != CodeInvalidAction && Code(err) != CodeUnsafeConstitution {
			t.Fatalf("error %v has code %q", err, Code(err))
		}
	})
}

// TestCCFHeaderOrder: CCF's signer (python cwt, deterministic headers)
// may order the protected header's members otherwise than go-cose does;
// the signed bytes are kept as they are, so the message still parses and
// verifies.
func TestCCFHeaderOrder(t *testing.T) {
	k := genKey(t, "P-384")
	m, err := NewMember("ccf-member", k.certPEM(t), "")
	if err != nil {
		t.Fatal(err)
	}
	// {"ccf.gov.msg.type", "ccf.gov.msg.created_at", 4 (kid), 1 (alg)}:
	// strings first, the reverse of go-cose's order.
	var enc []byte
	enc = append(enc, 0xa4)
	for _, kv := range [][2]any{
		{HeaderType, "proposal"}, {HeaderCreatedAt, t0.Unix()}, {int64(4), []byte(m.CertID())}, {int64(1), int64(cose.AlgorithmES384)},
	} {
		for _, x := range kv {
			b, err := cbor.Marshal(x)
			if err != nil {
				t.Fatal(err)
			}
			enc = append(enc, b...)
		}
	}
	rawProt, _ := cbor.Marshal(enc)
	var prot cose.ProtectedHeader
	if err := prot.UnmarshalCBOR(rawProt); err != nil {
		t.Fatal(err)
	}
	signer, err := cose.NewSigner(cose.AlgorithmES384, k.priv)
	if err != nil {
		t.Fatal(err)
	}
	msg := cose.Sign1Message{Headers: cose.Headers{Protected: prot, RawProtected: rawProt, Unprotected: cose.UnprotectedHeader{}},
		Payload: []byte(`{"actions":[{"name":"set_settings_policy","args":` + peerSettings + `}]}`)}
	if err := msg.Sign(rand.Reader, nil, signer); err != nil {
		t.Fatal(err)
	}
	raw, err := msg.MarshalCBOR()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(raw, enc) {
		t.Fatal("the protected header was re-encoded")
	}
	p, err := ParseMessage(raw)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Verify(m); err != nil {
		t.Fatal(err)
	}
}
