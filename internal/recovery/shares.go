// Package recovery brings a tkms service back when every node is lost:
// the consortium's members, k of n together, recover the ledger secret
// (docs/recovery.md).
//
// A random recovery key wraps the ledger secret (AES-256-GCM). The
// recovery key is a scalar of the Ristretto255 group, split k-of-n with
// Shamir's scheme; each share is HPKE-sealed (RFC 9180, Go's crypto/hpke)
// to one member's encryption key, and the whole, with the wrapped secret,
// is the public body of a recovery.shares ledger entry: nobody learns a
// share from the ledger but the member it is sealed to.
//
// Shamir's scheme is circl's secretsharing (github.com/cloudflare/circl),
// chosen because it is maintained by a cryptography team, it works over a
// prime-order group in constant time (Ristretto255), and it is verifiable
// (Feldman): the entry carries commitments to the polynomial, so the
// recovering node checks each share when it arrives and names a member
// whose share is wrong, instead of combining garbage at the threshold.
package recovery

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hpke"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"

	"github.com/cloudflare/circl/group"
	"github.com/cloudflare/circl/secretsharing"
	"github.com/tkms-dev/tkms/internal/gov"
	"github.com/tkms-dev/tkms/internal/keys"
)

// The error codes of recovery (docs/recovery.md "Errors"): each refusal
// names one, nothing is opened and no share already accepted is lost.
const (
	CodeShareInvalid   = "RECOVERY_SHARE_INVALID"   // the share does not verify against the ledger's commitments, or does not combine
	CodeNotMember      = "RECOVERY_NOT_MEMBER"      // signed by a key that is not a member holding a share
	CodeWrongRecovery  = "RECOVERY_WRONG_ID"        // signed for another recovery
	CodeReplayed       = "RECOVERY_SHARE_REPLAYED"  // this member's share was already accepted
	CodeWrongKey       = "RECOVERY_SHARE_WRONG_KEY" // the share is sealed to another encryption key
	CodeBelowThreshold = "RECOVERY_BELOW_THRESHOLD" // fewer shares than the threshold
	CodeAuditFailed    = "RECOVERY_LEDGER_AUDIT_FAILED"
	CodeInProgress     = "RECOVERY_IN_PROGRESS" // another recovery holds this ledger copy
	CodeBadMessage     = "RECOVERY_BAD_MESSAGE" // not a well-formed signed share
	CodeDone           = "RECOVERY_DONE"        // the threshold was reached; no more shares are taken
	CodeNoShares       = "RECOVERY_NO_SHARES"   // the ledger holds no recovery shares
)

// An Error is a refusal with its code.
type Error struct {
	Code string
	Err  error
}

