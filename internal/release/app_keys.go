package release

import (
	"encoding/json"
	"time"

	"github.com/tkms-dev/tkms/internal/state"
)

// appDefaultKeys returns the keys POST /app/key answers without a kid
// (docs/lifecycle.md "Which keys /app/key answers"), newest first: the
// newest releasable key, as the deployed DEPA KMS answers its newest key
// at once, so that a service holds a key before clients are told to use
// it; and, for fmt=tink, after it every key clients may still encrypt to
// (the advertised keys, newest first), so that a service that starts
// while the newest key awaits publication holds the primary key too. The
// deployed key fetchers iterate over every key of the fmt=tink list and
// never fetch by kid; a client that reads only the first key gets the
// one wrappedKid names, as from the DEPA KMS.
func appDefaultKeys(st *state.State, now time.Time, tink bool) []state.Key {
	var newest *state.Key
	for i := len(st.Keys) - 1; i >= 0; i-- {
		if st.Keys[i].Phase(now) < state.Expired {
			newest = st.Keys[i]
			break
		}
	}
	if newest == nil {
		return nil
	}
	out := []state.Key{*newest}
	if tink {
		for _, k := range st.Advertised(now) { // newest first
			if k.Kid != newest.Kid {
				out = append(out, *k)
			}
		}
	}
	return out
}

// hasMember reports whether the JSON object body has a member called name
// (whatever its value).
func hasMember(body []byte, name string) bool {
	var m map[string]json.RawMessage
	if json.Unmarshal(body, &m) != nil {
		return false
	}
	_, ok := m[name]
	return ok
}
