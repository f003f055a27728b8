// Package apierror writes tkms's error answer, the one shape in which every
// HTTP server of tkms refuses a request (the KMS API of internal/httpapi,
// the sidecar of internal/sidecar, a recovering node of internal/recovery):
// the status, the x-ms-kms-error-code and x-ms-kms-error-details headers
// (docs/spec/azure-compat.md, "Conventions"), Cache-Control: no-store and
// the body api.ErrorResponse, {"error":{"code","message"}}.
//
// It only writes: each server decides the status of its own codes in one
// table (internal/httpapi for the KMS's, whose packages return typed errors
// with codes), and logs the cause; the message written must be safe to
// show the caller.
package apierror

import (
	"encoding/json"
	"net/http"
	"strings"

	"github.com/tkms-dev/tkms/api"
)

// Write answers with status and the error body of code and message.
func Write(w http.ResponseWriter, status int, code, message string) {
	WriteBody(w, status, code, message, api.ErrorResponse{Error: api.Error{Code: code, Message: message}})
}

// WriteBody answers with status, the error headers of code and message,
// and body: api.ErrorResponse or a JSON object that embeds it.
func WriteBody(w http.ResponseWriter, status int, code, message string, body any) {
	b, _ := json.Marshal(body)
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("x-ms-kms-error-code", code)
	h.Set("x-ms-kms-error-details", headerSafe(message))
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(b)
}

// headerSafe makes a message a header value: printable ASCII, at most 200
// bytes.
func headerSafe(m string) string {
	m = strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7e {
			return ' '
		}
		return r
	}, m)
	if len(m) > 200 {
		m = m[:200]
	}
	return m
}
