package ohttp_test

import (
	"bytes"
	"compress/gzip"
	"errors"
	"testing"

	"github.com/tkms-dev/tkms/ohttp"
)

func gzipped(t testing.TB, b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestBAFrame(t *testing.T) {
	payload := []byte("protected audience request")
	for _, tc := range []struct {
		name  string
		frame ohttp.BAFrame
	}{
		{"uncompressed", ohttp.BAFrame{Payload: payload}},
		{"gzip", ohttp.BAFrame{Compression: ohttp.BACompressionGzip, Payload: gzipped(t, payload)}},
		{"empty", ohttp.BAFrame{Payload: []byte{}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := tc.frame.Marshal()
			if len(b)&(len(b)-1) != 0 || len(b) < 5+len(tc.frame.Payload) {
				t.Fatalf("frame of %d bytes: not a power of two holding the payload", len(b))
			}
			f, err := ohttp.ParseBAFrame(b)
			if err != nil || f.Compression != tc.frame.Compression || !bytes.Equal(f.Payload, tc.frame.Payload) {
				t.Fatalf("ParseBAFrame = %+v, %v", f, err)
			}
			got, err := f.Decompressed(1 << 20)
			if want := payload; tc.name == "empty" {
				if err != nil || len(got) != 0 {
					t.Fatalf("Decompressed = %q, %v", got, err)
				}
			} else if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("Decompressed = %q, %v", got, err)
			}
		})
	}
	for _, tc := range []struct {
		name string
		b    []byte
		want error
	}{
		{"short", []byte{0, 0, 0}, ohttp.ErrMalformed},
		{"version 1", []byte{0x20, 0, 0, 0, 0}, ohttp.ErrMalformed},
		{"length past the end", []byte{0, 0, 0, 0, 4, 'a', 'b'}, ohttp.ErrMalformed},
	} {
		if _, err := ohttp.ParseBAFrame(tc.b); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	brotli := ohttp.BAFrame{Compression: ohttp.BACompressionBrotli, Payload: []byte{1}}
	if _, err := brotli.Decompressed(10); !errors.Is(err, ohttp.ErrUnsupportedCompression) {
		t.Errorf("brotli: %v", err)
	}
	bomb := ohttp.BAFrame{Compression: ohttp.BACompressionGzip, Payload: gzipped(t, make([]byte, 1<<16))}
	if _, err := bomb.Decompressed(1024); !errors.Is(err, ohttp.ErrMalformed) {
		t.Errorf("payload over the bound: %v", err)
	}
}

// FuzzParseBAFrame: B&A frames are untrusted plaintext; parsing,
// re-marshalling and decompressing must not panic, and a parsed frame
// survives a round trip.
func FuzzParseBAFrame(f *testing.F) {
	f.Add(ohttp.BAFrame{Payload: []byte("x")}.Marshal())
	f.Add(ohttp.BAFrame{Compression: ohttp.BACompressionGzip, Payload: gzipped(f, []byte("bid"))}.Marshal())
	f.Add([]byte{0x02, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, err := ohttp.ParseBAFrame(b)
		if err != nil {
			return
		}
		again, err := ohttp.ParseBAFrame(fr.Marshal())
		if err != nil || again.Compression != fr.Compression || !bytes.Equal(again.Payload, fr.Payload) {
			t.Fatalf("round trip: %+v, %v", again, err)
		}
		fr.Decompressed(1 << 16)
	})
}
