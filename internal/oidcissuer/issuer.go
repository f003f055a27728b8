// Package oidcissuer is a small, real OpenID Connect issuer: it keeps a
// signing key in a directory, serves OpenID Connect Discovery 1.0 metadata
// (/.well-known/openid-configuration) and a JWK Set (RFC 7517), and mints
// signed JWTs (RFC 7519) with a kid header.
//
// It exists so that tests and `tkms dev` can exercise the same bearer-token
// path that production uses against Entra ID, over real HTTP with real
// signatures. It is not an authorization server: there is no token endpoint
// and no client authentication; whoever holds the Issuer mints tokens.
//
// The signing key is RS256 (RSA-2048) by default, or ES256 (P-256) on
// request, stored as a PKCS #8 PEM file of mode 0600 so that minted tokens
// remain valid across restarts. The key ID is the RFC 7638 JWK thumbprint
// (SHA-256, base64url) of the public key.
package oidcissuer

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// KeyFile is the name of the signing key file inside the issuer's directory.
const KeyFile = "oidc-signing-key.pem"

// Paths served by Handler, relative to the path of the issuer URL.
const (
	DiscoveryPath = "/.well-known/openid-configuration"
	JWKSPath      = "/discovery/keys"
)

// Options configure an Issuer. The zero value is an RS256 issuer whose URL is
// set later with SetURL.
type Options struct {
	// URL is the issuer identifier (the iss claim and the base of the
	// discovery document). It may be left empty and set with SetURL once the
	// caller knows the address it listens on.
	URL string
	// Algorithm is "RS256" (the default, RSA-2048) or "ES256" (P-256). It
	// applies when a key is created; an existing key file must match it.
	Algorithm string
	// Now is the clock used for iat, nbf and exp. Defaults to time.Now.
	Now func() time.Time
}

// An Issuer signs tokens and serves the metadata that lets a relying party
// verify them. It is safe for concurrent use.
type Issuer struct {
	dir string
	alg jose.SignatureAlgorithm
	now func() time.Time

	mu      sync.RWMutex
	url     string
	current signingKey
	retired []signingKey // rotated-out keys, still published in the JWKS
}

type signingKey struct {
	priv crypto.Signer
	kid  string
}

// New loads the signing key from dir/KeyFile, or creates it (and dir, mode
// 0700) if it does not exist. A key file that exists but cannot be read or
// parsed, is readable by group or others, or holds a key of another
// algorithm is an error: New never replaces an existing key.
func New(dir string, opts Options) (*Issuer, error) {
	alg := jose.RS256
	switch opts.Algorithm {
	case "", "RS256":
	case "ES256":
		alg = jose.ES256
	default:
		return nil, fmt.Errorf("oidcissuer: unsupported algorithm %q (use RS256 or ES256)", opts.Algorithm)
	}
	if opts.URL != "" {
		if err := checkURL(opts.URL); err != nil {
			return nil, err
		}
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	iss := &Issuer{dir: dir, alg: alg, now: now, url: strings.TrimSuffix(opts.URL, "/")}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("oidcissuer: %w", err)
	}
	k, err := loadOrCreate(filepath.Join(dir, KeyFile), alg)
	if err != nil {
		return nil, err
	}
	iss.current = k
	return iss, nil
}

func loadOrCreate(path string, alg jose.SignatureAlgorithm) (signingKey, error) {
	k, err := load(path, alg)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return k, err
	}
	priv, err := generate(alg)
	if err != nil {
		return signingKey{}, err
	}
	if err := store(path, priv, false); err != nil {
		if errors.Is(err, fs.ErrExist) {
			// Another process created the key first: use theirs.
			return load(path, alg)
		}
		return signingKey{}, err
	}
	return newSigningKey(priv)
}

func generate(alg jose.SignatureAlgorithm) (crypto.Signer, error) {
	var (
		priv crypto.Signer
		err  error
	)
	if alg == jose.ES256 {
		priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	} else {
		priv, err = rsa.GenerateKey(rand.Reader, 2048)
	}
	if err != nil {
		return nil, fmt.Errorf("oidcissuer: generating signing key: %w", err)
	}
	return priv, nil
}

