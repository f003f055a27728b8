package main

// Secrets hygiene, black-box: a full run of tkms (dev, rotations,
// releases over both APIs, failed releases, governance, fetch, the
// sidecar, audit with a mirror, a restart and a kill -9) leaves no secret
// anywhere it wrote, in any encoding, and every file it created is 0600,
// every directory 0700, even under umask 0.

import (
	"bytes"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/hpke"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/tkms-dev/tkms/internal/httpapi"
	"github.com/tkms-dev/tkms/internal/keyring"
	"github.com/tkms-dev/tkms/internal/keys"
	"github.com/tkms-dev/tkms/internal/ledger"
	"github.com/tkms-dev/tkms/internal/oidcissuer"
	"github.com/tkms-dev/tkms/internal/wrap"
	bolt "go.etcd.io/bbolt"
)

// A needle is one encoding of one secret.
type needle struct {
	secret string // what it is, e.g. "master key"
	enc    string // how it is encoded, e.g. "hex"
	b      []byte
}

// secretSet is every secret of a run, in every encoding that could
// plausibly appear where tkms writes.
type secretSet struct{ needles []needle }

// bytes adds b raw, as hex (lower and upper case) and as base64 (standard
// and URL alphabets, padded and not), the base64 forms also as they read
// inside a longer base64 text where b starts 0, 1 or 2 bytes into a 3-byte
// group (the part of the encoding that depends on b alone).
func (s *secretSet) bytes(secret string, b []byte) {
	if len(b) < 16 {
		panic(fmt.Sprintf("secret %s: %d bytes is too short to search for", secret, len(b)))
	}
	add := func(enc string, v []byte) { s.needles = append(s.needles, needle{secret, enc, v}) }
	add("raw", bytes.Clone(b))
	add("hex", []byte(hex.EncodeToString(b)))
	add("HEX", []byte(strings.ToUpper(hex.EncodeToString(b))))
	for _, e := range []struct {
		name string
		enc  *base64.Encoding
	}{
		{"base64", base64.StdEncoding}, {"base64 unpadded", base64.RawStdEncoding},
		{"base64url", base64.URLEncoding}, {"base64url unpadded", base64.RawURLEncoding},
	} {
		add(e.name, []byte(e.enc.EncodeToString(b)))
		if e.enc == base64.StdEncoding || e.enc == base64.URLEncoding {
			for shift := range 3 {
				v := e.enc.EncodeToString(append(make([]byte, shift), b...))
				// Drop the last group (it mixes in the bytes after b) and,
				// at an offset, the first (it mixes in the bytes before).
				v = v[:len(v)-4]
				if shift > 0 {
					v = v[4:]
				}
				add(fmt.Sprintf("%s within a longer text at offset %d", e.name, shift), []byte(v))
			}
		}
	}
}

// text adds a secret that is a text (a token): as it is and base64
// encoded.
func (s *secretSet) text(secret, t string) {
	s.bytes(secret, []byte(t))
}

// jwt adds a bearer token: the compact form and its signature segment.
func (s *secretSet) jwt(secret, tok string) {
	tok = strings.TrimSpace(tok)
	parts := strings.Split(tok, ".")
	if len(parts) != 3 || len(parts[2]) < 32 {
		panic(fmt.Sprintf("%s is not a signed JWT: %q", secret, tok))
	}
	s.text(secret, tok)
	s.needles = append(s.needles, needle{secret, "JWT signature segment", []byte(parts[2])})
	if sig, err := base64.RawURLEncoding.DecodeString(parts[2]); err == nil {
		s.bytes(secret+" (signature bytes)", sig)
	}
}

// privateKey adds a private key of crypto/x509's kinds: PKCS#8 DER and
// PEM, the per-kind DER forms and PEM, and its secret scalars (the JWK
// "d", and for RSA "p", "q", "dp", "dq", "qi").
func (s *secretSet) privateKey(t *testing.T, secret string, k any) {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatalf("%s: %v", secret, err)
	}
	s.bytes(secret+" (PKCS#8 DER)", der)
	s.needles = append(s.needles, needle{secret, "PKCS#8 PEM", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})})
	switch k := k.(type) {
	case *rsa.PrivateKey:
		pk1 := x509.MarshalPKCS1PrivateKey(k)
		s.bytes(secret+" (PKCS#1 DER)", pk1)
		s.needles = append(s.needles, needle{secret, "PKCS#1 PEM", pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: pk1})})
		k.Precompute()
		for name, n := range map[string][]byte{"d": k.D.Bytes(), "p": k.Primes[0].Bytes(), "q": k.Primes[1].Bytes(),
			"dp": k.Precomputed.Dp.Bytes(), "dq": k.Precomputed.Dq.Bytes(), "qi": k.Precomputed.Qinv.Bytes()} {
			s.bytes(secret+" (JWK "+name+")", n)
		}
	case *ecdsa.PrivateKey:
		sec1, err := x509.MarshalECPrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		s.bytes(secret+" (SEC 1 DER)", sec1)
		s.needles = append(s.needles, needle{secret, "SEC 1 PEM", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1})})
		d, err := k.Bytes()
		if err != nil {
			t.Fatal(err)
		}
		s.bytes(secret+" (JWK d)", d)
	case *ecdh.PrivateKey:
		s.bytes(secret, k.Bytes())
	}
}

