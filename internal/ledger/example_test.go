package ledger_test

import (
	"fmt"
	"time"

	"github.com/tkms-dev/tkms/internal/ledger"
)

func ExampleMarshalRecord() {
	e := &ledger.Entry{
		Seq:  1,
		Time: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC),
		Type: ledger.TypeGenesis,
		Body: []byte(`{"service":"example","format":1}`),
	}
	rec := ledger.MarshalRecord(e)

	got, err := ledger.UnmarshalRecord(rec)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(got.Seq, got.Time.Format(time.RFC3339), got.Type, string(got.Body))

	// A single changed byte is detected by the record's checksum.
	rec[len(rec)/2] ^= 1
	_, err = ledger.UnmarshalRecord(rec)
	fmt.Println(err)
	// Output:
	// 1 2025-01-02T03:04:05Z genesis {"service":"example","format":1}
	// ledger: corrupt record: checksum mismatch
}
