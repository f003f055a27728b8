package bench

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	_ "embed"
	"encoding/base64"
	"errors"
	"fmt"
	"math/big"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tkms-dev/tkms/internal/attest"
	"github.com/tkms-dev/tkms/internal/keys"
	"github.com/tkms-dev/tkms/internal/wrap"
)

// aciSample is real ACI evidence (testdata/PROVENANCE.md): the floor
// verifies its report's signature, as the KMS does for every release.
//
//go:embed testdata/aci_snp.json
var aciSample []byte

// Floor is the cryptography the KMS cannot avoid for one operation of a
// release scenario, measured in this process on this machine: the work a
// perfect server would do, with nothing else (no HTTP, JSON, policy or
// ledger). Achieved / floor is how close tkms comes to it.
type Floor struct {
	// Operation names the primitives of one operation, e.g.
	// "2 x (ECDSA P-384 verify + RS256 verify) + RSA-OAEP-4096 encrypt".
	Operation string `json:"operation"`
	// Goroutines is GOMAXPROCS: the floor uses every CPU.
	Goroutines int `json:"goroutines"`
	// OpsPerSec is operations (releases) per second, measured by running
	// the whole operation on Goroutines goroutines.
	OpsPerSec float64 `json:"ops_per_s"`
	// KeysPerSec is keys released per second at the floor.
	KeysPerSec float64 `json:"keys_per_s"`
	// Primitives are the rates of each primitive alone, on Goroutines
	// goroutines.
	Primitives []Primitive `json:"primitives"`
	// Ratio is achieved operations per second / OpsPerSec.
	Ratio float64 `json:"ratio"`
	// CPUMicrosPerOp is the CPU time (user and system, this process) one
	// operation took at the floor, in µs; ServerCPUMicrosPerOp the
	// server's CPU time per operation under the load. Their ratio,
	// CPURatio, is what Ratio would be if the server kept every CPU
	// busy: unlike Ratio it does not move when other processes take CPUs
	// from the floor or the server, and the two differ by the time the
	// server's CPUs wait (on the disk, or for work).
	CPUMicrosPerOp       float64 `json:"cpu_us_per_op"`
	ServerCPUMicrosPerOp float64 `json:"server_cpu_us_per_op,omitempty"`
	CPURatio             float64 `json:"cpu_ratio,omitempty"`
}

// Primitive is the measured rate of one cryptographic operation.
type Primitive struct {
	Name      string  `json:"name"`
	OpsPerSec float64 `json:"ops_per_s"`
	// Iterations is how many were done to measure it.
	Iterations int `json:"iterations"`
}

// floorInputs are the inputs of the floor, the same as the real requests'.
type floorInputs struct {
	vcek   *ecdsa.PublicKey
	report []byte
	r, s   *big.Int

	tokenPub   crypto.PublicKey // the dev issuer's key
	tokenInput []byte           // header.payload
	tokenSig   []byte

	rsaKey  *rsa.PublicKey // app: the wrapping key
	hpkePub []byte         // v1: the wrapping key (X25519)
	kid     string
	payload []byte // the plaintext wrapped for one key (its real size)
}

// leToInt reads a little-endian unsigned integer (the report's R and S).
func leToInt(b []byte) *big.Int {
	be := slices.Clone(b)
	slices.Reverse(be)
	return new(big.Int).SetBytes(be)
}

// newFloorInputs prepares the floor's inputs: the embedded real report and
// its VCEK, the token the load sends and its issuer's key.
func newFloorInputs(token string, tokenPub crypto.PublicKey) (*floorInputs, error) {
	bundle, err := attest.DecodeUnverified(aciSample)
	if err != nil {
		return nil, fmt.Errorf("bench: embedded ACI sample: %w", err)
	}
	cert, err := x509.ParseCertificate(bundle.VCEK)
	if err != nil {
		return nil, fmt.Errorf("bench: embedded ACI sample: %w", err)
	}
	vcek, ok := cert.PublicKey.(*ecdsa.PublicKey)
	if !ok {
		return nil, errors.New("bench: the embedded sample's VCEK is not an ECDSA key")
	}
	f := &floorInputs{
		vcek:   vcek,
		report: bundle.Report,
		r:      leToInt(bundle.Report[0x2A0 : 0x2A0+72]),
		s:      leToInt(bundle.Report[0x2E8 : 0x2E8+72]),
	}
	dot := strings.LastIndexByte(token, '.')
	if dot < 0 {
		return nil, errors.New("bench: the token is not a JWS")
	}
	f.tokenInput = []byte(token[:dot])
	if f.tokenSig, err = base64.RawURLEncoding.DecodeString(token[dot+1:]); err != nil {
		return nil, fmt.Errorf("bench: token signature: %w", err)
	}
	f.tokenPub = tokenPub
	if err := f.verifyReport(); err != nil {
		return nil, err
	}
	if err := f.verifyToken(); err != nil {
		return nil, err
	}
	return f, nil
}

// verifyReport is the report signature check of every release: ECDSA
// P-384 with SHA-384 over the report's first 0x2A0 bytes.
func (f *floorInputs) verifyReport() error {
	d := sha512.Sum384(f.report[:0x2A0])
	if !ecdsa.Verify(f.vcek, d[:], f.r, f.s) {
		return errors.New("bench: the embedded report's signature does not verify")
	}
	return nil
}

