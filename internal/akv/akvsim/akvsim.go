// Package akvsim is a SIMULATED Azure Key Vault for tests and development:
// a local stand-in that speaks the part of Key Vault's REST API (7.4)
// that secure key release uses (internal/akv):
//
//	POST /keys/{name}/create            create an exportable RSA-HSM key with a release policy
//	GET  /keys/{name}[/{version}]       the key bundle: public JWK, attributes, release policy
//	POST /keys/{name}[/{version}]/release  {"target": MAA token, "nonce"?, "enc"?} -> {"value": JWS}
//
// Every call needs an Entra-ID-shaped bearer token for
// https://vault.azure.net from a configured issuer (internal/jwtauth; tests
// use internal/oidcissuer). A release verifies the MAA token against the
// trusted attestation authorities' keys, evaluates the key's release
// policy over its claims as Key Vault does (policy.EvaluateAuthority: the
// rules of the token's issuer only), wraps the key's PKCS #8 private key
// to the token's first RSA runtime key (x-ms-runtime.keys) with the
// requested CKM_RSA_AES_KEY_WRAP variant, and signs the answer RS256 with
// a certificate (x5c) of its own simulated CA, for the host 127.0.0.1 and
// localhost.
//
// IT PROTECTS NOTHING: its keys live in its memory, unencrypted, and its CA
// is made at start. It exists so that the whole automatic recovery runs on
// one machine against the same wire formats as the real vault.
package akvsim

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/tkms-dev/tkms/internal/akv"
	"github.com/tkms-dev/tkms/internal/attest/maa"
	"github.com/tkms-dev/tkms/internal/jwtauth"
	"github.com/tkms-dev/tkms/internal/policy"
)

// Audience is the aud of the vault's bearer tokens.
const Audience = "https://vault.azure.net"

// Options configure a Vault.
type Options struct {
	// Authorities are the attestation authorities whose tokens a release
	// accepts (a release policy names them in "authority").
	Authorities []maa.Instance
	// TokenIssuers are the trusted issuers of bearer tokens; their
	// Audiences default to [Audience].
	TokenIssuers []jwtauth.IssuerConfig
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// KeySize is the RSA size of created keys; 0 means 3072.
	KeySize int
}

// Vault is a simulated vault. It is safe for concurrent use.
type Vault struct {
	opts  Options
	now   func() time.Time
	auth  *jwtauth.Authenticator
	att   *maa.Verifier
	root  *x509.Certificate
	chain []string // x5c: leaf, root (standard base64 DER)
	sign  *rsa.PrivateKey

	mu   sync.Mutex
	url  string
	keys map[string][]*key // name -> versions, newest last
}

type key struct {
	version string
	priv    *rsa.PrivateKey
	ops     []string
	policy  akv.ReleasePolicy
	created int64
}

// New returns a vault with a fresh simulated CA.
func New(ctx context.Context, opts Options) (*Vault, error) {
	v := &Vault{opts: opts, now: opts.Now, keys: map[string][]*key{}}
	if v.now == nil {
		v.now = time.Now
	}
	cfg := jwtauth.Config{Now: opts.Now, Policy: jwtauth.Policy{}}
	for _, ic := range opts.TokenIssuers {
		if len(ic.Audiences) == 0 {
			ic.Audiences = []string{Audience}
		}
		cfg.Issuers = append(cfg.Issuers, ic)
		cfg.Policy[ic.Issuer] = map[string]any{}
	}
	var err error
	if len(cfg.Issuers) > 0 { // without issuers every call is refused
		if v.auth, err = jwtauth.New(ctx, cfg); err != nil {
			return nil, fmt.Errorf("akvsim: %w", err)
		}
	}
	if v.att, err = maa.New(ctx, maa.Options{Instances: opts.Authorities, Now: opts.Now}); err != nil {
		v.Close()
		return nil, fmt.Errorf("akvsim: %w", err)
	}
	if err := v.makeCA(); err != nil {
		v.Close()
		return nil, err
	}
	return v, nil
}

// Close stops background key refreshes.
func (v *Vault) Close() {
	if v.auth != nil {
		v.auth.Close()
	}
	if v.att != nil {
		v.att.Close()
	}
}