// x25519 adds an X25519 private key (RFC 9180 SerializePrivateKey, which
// is also the JWK "d" and the raw key in a Tink keyset) and its PKCS#8
// forms.
func (s *secretSet) x25519(t *testing.T, secret string, raw []byte) {
	t.Helper()
	s.bytes(secret, raw)
	k, err := ecdh.X25519().NewPrivateKey(raw)
	if err != nil {
		t.Fatalf("%s: %v", secret, err)
	}
	s.privateKey(t, secret, k)
}

// group returns the name a secret is exempted by: the part before any
// parenthesis ("issuer key (JWK d)" is part of "issuer key").
func group(secret string) string {
	g, _, _ := strings.Cut(secret, " (")
	return g
}

// places are the texts to search, by where they come from, and what
// secrets each may hold by design.
type places struct {
	texts  map[string][]byte
	exempt map[string][]string // place -> secret groups it is for
}

func (p *places) add(where string, b []byte, exempt ...string) {
	if _, dup := p.texts[where]; dup {
		for i := 2; ; i++ {
			if w := fmt.Sprintf("%s #%d", where, i); p.texts[w] == nil {
				where = w
				break
			}
		}
	}
	p.texts[where] = bytes.Clone(b)
	if len(exempt) > 0 {
		p.exempt[where] = exempt
	}
}

// proc adds the output of a process.
func (p *places) proc(pr *proc) {
	p.add(pr.name+" stdout", []byte(pr.stdout.String()))
	p.add(pr.name+" stderr", []byte(pr.stderr.String()))
}

