package ledger_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"hash/crc32"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tkms-dev/tkms/internal/ledger"
	"github.com/tkms-dev/tkms/internal/seal"
)

// vector is one known-answer test of testdata/records.json. The file was
// computed by an independent Python implementation of the layouts in the
// doc comments of MarshalRecord and LeafBytes (CRC-32C checked against its
// standard check value, crc32c("123456789") = e3069283), not by this code.
type vector struct {
	Name   string    `json:"name"`
	Seq    uint64    `json:"seq"`
	Time   time.Time `json:"time"`
	Type   string    `json:"type"`
	Body   string    `json:"body"`
	Sealed string    `json:"sealed"` // hex
	Record string    `json:"record"` // hex
	Leaf   string    `json:"leaf"`   // hex
}

func (v *vector) entry(t testing.TB) *ledger.Entry {
	t.Helper()
	e := &ledger.Entry{Seq: v.Seq, Time: v.Time, Type: ledger.Type(v.Type), Body: []byte(v.Body)}
	if v.Sealed != "" {
		e.Sealed = unhex(t, v.Sealed)
	}
	return e
}

func loadVectors(t testing.TB) []vector {
	t.Helper()
	raw, err := os.ReadFile("testdata/records.json")
	if err != nil {
		t.Fatal(err)
	}
	var vs []vector
	if err := json.Unmarshal(raw, &vs); err != nil {
		t.Fatal(err)
	}
	if len(vs) == 0 {
		t.Fatal("testdata/records.json holds no vectors")
	}
	return vs
}

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// testEntries covers the shapes a record can take.
func testEntries() map[string]*ledger.Entry {
	at := time.Date(2025, 3, 4, 5, 6, 7, 89, time.UTC)
	return map[string]*ledger.Entry{
		"public only": {Seq: 1, Time: at, Type: ledger.TypeGenesis, Body: []byte(`{"service":"t"}`)},
		"sealed part": {Seq: 2, Time: at, Type: ledger.TypeKeyCreated, Body: []byte(`{"kid":"k_1"}`), Sealed: bytes.Repeat([]byte{0xa5}, 60)},
		"empty body":  {Seq: 3, Time: at, Type: ledger.TypeKeyPublished},
		"long fields": {Seq: 1 << 40, Time: at, Type: ledger.TypeSettingsPolicy, Body: bytes.Repeat([]byte("b"), 300), Sealed: bytes.Repeat([]byte{7}, 200)},
		"local time":  {Seq: 5, Time: time.Date(2025, 3, 4, 5, 6, 7, 0, time.FixedZone("IST", 5*3600+1800)), Type: ledger.TypeKeyRetired, Body: []byte("{}")},
		"before 1970": {Seq: 6, Time: time.Date(1969, 7, 20, 20, 17, 40, 0, time.UTC), Type: ledger.TypeKeyExpired, Body: []byte("{}")},
	}
}

// assertSameEntry fails unless got has the same fields as want. Time is
// compared as an instant, and empty Body or Sealed equals nil.
func assertSameEntry(t *testing.T, got, want *ledger.Entry) {
	t.Helper()
	if got.Seq != want.Seq || !got.Time.Equal(want.Time) || got.Type != want.Type ||
		!bytes.Equal(got.Body, want.Body) || !bytes.Equal(got.Sealed, want.Sealed) {
		t.Errorf("entry = %+v, want %+v", got, want)
	}
}

func TestRecordRoundTrip(t *testing.T) {
	for name, e := range testEntries() {
		t.Run(name, func(t *testing.T) {
			rec := ledger.MarshalRecord(e)
			got, err := ledger.UnmarshalRecord(rec)
			if err != nil {
				t.Fatal(err)
			}
			assertSameEntry(t, got, e)
			if got.Time.Location() != time.UTC {
				t.Errorf("decoded time is in %v, want UTC", got.Time.Location())
			}
			if len(e.Sealed) == 0 && got.Sealed != nil {
				t.Errorf("Sealed = %x, want nil when there is no sealed part", got.Sealed)
			}
			if again := ledger.MarshalRecord(got); !bytes.Equal(again, rec) {
				t.Errorf("re-encoding the decoded entry gives\n%x\nwant\n%x", again, rec)
			}
			// The decoded entry must not alias the record.
			clear(rec)
			assertSameEntry(t, got, e)
		})
	}
}

