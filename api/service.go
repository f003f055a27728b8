package api

import "encoding/json"

// Service is GET /v1/service (docs/operations.md, "A cluster"): the
// service's identity (its log, whose signing key is a ledger secret only
// attested nodes hold) and every trusted node with the evidence that binds
// its keys, endorsed by the log.
type Service struct {
	LogOrigin string        `json:"log_origin"`
	LogKey    string        `json:"log_key"`
	Nodes     []ServiceNode `json:"nodes"`
}

// ServiceNode is one trusted node of a Service: the last node to join as
// each member not removed.
type ServiceNode struct {
	NodeID  string `json:"node_id"`
	Member  string `json:"member"`
	NodeKey []byte `json:"node_key"`
	// Evidence is the node's attestation object, as `tkms attest inspect`
	// reads it (a JSON string of its base64 when it is not JSON).
	Evidence     json.RawMessage `json:"evidence"`
	EvidenceType string          `json:"evidence_type"`
	Claims       map[string]any  `json:"claims"`
	Simulated    bool            `json:"simulated,omitempty"`
	// Seq is the index of the node's node.joined ledger entry.
	Seq uint64 `json:"seq"`
	// Endorsement is the receipt of that entry (docs/transparency.md):
	// its inclusion proof under a checkpoint signed by the log key; absent
	// until a checkpoint covers it.
	Endorsement json.RawMessage `json:"endorsement,omitempty"`
	// TLSKey is the node's attested TLS key (PKIX DER), whose SHA-256 is
	// the evidence's REPORT_DATA[32:64]; Certificate is the node
	// certificate (X.509 DER) the log key signed for it.
	TLSKey      []byte `json:"tls_key,omitempty"`
	Certificate []byte `json:"certificate,omitempty"`
}
