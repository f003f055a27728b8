package apierror_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/tkms-dev/tkms/api"
	"github.com/tkms-dev/tkms/internal/httpapi/apierror"
)

func TestWrite(t *testing.T) {
	for _, tc := range []struct {
		name, message, details string
	}{
		{"plain", "the key is gone", "the key is gone"},
		{"control characters", "line one\nline two\x00", "line one line two "},
		{"non-ASCII", "clé", "cl "},
		{"long", strings.Repeat("m", 300), strings.Repeat("m", 200)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := httptest.NewRecorder()
			apierror.Write(w, http.StatusGone, "KEY_EXPIRED", tc.message)
			h := w.Result().Header
			if w.Code != http.StatusGone || h.Get("Content-Type") != "application/json" || h.Get("Cache-Control") != "no-store" ||
				h.Get("x-ms-kms-error-code") != "KEY_EXPIRED" || h.Get("x-ms-kms-error-details") != tc.details {
				t.Fatalf("status %d, headers %v", w.Code, h)
			}
			var body api.ErrorResponse
			if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil || body.Error.Code != "KEY_EXPIRED" || body.Error.Message != tc.message {
				t.Fatalf("body %s: %v", w.Body, err)
			}
		})
	}
}

// TestWriteBody: a body that embeds the error shape keeps it.
func TestWriteBody(t *testing.T) {
	var b struct {
		Status string `json:"status"`
		api.ErrorResponse
	}
	b.Status, b.Error.Code, b.Error.Message = "Storage failed", "STORAGE_FAILED", "cannot write"
	w := httptest.NewRecorder()
	apierror.WriteBody(w, http.StatusServiceUnavailable, b.Error.Code, b.Error.Message, b)
	if got := w.Body.String(); got != `{"status":"Storage failed","error":{"code":"STORAGE_FAILED","message":"cannot write"}}` {
		t.Fatalf("body %s", got)
	}
	if w.Code != http.StatusServiceUnavailable || w.Header().Get("x-ms-kms-error-code") != "STORAGE_FAILED" {
		t.Fatalf("status %d, headers %v", w.Code, w.Header())
	}
}
