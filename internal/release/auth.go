package release

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/tkms-dev/tkms/internal/jwtauth"
	"github.com/tkms-dev/tkms/internal/limit"
	"github.com/tkms-dev/tkms/internal/state"
)

// AuthConfig returns the authenticator configuration for a JWT policy of
// the ledger: its trusted issuers and, per issuer, the claims its tokens
// must carry (an issuer without claims gets an empty entry: trusted, no
// claim checks). Logger and the other knobs are left to the caller.
func AuthConfig(jp *state.JWTPolicy) jwtauth.Config {
	ac := jwtauth.Config{Policy: jwtauth.Policy{}}
	if jp == nil {
		return ac
	}
	for _, is := range jp.Issuers {
		ac.Issuers = append(ac.Issuers, jwtauth.IssuerConfig{
			Issuer: is.Issuer, Audiences: slices.Clone(is.Audiences), DiscoveryURL: is.DiscoveryURL, JWKSURL: is.JWKSURL,
			JWKS: slices.Clone(is.JWKS), Algorithms: slices.Clone(is.Algorithms),
		})
		claims := map[string]any{}
		for k, v := range jp.Claims[is.Issuer] {
			claims[k] = v
		}
		ac.Policy[is.Issuer] = claims
	}
	return ac
}

// authState is the authenticator for the JWT policy of one ledger entry.
type authState struct {
	seq     uint64                 // the JWT policy's entry (state.JWTSeq)
	issuers []byte                 // JSON of the issuers a was built for
	a       *jwtauth.Authenticator // nil if none could be built
	err     error                  // why a is nil
}

var errNoIssuer = errors.New("release: no token issuer is trusted")

// authenticator returns the authenticator for the JWT policy in force.
// When governance has changed the policy since the last request, it
// follows: a change of claims only is applied with SetPolicy, a change of
// issuers builds a new authenticator with Config.NewAuth (and closes the
// old one). Reading the policy's sequence number is all a request costs
// otherwise.
func (s *Service) authenticator(ctx context.Context) (*jwtauth.Authenticator, error) {
	cur := s.auth.Load()
	if s.cfg.NewAuth == nil {
		return cur.a, cur.err
	}
	var seq uint64
	s.cfg.KMS.Read(func(st *state.State) { seq = st.JWTSeq })
	if seq == cur.seq {
		return cur.a, cur.err
	}
	s.authMu.Lock()
	cur = s.auth.Load()
	var ac jwtauth.Config
	s.cfg.KMS.Read(func(st *state.State) { seq, ac = st.JWTSeq, AuthConfig(st.JWT) })
	if seq == cur.seq {
		s.authMu.Unlock()
		return cur.a, cur.err
	}
	issuers, _ := json.Marshal(ac.Issuers)
	next := &authState{seq: seq, issuers: issuers}
	switch {
	case len(ac.Issuers) == 0:
		next.err = errNoIssuer
	case cur.a != nil && bytes.Equal(issuers, cur.issuers):
		next.a, next.err = cur.a, cur.a.SetPolicy(ac.Policy)
		if next.err != nil {
			next.a = nil
		}
	default:
		next.a, next.err = s.cfg.NewAuth(ctx, ac)
	}
	s.auth.Store(next)
	s.authMu.Unlock()
	if next.err != nil {
		s.log.Error("the jwt policy in force cannot be used: key release refuses every token", "jwt_policy_seq", seq, "err", next.err)
	} else {
		s.log.Info("jwt policy changed: token authentication follows it", "jwt_policy_seq", seq, "issuers", len(ac.Issuers), "rebuilt", next.a != cur.a)
	}
	if cur.a != nil && cur.a != next.a {
		cur.a.Close()
	}
	return next.a, next.err
}

// Close stops the background work of the token authenticator in use.
func (s *Service) Close() {
	s.authMu.Lock()
	defer s.authMu.Unlock()
	if a := s.auth.Load().a; a != nil {
		a.Close()
	}
}

// AuthStats returns the token authenticator's counters (zero when no
// authenticator is in use).
func (s *Service) AuthStats() jwtauth.Stats {
	if a := s.auth.Load().a; a != nil {
		return a.Stats()
	}
	return jwtauth.Stats{}
}

// Authenticate validates the Authorization header's bearer token.
func (s *Service) Authenticate(ctx context.Context, authorization string) (*jwtauth.Identity, error) {
	a, err := s.authenticator(ctx)
	if a == nil {
		if errors.Is(err, errNoIssuer) {
			return nil, fail(KindUnavailable, CodeUnavailable, "no token issuer is trusted: key release is disabled", err)
		}
		return nil, fail(KindUnavailable, CodeUnavailable, "the trusted token issuers in force cannot be used", err)
	}
	id, err := a.Authenticate(ctx, authorization)
	if err != nil {
		return nil, fail(KindUnauthenticated, jwtauth.Code(err), err.Error(), err)
	}
	if d := s.cfg.IdentityLimit.Allow(identityKey(id)); !d.Allowed {
		r, b := s.cfg.IdentityLimit.Rate()
		e := fail(KindRateLimited, CodeRateLimited,
			fmt.Sprintf("too many requests for this identity: at most %g a second (bursts of %d); retry after %d s", r, b, limit.RetryAfterSeconds(d.RetryAfter)), nil)
		e.RetryAfter = d.RetryAfter
		return nil, e
	}
	return id, nil
}

// identityKey is the key of a caller's bucket in Config.IdentityLimit:
// its issuer and oid, or its subject for a token without an oid.
func identityKey(id *jwtauth.Identity) string {
	if id.OID != "" {
		return id.Issuer + "\x00oid\x00" + id.OID
	}
	return id.Issuer + "\x00sub\x00" + id.Subject
}
