package api

// RecoveryStatus is GET /v1/recovery on a node started in recovery mode
// (docs/recovery.md): the recovery's id, which every share must be signed
// for, the ledger copy it audited, and the shares received so far.
type RecoveryStatus struct {
	RecoveryID string `json:"recovery_id"`
	State      string `json:"state"` // "waiting" or "recovered"
	// The audited ledger copy: its log, tree size and root (hex), and the
	// log key it was audited with.
	LogOrigin string `json:"log_origin"`
	LogKey    string `json:"log_key"`
	TreeSize  int64  `json:"tree_size"`
	TreeRoot  string `json:"tree_root"`
	// The recovery.shares entry shares are taken for.
	SharesSeq     uint64   `json:"shares_seq"`
	SharesVersion uint64   `json:"shares_version"`
	Threshold     int      `json:"threshold"`
	Holders       []string `json:"holders"`  // member ids holding a share
	Received      []string `json:"received"` // member ids whose share was accepted
}

// Recovery states.
const (
	RecoveryWaiting   = "waiting"
	RecoveryRecovered = "recovered"
)

// RecoveryShare is the JSON payload of a recovery_share governance
// message (COSE_Sign1, its proposal_id header the recovery id), POSTed to
// /v1/recovery/share: the member's opened share, the shares entry it was
// opened from and the hash of the encryption key that opened it.
type RecoveryShare struct {
	SharesSeq uint64 `json:"shares_seq"`
	KeyHash   string `json:"key_hash"`
	Share     []byte `json:"share"` // base64; the index and the value of the share
}

// RecoveryShareResult is the answer to an accepted share.
type RecoveryShareResult struct {
	Received  int  `json:"received"`
	Threshold int  `json:"threshold"`
	Recovered bool `json:"recovered"`
}