// SetURL sets the vault's base URL, the prefix of its key ids
// ("http://127.0.0.1:PORT").
func (v *Vault) SetURL(u string) {
	v.mu.Lock()
	v.url = strings.TrimSuffix(u, "/")
	v.mu.Unlock()
}

// Root returns the vault's simulated CA certificate.
func (v *Vault) Root() *x509.Certificate { return v.root }

// Roots returns the pool of the vault's simulated CA, which a client must
// trust to verify its release answers (akv.VerifyOptions.Roots).
func (v *Vault) Roots() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(v.root)
	return p
}

func (v *Vault) makeCA() error {
	rootKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	now := v.now()
	rootT := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "SIMULATED KEY VAULT ROOT - NOT AZURE"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(10 * 365 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	rootDER, err := x509.CreateCertificate(rand.Reader, rootT, rootT, &rootKey.PublicKey, rootKey)
	if err != nil {
		return err
	}
	if v.root, err = x509.ParseCertificate(rootDER); err != nil {
		return err
	}
	if v.sign, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		return err
	}
	leafT := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "SIMULATED KEY VAULT - NOT AZURE"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafT, v.root, &v.sign.PublicKey, rootKey)
	if err != nil {
		return err
	}
	v.chain = []string{base64.StdEncoding.EncodeToString(leafDER), base64.StdEncoding.EncodeToString(rootDER)}
	return nil
}

// CreateRequest is the body of POST /keys/{name}/create (the fields the
// simulator reads).
type CreateRequest struct {
	KTY        string   `json:"kty"`
	KeySize    int      `json:"key_size,omitempty"`
	KeyOps     []string `json:"key_ops,omitempty"`
	Attributes struct {
		Exportable bool `json:"exportable"`
	} `json:"attributes"`
	ReleasePolicy *akv.ReleasePolicy `json:"release_policy,omitempty"`
}

// Create creates a version of key name with an SKR release policy (the
// policy document), as `az keyvault key create --exportable true --policy`
// does, and returns its bundle.
func (v *Vault) Create(name string, releasePolicy []byte) (*akv.KeyBundle, error) {
	var req CreateRequest
	req.KTY, req.Attributes.Exportable = "RSA-HSM", true
	req.ReleasePolicy = &akv.ReleasePolicy{ContentType: akv.PolicyContentType, Data: base64.RawURLEncoding.EncodeToString(releasePolicy)}
	kb, _, err := v.create(name, req)
	return kb, err
}

func (v *Vault) create(name string, req CreateRequest) (*akv.KeyBundle, int, error) {
	if req.KTY != "RSA-HSM" && req.KTY != "RSA" {
		return nil, http.StatusBadRequest, fmt.Errorf("kty %q: the simulator makes RSA and RSA-HSM keys only", req.KTY)
	}
	if !req.Attributes.Exportable || req.ReleasePolicy == nil {
		return nil, http.StatusBadRequest, errors.New("the simulator makes exportable keys with a release policy only")
	}
	doc, err := req.ReleasePolicy.Document()
	if err != nil {
		return nil, http.StatusBadRequest, errors.New("release_policy.data is not base64url")
	}
	if p, err := policy.Parse(doc); err != nil || p.Kind() != policy.KindSKR {
		return nil, http.StatusBadRequest, fmt.Errorf("release_policy is not an SKR policy: %v", err)
	}
	size := req.KeySize
	if size == 0 {
		size = v.opts.KeySize
	}
	if size == 0 {
		size = 3072
	}
	if size != 2048 && size != 3072 && size != 4096 {
		return nil, http.StatusBadRequest, fmt.Errorf("key_size %d (want 2048, 3072 or 4096)", size)
	}
	priv, err := rsa.GenerateKey(rand.Reader, size)
	if err != nil {
		return nil, http.StatusInternalServerError, err
	}
	ver := make([]byte, 16)
	_, _ = rand.Read(ver)
	ops := req.KeyOps
	if len(ops) == 0 {
		ops = []string{"encrypt", "decrypt", "wrapKey", "unwrapKey"}
	}
	k := &key{version: hex.EncodeToString(ver), priv: priv, ops: ops, created: v.now().Unix(),
		policy: akv.ReleasePolicy{ContentType: akv.PolicyContentType, Data: base64.RawURLEncoding.EncodeToString(doc), Immutable: req.ReleasePolicy.Immutable}}
	v.mu.Lock()
	v.keys[name] = append(v.keys[name], k)
	kb := v.bundle(name, k)
	v.mu.Unlock()
	return kb, http.StatusOK, nil
}

