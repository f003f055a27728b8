package policy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/big"
	"strconv"
	"strings"
)

// maxDepth bounds the nesting of a policy document (SKR allOf/anyOf trees).
const maxDepth = 32

// maxExponent bounds the decimal exponent of a number in a policy, so that
// "1e999999999" cannot make the exact arithmetic below allocate without
// bound. float64 ends near 1e308; nothing a TEE reports comes close.
const maxExponent = 400

// decodeStrict decodes one JSON value into map[string]any, []any, string,
// json.Number, bool or nil. Unlike encoding/json it rejects duplicate
// object keys (two readers of one policy must not see two policies), nesting
// deeper than maxDepth and trailing data.
func decodeStrict(data []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	v, err := decodeValue(dec, 0)
	if err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("trailing data after the JSON value")
	}
	return v, nil
}

func decodeValue(dec *json.Decoder, depth int) (any, error) {
	if depth > maxDepth {
		return nil, fmt.Errorf("nested deeper than %d levels", maxDepth)
	}
	tok, err := dec.Token()
	if err != nil {
		if err == io.EOF {
			return nil, io.ErrUnexpectedEOF
		}
		return nil, err
	}
	d, ok := tok.(json.Delim)
	if !ok {
		return tok, nil
	}
	switch d {
	case '{':
		obj := map[string]any{}
		for dec.More() {
			kt, err := dec.Token()
			if err != nil {
				return nil, err
			}
			k, ok := kt.(string)
			if !ok {
				return nil, errors.New("object key is not a string")
			}
			if _, dup := obj[k]; dup {
				return nil, fmt.Errorf("duplicate key %q", k)
			}
			v, err := decodeValue(dec, depth+1)
			if err != nil {
				return nil, err
			}
			obj[k] = v
		}
		if _, err := dec.Token(); err != nil { // '}'
			return nil, err
		}
		return obj, nil
	case '[':
		arr := []any{}
		for dec.More() {
			v, err := decodeValue(dec, depth+1)
			if err != nil {
				return nil, err
			}
			arr = append(arr, v)
		}
		if _, err := dec.Token(); err != nil { // ']'
			return nil, err
		}
		return arr, nil
	}
	return nil, fmt.Errorf("unexpected %v", d)
}

// kind is the JSON type of a scalar value.
type kind uint8

const (
	kindString kind = iota + 1
	kindBool
	kindNumber
)

// A value is a scalar from a policy or a claim: a string, a bool or a
// number. s is its canonical string form, the one the Azure-compatible
// grammar compares: strings as they are, "true"/"false", numbers in
// canonical decimal (no exponent, no trailing zeros: 2.50e1 -> "25").
type value struct {
	kind kind
	s    string
	num  *big.Rat // numbers only
}

func (v value) literal() string {
	switch v.kind {
	case kindString:
		return strconv.Quote(v.s)
	default:
		return v.s
	}
}

// json returns the value as JSON text.
func (v value) json() []byte {
	if v.kind == kindString {
		b, _ := json.Marshal(v.s) // a string always marshals
		return b
	}
	return []byte(v.s)
}

// parseNumber parses JSON number text exactly.
func parseNumber(text string) (*big.Rat, error) {
	if text == "" || !(text[0] == '-' || text[0] >= '0' && text[0] <= '9') || !json.Valid([]byte(text)) {
		return nil, fmt.Errorf("%q is not a number", text)
	}
	if i := strings.IndexAny(text, "eE"); i >= 0 {
		e, err := strconv.Atoi(strings.TrimPrefix(text[i+1:], "+"))
		if err != nil || e > maxExponent || e < -maxExponent {
			return nil, fmt.Errorf("number %s is out of range", text)
		}
	}
	r, ok := new(big.Rat).SetString(text)
	if !ok {
		return nil, fmt.Errorf("%q is not a number", text)
	}
	return r, nil
}

// decimal returns r in canonical decimal form. r must be a finite decimal
// fraction (its denominator a product of 2s and 5s), as every JSON number is.
func decimal(r *big.Rat) string {
	if r.IsInt() {
		return r.Num().String()
	}
	d := new(big.Int).Set(r.Denom())
	var twos, fives int
	m := new(big.Int)
	for _, p := range []struct {
		n int64
		c *int
	}{{2, &twos}, {5, &fives}} {
		bp := big.NewInt(p.n)
		for {
			q, rem := new(big.Int).QuoRem(d, bp, m)
			if rem.Sign() != 0 {
				break
			}
			d = q
			*p.c++
		}
	}
	return r.FloatString(max(twos, fives))
}

func numberValue(r *big.Rat) value {
	return value{kind: kindNumber, s: decimal(r), num: r}
}

// scalar converts a decoded policy JSON scalar to a value.
func scalar(v any) (value, bool, error) {
	switch t := v.(type) {
	case string:
		return value{kind: kindString, s: t}, true, nil
	case bool:
		return value{kind: kindBool, s: strconv.FormatBool(t)}, true, nil
	case json.Number:
		r, err := parseNumber(string(t))
		if err != nil {
			return value{}, true, err
		}
		return numberValue(r), true, nil
	}
	return value{}, false, nil
}

// claimValue normalises an observed claim: strings, bools, every Go integer
// type, float32/64 (finite) and json.Number. Anything else is reported as
// unsupported, by type only: its value is never formatted.
func claimValue(v any) (value, error) {
	var r *big.Rat
	switch t := v.(type) {
	case string:
		return value{kind: kindString, s: t}, nil
	case bool:
		return value{kind: kindBool, s: strconv.FormatBool(t)}, nil
	case json.Number:
		n, err := parseNumber(string(t))
		if err != nil {
			return value{}, errors.New("malformed number")
		}
		r = n
	case float64:
		if math.IsNaN(t) || math.IsInf(t, 0) {
			return value{}, errors.New("non-finite number")
		}
		r, _ = new(big.Rat).SetString(strconv.FormatFloat(t, 'g', -1, 64))
	case float32:
		f := float64(t)
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return value{}, errors.New("non-finite number")
		}
		r, _ = new(big.Rat).SetString(strconv.FormatFloat(f, 'g', -1, 32))
	case int:
		r = new(big.Rat).SetInt64(int64(t))
	case int8:
		r = new(big.Rat).SetInt64(int64(t))
	case int16:
		r = new(big.Rat).SetInt64(int64(t))
	case int32:
		r = new(big.Rat).SetInt64(int64(t))
	case int64:
		r = new(big.Rat).SetInt64(t)
	case uint:
		r = new(big.Rat).SetUint64(uint64(t))
	case uint8:
		r = new(big.Rat).SetUint64(uint64(t))
	case uint16:
		r = new(big.Rat).SetUint64(uint64(t))
	case uint32:
		r = new(big.Rat).SetUint64(uint64(t))
	case uint64:
		r = new(big.Rat).SetUint64(t)
	default:
		return value{}, fmt.Errorf("unsupported type %T", v)
	}
	return numberValue(r), nil
}

// asNumber returns the number a value stands for in an ordering comparison:
// a number, or a string holding a JSON number (as the originals parseFloat
// claims such as x-ms-ver).
func asNumber(v value) (*big.Rat, bool) {
	switch v.kind {
	case kindNumber:
		return v.num, true
	case kindString:
		r, err := parseNumber(v.s)
		return r, err == nil
	}
	return nil, false
}