// tree adds every regular file below root; exempt maps a file's path
// relative to root to the secrets it holds by design.
func (p *places) tree(t *testing.T, root string, exempt map[string][]string) {
	t.Helper()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		p.add(path, b, exempt[rel]...)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// recorder sends requests and keeps every response's headers and body.
type recorder struct {
	t  *testing.T
	pl *places
}

func (r recorder) do(method, url string, h http.Header, body []byte) (*http.Response, []byte) {
	r.t.Helper()
	resp, b := doBody(r.t, method, url, h, body)
	var hdr bytes.Buffer
	resp.Header.Write(&hdr)
	r.pl.add(method+" "+url+" headers", hdr.Bytes())
	r.pl.add(method+" "+url+" body", b)
	return resp, b
}

func (r recorder) get(url string) []byte {
	r.t.Helper()
	resp, b := r.do(http.MethodGet, url, nil, nil)
	if resp.StatusCode >= 500 {
		r.t.Errorf("GET %s: %s: %s", url, resp.Status, b)
	}
	return b
}

// scrape fetches /metrics and every public GET endpoint of the KMS at
// base: keys, policies, attestation, governance, the log's checkpoint,
// key, every entry, its tiles and proofs, the dev issuer's documents.
func (r recorder) scrape(base string) {
	r.t.Helper()
	for _, path := range []string{
		"/metrics", "/app/heartbeat", "/app/listpubkeys", "/app/pubkey", "/app/keyRotationPolicy",
		"/app/settingsPolicy", "/app/keyReleasePolicy", "/app/jwtValidationPolicy", "/app/proposals",
		"/v1/attestation", "/v1/keys", "/v1/keys?all=true", "/v1/keys/ohttp", "/v1/nonce",
		"/v1/gov/members", "/v1/gov/constitution", "/v1/gov/proposals",
		"/v1/log/key", "/log/checkpoint", "/v1/log/proof/consistency?from=1",
		devOIDCPath + "/.well-known/openid-configuration",
	} {
		r.get(base + path)
	}
	var disc struct {
		JWKSURI string `json:"jwks_uri"`
	}
	json.Unmarshal(r.get(base+devOIDCPath+"/.well-known/openid-configuration"), &disc)
	if disc.JWKSURI == "" {
		r.t.Fatal("the dev issuer's discovery document has no jwks_uri")
	}
	r.get(disc.JWKSURI)
	var props struct {
		Proposals []struct {
			ID string `json:"id"`
		} `json:"proposals"`
	}
	json.Unmarshal(r.get(base+"/v1/gov/proposals"), &props)
	if len(props.Proposals) == 0 || props.Proposals[0].ID == "" {
		r.t.Fatal("GET /v1/gov/proposals lists no proposal")
	}
	for _, p := range props.Proposals {
		r.get(base + "/v1/gov/proposals/" + p.ID)
	}
	size := logSize(r.t, base)
	for i := range size {
		r.get(fmt.Sprintf("%s/v1/log/entries/%d", base, i))
		r.get(fmt.Sprintf("%s/v1/log/proof/inclusion?index=%d", base, i))
	}
	tile := fmt.Sprintf("000.p/%d", size%256)
	if size >= 256 {
		tile = "000"
	}
	r.get(base + "/log/tile/0/" + tile)
	r.get(base + "/log/tile/entries/" + tile)
	for _, k := range allKeys(r.t, base) {
		r.get(base + "/app/pubkey?kid=" + k.Kid)
	}
}

// TestSecretsNotLogged runs tkms dev at log level debug through a full
// life (governed rotations, /app/unwrapKey releases wrapped to RSA and /v1
// releases wrapped to HPKE, failed releases, a proposal and a ballot,
// tkms fetch, the sidecar, tkms audit with a mirror, a restart and a
// kill -9 with a restart) under umask 0, then looks for every secret of
// the run in every encoding in every place tkms wrote: the stdout and
// stderr of every process, every file it created, and every HTTP response
// (headers and body), /metrics and the public endpoints included.
//
// The secrets: the master key, every HPKE private key (recovered from the
// ledger with the master key and keyring), the keyring's data keys, the log
// signing key (recovered from the sealed log.key entry, also in its note
// form), the dev issuer's signing key, the dev member's key, the operator
// token, every workload token (and bad ones presented), the RSA and HPKE
// wrapping private keys, and the released payloads (JWK and Tink).
//
// Files that hold a secret by design are exempt from that secret only:
// master.key (the master key), member.key (the member key), the issuer's
// key file (the issuer key), operator.token (the operator token), dev.json
// (the operator token and its workload token), the --out file of tkms
// fetch (the HPKE private keys it fetched) and the stdout of tkms dev
// token (the token it mints).
//
// Then the modes: every file tkms created is 0600 and every directory
// 0700.
func TestSecretsNotLogged(t *testing.T) {
	old := syscall.Umask(0)
	t.Cleanup(func() { syscall.Umask(old) })

	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	cfgPath := filepath.Join(dir, "tkms.json")
	writeJSONFile(t, cfgPath, map[string]any{"log_level": "debug", "snapshot_every": 2})
	pl := &places{texts: map[string][]byte{}, exempt: map[string][]string{}}
	rec := recorder{t, pl}
	var sec secretSet
	var procs []*proc

	p := startDev(t, data, "--config", cfgPath)
	procs = append(procs, p)
	for range 3 {
		refresh(t, p.URL, p.Token)
	}
	// A near miss of the operator token must not be logged either: it
	// carries the real token as a prefix.
	resp, body := rec.do(http.MethodPost, p.URL+"/app/refresh", http.Header{"Authorization": {"Bearer " + p.Token + "x"}}, nil)
	wantError(t, "refresh with a wrong token", resp, body, http.StatusForbidden, "GOV_REQUIRED")

	// Tokens: the workload token of dev.json, one from tkms dev token,
	// one for another audience (valid, but refused), and bad ones.
	wt := readDevJSON(t, data).WorkloadToken
	sec.jwt("workload token 1", wt)
	mint := func(name string, args ...string) string {
		out, errOut, code := runTkms(t, append([]string{"dev", "token", "--data", data}, args...)...)
		if code != 0 {
			t.Fatalf("tkms dev token: exit %d: %s", code, errOut)
		}
		pl.add("tkms dev token "+name+" stdout", []byte(out), name)
		pl.add("tkms dev token "+name+" stderr", []byte(errOut))
		tok := strings.TrimSpace(out)
		sec.jwt(name, tok)
		return tok
	}
	minted := mint("minted token")
	otherAud := mint("other-audience token", "--aud", "api://not-tkms")
	sig := strings.LastIndexByte(wt, '.') + 1
	other := "A" // another first character: a signature that does not verify
	if wt[sig] == 'A' {
		other = "B"
	}
	flipped := wt[:sig] + other + wt[sig+1:]
	sec.jwt("presented token with a bad signature", flipped)

	// Wrapping keys: the sample RSA key pair of /app, a fresh HPKE key of
	// /v1.
	rsaPubPEM := readFile(t, "../../internal/wrap/testdata/publicWrapKey.pem")
	rsaPriv := parseRSAPrivate(t, readFile(t, "../../internal/wrap/testdata/privateWrapKey.pem"))
	sec.privateKey(t, "RSA wrapping private key", rsaPriv)
	wrapFile := filepath.Join(dir, "wrap.pem")
	if err := os.WriteFile(wrapFile, rsaPubPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	hpkeECDH, err := ecdh.X25519().GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	hpkePriv, err := hpke.NewDHKEMPrivateKey(hpkeECDH)
	if err != nil {
		t.Fatal(err)
	}
	hpkeSer, err := hpkePriv.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	sec.x25519(t, "HPKE wrapping private key", hpkeECDH.Bytes())
	sec.bytes("HPKE wrapping private key (SerializePrivateKey)", hpkeSer)
	hpkePub := hpkeECDH.PublicKey().Bytes()
	hpkeBind := wrap.V1BindingHash(wrap.CanonicalHPKE(keys.KEMX25519HKDFSHA256, hpkePub))

	evidence := func(args ...string) json.RawMessage {
		return readFile(t, attestSimulate(t, data, args...))
	}
	kid := allKeys(t, p.URL)[0].Kid
	bearer := func(tok string) http.Header { return http.Header{"Authorization": {"Bearer " + tok}} }
	var released [][]byte // released private keys, as unwrapped

	// /app/unwrapKey, JWK and Tink, wrapped to RSA.
	rsaEv := evidence("--wrapping-key-pem", wrapFile)
	appBody, _ := json.Marshal(map[string]any{"attestation": rsaEv, "wrappingKey": string(rsaPubPEM), "wrappedKid": kid})
	for _, f := range []string{"jwk", "tink"} {
		resp, body := rec.do(http.MethodPost, p.URL+"/app/unwrapKey?fmt="+f, bearer(minted), appBody)
		wantOK(t, "unwrapKey fmt="+f, resp, body)
		var ur struct{ Wrapped string }
		json.Unmarshal(body, &ur)
		ct, _ := base64.StdEncoding.DecodeString(ur.Wrapped)
		payload, err := rsa.DecryptOAEP(sha256.New(), nil, rsaPriv, ct, nil)
		if err != nil {
			t.Fatalf("unwrapKey fmt=%s: %v", f, err)
		}
		sec.bytes("released "+f+" payload", payload)
		if f == "jwk" {
			var item keys.Item
			json.Unmarshal(payload, &item)
			d, err := base64.RawURLEncoding.DecodeString(item.D)
			if err != nil || len(d) == 0 {
				t.Fatalf("the JWK payload has no d: %v", err)
			}
			released = append(released, d)
		}
	}
	resp, body = rec.do(http.MethodPost, p.URL+"/app/key", bearer(wt), appBody)
	wantOK(t, "/app/key", resp, body)
	resp, body = rec.do(http.MethodGet, p.URL+"/app/auth", bearer(minted), nil)
	wantOK(t, "/app/auth", resp, body)

	// /v1, wrapped to HPKE: one key with a nonce, then all valid keys.
	var nonce struct{ Nonce string }
	json.Unmarshal(rec.get(p.URL+"/v1/nonce"), &nonce)
	v1Body := func(bind [32]byte, nonce string, extra map[string]any, evArgs ...string) []byte {
		rd := hex.EncodeToString(bind[:]) + nonce
		b := map[string]any{"attestation": evidence(append([]string{"--report-data", rd}, evArgs...)...),
			"wrapping_key": map[string]any{"type": "hpke", "kem_id": keys.KEMX25519HKDFSHA256, "public_key": base64.StdEncoding.EncodeToString(hpkePub)}}
		if nonce != "" {
			b["nonce"] = nonce
		}
		for k, v := range extra {
			b[k] = v
		}
		out, _ := json.Marshal(b)
		return out
	}
	unwrapV1 := func(what string, body []byte) {
		var r struct {
			Keys []struct{ Kid, Wrapped string }
		}
		if err := json.Unmarshal(body, &r); err != nil || len(r.Keys) == 0 {
			t.Fatalf("%s: %v: %s", what, err, body)
		}
		for _, k := range r.Keys {
			ct, _ := base64.StdEncoding.DecodeString(k.Wrapped)
			pt, err := hpke.Open(hpkePriv, hpke.HKDFSHA256(), hpke.AES256GCM(), wrap.ReleaseInfo(k.Kid), ct)
			if err != nil {
				t.Fatalf("%s: opening %s: %v", what, k.Kid, err)
			}
			released = append(released, pt)
		}
	}
	resp, body = rec.do(http.MethodPost, p.URL+"/v1/keys/"+kid+"/release", bearer(minted), v1Body(hpkeBind, nonce.Nonce, nil))
	wantOK(t, "/v1 release", resp, body)
	unwrapV1("/v1 release", body)
	resp, body = rec.do(http.MethodPost, p.URL+"/v1/release", bearer(wt), v1Body(hpkeBind, "", map[string]any{"all_valid": true}))
	wantOK(t, "/v1 batch release", resp, body)
	unwrapV1("/v1 batch release", body)

	// Failed releases: bad tokens, a wrong binding, a denied policy, an
	// unknown kid, a bad nonce.
	var zero [32]byte
	for _, tc := range []struct {
		what, url, tok string
		body           []byte
	}{
		{"token with a suffix", "/app/unwrapKey?fmt=jwk", wt + "x", appBody},
		{"token with a bad signature", "/app/unwrapKey?fmt=jwk", flipped, appBody},
		{"token for another audience", "/app/unwrapKey?fmt=jwk", otherAud, appBody},
		{"operator token as a workload token", "/app/unwrapKey?fmt=jwk", p.Token, appBody},
		{"wrong binding", "/app/unwrapKey?fmt=jwk", wt, mustJSON(map[string]any{"attestation": evidence(), "wrappingKey": string(rsaPubPEM), "wrappedKid": kid})},
		{"denied policy", "/app/unwrapKey?fmt=jwk", wt, mustJSON(map[string]any{"attestation": evidence("--wrapping-key-pem", wrapFile, "--debug"), "wrappingKey": string(rsaPubPEM), "wrappedKid": kid})},
		{"unknown kid", "/app/unwrapKey?fmt=jwk", wt, mustJSON(map[string]any{"attestation": rsaEv, "wrappingKey": string(rsaPubPEM), "wrappedKid": "nosuchkey_9"})},
		{"/app/key with a bad token", "/app/key", flipped, appBody},
		{"/v1 token with a suffix", "/v1/keys/" + kid + "/release", minted + "x", v1Body(hpkeBind, "", nil)},
		{"/v1 wrong binding", "/v1/keys/" + kid + "/release", wt, v1Body(zero, "", nil)},
		{"/v1 denied policy", "/v1/release", wt, v1Body(hpkeBind, "", map[string]any{"all_valid": true}, "--debug")},
		{"/v1 reused nonce", "/v1/keys/" + kid + "/release", wt, v1Body(hpkeBind, nonce.Nonce[:60]+"0000", nil)},
	} {
		resp, body := rec.do(http.MethodPost, p.URL+tc.url, bearer(tc.tok), tc.body)
		if resp.StatusCode == http.StatusOK {
			t.Errorf("%s: 200 OK, want a refusal: %s", tc.what, body)
		}
	}
	// Governance: a proposal (accepted at once by the dev constitution)
	// and a ballot on it (refused: it is closed).
	actions := filepath.Join(dir, "actions.json")
	writeJSONFile(t, actions, map[string]any{"actions": []map[string]any{{"name": "rotate_key_now", "args": map[string]any{"reason": "secrets test"}}}})
	out, errOut, code := runTkms(t, "gov", "propose", "--data", data, actions)
	if code != 0 {
		t.Fatalf("tkms gov propose: exit %d\n%s\n%s", code, out, errOut)
	}
	pl.add("tkms gov propose stdout", []byte(out))
	pl.add("tkms gov propose stderr", []byte(errOut))
	out, errOut, _ = runTkms(t, "gov", "vote", "--yes", "--data", data, proposalID(t, out), "approve")
	pl.add("tkms gov vote stdout", []byte(out))
	pl.add("tkms gov vote stderr", []byte(errOut))

	// tkms fetch writes the keys to its --out file, and only there.
	fetched := filepath.Join(dir, "fetched.json")
	out, errOut, code = runTkms(t, "fetch", "--data", data, "--out", fetched)
	if code != 0 {
		t.Fatalf("tkms fetch: exit %d\n%s\n%s", code, out, errOut)
	}
	pl.add("tkms fetch stdout", []byte(out))
	pl.add("tkms fetch stderr", []byte(errOut))

	// The sidecar obtains the keys and serves its status and key list.
	sc := startSidecar(t, p, data)
	procs = append(procs, sc)
	waitReady(t, sc)
	rec.get(sc.URL + "/status")
	rec.get(sc.URL + "/keys")
	sc.stopClean(syscall.SIGTERM)

	// tkms audit, with a mirror and a state file in directories it makes.
	logKey := logKeyArg(t, p.URL)
	mirror := filepath.Join(dir, "audit", "mirror")
	stateFile := filepath.Join(dir, "audit", "state", "audit-state.json")
	audit := func(base string) {
		stdout, stderr := runAudit(t, 0, "--kms", base, "--log-key", logKey, "--mirror", mirror, "--state", stateFile)
		pl.add("tkms audit stdout", []byte(stdout))
		pl.add("tkms audit stderr", []byte(stderr))
	}
	audit(p.URL)
	rec.scrape(p.URL)
	p.stopClean(syscall.SIGTERM)

	// A restart, a release, then a kill -9 and a restart.
	p = startDev(t, data, "--config", cfgPath)
	procs = append(procs, p)
	wt2 := readDevJSON(t, data).WorkloadToken
	sec.jwt("workload token 2", wt2)
	refresh(t, p.URL, p.Token)
	resp, body = rec.do(http.MethodPost, p.URL+"/v1/release", bearer(wt2), v1Body(hpkeBind, "", map[string]any{"all_valid": true}))
	wantOK(t, "/v1 batch release after restart", resp, body)
	unwrapV1("/v1 batch release after restart", body)
	rec.scrape(p.URL)
	if code := p.stop(syscall.SIGKILL); code != -1 {
		t.Fatalf("kill -9: exit code %d", code)
	}
	p = startDev(t, data, "--config", cfgPath)
	procs = append(procs, p)
	wt3 := readDevJSON(t, data).WorkloadToken
	sec.jwt("workload token 3", wt3)
	refresh(t, p.URL, p.Token)
	resp, body = rec.do(http.MethodPost, p.URL+"/app/unwrapKey?fmt=jwk", bearer(wt3), mustJSON(map[string]any{"attestation": rsaEv, "wrappingKey": string(rsaPubPEM), "wrappedKid": kid}))
	wantOK(t, "unwrapKey after kill -9", resp, body)
	audit(p.URL)
	rec.scrape(p.URL)
	p.stopClean(syscall.SIGTERM)
	for _, d := range released {
		sec.x25519(t, "released private key", d)
	}

	// The secrets at rest, recovered with the master key.
	mkText := strings.TrimSpace(string(readFile(t, filepath.Join(data, "master.key"))))
	mk, err := hex.DecodeString(mkText)
	if err != nil {
		t.Fatal(err)
	}
	sec.bytes("master key", mk)
	privs := recoverPrivateKeys(t, data)
	if len(privs) < 6 {
		t.Fatalf("recovered %d private keys, want at least 6", len(privs))
	}
	for k, priv := range privs {
		sec.x25519(t, "private key "+k, priv)
	}
	kr, err := keyring.Open(data, loadSealer(t, data))
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range kr.Kids() {
		dek, err := kr.Get(k)
		if err != nil {
			t.Fatal(err)
		}
		sec.bytes("data key "+k, dek)
	}
	logSKey := recoverLogSigningKey(t, data)
	sec.text("log signing key", logSKey)
	sec.needles = append(sec.needles, needle{"log signing key", "note key field", []byte(noteKeyField(logSKey))})
	seed := noteSeed(t, logSKey)
	sec.bytes("log signing key (seed)", seed)
	sec.bytes("log signing key (Ed25519)", ed25519.NewKeyFromSeed(seed))
	sec.text("operator token", p.Token)
	if raw, err := hex.DecodeString(p.Token); err == nil {
		sec.bytes("operator token (bytes)", raw)
	}
	sec.privateKey(t, "issuer key", parsePKCS8(t, filepath.Join(data, oidcissuer.KeyFile)))
	sec.privateKey(t, "member key", parsePKCS8(t, filepath.Join(data, devMemberKeyFile)))

	if !strings.Contains(procs[0].stderr.String(), "DEBUG") {
		t.Errorf("tkms dev logged nothing at level debug:\n%s", procs[0].stderr)
	}
	// The places: every process's output, every file tkms wrote.
	for _, pr := range procs {
		pl.proc(pr)
	}
	pl.tree(t, data, map[string][]string{
		"master.key":       {"master key"},
		devMemberKeyFile:   {"member key"},
		oidcissuer.KeyFile: {"issuer key"},
		"operator.token":   {"operator token"},
		"dev.json":         {"operator token", "workload token 3"},
	})
	pl.tree(t, filepath.Join(dir, "audit"), nil)
	var fetchedKeys []string
	for k := range privs {
		fetchedKeys = append(fetchedKeys, "private key "+k, "released private key")
	}
	pl.add(fetched, readFile(t, fetched), fetchedKeys...)
	checkNoSecrets(t, pl, sec)

	// The search finds what is there: each file that holds a secret by
	// design is found to hold it.
	for _, tc := range []struct{ where, secret string }{
		{filepath.Join(data, "master.key"), "master key"},
		{filepath.Join(data, devMemberKeyFile), "member key"},
		{filepath.Join(data, oidcissuer.KeyFile), "issuer key"},
		{filepath.Join(data, "operator.token"), "operator token"},
		{filepath.Join(data, "dev.json"), "operator token"},
		{filepath.Join(data, "dev.json"), "workload token 3"},
		{fetched, "released private key"},
	} {
		if !holds(pl.texts[tc.where], sec, tc.secret) {
			t.Errorf("%s does not hold the %s: the search would miss it", tc.where, tc.secret)
		}
	}

	// Modes: what tkms created under umask 0.
	checkModes(t, data, filepath.Join(dir, "audit"), fetched)
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// checkNoSecrets fails the test for every needle found in a place that is
// not exempt from its secret.
func checkNoSecrets(t *testing.T, pl *places, sec secretSet) {
	t.Helper()
	where := make([]string, 0, len(pl.texts))
	for w := range pl.texts {
		where = append(where, w)
	}
	sort.Strings(where)
	groups := map[string]bool{}
	for _, n := range sec.needles {
		groups[group(n.secret)] = true
	}
	found := 0
	for _, w := range where {
		hay := pl.texts[w]
		for _, n := range sec.needles {
			if exempt(pl.exempt[w], n.secret) || !bytes.Contains(hay, n.b) {
				continue
			}
			found++
			if found <= 50 {
				t.Errorf("%s holds the %s (%s)", w, n.secret, n.enc)
			}
		}
	}
	t.Logf("searched %d places (%d bytes) for %d encodings of %d secrets: %d found",
		len(pl.texts), totalLen(pl.texts), len(sec.needles), len(groups), found)
}

// holds reports whether hay holds some encoding of the secret group g.
func holds(hay []byte, sec secretSet, g string) bool {
	for _, n := range sec.needles {
		if group(n.secret) == g && bytes.Contains(hay, n.b) {
			return true
		}
	}
	return false
}

func exempt(groups []string, secret string) bool {
	for _, g := range groups {
		if group(secret) == g {
			return true
		}
	}
	return false
}

func totalLen(m map[string][]byte) int {
	n := 0
	for _, b := range m {
		n += len(b)
	}
	return n
}

// checkModes fails the test unless every directory below the roots (and a
// root that is a directory) is 0700 and every file 0600.
func checkModes(t *testing.T, roots ...string) {
	t.Helper()
	n := 0
	for _, root := range roots {
		err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			fi, err := d.Info()
			if err != nil {
				return err
			}
			want := os.FileMode(0o600)
			if d.IsDir() {
				want = 0o700
			}
			if got := fi.Mode().Perm(); got != want {
				t.Errorf("%s: mode %04o, want %04o", path, got, want)
			}
			n++
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("checked the modes of %d files and directories", n)
}

func parseRSAPrivate(t *testing.T, pemBytes []byte) *rsa.PrivateKey {
	t.Helper()
	blk, _ := pem.Decode(pemBytes)
	if blk == nil {
		t.Fatal("no PEM block")
	}
	if k, err := x509.ParsePKCS1PrivateKey(blk.Bytes); err == nil {
		return k
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return k.(*rsa.PrivateKey)
}

// parsePKCS8 reads a PEM PRIVATE KEY file.
func parsePKCS8(t *testing.T, path string) any {
	t.Helper()
	blk, _ := pem.Decode(readFile(t, path))
	if blk == nil {
		t.Fatalf("%s: no PEM block", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return k
}

// recoverLogSigningKey unseals the log's note signing key ("PRIVATE+KEY+
// origin+hash+key") from the log.key entry of a stopped data directory.
func recoverLogSigningKey(t *testing.T, data string) string {
	t.Helper()
	sealer := loadSealer(t, data)
	db, err := bolt.Open(filepath.Join(data, "ledger.db"), 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var skey string
	err = db.View(func(tx *bolt.Tx) error {
		return tx.Bucket([]byte("entries")).ForEach(func(k, v []byte) error {
			e, err := ledger.UnmarshalRecord(v)
			if err != nil || e.Type != ledger.TypeLogKey {
				return err
			}
			b, err := sealer.Open(e.Sealed, ledger.SealAD(e.Seq, e.Type))
			if err != nil {
				return fmt.Errorf("log.key entry %d: %w", e.Seq, err)
			}
			skey = string(b)
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(skey, "PRIVATE+KEY+") {
		t.Fatalf("the log.key entry holds no note signing key")
	}
	return skey
}

// noteKeyField returns the last field of "PRIVATE+KEY+<name>+<hash>+<key>"
// (its base64 may hold '+' too).
func noteKeyField(skey string) string {
	f := strings.SplitN(skey, "+", 5)
	return f[len(f)-1]
}

// noteSeed returns the Ed25519 seed of a note signing key: the last field
// is base64 of the algorithm byte (1) and the 32-byte seed.
func noteSeed(t *testing.T, skey string) []byte {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(noteKeyField(skey))
	if err != nil || len(b) != 1+ed25519.SeedSize || b[0] != 1 {
		t.Fatalf("log signing key: not an Ed25519 note key")
	}
	return b[1:]
}

// TestHandlerPanicLogsNoRequest: net/http recovers a panic in a handler
// and logs it, with the goroutine's stack, to the server's ErrorLog, which
// tkms points at its logger (httpapi.NewHTTPServer). Neither the panic
// value nor the stack holds the request's token or body: a stack trace
// shows argument words (pointers, lengths), not the bytes they point to,
// and no panic in tkms carries a request value (the panics in its code
// are for impossible states, with constant messages or library errors).
func TestHandlerPanicLogsNoRequest(t *testing.T) {
	const token = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJwYW5pYyJ9.c2VjcmV0LXNpZ25hdHVyZS1vZi10aGUtdG9rZW4tcGFuaWMtdGVzdA"
	secretBody := []byte(`{"wrappingKey":"secret-body-of-the-panic-test-0123456789"}`)
	var logs bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&syncWriter{w: &logs}, nil))
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body := make([]byte, 1024)
		n, _ := r.Body.Read(body)
		handlePanicking(r.Header.Get("Authorization"), body[:n])
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := httpapi.NewHTTPServer(ln.Addr().String(), h, log, httpapi.DefaultLimits())
	go srv.Serve(ln)
	defer srv.Close()
	req, _ := http.NewRequest(http.MethodPost, "http://"+ln.Addr().String()+"/app/unwrapKey", bytes.NewReader(secretBody))
	req.Header.Set("Authorization", "Bearer "+token)
	if resp, err := httpClient.Do(req); err == nil {
		resp.Body.Close()
		t.Fatalf("a panicking handler answered %s", resp.Status)
	}
	srv.Close()
	got := logs.String()
	if !strings.Contains(got, "panic serving") || !strings.Contains(got, "handlePanicking") {
		t.Fatalf("no panic with its stack was logged:\n%s", got)
	}
	var sec secretSet
	sec.jwt("token", token)
	sec.bytes("body", secretBody)
	sec.text("wrapping key", "secret-body-of-the-panic-test-0123456789")
	pl := &places{texts: map[string][]byte{"server log": []byte(got)}, exempt: map[string][]string{}}
	checkNoSecrets(t, pl, sec)
}

// handlePanicking stands for a handler's code that hits a bug while it
// holds the request's token and body.
//
//go:noinline
func handlePanicking(auth string, body []byte) {
	var held [][]byte
	held = append(held, []byte(auth), body)
	_ = held[len(auth)] // index out of range: a runtime panic
}

// syncWriter serialises writes to w.
type syncWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

// TestOpenDataDirWarns: a data directory, or a file in it, that group or
// others may access is named in a warning at start, with the fix; tkms
// still starts (a mounted volume may carry modes the operator does not
// choose). An open master key is refused (TestServeRequiresMasterKey).
func TestOpenDataDirWarns(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	p := startDev(t, data)
	if strings.Contains(p.stderr.String(), "accessible by group or others") {
		t.Errorf("a new data directory was warned about:\n%s", p.stderr)
	}
	p.stopClean(syscall.SIGTERM)
	ledgerFile := filepath.Join(data, "ledger.db")
	for path, mode := range map[string]os.FileMode{data: 0o755, ledgerFile: 0o644} {
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
	}
	p = startDev(t, data)
	p.stopClean(syscall.SIGTERM)
	for _, want := range []string{
		`path=` + data + ` mode=0755 fix="chmod 700 ` + data + `"`,
		`path=` + ledgerFile + ` mode=0644 fix="chmod 600 ` + ledgerFile + `"`,
	} {
		if !strings.Contains(p.stderr.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, p.stderr)
		}
	}
}

// TestSecretSetFindsEmbedded: the encodings of a secret are found inside
// a longer hex or base64 text, whatever the bytes around it.
func TestSecretSetFindsEmbedded(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	var sec secretSet
	sec.bytes("s", secret)
	for pre := range 3 {
		for post := range 3 {
			msg := append(append(bytes.Repeat([]byte{0xfe}, pre), secret...), bytes.Repeat([]byte{0xef}, post)...)
			for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
				if !holds([]byte("x"+enc.EncodeToString(msg)+"x"), sec, "s") {
					t.Errorf("not found in base64 with %d bytes before and %d after", pre, post)
				}
			}
			if !holds([]byte(hex.EncodeToString(msg)), sec, "s") || !holds(msg, sec, "s") {
				t.Errorf("not found raw or in hex with %d bytes before and %d after", pre, post)
			}
		}
	}
}
