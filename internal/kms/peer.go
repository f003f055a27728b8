package kms

import "github.com/tkms-dev/tkms/internal/state"

// memberID returns the member id a message's kid names (a member id, or
// the CCF id of a member's certificate: state.MemberBySigner), or kid
// itself when it names no member, for the state machine to refuse.
func (s *Service) memberID(kid string) string {
	id := kid
	s.Read(func(st *state.State) {
		if m := st.MemberBySigner(kid); m != nil {
			id = m.ID
		}
	})
	return id
}
