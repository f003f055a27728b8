package akv

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// TokenSource gives the bearer token of the vault's calls: an Entra ID
// access token for https://vault.azure.net (https://managedhsm.azure.net
// for a Managed HSM), from the node's managed identity.
type TokenSource func(ctx context.Context) (string, error)

// Client calls one vault. The zero HTTPClient means http.DefaultClient.
type Client struct {
	// VaultURL is the vault's base URL ("https://myvault.vault.azure.net").
	VaultURL   string
	Token      TokenSource
	HTTPClient *http.Client
}

// KeyID returns the key id of name at version: VaultURL/keys/name/version.
func (c *Client) KeyID(name, version string) string {
	return strings.TrimSuffix(c.VaultURL, "/") + "/keys/" + url.PathEscape(name) + "/" + url.PathEscape(version)
}

// GetKey fetches a key's public part, attributes and release policy.
func (c *Client) GetKey(ctx context.Context, name, version string) (*KeyBundle, error) {
	b, err := c.do(ctx, http.MethodGet, c.KeyID(name, version), nil)
	if err != nil {
		return nil, err
	}
	return ParseKeyBundle(b)
}

// Release asks the vault to release a key version to the holder of the
// runtime key of token (an MAA token) and returns the answer's JWS,
// unverified ([VerifyRelease]).
func (c *Client) Release(ctx context.Context, name, version string, req ReleaseRequest) (string, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return "", err
	}
	b, err := c.do(ctx, http.MethodPost, c.KeyID(name, version)+"/release", body)
	if err != nil {
		return "", err
	}
	return ParseReleaseResult(b)
}

// ParseReleaseResult parses the answer to POST .../release.
func ParseReleaseResult(b []byte) (string, error) {
	var r ReleaseResult
	if err := json.Unmarshal(b, &r); err != nil || strings.Count(r.Value, ".") != 2 {
		return "", newError(CodeMalformed, nil, `the release answer is not {"value": <compact JWS>}`)
	}
	return r.Value, nil
}

func (c *Client) do(ctx context.Context, method, u string, body []byte) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, u+"?api-version="+APIVersion, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("akv: %w", err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.Token != nil {
		tok, err := c.Token(ctx)
		if err != nil {
			return nil, fmt.Errorf("akv: obtaining the vault's bearer token: %w", err)
		}
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	hc := c.HTTPClient
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, newError(CodeUnreachable, err, "%s %s", method, u)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, MaxAnswerBytes+1))
	if err != nil {
		return nil, newError(CodeUnreachable, err, "reading the answer to %s %s", method, u)
	}
	if len(b) > MaxAnswerBytes {
		return nil, newError(CodeMalformed, nil, "the answer to %s %s exceeds %d bytes", method, u, MaxAnswerBytes)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, vaultError(resp.StatusCode, b)
	}
	return b, nil
}