func TestRecordKnownAnswers(t *testing.T) {
	for _, v := range loadVectors(t) {
		t.Run(v.Name, func(t *testing.T) {
			e := v.entry(t)
			if got := hex.EncodeToString(ledger.MarshalRecord(e)); got != v.Record {
				t.Errorf("MarshalRecord =\n%s\nwant\n%s", got, v.Record)
			}
			if got := hex.EncodeToString(ledger.LeafBytes(e)); got != v.Leaf {
				t.Errorf("LeafBytes =\n%s\nwant\n%s", got, v.Leaf)
			}
			got, err := ledger.UnmarshalRecord(unhex(t, v.Record))
			if err != nil {
				t.Fatal(err)
			}
			assertSameEntry(t, got, e)
		})
	}
}

// CRC-32C detects every error confined to 32 consecutive bits, so every
// single-byte change must be caught. A changed version byte is reported as
// an unknown version, anything else as corruption.
func TestRecordFlippedByte(t *testing.T) {
	for name, e := range testEntries() {
		t.Run(name, func(t *testing.T) {
			rec := ledger.MarshalRecord(e)
			for i := range rec {
				for _, mask := range []byte{0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80, 0xff} {
					bad := bytes.Clone(rec)
					bad[i] ^= mask
					got, err := ledger.UnmarshalRecord(bad)
					want := ledger.ErrCorrupt
					if i == 0 {
						want = ledger.ErrVersion
					}
					if !errors.Is(err, want) {
						t.Fatalf("byte %d ^ %#02x: got (%v, %v), want %v", i, mask, got, err, want)
					}
				}
			}
		})
	}
}

func TestRecordTruncatedOrExtended(t *testing.T) {
	for name, e := range testEntries() {
		t.Run(name, func(t *testing.T) {
			rec := ledger.MarshalRecord(e)
			for n := range len(rec) {
				if got, err := ledger.UnmarshalRecord(rec[:n]); !errors.Is(err, ledger.ErrCorrupt) {
					t.Fatalf("truncated to %d of %d bytes: got (%v, %v), want ErrCorrupt", n, len(rec), got, err)
				}
			}
			for _, tail := range [][]byte{{0}, {0, 0, 0, 0}, rec[len(rec)-4:]} {
				long := append(bytes.Clone(rec), tail...)
				if got, err := ledger.UnmarshalRecord(long); !errors.Is(err, ledger.ErrCorrupt) {
					t.Fatalf("extended by %x: got (%v, %v), want ErrCorrupt", tail, got, err)
				}
			}
		})
	}
}

// reseal sets the version byte of rec and recomputes its checksum, making
// the record a well-formed one of another version.
func reseal(rec []byte, version byte) []byte {
	b := bytes.Clone(rec[:len(rec)-4])
	b[0] = version
	return binary.BigEndian.AppendUint32(b, crc32.Checksum(b, crc32.MakeTable(crc32.Castagnoli)))
}

func TestRecordNewerVersion(t *testing.T) {
	rec := ledger.MarshalRecord(testEntries()["sealed part"])
	for _, v := range []byte{ledger.FormatVersion + 1, 0xff} {
		_, err := ledger.UnmarshalRecord(reseal(rec, v))
		if !errors.Is(err, ledger.ErrVersion) {
			t.Fatalf("version %d: err = %v, want ErrVersion", v, err)
		}
		if !strings.Contains(err.Error(), "a newer tkms wrote this data") {
			t.Errorf("version %d: error %q does not say a newer tkms wrote the data", v, err)
		}
	}
	// A record too short to hold a checksum is still refused by version.
	if _, err := ledger.UnmarshalRecord([]byte{ledger.FormatVersion + 1}); !errors.Is(err, ledger.ErrVersion) {
		t.Errorf("one-byte record of version 2: err = %v, want ErrVersion", err)
	}
}

func TestRecordUnknownType(t *testing.T) {
	e := &ledger.Entry{Seq: 9, Time: time.Unix(1, 0), Type: "key.frobnicated", Body: []byte("{}")}
	_, err := ledger.UnmarshalRecord(ledger.MarshalRecord(e))
	if !errors.Is(err, ledger.ErrUnknownType) {
		t.Fatalf("err = %v, want ErrUnknownType", err)
	}
	for _, want := range []string{`"key.frobnicated"`, "seq 9", "a newer tkms wrote this data"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %s", err, want)
		}
	}
}

// crcRecord frames payload as a record with a valid checksum.
func crcRecord(payload []byte) []byte {
	return binary.BigEndian.AppendUint32(bytes.Clone(payload), crc32.Checksum(payload, crc32.MakeTable(crc32.Castagnoli)))
}