// verifyToken is the token signature check of every release: RS256 (or
// ES256 if the issuer signs so).
func (f *floorInputs) verifyToken() error {
	d := sha256.Sum256(f.tokenInput)
	switch pub := f.tokenPub.(type) {
	case *rsa.PublicKey:
		return rsa.VerifyPKCS1v15(pub, crypto.SHA256, d[:], f.tokenSig)
	case *ecdsa.PublicKey:
		if len(f.tokenSig) != 64 {
			return errors.New("bench: ES256 signature length")
		}
		if !ecdsa.Verify(pub, d[:], new(big.Int).SetBytes(f.tokenSig[:32]), new(big.Int).SetBytes(f.tokenSig[32:])) {
			return errors.New("bench: token signature does not verify")
		}
		return nil
	}
	return fmt.Errorf("bench: token key %T", f.tokenPub)
}

func (f *floorInputs) tokenAlg() string {
	if _, ok := f.tokenPub.(*ecdsa.PublicKey); ok {
		return "ES256"
	}
	return "RS256"
}

func (f *floorInputs) wrapRSA() error {
	_, err := wrap.RSAOAEP256(f.rsaKey, f.payload)
	return err
}

func (f *floorInputs) wrapHPKE() error {
	_, err := wrap.HPKEWrap(keys.KEMX25519HKDFSHA256, f.hpkePub, f.payload, wrap.ReleaseInfo(f.kid))
	return err
}

// measure runs fn on GOMAXPROCS goroutines until at least minIter calls
// and minTime have passed, and returns calls per second.
func measure(fn func() error, minIter int, minTime time.Duration) (float64, int, error) {
	p := runtime.GOMAXPROCS(0)
	var n atomic.Int64
	var stop atomic.Bool
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	start := time.Now()
	for range p {
		wg.Go(func() {
			for !stop.Load() {
				if err := fn(); err != nil {
					once.Do(func() { firstErr = err })
					stop.Store(true)
					return
				}
				if n.Add(1) >= int64(minIter) && time.Since(start) >= minTime {
					stop.Store(true)
				}
			}
		})
	}
	wg.Wait()
	el := time.Since(start)
	if firstErr != nil {
		return 0, 0, firstErr
	}
	return float64(n.Load()) / el.Seconds(), int(n.Load()), nil
}

// floorPlan is one scenario's operation as primitives.
type floorPlan struct {
	evidence  int // report + token verifications (one per request carrying evidence)
	rsaWraps  int
	hpkeWraps int
}

func (p floorPlan) describe(tokenAlg string) string {
	var parts []string
	verify := "ECDSA P-384 verify + " + tokenAlg + " verify"
	switch p.evidence {
	case 1:
		parts = append(parts, verify)
	default:
		parts = append(parts, fmt.Sprintf("%d x (%s)", p.evidence, verify))
	}
	if p.rsaWraps > 0 {
		parts = append(parts, "RSA-OAEP-4096 encrypt")
	}
	switch {
	case p.hpkeWraps == 1:
		parts = append(parts, "HPKE X25519 seal")
	case p.hpkeWraps > 1:
		parts = append(parts, fmt.Sprintf("%d x HPKE X25519 seal", p.hpkeWraps))
	}
	return strings.Join(parts, " + ")
}

// measureFloor measures each primitive of plan and the whole operation.
func measureFloor(f *floorInputs, plan floorPlan, keysPerOp int, minIter int, minTime time.Duration) (*Floor, error) {
	fl := &Floor{Operation: plan.describe(f.tokenAlg()), Goroutines: runtime.GOMAXPROCS(0)}
	prims := []struct {
		name string
		fn   func() error
		use  bool
	}{
		{"ECDSA P-384 verify (real SNP report)", f.verifyReport, true},
		{f.tokenAlg() + " verify (the load's token)", f.verifyToken, true},
		{fmt.Sprintf("RSA-OAEP-4096 encrypt (%d bytes)", len(f.payload)), f.wrapRSA, plan.rsaWraps > 0},
		{fmt.Sprintf("HPKE X25519 seal (%d bytes)", len(f.payload)), f.wrapHPKE, plan.hpkeWraps > 0},
	}
	for _, p := range prims {
		if !p.use {
			continue
		}
		rate, n, err := measure(p.fn, minIter, minTime)
		if err != nil {
			return nil, fmt.Errorf("bench: floor %s: %w", p.name, err)
		}
		fl.Primitives = append(fl.Primitives, Primitive{Name: p.name, OpsPerSec: rate, Iterations: n})
	}
	op := func() error {
		for range plan.evidence {
			if err := f.verifyReport(); err != nil {
				return err
			}
			if err := f.verifyToken(); err != nil {
				return err
			}
		}
		for range plan.rsaWraps {
			if err := f.wrapRSA(); err != nil {
				return err
			}
		}
		for range plan.hpkeWraps {
			if err := f.wrapHPKE(); err != nil {
				return err
			}
		}
		return nil
	}
	cpu := selfCPU()
	rate, n, err := measure(op, minIter, minTime)
	if err != nil {
		return nil, fmt.Errorf("bench: floor: %w", err)
	}
	fl.CPUMicrosPerOp = float64(selfCPU()-cpu) / float64(time.Microsecond) / float64(n)
	fl.OpsPerSec = rate
	fl.KeysPerSec = rate * float64(keysPerOp)
	return fl, nil
}

// samePayloadSize returns a payload of n bytes (the floor wraps bytes of
// the real payload's size; their values do not change the cost).
func samePayloadSize(n int) []byte { return bytes.Repeat([]byte{'x'}, n) }
