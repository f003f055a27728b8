package raftstore

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/tkms-dev/tkms/internal/ledger"
)

// A command is the data of one raft log entry: the ledger entries of one
// or more appends, each group numbered and sealed by the leader that
// proposed it. A group is applied whole or not at all.
type command struct {
	Groups []group `json:"groups"`
}

// A group is the entries of one Append call.
type group struct {
	// Records are the entries' ledger records (ledger.MarshalRecord).
	Records [][]byte `json:"records"`
	// DataKeys holds, for entries that carry one, the data key of a
	// key.created entry sealed under the master key (see sealDataKey),
	// by index into Records.
	DataKeys map[int][]byte `json:"data_keys,omitempty"`
}

// maxCommand bounds a command's size: a raft message from a peer is
// parsed only up to it.
const maxCommand = 64 << 20

// errMalformed is the error of a command that does not decode.
var errMalformed = errors.New("raftstore: malformed command")

// decodeCommand parses the data of a raft log entry and the ledger
// entries in it. It checks the framing only: whether the entries follow
// the ledger is the FSM's job.
func decodeCommand(b []byte) (*command, [][]*ledger.Entry, error) {
	if len(b) > maxCommand {
		return nil, nil, fmt.Errorf("%w: %d bytes", errMalformed, len(b))
	}
	var c command
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, nil, fmt.Errorf("%w: %v", errMalformed, err)
	}
	out := make([][]*ledger.Entry, len(c.Groups))
	for i, g := range c.Groups {
		if len(g.Records) == 0 {
			return nil, nil, fmt.Errorf("%w: group %d is empty", errMalformed, i)
		}
		for j, r := range g.Records {
			e, err := ledger.UnmarshalRecord(r)
			if err != nil {
				return nil, nil, fmt.Errorf("%w: group %d entry %d: %v", errMalformed, i, j, err)
			}
			if j > 0 && e.Seq != out[i][j-1].Seq+1 {
				return nil, nil, fmt.Errorf("%w: group %d: entry %d follows %d", errMalformed, i, e.Seq, out[i][j-1].Seq)
			}
			out[i] = append(out[i], e)
		}
		for k := range g.DataKeys {
			if k < 0 || k >= len(g.Records) || out[i][k].Type != ledger.TypeKeyCreated {
				return nil, nil, fmt.Errorf("%w: group %d: data key of entry %d", errMalformed, i, k)
			}
		}
	}
	return &c, out, nil
}

// dataKeyAD binds a data key sealed under the master key to its entry.
func dataKeyAD(seq uint64) []byte {
	return fmt.Appendf(nil, "tkms/raftstore/data-key/v1\x00%d", seq)
}