// Records with a valid checksum but bad framing inside are corrupt.
func TestRecordBadFraming(t *testing.T) {
	header := []byte{ledger.FormatVersion}
	header = binary.BigEndian.AppendUint64(header, 1)
	header = binary.BigEndian.AppendUint64(header, 0)
	typ := append([]byte{byte(len(ledger.TypeGenesis))}, ledger.TypeGenesis...)
	tests := map[string][]byte{
		"no fields":        {ledger.FormatVersion},
		"no lengths":       header,
		"no sealed length": append(append(bytes.Clone(header), typ...), 0),
		// 0x80 0x00 is a two-byte encoding of zero: valid varint, not minimal.
		"padded length":           append(append(append(bytes.Clone(header), typ...), 0x80, 0x00), 0),
		"body length over limit":  binary.AppendUvarint(append(bytes.Clone(header), typ...), ledger.MaxBodySize+1),
		"body length past end":    append(append(bytes.Clone(header), typ...), 5, 'a', 0),
		"varint longer than 10 B": append(append(bytes.Clone(header), typ...), bytes.Repeat([]byte{0xff}, 11)...),
		"trailing byte":           append(append(bytes.Clone(header), typ...), 0, 0, 0),
	}
	for name, payload := range tests {
		t.Run(name, func(t *testing.T) {
			if got, err := ledger.UnmarshalRecord(crcRecord(payload)); !errors.Is(err, ledger.ErrCorrupt) {
				t.Fatalf("got (%v, %v), want ErrCorrupt", got, err)
			}
		})
	}
	// The same framing with minimal lengths is accepted: the cases above
	// fail for the reason they name.
	if _, err := ledger.UnmarshalRecord(crcRecord(append(append(bytes.Clone(header), typ...), 0, 0))); err != nil {
		t.Fatalf("well-framed record refused: %v", err)
	}
}

func TestKnownTypes(t *testing.T) {
	for _, typ := range []ledger.Type{
		ledger.TypeGenesis, ledger.TypeKeyRotationPolicy, ledger.TypeSettingsPolicy, ledger.TypeKeyCreated,
		ledger.TypeKeyPublished, ledger.TypeKeyRetired, ledger.TypeKeyExpired, ledger.TypeKeyDestroyed,
	} {
		if !typ.Known() {
			t.Errorf("%q is not Known", typ)
		}
	}
	for _, typ := range []ledger.Type{"", "key", "Key.created", "key.created "} {
		if typ.Known() {
			t.Errorf("%q is Known", typ)
		}
	}
}

func TestLeafBytesCommitsToSealedPart(t *testing.T) {
	sealer, err := seal.New(seal.NewKey())
	if err != nil {
		t.Fatal(err)
	}
	secret := []byte("private key material that must never reach the log")
	e := &ledger.Entry{Seq: 7, Time: time.Unix(1700000000, 0), Type: ledger.TypeKeyCreated, Body: []byte(`{"kid":"k_7"}`)}
	e.Sealed, err = sealer.Seal(secret, ledger.SealAD(e.Seq, e.Type))
	if err != nil {
		t.Fatal(err)
	}
	leaf := ledger.LeafBytes(e)

	sum := sha256.Sum256(e.Sealed)
	if !bytes.HasSuffix(leaf, sum[:]) {
		t.Errorf("leaf does not end with SHA-256 of the sealed part")
	}
	if bytes.Contains(leaf, secret) {
		t.Errorf("leaf contains the secret plaintext")
	}
	// No 8-byte window of the ciphertext may appear in the leaf.
	for i := 0; i+8 <= len(e.Sealed); i++ {
		if bytes.Contains(leaf, e.Sealed[i:i+8]) {
			t.Fatalf("leaf contains sealed bytes %d..%d", i, i+8)
		}
	}
	if len(leaf) != len(ledger.LeafBytes(&ledger.Entry{Seq: e.Seq, Time: e.Time, Type: e.Type, Body: e.Body})) {
		t.Errorf("leaf length depends on the sealed part's length")
	}

	// Sealing the same secret again gives another ciphertext, hence
	// another leaf.
	other := *e
	if other.Sealed, err = sealer.Seal(secret, ledger.SealAD(e.Seq, e.Type)); err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(ledger.LeafBytes(&other), leaf) {
		t.Errorf("leaf unchanged when the sealed part changed")
	}
	other.Sealed = nil
	if noSealed := ledger.LeafBytes(&other); !bytes.HasSuffix(noSealed, make([]byte, 32)) || bytes.Equal(noSealed, leaf) {
		t.Errorf("leaf without sealed part = %x, want the public part and 32 zero bytes", noSealed)
	}
}

