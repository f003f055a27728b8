package httpapi

import (
	"errors"
	"net/http"

	"github.com/tkms-dev/tkms/api"
	"github.com/tkms-dev/tkms/internal/httpapi/apierror"
	"github.com/tkms-dev/tkms/internal/kms"
)

// Storage faults (docs/operations.md): once a write to the data directory
// has failed, the service refuses every write until it is restarted. The
// API says so precisely: writes (releases, rotations, governance) are
// answered 503 STORAGE_FAILED, /app/heartbeat answers 503 with the same
// code so that load balancers send key releases elsewhere and monitoring
// pages the operator, and /metrics has tkms_store_write_failed 1. Public
// keys, the checkpoint and the log's tiles are served as before.

// CodeStorageFailed: the server cannot write its ledger, so it records,
// releases and rotates nothing until its operator fixes the storage and
// restarts it.
const CodeStorageFailed = "STORAGE_FAILED"

// storageFailedMessage is safe to show anyone: it names no path or cause
// (those are in the server log).
const storageFailedMessage = "the KMS cannot write its ledger (a storage failure on the server), so nothing was recorded, released or rotated; " +
	"public keys are still served; retry at another instance or later"

// storageFailed answers err with 503 STORAGE_FAILED and returns true if it
// is a refusal because the data directory cannot be written.
func (s *Server) storageFailed(w http.ResponseWriter, r *http.Request, err error) bool {
	if !errors.Is(err, kms.ErrStorage) {
		return false
	}
	s.fail(w, r, http.StatusServiceUnavailable, CodeStorageFailed, storageFailedMessage)
	return true
}

// storageHeartbeat answers the heartbeat with 503 STORAGE_FAILED and
// returns true while the service refuses writes. It is not logged per
// request (probes come every few seconds; the failure was logged once);
// it is counted in tkms_http_errors_total.
func (s *Server) storageHeartbeat(w http.ResponseWriter) bool {
	if s.svc.WriteErr() == nil {
		return false
	}
	s.errors.add(CodeStorageFailed)
	var b struct {
		Status string `json:"status"`
		api.ErrorResponse
	}
	b.Status = "Storage failed: the service cannot record key releases or rotations; public keys are still served"
	b.Error.Code, b.Error.Message = CodeStorageFailed, storageFailedMessage
	apierror.WriteBody(w, http.StatusServiceUnavailable, CodeStorageFailed, storageFailedMessage, b)
	return true
}
