package gov

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/asn1"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"os/exec"
	"strings"
	"time"

	"github.com/veraison/go-cose"
)

// A Signer signs governance messages as one member, with a private key in
// memory or with an external command (a hardware token, a cloud KMS).
type Signer struct {
	id     string
	alg    cose.Algorithm
	signer cose.Signer
}

// NewFileSigner returns a signer for a PEM private key: PKCS#8 ("PRIVATE
// KEY": ECDSA P-256, P-384 or Ed25519) or SEC 1 ("EC PRIVATE KEY"). An "EC
// PARAMETERS" block before the key, as `openssl ecparam -genkey` writes it,
// is skipped.
func NewFileSigner(privateKeyPEM []byte) (*Signer, error) {
	rest := privateKeyPEM
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return nil, errors.New("no PEM private key")
		}
		var key any
		var err error
		switch block.Type {
		case "EC PARAMETERS":
			continue
		case "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(block.Bytes)
		default:
			return nil, fmt.Errorf("PEM type %q: want PRIVATE KEY or EC PRIVATE KEY", block.Type)
		}
		clear(block.Bytes) // the DER decoded from the PEM: a copy of the key
		if err != nil {
			return nil, fmt.Errorf("private key: %w", err)
		}
		if len(bytes.TrimSpace(rest)) != 0 {
			return nil, errors.New("private key: trailing data after the PEM block")
		}
		cs, ok := key.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("private key type %T: want ECDSA P-256, P-384 or Ed25519", key)
		}
		alg, err := algorithmFor(cs.Public())
		if err != nil {
			return nil, fmt.Errorf("private key: %w", err)
		}
		id, err := memberID(cs.Public())
		if err != nil {
			return nil, err
		}
		signer, err := cose.NewSigner(alg, cs)
		if err != nil {
			return nil, err
		}
		return &Signer{id: id, alg: alg, signer: signer}, nil
	}
}

// NewCommandSigner returns a signer that runs argv for each signature, with
// the COSE ToBeSigned bytes (RFC 9052, section 4.4) on its standard input,
// and reads the signature from its standard output: for ECDSA, r||s of fixed
// size or an ASN.1 DER signature (as `openssl dgst -sha256 -sign key.pem`
// writes), over the SHA-256 (P-256) or SHA-384 (P-384) of its input; for
// Ed25519, the 64-byte signature of its input. publicKeyPEM (a PUBLIC KEY or
// CERTIFICATE) gives the algorithm and the member id; every signature is
// verified under it before use.
func NewCommandSigner(argv []string, publicKeyPEM []byte) (*Signer, error) {
	if len(argv) == 0 || argv[0] == "" {
		return nil, errors.New("signing command: empty")
	}
	_, pub, err := parseSigningKey(publicKeyPEM)
	if err != nil {
		return nil, fmt.Errorf("signing command: public key: %w", err)
	}
	alg, _ := algorithmFor(pub)
	id, err := memberID(pub)
	if err != nil {
		return nil, err
	}
	v, err := cose.NewVerifier(alg, pub)
	if err != nil {
		return nil, err
	}
	cs := &commandSigner{argv: append([]string(nil), argv...), alg: alg, pub: pub, verifier: v}
	return &Signer{id: id, alg: alg, signer: cs}, nil
}

type commandSigner struct {
	argv     []string
	alg      cose.Algorithm
	pub      crypto.PublicKey
	verifier cose.Verifier
}

var _ cose.Signer = (*commandSigner)(nil)

func (c *commandSigner) Algorithm() cose.Algorithm { return c.alg }

// maxCommandOutput bounds what is read of the command's output.
const maxCommandOutput = 64 << 10

func (c *commandSigner) Sign(_ io.Reader, content []byte) ([]byte, error) {
	cmd := exec.Command(c.argv[0], c.argv[1:]...)
	cmd.Stdin = bytes.NewReader(content)
	var stdout, stderr limitedBuffer
	stdout.max, stderr.max = maxCommandOutput, 4096
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if msg != "" {
			return nil, fmt.Errorf("signing command %q: %w: %s", c.argv[0], err, msg)
		}
		return nil, fmt.Errorf("signing command %q: %w", c.argv[0], err)
	}
	if stdout.overflow {
		return nil, fmt.Errorf("signing command %q: output larger than %d bytes", c.argv[0], maxCommandOutput)
	}
	out := stdout.Bytes()
	for _, sig := range c.candidates(out) {
		if c.verifier.Verify(content, sig) == nil {
			return sig, nil
		}
	}
	return nil, fmt.Errorf("signing command %q: its output (%d bytes) is not a valid signature by the member's key", c.argv[0], len(out))
}

// candidates returns the COSE signatures out may stand for.
func (c *commandSigner) candidates(out []byte) [][]byte {
	k, ok := c.pub.(*ecdsa.PublicKey)
	if !ok {
		if len(out) == ed25519.SignatureSize {
			return [][]byte{out}
		}
		return nil
	}
	size := (k.Curve.Params().BitSize + 7) / 8
	var sigs [][]byte
	if len(out) == 2*size {
		sigs = append(sigs, out)
	}
	if sig, ok := derToRaw(out, size); ok {
		sigs = append(sigs, sig)
	}
	return sigs
}