func TestLeafBytesCommitsToPublicFields(t *testing.T) {
	base := ledger.Entry{Seq: 7, Time: time.Unix(1700000000, 0), Type: ledger.TypeKeyCreated, Body: []byte(`{"kid":"k_7"}`), Sealed: []byte("s")}
	leaf := ledger.LeafBytes(&base)
	if !bytes.Equal(ledger.LeafBytes(&base), leaf) {
		t.Fatal("LeafBytes is not deterministic")
	}
	changes := map[string]func(e *ledger.Entry){
		"seq":    func(e *ledger.Entry) { e.Seq++ },
		"time":   func(e *ledger.Entry) { e.Time = e.Time.Add(time.Nanosecond) },
		"type":   func(e *ledger.Entry) { e.Type = ledger.TypeKeyPublished },
		"body":   func(e *ledger.Entry) { e.Body = []byte(`{"kid":"k_8"}`) },
		"sealed": func(e *ledger.Entry) { e.Sealed = []byte("t") },
		// Moving a byte from the type to the body keeps the concatenation
		// but not the length prefixes.
		"type/body boundary": func(e *ledger.Entry) { e.Type, e.Body = "key.create", append([]byte("d"), e.Body...) },
	}
	for name, change := range changes {
		e := base
		change(&e)
		if bytes.Equal(ledger.LeafBytes(&e), leaf) {
			t.Errorf("changing %s leaves the leaf unchanged", name)
		}
	}
}

func TestSealAD(t *testing.T) {
	ad := ledger.SealAD(5, ledger.TypeKeyCreated)
	if !bytes.Equal(ledger.SealAD(5, ledger.TypeKeyCreated), ad) {
		t.Fatal("SealAD is not deterministic")
	}
	for _, other := range [][]byte{
		ledger.SealAD(6, ledger.TypeKeyCreated),
		ledger.SealAD(5<<8, ledger.TypeKeyCreated),
		ledger.SealAD(5, ledger.TypeKeyDestroyed),
		ledger.SealAD(5, ""),
	} {
		if bytes.Equal(other, ad) {
			t.Errorf("SealAD collides: %q", other)
		}
	}

	// The binding holds end to end: a sealed part cannot be moved to
	// another entry.
	sealer, err := seal.New(seal.NewKey())
	if err != nil {
		t.Fatal(err)
	}
	blob, err := sealer.Seal([]byte("secret"), ad)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sealer.Open(blob, ledger.SealAD(6, ledger.TypeKeyCreated)); !errors.Is(err, seal.ErrOpen) {
		t.Errorf("open under another seq: err = %v, want ErrOpen", err)
	}
	if _, err := sealer.Open(blob, ledger.SealAD(5, ledger.TypeGenesis)); !errors.Is(err, seal.ErrOpen) {
		t.Errorf("open under another type: err = %v, want ErrOpen", err)
	}
	if pt, err := sealer.Open(blob, ledger.SealAD(5, ledger.TypeKeyCreated)); err != nil || string(pt) != "secret" {
		t.Errorf("open under the right AD = (%q, %v)", pt, err)
	}
}

// FuzzUnmarshalRecord checks that decoding never panics and is strict.
// Each input is tried as is and with its checksum made valid, so that the
// fuzzer also explores the framing behind the checksum.
func FuzzUnmarshalRecord(f *testing.F) {
	for _, v := range loadVectors(f) {
		f.Add(unhex(f, v.Record))
	}
	for _, e := range testEntries() {
		f.Add(ledger.MarshalRecord(e))
	}
	f.Add([]byte{})
	f.Add([]byte{ledger.FormatVersion + 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		checkDecode(t, b)
		if len(b) >= 4 {
			checkDecode(t, crcRecord(b[:len(b)-4]))
		}
	})
}

func checkDecode(t *testing.T, b []byte) {
	e, err := ledger.UnmarshalRecord(b)
	if err != nil {
		if e != nil {
			t.Fatalf("UnmarshalRecord returned an entry with error %v", err)
		}
		if !errors.Is(err, ledger.ErrCorrupt) && !errors.Is(err, ledger.ErrVersion) && !errors.Is(err, ledger.ErrUnknownType) {
			t.Fatalf("UnmarshalRecord returned an unexpected error: %v", err)
		}
		return
	}
	// Decoding is strict: an accepted record is the only encoding of its
	// entry.
	rec := ledger.MarshalRecord(e)
	if !bytes.Equal(rec, b) {
		t.Fatalf("accepted record re-encodes differently:\n in  %x\n out %x", b, rec)
	}
	e2, err := ledger.UnmarshalRecord(rec)
	if err != nil {
		t.Fatalf("re-encoded record refused: %v", err)
	}
	assertSameEntry(t, e2, e)
	if !bytes.Equal(ledger.LeafBytes(e2), ledger.LeafBytes(e)) {
		t.Fatal("leaf changed across a round trip")
	}
}
