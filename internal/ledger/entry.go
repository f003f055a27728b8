// Package ledger defines the entries of the tkms ledger and their byte
// encodings.
//
// The ledger is one ordered sequence of entries; the service state is what
// replaying it yields (see package state). Each entry has a public part
// (sequence number, time, type and a JSON body) and an optional sealed part
// holding secret material encrypted under the master key. docs/ledger.md
// describes the format; this package is its implementation.
//
// Two encodings exist:
//
//   - the record (MarshalRecord), as kept by storage: the whole entry,
//     sealed part included, followed by a CRC-32C so that torn or corrupted
//     records are detected on read;
//   - the leaf (LeafBytes), the canonical public encoding, which a Merkle
//     log commits to. It carries the SHA-256 of the sealed part instead of
//     the sealed part itself, so the log binds secret material without
//     revealing it.
package ledger

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"time"
)

// FormatVersion is the version byte that starts every record and leaf
// written by this code. A reader refuses versions it does not know.
const FormatVersion = 1

// MaxBodySize bounds the public body and the sealed part of one entry.
const MaxBodySize = 4 << 20

// MaxLeafSize bounds the leaf encoding of one entry (LeafBytes). The log's
// entry bundles (C2SP tlog-tiles) prefix each leaf with a 16-bit length, so
// an entry whose leaf is longer cannot be logged and is refused on append.
const MaxLeafSize = 1<<16 - 1

// Type names what an entry records. Types are stable strings: they appear in
// the public log and in the associated data of sealed parts.
type Type string

// The entry types of format version 1.
const (
	TypeGenesis           Type = "genesis"             // a new service: its name and format
	TypeKeyRotationPolicy Type = "policy.key_rotation" // the key rotation policy in force
	TypeSettingsPolicy    Type = "policy.settings"     // the settings policy (/app/settingsPolicy)
	TypeKeyCreated        Type = "key.created"         // a new HPKE key pair; sealed: private key
	TypeKeyPublished      Type = "key.published"       // a key's publish time passed; it is advertised
	TypeKeyRetired        Type = "key.retired"         // a key's not_after passed; no longer advertised
	TypeKeyExpired        Type = "key.expired"         // a key's grace period ended; no longer released
	TypeKeyDestroyed      Type = "key.destroyed"       // a key's private material was erased
	TypeKeyReleasePolicy  Type = "policy.key_release"  // the key release policy in force
	TypeJWTPolicy         Type = "policy.jwt"          // trusted JWT issuers and their claim policies
	TypeKeyReleased       Type = "key.released"        // private keys wrapped to an attested caller
	TypeReleaseDenied     Type = "release.denied"      // an authenticated caller was refused (rate-limited)
	TypeLogKey            Type = "log.key"             // the transparency log's origin and verifier key; sealed: signing key
	TypeGovInit           Type = "gov.init"            // the first members and constitution: the ledger is governed
	TypeGovProposal       Type = "gov.proposal"        // a member's signed proposal (docs/governance.md)
	TypeGovBallot         Type = "gov.ballot"          // a member's signed vote on a proposal
	TypeGovWithdrawal     Type = "gov.withdrawal"      // the proposer's signed withdrawal of a proposal
	TypeNodeJoined        Type = "node.joined"         // an attested node and the ledger's secrets HPKE-sealed to its key
	TypeRecoveryShares    Type = "recovery.shares"     // the ledger secret wrapped under a recovery key, split among members, each share HPKE-sealed to its member
	TypeServiceRecovered  Type = "service.recovered"   // members' shares recovered the service: its new log key; sealed: the new signing key
)

// knownTypes lists every type this build understands. A ledger that holds
// another type was written by a newer tkms and is refused.
var knownTypes = map[Type]bool{
	TypeGenesis: true, TypeKeyRotationPolicy: true, TypeSettingsPolicy: true,
	TypeKeyCreated: true, TypeKeyPublished: true, TypeKeyRetired: true,
	TypeKeyExpired: true, TypeKeyDestroyed: true,
	TypeKeyReleasePolicy: true, TypeJWTPolicy: true, TypeKeyReleased: true, TypeReleaseDenied: true,
	TypeLogKey: true, TypeGovInit: true, TypeGovProposal: true, TypeGovBallot: true, TypeGovWithdrawal: true,
	TypeNodeJoined: true, TypeRecoveryShares: true, TypeServiceRecovered: true,
}

// Known reports whether t is a type of this format version.
func (t Type) Known() bool { return knownTypes[t] }

// An Entry is one ledger entry.
type Entry struct {
	Seq    uint64    // position in the ledger, from 1
	Time   time.Time // taken once by the writer; the only time apply may use
	Type   Type
	Body   []byte // public JSON body
	Sealed []byte // optional secret part, sealed under the master key with SealAD
}

// Errors returned by the decoders.
var (
	ErrCorrupt     = errors.New("ledger: corrupt record")
	ErrVersion     = errors.New("ledger: unknown format version")
	ErrUnknownType = errors.New("ledger: unknown entry type")
)

// SealAD returns the associated data that binds a sealed part to its entry:
// the format version, sequence number and type.
func SealAD(seq uint64, typ Type) []byte {
	ad := make([]byte, 0, 16+8+len(typ))
	ad = append(ad, "tkms/entry/v1\x00"...)
	ad = binary.BigEndian.AppendUint64(ad, seq)
	return append(ad, typ...)
}

