package main

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/tkms-dev/tkms/client"
	"github.com/tkms-dev/tkms/client/devtee"
)

// clientFlags are the flags with which `tkms fetch` (and the sidecar)
// choose how the client package attests and authenticates. Secrets never
// come in flag values: a static token is read from TKMS_TOKEN.
type clientFlags struct {
	kms, kmsCA, api, wrapping, logKey                 string
	attester, data, securityContext, vcek             string
	measurement, hostData                             string
	debug                                             bool
	tokenSource, imdsURL, imdsResource, clientID, tok string
}

func (c *clientFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&c.kms, "kms", "", "base `URL` of the KMS (default: $TKMS_ADDR, else kms_url of --data's dev.json)")
	registerKMSCA(fs, &c.kmsCA)
	fs.StringVar(&c.api, "api", "v1", "release API: v1 (HPKE or RSA wrapping) or app (Azure-compatible, RSA-4096)")
	fs.StringVar(&c.wrapping, "wrapping", "", "wrapping key: x25519 (v1 default), mlkem768-x25519, rsa-4096 (app)")
	fs.StringVar(&c.logKey, "log-key", "", "the KMS log's verifier `key` (or @FILE); receipts are then verified (default with --data: dev.json's log_public_key)")
	fs.StringVar(&c.attester, "attester", "simulated", "evidence: aci (ACI security context + SEV-SNP device), snp (raw report from the device), tdx (TDX quote from configfs-tsm), azure-cvm (Azure confidential VM: vTPM quote, HCL report, VCEK or TD quote from IMDS), simulated, simulated-tdx, simulated-maa, simulated-az-snp or simulated-az-tdx (a dev data directory's fake SEV-SNP chain, TDX chain, Azure Attestation instance or Azure CVM vTPM: NOT a TEE)")
	fs.StringVar(&c.data, "data", "tkms-dev", "`directory` of a tkms dev instance: its simulated chain, its token issuer, its dev.json")
	fs.StringVar(&c.securityContext, "security-context-dir", "", "ACI security context `directory` (default $UVM_SECURITY_CONTEXT_DIR)")
	fs.StringVar(&c.vcek, "vcek", "", "with --attester snp: send this VCEK/VLEK certificate `file` instead of the device's certificate table")
	fs.StringVar(&c.measurement, "measurement", "", "with --attester simulated: MEASUREMENT (simulated-tdx: MRTD) as `hex` (48 bytes)")
	fs.StringVar(&c.hostData, "host-data", "", "with --attester simulated: HOST_DATA as `hex` (32 bytes)")
	fs.BoolVar(&c.debug, "debug", false, "with --attester simulated: set the DEBUG policy bit (simulated-tdx: TD_ATTRIBUTES.DEBUG; the KMS must refuse)")
	fs.StringVar(&c.tokenSource, "token-source", "dev", "token: imds (Azure managed identity), file, static (from $TKMS_TOKEN), dev (--data's issuer)")
	fs.StringVar(&c.imdsURL, "imds-url", "", "IMDS base `URL` (default http://169.254.169.254)")
	fs.StringVar(&c.imdsResource, "imds-resource", "https://management.azure.com/", "the token's `resource` (audience) asked of IMDS")
	fs.StringVar(&c.clientID, "client-id", "", "user-assigned managed identity `id` for IMDS")
	fs.StringVar(&c.tok, "token-file", "", "with --token-source file: the token `file` (re-read when it changes)")
}

// devInfo returns --data's dev.json, or nil if there is none.
func (c *clientFlags) devInfo() *DevInfo {
	info, err := readDevInfo(c.data)
	if err != nil {
		return nil
	}
	return info
}

// config builds the client configuration the flags describe.
func (c *clientFlags) config() (client.KeysConfig, error) {
	cfg := client.KeysConfig{KMS: c.kms, API: client.API(c.api), Wrapping: client.Wrapping(c.wrapping)}
	info := c.devInfo()
	if cfg.KMS == "" {
		switch {
		case envKMS() != "" && c.data == "tkms-dev": // --data not given
			cfg.KMS = envKMS()
		case info == nil:
			return cfg, fmt.Errorf("%w: give --kms URL or set %s (or --data DIR of a running tkms dev)", errUsage, envAddr)
		default:
			cfg.KMS = info.KMSURL
		}
	}
	hc, err := kmsHTTPClient(cfg.KMS, c.kmsCA, 30*time.Second)
	if err != nil {
		return cfg, err
	}
	cfg.HTTPClient = hc
	switch key := c.logKey; {
	case strings.HasPrefix(key, "@"):
		b, err := os.ReadFile(key[1:])
		if err != nil {
			return cfg, fmt.Errorf("--log-key: %w", err)
		}
		cfg.LogKey = strings.TrimSpace(string(b))
	case key != "":
		cfg.LogKey = key
	case info != nil && info.KMSURL == cfg.KMS:
		cfg.LogKey = info.LogPublicKey
	}
	if cfg.Attester, err = c.newAttester(); err != nil {
		return cfg, err
	}
	if cfg.Tokens, err = c.newTokens(); err != nil {
		return cfg, err
	}
	return cfg, nil
}

