package limit

import (
	"runtime"
	"strconv"
	"testing"
)

// TestKeyedMemoryBounded: a Keyed fed a million made-up keys holds
// DefaultMaxKeys buckets, in a few megabytes.
func TestKeyedMemoryBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("a million keys")
	}
	k, err := NewKeyed(KeyedConfig{Rate: 1, Burst: 10})
	if err != nil {
		t.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := range 1_000_000 {
		k.Allow("198.51." + strconv.Itoa(i>>8&0xffff) + "." + strconv.Itoa(i&0xff) + "/" + strconv.Itoa(i))
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	st := k.Stats()
	if st.Keys != DefaultMaxKeys || st.Allowed != 1_000_000 {
		t.Fatalf("stats %+v", st)
	}
	grown := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	t.Logf("%d buckets: heap grew by %.1f MB", st.Keys, float64(grown)/1e6)
	if grown > 16<<20 {
		t.Fatalf("heap grew by %d bytes for %d buckets", grown, st.Keys)
	}
	runtime.KeepAlive(k)
}