// bundle returns the public bundle of k. v.mu is held.
func (v *Vault) bundle(name string, k *key) *akv.KeyBundle {
	pub := jose.JSONWebKey{Key: &k.priv.PublicKey}
	b, _ := pub.MarshalJSON()
	var ne struct{ N, E string }
	_ = json.Unmarshal(b, &ne)
	p := k.policy
	return &akv.KeyBundle{
		Key:           akv.JWK{KID: v.url + "/keys/" + name + "/" + k.version, KTY: "RSA-HSM", KeyOps: k.ops, N: ne.N, E: ne.E},
		Attributes:    akv.Attributes{Enabled: true, Exportable: true, Created: k.created, Updated: k.created},
		ReleasePolicy: &p,
	}
}

// find returns version (newest when "") of key name. v.mu is held.
func (v *Vault) find(name, version string) *key {
	vs := v.keys[name]
	if len(vs) == 0 {
		return nil
	}
	if version == "" {
		return vs[len(vs)-1]
	}
	for _, k := range vs {
		if k.version == version {
			return k
		}
	}
	return nil
}

// Handler serves the vault's API.
func (v *Vault) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /keys/{name}/create", v.serveCreate)
	mux.HandleFunc("GET /keys/{name}", v.serveGet)
	mux.HandleFunc("GET /keys/{name}/{version}", v.serveGet)
	mux.HandleFunc("POST /keys/{name}/release", v.serveRelease)
	mux.HandleFunc("POST /keys/{name}/{version}/release", v.serveRelease)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("api-version") == "" {
			vaultError(w, http.StatusBadRequest, "BadParameter", "the api-version query parameter is required")
			return
		}
		if v.auth == nil {
			vaultError(w, http.StatusUnauthorized, "Unauthorized", "AKV10000: no bearer token issuer is trusted")
			return
		}
		if _, err := v.auth.Authenticate(r.Context(), r.Header.Get("Authorization")); err != nil {
			vaultError(w, http.StatusUnauthorized, "Unauthorized", "AKV10000: request is missing a valid Bearer token ("+jwtauth.Code(err)+")")
			return
		}
		mux.ServeHTTP(w, r)
	})
}

func (v *Vault) serveCreate(w http.ResponseWriter, r *http.Request) {
	var req CreateRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&req); err != nil {
		vaultError(w, http.StatusBadRequest, "BadParameter", "the body is not JSON")
		return
	}
	kb, status, err := v.create(r.PathValue("name"), req)
	if err != nil {
		vaultError(w, status, "BadParameter", err.Error())
		return
	}
	writeJSON(w, kb)
}

// lookup finds the key version of the request's path and its public
// bundle, or answers 404 KeyNotFound and returns nils.
func (v *Vault) lookup(w http.ResponseWriter, r *http.Request) (*key, *akv.KeyBundle) {
	name := r.PathValue("name")
	v.mu.Lock()
	defer v.mu.Unlock()
	k := v.find(name, r.PathValue("version"))
	if k == nil {
		vaultError(w, http.StatusNotFound, "KeyNotFound", "A key with (name/id) "+name+" was not found in this key vault")
		return nil, nil
	}
	return k, v.bundle(name, k)
}

func (v *Vault) serveGet(w http.ResponseWriter, r *http.Request) {
	if _, kb := v.lookup(w, r); kb != nil {
		writeJSON(w, kb)
	}
}

func (v *Vault) serveRelease(w http.ResponseWriter, r *http.Request) {
	var req akv.ReleaseRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&req); err != nil || req.Target == "" {
		vaultError(w, http.StatusBadRequest, "BadParameter", `the body is not {"target": <attestation token>, ...}`)
		return
	}
	if req.Enc == "" {
		req.Enc = akv.EncRSAAESKeyWrap
	}
	k, kb := v.lookup(w, r)
	if k == nil {
		return
	}
	jws, status, code, err := v.release(r.Context(), k, kb, req)
	if err != nil {
		vaultError(w, status, code, err.Error())
		return
	}
	writeJSON(w, akv.ReleaseResult{Value: jws})
}

