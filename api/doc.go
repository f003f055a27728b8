// Package api holds the wire types that the tkms server and its clients
// share: the bodies of the /v1 release API (docs/release.md), the key
// listing of GET /v1/keys, the raw SEV-SNP attestation object, the
// governance API's answers (docs/governance.md), the recovery API, the
// service identity of GET /v1/service (docs/operations.md), the error body
// and the public body of a key.released ledger entry, which a release's
// log receipt proves.
//
// It declares types only, and imports nothing of tkms: the server
// (internal/httpapi, internal/release) encodes them, package client and
// the tkms command decode them, and neither keeps a copy of its own.
// Byte fields are standard base64 on the wire, as encoding/json writes
// []byte.
package api