func (e *Error) Error() string { return e.Code + ": " + e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

func fail(code, format string, a ...any) error {
	return &Error{Code: code, Err: fmt.Errorf(format, a...)}
}

// CodeOf returns the code of a recovery error, "" for another error.
func CodeOf(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}

// A Recipient is a member holding an encryption key.
type Recipient struct {
	MemberID string
	Key      gov.EncryptionKey
}

// SealedShare is one member's share in the ledger, sealed to its key.
type SealedShare struct {
	MemberID string `json:"member_id"`
	Index    uint16 `json:"index"`    // the share's Shamir x coordinate, from 1
	KeyHash  string `json:"key_hash"` // gov.EncryptionKey.Hash of the key it is sealed to
	Sealed   []byte `json:"sealed"`   // HPKE base mode: enc || ciphertext
}

// HeldKey is the whole recovery key held by an automatic recovery member
// (a Holder), wrapped so that only it can unwrap it.
type HeldKey struct {
	Holder  string `json:"holder"`
	Wrapped []byte `json:"wrapped"`
}

// Shares is the public body of a recovery.shares entry. Nothing in it is
// secret: the shares are sealed to their members, the ledger secret to the
// recovery key, and the commitments reveal nothing of the key.
type Shares struct {
	Version   uint64 `json:"version"`   // 1 for the first shares, then one more per renewal
	Threshold int    `json:"threshold"` // k
	// SecretID names the ledger secret wrapped (SecretID), ConfigID the
	// members, keys and threshold shared to (ConfigID): a change of
	// either renews the shares.
	SecretID    string        `json:"secret_id"`
	ConfigID    string        `json:"config_id"`
	Wrapped     []byte        `json:"wrapped_secret"` // AES-256-GCM under the recovery key: nonce || ct || tag
	Commitments [][]byte      `json:"commitments"`    // Feldman commitments, k of them
	Members     []SealedShare `json:"members"`
	Held        []HeldKey     `json:"held,omitempty"`
}

// Limits.
const (
	maxMembers  = 255
	maxSecret   = 4096
	shareSize   = 2 + 32 // index(2) || Ristretto255 scalar(32)
	shareInfo   = "tkms/recovery-share/v1\x00"
	wrapInfo    = "tkms/recovery-key/v1"
	wrapADLabel = "tkms/recovery-wrapped-secret/v1\x00"
)

var g = group.Ristretto255

// SecretID returns the public name of a ledger secret: a hash that says
// whether two shares entries wrap the same secret and nothing else.
func SecretID(secret []byte) string {
	h := sha256.Sum256(append([]byte("tkms/recovery/secret-id/v1\x00"), secret...))
	return hex.EncodeToString(h[:16])
}

// ConfigID returns the public name of what the shares are split for: the
// threshold, each recipient's member id and key, in member id order, and
// the names of the holders (automatic recovery members) of the whole key.
func ConfigID(threshold int, rs []Recipient, holders ...string) string {
	sorted := slices.Clone(rs)
	slices.SortFunc(sorted, func(a, b Recipient) int { return bytes.Compare([]byte(a.MemberID), []byte(b.MemberID)) })
	h := sha256.New()
	h.Write([]byte("tkms/recovery/config/v1\x00" + strconv.Itoa(threshold)))
	for _, r := range sorted {
		h.Write([]byte("\x00" + r.MemberID + "\x00" + r.Key.Hash()))
	}
	for _, n := range slices.Sorted(slices.Values(holders)) {
		h.Write([]byte("\x00holder\x00" + n))
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// Split makes the shares of a new recovery key for secret, k of the
// recipients' shares recovering it, and wraps the key for each holder.
func Split(secret []byte, rs []Recipient, k int, version uint64, holders ...Holder) (*Shares, error) {
	if len(secret) == 0 || len(secret) > maxSecret {
		return nil, fmt.Errorf("recovery: a ledger secret of %d bytes", len(secret))
	}
	if len(rs) == 0 || len(rs) > maxMembers {
		return nil, fmt.Errorf("recovery: %d recipients: want 1 to %d", len(rs), maxMembers)
	}
	if k < 1 || k > len(rs) {
		return nil, fmt.Errorf("recovery: threshold %d of %d recipients", k, len(rs))
	}
	seen := map[string]bool{}
	for _, r := range rs {
		if seen[r.MemberID] {
			return nil, fmt.Errorf("recovery: member %s listed twice", r.MemberID)
		}
		seen[r.MemberID] = true
	}
	rk := g.RandomScalar(rand.Reader)
	ss := secretsharing.New(rand.Reader, uint(k-1), rk)
	rkBytes, err := rk.MarshalBinary()
	if err != nil {
		return nil, err
	}
	defer clear(rkBytes)
	var names []string
	for _, h := range holders {
		names = append(names, h.Name())
	}
	out := &Shares{Version: version, Threshold: k, SecretID: SecretID(secret), ConfigID: ConfigID(k, rs, names...)}
	if out.Wrapped, err = wrap(rkBytes, secret, out); err != nil {
		return nil, err
	}
	for _, c := range ss.CommitSecret() {
		b, err := c.MarshalBinaryCompress()
		if err != nil {
			return nil, err
		}
		out.Commitments = append(out.Commitments, b)
	}
	id := g.NewScalar()
	for i, r := range rs {
		idx := uint16(i + 1)
		sh := ss.ShareWithID(id.SetUint64(uint64(idx)))
		pt, err := encodeShare(idx, sh.Value)
		if err != nil {
			return nil, err
		}
		sealed, err := sealTo(r.Key, shareInfoFor(out, r.MemberID, idx), pt)
		clear(pt)
		if err != nil {
			return nil, fmt.Errorf("recovery: member %s: %w", r.MemberID, err)
		}
		out.Members = append(out.Members, SealedShare{MemberID: r.MemberID, Index: idx, KeyHash: r.Key.Hash(), Sealed: sealed})
	}
	for _, h := range holders {
		w, err := h.Wrap(rkBytes)
		if err != nil {
			return nil, fmt.Errorf("recovery: holder %s: %w", h.Name(), err)
		}
		out.Held = append(out.Held, HeldKey{Holder: h.Name(), Wrapped: w})
	}
	return out, nil
}

// shareInfoFor binds a sealed share to its shares entry (version, secret,
// configuration), its member and its index.
func shareInfoFor(s *Shares, member string, idx uint16) []byte {
	return []byte(fmt.Sprintf("%s%d\x00%s\x00%s\x00%s\x00%d", shareInfo, s.Version, s.SecretID, s.ConfigID, member, idx))
}

func encodeShare(idx uint16, v group.Scalar) ([]byte, error) {
	b, err := v.MarshalBinary()
	if err != nil {
		return nil, err
	}
	out := binary.BigEndian.AppendUint16(make([]byte, 0, shareSize), idx)
	out = append(out, b...)
	clear(b)
	return out, nil
}

// decodeShare parses an opened share: index(2) || scalar(32).
func decodeShare(b []byte) (secretsharing.Share, uint16, error) {
	if len(b) != shareSize {
		return secretsharing.Share{}, 0, fmt.Errorf("a share of %d bytes, want %d", len(b), shareSize)
	}
	idx := binary.BigEndian.Uint16(b)
	if idx == 0 {
		return secretsharing.Share{}, 0, errors.New("a share with index 0")
	}
	v := g.NewScalar()
	if err := v.UnmarshalBinary(b[2:]); err != nil {
		return secretsharing.Share{}, 0, errors.New("a share whose value is not a scalar")
	}
	return secretsharing.Share{ID: g.NewScalar().SetUint64(uint64(idx)), Value: v}, idx, nil
}

func sealTo(k gov.EncryptionKey, info, pt []byte) ([]byte, error) {
	s, err := k.ParsedSuite()
	if err != nil {
		return nil, err
	}
	pk, err := s.PublicKey(k.PublicKey)
	if err != nil {
		return nil, err
	}
	kdf, aead, err := kdfAEAD(s)
	if err != nil {
		return nil, err
	}
	return hpke.Seal(pk, kdf, aead, info, pt)
}

func kdfAEAD(s keys.Suite) (hpke.KDF, hpke.AEAD, error) {
	kdf, err := hpke.NewKDF(s.KDF)
	if err != nil {
		return nil, nil, err
	}
	aead, err := hpke.NewAEAD(s.AEAD)
	if err != nil {
		return nil, nil, err
	}
	return kdf, aead, nil
}

// aeadFor derives the AES-256-GCM key that the recovery key wraps the
// ledger secret with.
func aeadFor(rk []byte) (cipher.AEAD, error) {
	key, err := hkdf.Key(sha256.New, rk, nil, wrapInfo, 32)
	if err != nil {
		return nil, err
	}
	defer clear(key)
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}

func wrapAD(s *Shares) []byte {
	return []byte(fmt.Sprintf("%s%d\x00%s\x00%s", wrapADLabel, s.Version, s.SecretID, s.ConfigID))
}

func wrap(rk, secret []byte, s *Shares) ([]byte, error) {
	a, err := aeadFor(rk)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, a.NonceSize())
	rand.Read(nonce)
	return a.Seal(nonce, nonce, secret, wrapAD(s)), nil
}

// Unwrap opens the ledger secret with the recovery key rk (the combined
// shares, or a holder's key).
func (s *Shares) Unwrap(rk []byte) ([]byte, error) {
	a, err := aeadFor(rk)
	if err != nil {
		return nil, err
	}
	if len(s.Wrapped) < a.NonceSize()+a.Overhead() {
		return nil, fail(CodeShareInvalid, "the wrapped ledger secret is truncated")
	}
	n := a.NonceSize()
	pt, err := a.Open(nil, s.Wrapped[:n], s.Wrapped[n:], wrapAD(s))
	if err != nil {
		return nil, fail(CodeShareInvalid, "the shares combine to a key that does not open the ledger secret")
	}
	if SecretID(pt) != s.SecretID {
		clear(pt)
		return nil, fail(CodeShareInvalid, "the ledger secret opened is not the one the shares entry names")
	}
	return pt, nil
}

// HolderNames returns the names of the holders of the whole recovery key.
func (s *Shares) HolderNames() []string {
	var out []string
	for _, h := range s.Held {
		out = append(out, h.Holder)
	}
	return out
}

// Share returns the sealed share of member, nil if it holds none.
func (s *Shares) Share(member string) *SealedShare {
	for i := range s.Members {
		if s.Members[i].MemberID == member {
			return &s.Members[i]
		}
	}
	return nil
}

// Check checks the shape of a shares body read from the ledger.
func (s *Shares) Check() error {
	switch {
	case s.Version == 0:
		return errors.New("recovery shares: version 0")
	case len(s.Members) == 0 || len(s.Members) > maxMembers:
		return fmt.Errorf("recovery shares: %d members", len(s.Members))
	case s.Threshold < 1 || s.Threshold > len(s.Members):
		return fmt.Errorf("recovery shares: threshold %d of %d members", s.Threshold, len(s.Members))
	case len(s.Commitments) != s.Threshold:
		return fmt.Errorf("recovery shares: %d commitments for threshold %d", len(s.Commitments), s.Threshold)
	case len(s.Wrapped) == 0:
		return errors.New("recovery shares: no wrapped secret")
	}
	seen, idx := map[string]bool{}, map[uint16]bool{}
	for _, m := range s.Members {
		if seen[m.MemberID] || idx[m.Index] || m.Index == 0 {
			return fmt.Errorf("recovery shares: member %s or index %d twice (or index 0)", m.MemberID, m.Index)
		}
		seen[m.MemberID], idx[m.Index] = true, true
	}
	for _, c := range s.Commitments {
		if err := g.NewElement().UnmarshalBinary(c); err != nil {
			return errors.New("recovery shares: a commitment is not a group element")
		}
	}
	return nil
}

// Verify checks an opened share of member against the entry's Feldman
// commitments. A share that fails is refused with CodeShareInvalid.
func (s *Shares) Verify(member string, share []byte) error {
	ss := s.Share(member)
	if ss == nil {
		return fail(CodeNotMember, "member %s holds no share of recovery shares version %d", member, s.Version)
	}
	sh, idx, err := decodeShare(share)
	if err != nil {
		return fail(CodeShareInvalid, "member %s: %v", member, err)
	}
	if idx != ss.Index {
		return fail(CodeShareInvalid, "member %s: a share of index %d, but its share has index %d", member, idx, ss.Index)
	}
	cs := make(secretsharing.SecretCommitment, len(s.Commitments))
	for i, b := range s.Commitments {
		cs[i] = g.NewElement()
		if err := cs[i].UnmarshalBinary(b); err != nil {
			return fail(CodeShareInvalid, "commitment %d is not a group element", i)
		}
	}
	if !secretsharing.Verify(uint(s.Threshold-1), sh, cs) {
		return fail(CodeShareInvalid, "member %s: the share does not match the ledger's commitments (a wrong or altered share)", member)
	}
	return nil
}

// Combine recovers the ledger secret from the opened shares, by member id.
// Each share is verified first; fewer than the threshold is refused.
func (s *Shares) Combine(shares map[string][]byte) ([]byte, error) {
	if len(shares) < s.Threshold {
		return nil, fail(CodeBelowThreshold, "%d shares, the threshold is %d", len(shares), s.Threshold)
	}
	var list []secretsharing.Share
	for _, m := range slices.Sorted(mapsKeys(shares)) {
		if err := s.Verify(m, shares[m]); err != nil {
			return nil, err
		}
		sh, _, _ := decodeShare(shares[m])
		list = append(list, sh)
	}
	rk, err := secretsharing.Recover(uint(s.Threshold-1), list)
	if err != nil {
		return nil, fail(CodeShareInvalid, "the shares do not combine: %v", err)
	}
	rkb, err := rk.MarshalBinary()
	if err != nil {
		return nil, err
	}
	defer clear(rkb)
	return s.Unwrap(rkb)
}

func mapsKeys(m map[string][]byte) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// OpenShare opens member's share with its encryption private key (as
// RFC 9180 SerializePrivateKey gives it, of the suite of key). A share
// sealed to another key is refused with CodeWrongKey.
func (s *Shares) OpenShare(member string, key gov.EncryptionKey, priv []byte) ([]byte, error) {
	ss := s.Share(member)
	if ss == nil {
		return nil, fail(CodeNotMember, "member %s holds no share of recovery shares version %d", member, s.Version)
	}
	if ss.KeyHash != key.Hash() {
		return nil, fail(CodeWrongKey, "member %s's share is sealed to encryption key %s, not to this key (%s)", member, short(ss.KeyHash), short(key.Hash()))
	}
	suite, err := key.ParsedSuite()
	if err != nil {
		return nil, err
	}
	sk, err := suite.PrivateKey(priv)
	if err != nil {
		return nil, fmt.Errorf("recovery: the encryption private key: %w", err)
	}
	if !bytes.Equal(sk.PublicKey().Bytes(), key.PublicKey) {
		return nil, fail(CodeWrongKey, "the encryption private key is not the one of public key %s", short(key.Hash()))
	}
	kdf, aead, err := kdfAEAD(suite)
	if err != nil {
		return nil, err
	}
	pt, err := hpke.Open(sk, kdf, aead, shareInfoFor(s, member, ss.Index), ss.Sealed)
	if err != nil {
		return nil, fail(CodeWrongKey, "member %s's share does not open with this key", member)
	}
	return pt, nil
}

func short(h string) string {
	if len(h) > 16 {
		return h[:16]
	}
	return h
}
