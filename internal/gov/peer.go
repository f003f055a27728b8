package gov

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf8"
)

// The deployed DEPA KMS (a CCF application, docs/spec/azure-compat.md)
// writes its governance actions in shapes of its own. MapPeerActions maps
// each onto the tkms action it means, so that its proposal templates are
// accepted as they are written and then validated, recorded and applied
// exactly as tkms's own grammar:
//
//	set_key_release_policy    {"service", "type", "claims", "gte", "gt"}  the change, "service" dropped
//	set_settings_policy       {"settings_policy": {...}}                 {...}
//	set_jwt_validation_policy {"issuer", "validation_policy": {...}}     {"issuer", "claims": {...}}
//	set_key_rotation_policy   {"key_rotation_policy": {...}}             {...}
//
// The peer's shapes and tkms's are disjoint (each peer shape has a member
// tkms's strict grammar refuses), so no proposal valid before this mapping
// means anything else with it.

// peerService bounds the peer's free-text "service" label.
const peerService = 256

// peerWrapped are the actions whose peer form wraps tkms's arguments in
// one member of that name.
var peerWrapped = map[string]string{
	ActSetSettingsPolicy:    "settings_policy",
	ActSetKeyRotationPolicy: "key_rotation_policy",
}

// MapPeerActions returns actions with every action in the peer's shape
// replaced by its tkms form; other actions are returned as they are.
// Errors wrap ErrInvalidAction and name the action.
func MapPeerActions(actions []Action) ([]Action, error) {
	out := make([]Action, len(actions))
	for i, a := range actions {
		m, err := mapPeerAction(a)
		if err != nil {
			return nil, fmt.Errorf("actions[%d]: %w: %s: %w", i, ErrInvalidAction, a.Name, err)
		}
		out[i] = m
	}
	return out, nil
}

func mapPeerAction(a Action) (Action, error) {
	var fields map[string]json.RawMessage
	if !isObject(a.Args) || json.Unmarshal(a.Args, &fields) != nil {
		return a, nil // ValidateAction says what is wrong
	}
	if wrapper, ok := peerWrapped[a.Name]; ok {
		inner, ok := fields[wrapper]
		if !ok {
			return a, nil
		}
		if len(fields) != 1 {
			return a, fmt.Errorf("%q takes no other member", wrapper)
		}
		if !isObject(inner) {
			return a, fmt.Errorf("%s: want a JSON object", wrapper)
		}
		return Action{Name: a.Name, Args: inner}, nil
	}
	switch a.Name {
	case ActSetJWTValidationPolicy:
		vp, ok := fields["validation_policy"]
		if !ok {
			return a, nil
		}
		var args struct {
			Issuer           string          `json:"issuer"`
			ValidationPolicy json.RawMessage `json:"validation_policy"`
		}
		if err := decodeStrict(a.Args, &args); err != nil {
			return a, err
		}
		if !isObject(vp) {
			return a, errors.New("validation_policy: want a JSON object")
		}
		b, err := json.Marshal(struct {
			Issuer string          `json:"issuer"`
			Claims json.RawMessage `json:"claims"`
		}{args.Issuer, args.ValidationPolicy})
		if err != nil {
			return a, err
		}
		return Action{Name: a.Name, Args: b}, nil
	case ActSetKeyReleasePolicy:
		svc, ok := fields["service"]
		if !ok {
			return a, nil
		}
		var label string
		if err := json.Unmarshal(svc, &label); err != nil {
			return a, errors.New("service: want a string")
		}
		if utf8.RuneCountInString(label) > peerService || !printable(label) {
			return a, fmt.Errorf("service: want at most %d printable characters", peerService)
		}
		delete(fields, "service")
		b, err := json.Marshal(fields)
		if err != nil {
			return a, err
		}
		return Action{Name: a.Name, Args: b}, nil
	}
	return a, nil
}

// CertID returns the CCF id of a member registered with a certificate:
// the lowercase hex SHA-256 of the certificate's DER, the kid CCF's
// tooling signs with. It returns "" for a member registered with a bare
// public key. A message may name a member by either id (Verify).
func (m Member) CertID() string {
	block, err := singlePEM([]byte(m.SigningKey))
	if err != nil || block.Type != "CERTIFICATE" {
		return ""
	}
	sum := sha256.Sum256(block.Bytes)
	return hex.EncodeToString(sum[:])
}

// SignedBy reports whether kid, the kid of a message, names m: its member
// id, or the CCF id of its certificate.
func (m Member) SignedBy(kid string) bool {
	return kid != "" && (kid == m.ID || kid == m.CertID())
}
