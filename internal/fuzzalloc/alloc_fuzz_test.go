package fuzzalloc_test

import (
	"encoding/binary"
	"encoding/json"
	"runtime"
	"testing"
	"time"

	"github.com/google/go-sev-guest/abi"
	spb "github.com/google/go-sev-guest/proto/sevsnp"

	"github.com/tkms-dev/tkms/internal/attest/snp"
	"github.com/tkms-dev/tkms/internal/attest/uvm"
	"github.com/tkms-dev/tkms/internal/gov"
	"github.com/tkms-dev/tkms/internal/keys"
	"github.com/tkms-dev/tkms/internal/ledger"
	"github.com/tkms-dev/tkms/internal/policy"
	"github.com/tkms-dev/tkms/internal/translog"
	"github.com/tkms-dev/tkms/ohttp"
)

// A decoder is one decoder of untrusted bytes; the errors do not matter
// here (each has its own target), only what decoding allocates.
type decoder struct {
	name string
	fn   func(b []byte)
}

func decoders(tb testing.TB) []decoder {
	v, err := uvm.New(uvm.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	return []decoder{
		{"ohttp.ParseKeyConfigs", func(b []byte) { ohttp.ParseKeyConfigs(b) }},
		{"ohttp.ParseKeyConfig", func(b []byte) { ohttp.ParseKeyConfig(b) }},
		{"translog.SplitBundle", func(b []byte) { translog.SplitBundle(b) }},
		{"translog.ParseReceipt", func(b []byte) { translog.ParseReceipt(b) }},
		{"ledger.UnmarshalRecord", func(b []byte) { ledger.UnmarshalRecord(b) }},
		{"ledger.UnmarshalLeaf", func(b []byte) { ledger.UnmarshalLeaf(b) }},
		{"gov.ParseMessage", func(b []byte) { gov.ParseMessage(b) }},
		{"uvm.VerifyEndorsement", func(b []byte) { v.VerifyEndorsement(b) }},
		{"snp.ParseCertTable", func(b []byte) { snp.ParseCertTable(b) }},
		{"snp.DecodeACI", func(b []byte) { snp.DecodeACI(b) }},
		{"policy.Parse", func(b []byte) { policy.Parse(b) }},
	}
}

// allocated returns the bytes fn allocates on the heap.
func allocated(fn func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	fn()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// FuzzAllocBound feeds arbitrary bytes to each decoder (chosen by which)
// and bounds what it allocates: at most 64 bytes per input byte plus 256
// KiB (certificate parsing, the JSON and CBOR decoders' own state), so that
// no length or count field of an input makes a decoder allocate what the
// field claims rather than what was sent. Seeds: valid encodings made by
// the module's own encoders (key configuration lists, bundles, records,
// leaves, certificate tables, receipts' and policies' JSON), and inputs
// that claim large lengths (a 0xffff-long config, a bundle entry of 65535
// bytes, a CBOR array of 2^32-1 items, a certificate table entry at offset
// 2^32-1).
func FuzzAllocBound(f *testing.F) {
	ds := decoders(f)
	which := func(name string) uint8 {
		for i, d := range ds {
			if d.name == name {
				return uint8(i)
			}
		}
		f.Fatalf("no decoder %s", name)
		return 0
	}
	pub := make([]byte, 32)
	f.Add(which("ohttp.ParseKeyConfigs"), keys.OHTTPConfigList(keys.OHTTPConfig(1, keys.X25519, pub), keys.OHTTPConfig(2, keys.X25519, pub)))
	f.Add(which("ohttp.ParseKeyConfigs"), []byte{0xff, 0xff, 1, 0, 0x20})
	f.Add(which("ohttp.ParseKeyConfig"), keys.OHTTPConfig(1, keys.X25519, pub))
	bundle, _ := translog.AppendBundleEntry(nil, []byte("leaf"))
	f.Add(which("translog.SplitBundle"), bundle)
	f.Add(which("translog.SplitBundle"), []byte{0xff, 0xff, 'a'})
	f.Add(which("translog.ParseReceipt"), []byte(`{"index":1,"leaf":"AA==","proof":["`+string(make([]byte, 0))+`"],"checkpoint":"x"}`))
	e := &ledger.Entry{Seq: 1, Time: time.Unix(1, 0), Type: ledger.TypeKeyReleased, Body: json.RawMessage(`{"kids":["a_1"]}`)}
	f.Add(which("ledger.UnmarshalRecord"), ledger.MarshalRecord(e))
	f.Add(which("ledger.UnmarshalLeaf"), ledger.LeafBytes(e))
	big := binary.BigEndian.AppendUint32([]byte{0xd2, 0x84, 0x40, 0xa0, 0x9b}, 0xffffffff) // tag 18, [bstr, {}, array(2^32-1 ...
	f.Add(which("gov.ParseMessage"), big)
	f.Add(which("uvm.VerifyEndorsement"), big)
	table := abi.CertsFromProto(&spb.CertificateChain{VcekCert: make([]byte, 100), AskCert: make([]byte, 10)}).Marshal()
	f.Add(which("snp.ParseCertTable"), table)
	huge := make([]byte, 48)
	binary.LittleEndian.PutUint32(huge[16:], 0xffffffff) // offset
	binary.LittleEndian.PutUint32(huge[20:], 0xffffffff) // length
	f.Add(which("snp.ParseCertTable"), huge)
	f.Add(which("snp.DecodeACI"), []byte(`{"evidence":"AAAA","endorsements":"AAAA","uvm_endorsements":"","endorsed_tcb":""}`))
	f.Add(which("policy.Parse"), []byte(`{"claims":{"a":[1,2,3]},"gte":{"b":1}}`))
	f.Fuzz(func(t *testing.T, w uint8, b []byte) {
		d := ds[int(w)%len(ds)]
		limit := 64*uint64(len(b)) + 256<<10
		if n := allocated(func() { d.fn(b) }); n > limit {
			t.Fatalf("%s allocated %d bytes for %d input bytes (limit %d)", d.name, n, len(b), limit)
		}
	})
}