func load(path string, alg jose.SignatureAlgorithm) (signingKey, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return signingKey{}, fmt.Errorf("oidcissuer: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return signingKey{}, fmt.Errorf("oidcissuer: signing key %s is accessible by group or others (mode %04o); run chmod 600 on it", path, fi.Mode().Perm())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return signingKey{}, fmt.Errorf("oidcissuer: %w", err)
	}
	defer clear(data)
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "PRIVATE KEY" {
		return signingKey{}, fmt.Errorf("oidcissuer: %s does not hold a PEM PRIVATE KEY", path)
	}
	defer clear(block.Bytes) // the DER decoded from the PEM: a copy of the key
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return signingKey{}, fmt.Errorf("oidcissuer: parsing %s: %w", path, err)
	}
	switch k := k.(type) {
	case *rsa.PrivateKey:
		if alg != jose.RS256 {
			return signingKey{}, fmt.Errorf("oidcissuer: %s holds an RSA key, want %s", path, alg)
		}
		if k.N.BitLen() < 2048 {
			return signingKey{}, fmt.Errorf("oidcissuer: %s holds a %d-bit RSA key, want at least 2048", path, k.N.BitLen())
		}
		return newSigningKey(k)
	case *ecdsa.PrivateKey:
		if alg != jose.ES256 || k.Curve != elliptic.P256() {
			return signingKey{}, fmt.Errorf("oidcissuer: %s holds an ECDSA key, want %s", path, alg)
		}
		return newSigningKey(k)
	default:
		return signingKey{}, fmt.Errorf("oidcissuer: %s holds a %T, want %s", path, k, alg)
	}
}

// store writes priv to path with mode 0600. The key is written to a
// temporary file first and then linked into place, so path is never seen
// half-written; unless replace is set, an existing path is left alone and
// the error wraps fs.ErrExist.
func store(path string, priv crypto.Signer, replace bool) error {
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return fmt.Errorf("oidcissuer: %w", err)
	}
	defer clear(der)
	f, err := os.CreateTemp(filepath.Dir(path), ".oidc-signing-key-*")
	if err != nil {
		return fmt.Errorf("oidcissuer: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp)
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return fmt.Errorf("oidcissuer: %w", err)
	}
	if err := pem.Encode(f, &pem.Block{Type: "PRIVATE KEY", Bytes: der}); err != nil {
		f.Close()
		return fmt.Errorf("oidcissuer: writing signing key: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("oidcissuer: writing signing key: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("oidcissuer: writing signing key: %w", err)
	}
	if replace {
		err = os.Rename(tmp, path)
	} else {
		err = os.Link(tmp, path)
	}
	if err != nil {
		return fmt.Errorf("oidcissuer: storing signing key: %w", err)
	}
	return nil
}

func newSigningKey(priv crypto.Signer) (signingKey, error) {
	jwk := jose.JSONWebKey{Key: priv.Public()}
	tp, err := jwk.Thumbprint(crypto.SHA256)
	if err != nil {
		return signingKey{}, fmt.Errorf("oidcissuer: key thumbprint: %w", err)
	}
	return signingKey{priv: priv, kid: base64.RawURLEncoding.EncodeToString(tp)}, nil
}

func checkURL(u string) error {
	p, err := url.Parse(u)
	if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" || p.RawQuery != "" || p.Fragment != "" {
		return fmt.Errorf("oidcissuer: issuer url %q is not an absolute http(s) url without query or fragment", u)
	}
	return nil
}

// SetURL sets the issuer identifier, typically once the caller knows the
// address it listens on ("http://127.0.0.1:PORT"). A trailing slash is
// dropped.
func (i *Issuer) SetURL(u string) error {
	if err := checkURL(u); err != nil {
		return err
	}
	i.mu.Lock()
	defer i.mu.Unlock()
	i.url = strings.TrimSuffix(u, "/")
	return nil
}

// URL returns the issuer identifier, or "" if it has not been set.
func (i *Issuer) URL() string {
	i.mu.RLock()
	defer i.mu.RUnlock()
	return i.url
}

// DiscoveryURL returns the address of the discovery document.
func (i *Issuer) DiscoveryURL() string { return i.URL() + DiscoveryPath }

// JWKSURL returns the address of the JWK Set.
func (i *Issuer) JWKSURL() string { return i.URL() + JWKSPath }

// KeyID returns the kid of the current signing key.
func (i *Issuer) KeyID() string {
	i.mu.RLock()
	defer i.mu.RUnlock()
	return i.current.kid
}

// Algorithm returns the signing algorithm, "RS256" or "ES256".
func (i *Issuer) Algorithm() string { return string(i.alg) }

// PublicKey returns the public half of the current signing key.
func (i *Issuer) PublicKey() crypto.PublicKey {
	i.mu.RLock()
	defer i.mu.RUnlock()
	return i.current.priv.Public()
}

// Rotate replaces the signing key with a new one and stores it in the
// directory. The previous keys stay in the JWK Set served by this Issuer (but
// are not stored), so tokens signed with them still verify until restart.
func (i *Issuer) Rotate() error {
	priv, err := generate(i.alg)
	if err != nil {
		return err
	}
	k, err := newSigningKey(priv)
	if err != nil {
		return err
	}
	i.mu.Lock()
	defer i.mu.Unlock()
	if err := store(filepath.Join(i.dir, KeyFile), priv, true); err != nil {
		return err
	}
	i.retired = append(i.retired, i.current)
	i.current = k
	return nil
}