// release decides and makes a release answer.
func (v *Vault) release(ctx context.Context, k *key, kb *akv.KeyBundle, req akv.ReleaseRequest) (string, int, string, error) {
	switch req.Enc {
	case akv.EncRSAAESKeyWrap, akv.EncRSAAESKeyWrap256, akv.EncRSAAESKeyWrap384:
	default:
		return "", http.StatusBadRequest, "BadParameter", fmt.Errorf("enc %q is not a key export algorithm", req.Enc)
	}
	res, err := v.att.Verify(ctx, req.Target)
	if err != nil && !(maa.Code(err) == maa.CodeDebug && res != nil) { // a debuggable TEE is the policy's to refuse
		return "", http.StatusForbidden, "AccessDenied", fmt.Errorf("target environment attestation statement cannot be verified (%s)", maa.Code(err))
	}
	doc, _ := k.policy.Document()
	p, perr := policy.Parse(doc)
	if perr != nil {
		return "", http.StatusInternalServerError, "InternalError", perr
	}
	if err := policy.EvaluateAuthority(p, res.Issuer, res.Claims); err != nil {
		return "", http.StatusForbidden, "AccessDenied", fmt.Errorf("target environment attestation statement does not meet key release policy requirements: %v", err)
	}
	pub, kid, err := runtimeKey(res.Runtime)
	if err != nil {
		return "", http.StatusBadRequest, "BadParameter", err
	}
	der, err := x509.MarshalPKCS8PrivateKey(k.priv)
	if err != nil {
		return "", http.StatusInternalServerError, "InternalError", err
	}
	keyHSM, err := akv.WrapKeyHSM(der, req.Enc, pub, kid)
	if err != nil {
		return "", http.StatusInternalServerError, "InternalError", err
	}
	var payload akv.ReleasePayload
	payload.Request.APIVersion, payload.Request.Enc, payload.Request.KID, payload.Request.Nonce = akv.APIVersion, req.Enc, kb.Key.KID, req.Nonce
	payload.Response.Key = *kb
	payload.Response.Key.Key.KeyHSM = keyHSM
	jws, err := v.signJSON(payload)
	if err != nil {
		return "", http.StatusInternalServerError, "InternalError", err
	}
	return jws, http.StatusOK, "", nil
}

// runtimeKey returns the first RSA key of the token's x-ms-runtime.keys.
func runtimeKey(runtime map[string]any) (*rsa.PublicKey, string, error) {
	keys, _ := runtime["keys"].([]any)
	for _, raw := range keys {
		b, _ := json.Marshal(raw)
		var j jose.JSONWebKey
		if j.UnmarshalJSON(b) != nil {
			continue
		}
		if pub, ok := j.Key.(*rsa.PublicKey); ok {
			return pub, j.KeyID, nil
		}
	}
	return nil, "", errors.New("the attestation token carries no RSA key in x-ms-runtime.keys to wrap the key to")
}

func (v *Vault) signJSON(payload any) (string, error) {
	b, err := json.Marshal(payload)
	if err != nil {
		return "", err
	}
	leaf, _ := base64.StdEncoding.DecodeString(v.chain[0])
	t := sha256.Sum256(leaf)
	opts := (&jose.SignerOptions{}).WithHeader("x5c", v.chain).WithHeader("x5t#S256", base64.RawURLEncoding.EncodeToString(t[:]))
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: v.sign, KeyID: hex.EncodeToString(t[:])}}, opts)
	if err != nil {
		return "", err
	}
	obj, err := s.Sign(b)
	if err != nil {
		return "", err
	}
	return obj.CompactSerialize()
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	_ = json.NewEncoder(w).Encode(v)
}

func vaultError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	var e akv.VaultError
	e.Error.Code, e.Error.Message = code, msg
	_ = json.NewEncoder(w).Encode(e)
}
