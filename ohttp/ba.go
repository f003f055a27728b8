package ohttp

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/bits"
)

// The compression algorithms of a Bidding & Auction frame.
const (
	BACompressionNone   = 0
	BACompressionBrotli = 1
	BACompressionGzip   = 2
)

// ErrUnsupportedCompression means a Bidding & Auction frame is compressed
// with an algorithm this package does not decompress (brotli).
var ErrUnsupportedCompression = errors.New("ohttp: unsupported compression")

// A BAFrame is the plaintext of a Bidding & Auction request or response
// inside its encapsulation (BiddingAuction variant), as the B&A servers
// and Chrome frame it:
//
//	version(3 bits) compression(5 bits) || length(4, big-endian) || payload(length) || padding
//
// The padding brings the whole to a power of two bytes, so that the size
// of a message says little about its content.
type BAFrame struct {
	Version     byte   // 0
	Compression byte   // BACompressionNone, BACompressionBrotli or BACompressionGzip
	Payload     []byte // as compressed
}

// baHeaderLen is the framing header: the version and compression byte and
// the payload length.
const baHeaderLen = 5

// ParseBAFrame parses the plaintext of a B&A message. The version must be
// 0 and the payload must fit; the padding is ignored.
func ParseBAFrame(b []byte) (BAFrame, error) {
	if len(b) < baHeaderLen {
		return BAFrame{}, fmt.Errorf("%w: B&A frame of %d bytes", ErrMalformed, len(b))
	}
	f := BAFrame{Version: b[0] >> 5, Compression: b[0] & 0x1f}
	if f.Version != 0 {
		return BAFrame{}, fmt.Errorf("%w: B&A frame version %d", ErrMalformed, f.Version)
	}
	n := binary.BigEndian.Uint32(b[1:5])
	if uint64(n) > uint64(len(b)-baHeaderLen) {
		return BAFrame{}, fmt.Errorf("%w: B&A payload of %d bytes in a frame of %d", ErrMalformed, n, len(b))
	}
	f.Payload = b[baHeaderLen : baHeaderLen+int(n)]
	return f, nil
}

// Marshal returns the frame, padded with zeros to the next power of two.
func (f BAFrame) Marshal() []byte {
	n := baHeaderLen + len(f.Payload)
	size := n
	if n > 1 {
		size = 1 << bits.Len(uint(n-1))
	}
	b := make([]byte, size)
	b[0] = f.Version<<5 | f.Compression&0x1f
	binary.BigEndian.PutUint32(b[1:5], uint32(len(f.Payload)))
	copy(b[baHeaderLen:], f.Payload)
	return b
}

// Decompressed returns the payload uncompressed (none or gzip), at most
// max bytes; brotli is ErrUnsupportedCompression.
func (f BAFrame) Decompressed(max int64) ([]byte, error) {
	switch f.Compression {
	case BACompressionNone:
		if int64(len(f.Payload)) > max {
			return nil, fmt.Errorf("%w: B&A payload larger than %d bytes", ErrMalformed, max)
		}
		return f.Payload, nil
	case BACompressionGzip:
		zr, err := gzip.NewReader(bytes.NewReader(f.Payload))
		if err != nil {
			return nil, fmt.Errorf("%w: B&A payload: %v", ErrMalformed, err)
		}
		b, err := io.ReadAll(io.LimitReader(zr, max+1))
		if err != nil {
			return nil, fmt.Errorf("%w: B&A payload: %v", ErrMalformed, err)
		}
		if int64(len(b)) > max {
			return nil, fmt.Errorf("%w: B&A payload larger than %d bytes uncompressed", ErrMalformed, max)
		}
		return b, nil
	}
	return nil, fmt.Errorf("%w: B&A compression %d", ErrUnsupportedCompression, f.Compression)
}