// JWKS returns the JWK Set (RFC 7517, section 5) of the public keys, newest
// first: the document Handler serves, also usable as a static key set.
func (i *Issuer) JWKS() []byte {
	i.mu.RLock()
	defer i.mu.RUnlock()
	set := jose.JSONWebKeySet{}
	for _, k := range append([]signingKey{i.current}, i.retired...) {
		set.Keys = append(set.Keys, jose.JSONWebKey{
			Key:       k.priv.Public(),
			KeyID:     k.kid,
			Algorithm: string(i.alg),
			Use:       "sig",
		})
	}
	b, err := json.Marshal(set)
	if err != nil {
		panic("oidcissuer: marshaling public keys: " + err.Error()) // RSA and P-256 keys always marshal
	}
	return b
}

// Mint returns a compact JWS (a JWT) over claims, signed with the current key,
// with header {"alg", "kid", "typ":"JWT"}. The claims are used as given: Mint
// adds nothing (see ManagedIdentityClaims).
func (i *Issuer) Mint(claims map[string]any) (string, error) {
	i.mu.RLock()
	k := i.current
	i.mu.RUnlock()
	signer, err := jose.NewSigner(
		jose.SigningKey{Algorithm: i.alg, Key: jose.JSONWebKey{Key: k.priv, KeyID: k.kid}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return "", fmt.Errorf("oidcissuer: %w", err)
	}
	tok, err := jwt.Signed(signer).Claims(claims).Serialize()
	if err != nil {
		return "", fmt.Errorf("oidcissuer: signing token: %w", err)
	}
	return tok, nil
}

// ManagedIdentity describes a token shaped like the one Entra ID issues to a
// managed identity through IMDS.
type ManagedIdentity struct {
	// Issuer is the iss claim. Empty means the Issuer's URL; set it to
	// "https://sts.windows.net/<tenant>/" (v1) or
	// "https://login.microsoftonline.com/<tenant>/v2.0" (v2) to imitate
	// Entra ID.
	Issuer string
	// Audience is the aud claim, e.g. "https://management.azure.com/".
	Audience string
	// PrincipalID is the object id of the managed identity: the oid and sub
	// claims.
	PrincipalID string
	// TenantID is the tid claim.
	TenantID string
	// TTL is the lifetime from now; zero means one hour.
	TTL time.Duration
}

// ManagedIdentityClaims returns the claims of a managed identity token: iss,
// aud, sub, oid, idtyp "app", tid, iat, nbf and exp, with iat = nbf = now.
// Callers may edit the map before passing it to Mint.
func (i *Issuer) ManagedIdentityClaims(mi ManagedIdentity) map[string]any {
	iss := mi.Issuer
	if iss == "" {
		iss = i.URL()
	}
	ttl := mi.TTL
	if ttl == 0 {
		ttl = time.Hour
	}
	now := i.now().Unix()
	return map[string]any{
		"iss":   iss,
		"aud":   mi.Audience,
		"sub":   mi.PrincipalID,
		"oid":   mi.PrincipalID,
		"idtyp": "app",
		"tid":   mi.TenantID,
		"iat":   now,
		"nbf":   now,
		"exp":   now + int64(ttl/time.Second),
	}
}

// MintManagedIdentity mints a managed-identity-shaped token.
func (i *Issuer) MintManagedIdentity(mi ManagedIdentity) (string, error) {
	return i.Mint(i.ManagedIdentityClaims(mi))
}

// Handler serves the discovery document at DiscoveryPath and the JWK Set at
// JWKSPath, both below the path of the issuer URL. Until the URL is set it
// answers 503.
func (i *Issuer) Handler() http.Handler {
	return http.HandlerFunc(i.serveHTTP)
}

func (i *Issuer) serveHTTP(w http.ResponseWriter, r *http.Request) {
	base := i.URL()
	if base == "" {
		http.Error(w, "oidc issuer url not set", http.StatusServiceUnavailable)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	prefix := ""
	if u, err := url.Parse(base); err == nil {
		prefix = strings.TrimSuffix(u.Path, "/")
	}
	var body []byte
	switch r.URL.Path {
	case prefix + DiscoveryPath:
		body, _ = json.Marshal(map[string]any{
			"issuer":                                base,
			"jwks_uri":                              base + JWKSPath,
			"id_token_signing_alg_values_supported": []string{string(i.alg)},
			"response_types_supported":              []string{"id_token"},
			"subject_types_supported":               []string{"public"},
		})
	case prefix + JWKSPath:
		body = i.JWKS()
	default:
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Write(body)
}