func (c *clientFlags) newAttester() (client.Attester, error) {
	switch c.attester {
	case "simulated":
		var opts devtee.AttesterOptions
		var err error
		if opts.Measurement, err = hexFlag("measurement", c.measurement, 48, 48); err != nil {
			return nil, err
		}
		if opts.HostData, err = hexFlag("host-data", c.hostData, 32, 32); err != nil {
			return nil, err
		}
		opts.Debug = c.debug
		return devtee.NewAttester(c.data, opts)
	case "simulated-tdx":
		var opts devtee.TDXAttesterOptions
		var err error
		if opts.MRTD, err = hexFlag("measurement", c.measurement, 48, 48); err != nil {
			return nil, err
		}
		opts.Debug = c.debug
		return devtee.NewTDXAttester(c.data, opts)
	case "tdx":
		return client.NewTDXAttester(client.TDXOptions{}), nil
	case "azure-cvm":
		return client.NewAzureCVMAttester(client.AzureCVMOptions{IMDSURL: c.imdsURL}), nil
	case "simulated-az-snp", "simulated-az-tdx":
		return devtee.NewAzureCVMAttester(c.data, devtee.AzureCVMAttesterOptions{TDX: c.attester == "simulated-az-tdx"})
	case "simulated-maa":
		opts := devtee.MAAAttesterOptions{Measurement: c.measurement, Debug: c.debug}
		if _, err := hexFlag("measurement", c.measurement, 48, 48); err != nil {
			return nil, err
		}
		return devtee.NewMAAAttester(c.data, opts)
	case "aci":
		return client.NewACIAttester(client.ACIOptions{SecurityContextDir: c.securityContext})
	case "snp":
		var opts client.SNPOptions
		if c.vcek != "" {
			b, err := os.ReadFile(c.vcek)
			if err != nil {
				return nil, fmt.Errorf("--vcek: %w", err)
			}
			opts.VCEK = b
		}
		return client.NewSNPAttester(opts), nil
	}
	return nil, fmt.Errorf("%w: --attester %q: want aci, snp, tdx, azure-cvm, simulated, simulated-tdx, simulated-maa, simulated-az-snp or simulated-az-tdx", errUsage, c.attester)
}

func (c *clientFlags) newTokens() (client.TokenSource, error) {
	switch c.tokenSource {
	case "dev":
		return devtee.NewTokenSource(c.data, devtee.TokenOptions{})
	case "imds":
		return client.NewIMDSTokenSource(client.IMDSOptions{BaseURL: c.imdsURL, Resource: c.imdsResource, ClientID: c.clientID})
	case "file":
		if c.tok == "" {
			return nil, fmt.Errorf("%w: --token-source file needs --token-file", errUsage)
		}
		return client.NewFileTokenSource(c.tok, client.FileTokenOptions{}), nil
	case "static":
		t := os.Getenv("TKMS_TOKEN")
		if t == "" {
			return nil, errors.New("--token-source static reads the token from $TKMS_TOKEN, which is empty")
		}
		return client.StaticTokenSource(t), nil
	}
	return nil, fmt.Errorf("%w: --token-source %q: want imds, file, static or dev", errUsage, c.tokenSource)
}

// registerKMSCA registers --kms-ca, shared by every command that talks to
// a KMS over HTTPS.
func registerKMSCA(fs *flag.FlagSet, p *string) {
	fs.StringVar(p, "kms-ca", "", "PEM `file` of CA certificates trusted for an https:// KMS URL, besides the system's (a private CA; default $TKMS_CACERT)")
}

// kmsHTTPClient returns the HTTP client for the KMS at kmsURL with the
// given request timeout: with caFile (--kms-ca), one that also trusts the
// CA certificates in that PEM file ($TKMS_CACERT by default); without, the
// system's. An unknown authority's error says how to trust a private CA.
func kmsHTTPClient(kmsURL, caFile string, timeout time.Duration) (*http.Client, error) {
	tc, err := kmsTLSConfig(kmsURL, caFile)
	if err != nil {
		return &http.Client{Timeout: timeout}, err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if tc != nil {
		tr.TLSClientConfig = tc
	}
	return &http.Client{Transport: caHintTransport{tr}, Timeout: timeout}, nil
}

// kmsTLSConfig is the client TLS configuration for the KMS at kmsURL that
// trusts the system's roots and the CA certificates of the PEM file
// caFile, or nil if caFile is "". An empty caFile defaults to
// $TKMS_CACERT for an https:// URL.
func kmsTLSConfig(kmsURL, caFile string) (*tls.Config, error) {
	if caFile == "" {
		if u, err := url.Parse(kmsURL); err != nil || u.Scheme != "https" {
			return nil, nil
		}
		if caFile = os.Getenv(envCACert); caFile == "" {
			return nil, nil
		}
	}
	if u, err := url.Parse(kmsURL); err != nil || u.Scheme != "https" {
		return nil, fmt.Errorf("%w: --kms-ca applies to an https:// KMS URL, not %q", errUsage, kmsURL)
	}
	b, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("--kms-ca: %w", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("--kms-ca %s: no PEM CERTIFICATE block in the file; give the CA certificate(s) of the KMS's TLS certificate", caFile)
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool}, nil
}

// parseOHTTPID parses an OHTTP key id as hex ("11" is 0x11).
func parseOHTTPID(s string) (byte, error) {
	b, err := hex.DecodeString(strings.TrimPrefix(s, "0x"))
	if err != nil || len(b) != 1 {
		return 0, fmt.Errorf("%w: --ohttp-id %q: want one byte in hex, e.g. 11", errUsage, s)
	}
	return b[0], nil
}