// MarshalRecord returns the storage encoding of e:
//
//	version(1) seq(8) time(8, Unix ns) len(type) type len(body) body len(sealed) sealed crc32c(4)
//
// where len is an unsigned varint and integers are big-endian.
func MarshalRecord(e *Entry) []byte {
	b := appendHeader(make([]byte, 0, 40+len(e.Type)+len(e.Body)+len(e.Sealed)), e)
	b = binary.AppendUvarint(b, uint64(len(e.Sealed)))
	b = append(b, e.Sealed...)
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

// UnmarshalRecord decodes a record made by MarshalRecord, verifying its
// checksum. The returned entry does not alias b. Decoding is strict: a
// record that decodes is byte for byte what MarshalRecord makes of the
// result.
func UnmarshalRecord(b []byte) (*Entry, error) {
	if len(b) < 1 {
		return nil, fmt.Errorf("%w: empty", ErrCorrupt)
	}
	if b[0] != FormatVersion {
		return nil, fmt.Errorf("%w %d (this build reads version %d; a newer tkms wrote this data)", ErrVersion, b[0], FormatVersion)
	}
	if len(b) < 4 {
		return nil, fmt.Errorf("%w: truncated", ErrCorrupt)
	}
	payload, sum := b[:len(b)-4], binary.BigEndian.Uint32(b[len(b)-4:])
	if crc32.Checksum(payload, castagnoli) != sum {
		return nil, fmt.Errorf("%w: checksum mismatch", ErrCorrupt)
	}
	r := reader{b: payload[1:]}
	e := &Entry{Seq: r.u64()}
	e.Time = time.Unix(0, int64(r.u64())).UTC()
	e.Type = Type(r.bytes())
	e.Body = r.bytes()
	e.Sealed = r.bytes()
	if r.err != nil || len(r.b) != 0 {
		return nil, fmt.Errorf("%w: bad framing", ErrCorrupt)
	}
	if !e.Type.Known() {
		return nil, fmt.Errorf("%w %q at seq %d (a newer tkms wrote this data)", ErrUnknownType, e.Type, e.Seq)
	}
	if len(e.Sealed) == 0 {
		e.Sealed = nil
	}
	return e, nil
}

// LeafBytes returns the canonical public encoding of e, the bytes a Merkle
// log commits to:
//
//	version(1) seq(8) time(8) len(type) type len(body) body sealed_sha256(32, zero if none)
func LeafBytes(e *Entry) []byte {
	b := appendHeader(make([]byte, 0, 64+len(e.Type)+len(e.Body)), e)
	var h [32]byte
	if len(e.Sealed) > 0 {
		h = sha256.Sum256(e.Sealed)
	}
	return append(b, h[:]...)
}

// LeafSize returns len(LeafBytes(e)) without building it.
func LeafSize(typ Type, body []byte) int {
	return 1 + 8 + 8 + uvarintLen(len(typ)) + len(typ) + uvarintLen(len(body)) + len(body) + sha256.Size
}

func uvarintLen(n int) int {
	var b [binary.MaxVarintLen64]byte
	return binary.PutUvarint(b[:], uint64(n))
}

// A Leaf is an entry as the public log holds it: the sealed part is known
// only by its SHA-256.
type Leaf struct {
	Seq          uint64
	Time         time.Time
	Type         Type
	Body         []byte
	SealedSHA256 [32]byte // zero when the entry has no sealed part
}

// HasSealed reports whether the entry had a sealed part.
func (l *Leaf) HasSealed() bool { return l.SealedSHA256 != [32]byte{} }

// UnmarshalLeaf decodes a leaf made by LeafBytes. Decoding is strict: a leaf
// that decodes is byte for byte what LeafBytes makes of the entry. It does
// not check that the type is known (an auditor reports unknown types
// itself) and the returned leaf does not alias b.
func UnmarshalLeaf(b []byte) (*Leaf, error) {
	if len(b) < 1 {
		return nil, fmt.Errorf("%w: empty leaf", ErrCorrupt)
	}
	if b[0] != FormatVersion {
		return nil, fmt.Errorf("%w %d in leaf (this build reads version %d)", ErrVersion, b[0], FormatVersion)
	}
	if len(b) > MaxLeafSize {
		return nil, fmt.Errorf("%w: leaf of %d bytes", ErrCorrupt, len(b))
	}
	r := reader{b: b[1:]}
	l := &Leaf{Seq: r.u64()}
	l.Time = time.Unix(0, int64(r.u64())).UTC()
	l.Type = Type(r.bytes())
	l.Body = r.bytes()
	if r.err != nil || len(r.b) != sha256.Size {
		return nil, fmt.Errorf("%w: bad leaf framing", ErrCorrupt)
	}
	copy(l.SealedSHA256[:], r.b)
	return l, nil
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func appendHeader(b []byte, e *Entry) []byte {
	b = append(b, FormatVersion)
	b = binary.BigEndian.AppendUint64(b, e.Seq)
	b = binary.BigEndian.AppendUint64(b, uint64(e.Time.UnixNano()))
	b = binary.AppendUvarint(b, uint64(len(e.Type)))
	b = append(b, e.Type...)
	b = binary.AppendUvarint(b, uint64(len(e.Body)))
	return append(b, e.Body...)
}

type reader struct {
	b   []byte
	err error
}

func (r *reader) u64() uint64 {
	if r.err != nil || len(r.b) < 8 {
		r.err = ErrCorrupt
		return 0
	}
	v := binary.BigEndian.Uint64(r.b)
	r.b = r.b[8:]
	return v
}

func (r *reader) bytes() []byte {
	if r.err != nil {
		return nil
	}
	n, k := binary.Uvarint(r.b)
	// A length must be minimally encoded (a final byte of zero is padding),
	// so that every entry has exactly one record encoding.
	if k <= 0 || (k > 1 && r.b[k-1] == 0) || n > MaxBodySize || n > uint64(len(r.b)-k) {
		r.err = ErrCorrupt
		return nil
	}
	v := append([]byte(nil), r.b[k:k+int(n)]...)
	r.b = r.b[k+int(n):]
	return v
}