// derToRaw converts an ASN.1 DER ECDSA signature to r||s of size bytes each.
func derToRaw(der []byte, size int) ([]byte, bool) {
	var rs struct{ R, S *big.Int }
	rest, err := asn1.Unmarshal(der, &rs)
	if err != nil || len(rest) != 0 || rs.R.Sign() <= 0 || rs.S.Sign() <= 0 ||
		rs.R.BitLen() > 8*size || rs.S.BitLen() > 8*size {
		return nil, false
	}
	out := make([]byte, 2*size)
	rs.R.FillBytes(out[:size])
	rs.S.FillBytes(out[size:])
	return out, true
}

// limitedBuffer keeps the first max bytes written to it. (It does not
// embed bytes.Buffer, whose ReadFrom io.Copy would use instead of Write.)
type limitedBuffer struct {
	buf      bytes.Buffer
	max      int
	overflow bool
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if room := b.max - b.buf.Len(); len(p) > room {
		b.overflow = true
		b.buf.Write(p[:max(room, 0)])
		return len(p), nil
	}
	return b.buf.Write(p)
}

func (b *limitedBuffer) Bytes() []byte  { return b.buf.Bytes() }
func (b *limitedBuffer) String() string { return b.buf.String() }

// MemberID returns the id of the signer's member.
func (s *Signer) MemberID() string { return s.id }

// SignProposal returns a proposal of actions, created at createdAt, as
// COSE_Sign1 bytes. The actions are validated first; missing args are {}.
func (s *Signer) SignProposal(actions []Action, createdAt time.Time) ([]byte, error) {
	acts := make([]Action, len(actions))
	copy(acts, actions)
	for i := range acts {
		if len(acts[i].Args) == 0 || string(acts[i].Args) == "null" {
			acts[i].Args = json.RawMessage("{}")
		}
	}
	if err := ValidateActions(acts); err != nil {
		return nil, err
	}
	payload, err := json.Marshal(proposalPayload{Actions: acts})
	if err != nil {
		return nil, err
	}
	return s.sign(MsgProposal, "", payload, createdAt)
}

// SignBallot returns a ballot for the proposal, approving or rejecting it.
func (s *Signer) SignBallot(proposalID string, approve bool, createdAt time.Time) ([]byte, error) {
	vote := VoteReject
	if approve {
		vote = VoteApprove
	}
	payload, err := json.Marshal(struct {
		Vote string `json:"vote"`
	}{vote})
	if err != nil {
		return nil, err
	}
	return s.sign(MsgBallot, proposalID, payload, createdAt)
}

// SignWithdrawal returns a withdrawal of the proposal.
func (s *Signer) SignWithdrawal(proposalID string, createdAt time.Time) ([]byte, error) {
	return s.sign(MsgWithdrawal, proposalID, []byte("{}"), createdAt)
}

// SignRecoveryShare returns a recovery share message for the recovery
// recoveryID: payload is its JSON object (docs/recovery.md).
func (s *Signer) SignRecoveryShare(recoveryID string, payload []byte, createdAt time.Time) ([]byte, error) {
	return s.sign(MsgRecoveryShare, recoveryID, payload, createdAt)
}

func (s *Signer) sign(t MessageType, proposalID string, payload []byte, createdAt time.Time) ([]byte, error) {
	if t != MsgProposal && !isHexID(proposalID) {
		return nil, fmt.Errorf("proposal id %q: want 64 lowercase hex characters", proposalID)
	}
	if createdAt.Unix() < 0 {
		return nil, errors.New("created_at before 1970")
	}
	h := cose.Headers{
		Protected: cose.ProtectedHeader{
			cose.HeaderLabelAlgorithm: s.alg,
			cose.HeaderLabelKeyID:     []byte(s.id),
			HeaderType:                string(t),
			HeaderCreatedAt:           createdAt.Unix(),
		},
		Unprotected: cose.UnprotectedHeader{},
	}
	if t != MsgProposal {
		h.Protected[HeaderProposalID] = proposalID
	}
	raw, err := cose.Sign1(rand.Reader, s.signer, h, payload, nil)
	if err != nil {
		return nil, fmt.Errorf("signing %s: %w", t, err)
	}
	if len(raw) > MaxMessageSize {
		return nil, fmt.Errorf("%s of %d bytes: at most %d are allowed", t, len(raw), MaxMessageSize)
	}
	if _, err := ParseMessage(raw); err != nil {
		return nil, fmt.Errorf("signing %s: %w", t, err)
	}
	return raw, nil
}

// GenerateDevKey returns a new ECDSA P-256 signing key as PKCS#8 PEM and its
// public key as PEM, for `tkms dev` and tests.
func GenerateDevKey() (privatePEM, publicPEM []byte, err error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, nil, err
	}
	pubDER, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}), nil
}
