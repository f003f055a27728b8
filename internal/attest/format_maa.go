package attest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"

	"github.com/tkms-dev/tkms/api"
	"github.com/tkms-dev/tkms/internal/attest/maa"
)

// isMAA reports whether raw is an MAA attestation object: a JSON object
// whose "type" is "maa", or a bare token (a compact JWS: "eyJ", two dots,
// no white space but at the end), as an MAA token file holds it.
func isMAA(raw []byte) bool { return isBareJWT(raw) || typeField(raw) == TypeMAA }

func isBareJWT(raw []byte) bool {
	t := bytes.TrimSpace(raw)
	return bytes.HasPrefix(t, []byte("eyJ")) && bytes.Count(t, []byte(".")) == 2 && !bytes.ContainsAny(t, " \t\r\n\"{")
}

func maaError(err error) *Error { return &Error{Code: maa.Code(err), Err: err} }

func decodeMAAObject(raw []byte) (string, error) {
	if isBareJWT(raw) {
		return string(bytes.TrimSpace(raw)), nil
	}
	var obj api.MAA
	if err := json.Unmarshal(raw, &obj); err != nil {
		return "", &Error{Code: maa.CodeTokenMalformed, Err: err}
	}
	if obj.Token == "" {
		return "", &Error{Code: maa.CodeTokenMalformed, Err: errors.New("maa: the attestation object has no token")}
	}
	return obj.Token, nil
}

func decodeMAA(raw []byte) (*Unverified, error) {
	tok, err := decodeMAAObject(raw)
	if err != nil {
		return nil, err
	}
	return &Unverified{Type: TypeMAA, Report: []byte(tok)}, nil
}

// verifyMAA verifies an MAA token against the trusted instances; a token
// of a debuggable TEE is refused (its evidence is kept for
// InspectUnpinned).
func verifyMAA(ctx context.Context, v *Verifier, raw []byte, ev *Evidence, inspect bool) error {
	tok, err := decodeMAAObject(raw)
	if err != nil {
		return err
	}
	res, err := v.maa.get().Verify(ctx, tok)
	if res == nil {
		return maaError(err)
	}
	if perr := v.checkPinned(!res.Simulated, inspect); perr != nil {
		return perr
	}
	ev.Simulated = res.Simulated
	ev.Claims = res.Claims
	ev.ReportData, ev.Measurement, ev.HostData = res.ReportData, res.Measurement, res.HostData
	ev.ReportSHA256, ev.Signer, ev.ProductLine = res.TokenSHA256, res.Issuer, "MAA"
	if err != nil {
		return maaError(err)
	}
	return nil
}
