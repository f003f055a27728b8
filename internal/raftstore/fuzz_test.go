package raftstore

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"testing"
	"time"

	"github.com/tkms-dev/tkms/internal/ledger"
)

func seedEntries() []*ledger.Entry {
	t := time.Unix(1, 0).UTC()
	return []*ledger.Entry{
		{Seq: 1, Time: t, Type: ledger.TypeKeyPublished, Body: []byte(`{"kid":"a"}`)},
		{Seq: 2, Time: t, Type: ledger.TypeKeyCreated, Body: []byte(`{"kid":"b"}`), Sealed: []byte("sealed")},
	}
}

// FuzzDecodeCommand: a raft log entry's data, as a peer may send it, is
// refused or decoded into dense groups, never a crash.
func FuzzDecodeCommand(f *testing.F) {
	var g group
	for _, e := range seedEntries() {
		g.Records = append(g.Records, ledger.MarshalRecord(e))
	}
	g.DataKeys = map[int][]byte{1: []byte("dk")}
	b, _ := json.Marshal(command{Groups: []group{g}})
	f.Add(b)
	f.Add([]byte(`{"groups":[{"records":[]}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, groups, err := decodeCommand(b)
		if err != nil {
			return
		}
		if len(groups) != len(c.Groups) {
			t.Fatal("groups lost")
		}
		for _, es := range groups {
			for i := 1; i < len(es); i++ {
				if es[i].Seq != es[i-1].Seq+1 {
					t.Fatal("a group that is not dense")
				}
			}
		}
	})
}

// FuzzReadSnapshot: a snapshot stream from a leader is refused or read as
// dense entries, never a crash or an unbounded allocation.
func FuzzReadSnapshot(f *testing.F) {
	b := []byte(snapshotHeader)
	for _, e := range seedEntries() {
		rec := ledger.MarshalRecord(e)
		b = binary.AppendUvarint(b, uint64(len(rec)))
		b = append(b, rec...)
		b = binary.AppendUvarint(b, 0)
	}
	f.Add(b)
	f.Add([]byte(snapshotHeader + "\xff\xff\xff\xff\x0f"))
	f.Fuzz(func(t *testing.T, b []byte) {
		var prev uint64
		readSnapshot(bytes.NewReader(b), func(e *ledger.Entry, dk []byte) error {
			if e.Seq != prev+1 {
				t.Fatalf("entry %d after %d", e.Seq, prev)
			}
			prev = e.Seq
			return nil
		})
	})
}
