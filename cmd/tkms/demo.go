package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/tkms-dev/tkms/client"
	"github.com/tkms-dev/tkms/client/devtee"
	"github.com/tkms-dev/tkms/internal/attest/simsnp"
	"github.com/tkms-dev/tkms/internal/attest/simtdx"
	"github.com/tkms-dev/tkms/internal/ledger"
	"github.com/tkms-dev/tkms/internal/state"
	"github.com/tkms-dev/tkms/internal/store"
	"github.com/tkms-dev/tkms/internal/translog"
	"github.com/tkms-dev/tkms/ohttp"
)

const demoUsage = `usage: tkms demo [--keep DIR]

Runs the DEPA key release protocol end to end on this machine and narrates
it: a KMS (tkms dev, in a temporary directory), its identity provider, a
service in a SIMULATED TEE that obtains a private key with the client
package, and a client that encrypts a request to the published key, which the
service decrypts. Then the same service with another measurement is denied,
a SIMULATED Intel TDX quote obtains the key, and a debuggable TD is refused.
Exit status 0 only if every step behaved as expected.

`

// cmdDemo implements `tkms demo`.
func cmdDemo(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("demo", stderr)
	fs.Usage = func() { fmt.Fprint(stderr, demoUsage); fs.PrintDefaults(); writeHelpFoot(stderr, "demo") }
	keep := fs.String("keep", "", "keep the KMS's data in `DIR` (default: a temporary directory, removed at the end)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	dir := *keep
	if dir == "" {
		tmp, err := os.MkdirTemp("", "tkms-demo-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		dir = tmp
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	d := &demo{n: &narrator{w: stdout}, data: filepath.Join(dir, "kms")}
	err := d.run(ctx)
	if d.kms != nil {
		d.kms.Process.Signal(syscall.SIGINT)
		d.kms.Wait()
	}
	if err != nil {
		if d.kmsLog.Len() > 0 {
			fmt.Fprintf(stderr, "tkms demo: the KMS's log:\n%s", d.kmsLog.String())
		}
		return fmt.Errorf("demo failed: %w", err)
	}
	fmt.Fprintln(stdout, "\ntkms demo: every step behaved as expected")
	return nil
}

type demo struct {
	n      *narrator
	data   string
	kms    *exec.Cmd
	kmsLog bytes.Buffer
	url    string
	info   DevInfo
	hc     *http.Client
}

var demoListening = regexp.MustCompile(`tkms dev: listening on (http://\S+)`)

// startKMS starts `tkms dev` on d.data, on a free loopback port.
func (d *demo) startKMS(ctx context.Context) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	args := []string{"dev", "--listen", "127.0.0.1:0", "--data", d.data}
	if _, err := os.Stat(filepath.Join(d.data, store.FileName)); errors.Is(err, os.ErrNotExist) {
		// A new KMS (a kept one has the policy on its ledger already).
		pol := filepath.Join(filepath.Dir(d.data), "release-policy.json")
		if err := os.WriteFile(pol, demoReleasePolicy(), 0o600); err != nil {
			return err
		}
		args = append(args, "--release-policy", pol)
	}
	d.kms = exec.Command(exe, args...)
	d.kms.Stderr = &d.kmsLog
	out, err := d.kms.StdoutPipe()
	if err != nil {
		return err
	}
	if err := d.kms.Start(); err != nil {
		return err
	}
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if m := demoListening.FindStringSubmatch(sc.Text()); m != nil {
				found <- m[1]
			}
		}
		close(found)
	}()
	select {
	case u, ok := <-found:
		if !ok {
			return errors.New("tkms dev exited before listening")
		}
		d.url = u
	case <-time.After(30 * time.Second):
		return errors.New("tkms dev did not listen within 30 s")
	case <-ctx.Done():
		return ctx.Err()
	}
	info, err := readDevInfo(d.data)
	if err != nil {
		return err
	}
	d.info = *info
	return nil
}

func (d *demo) get(ctx context.Context, path string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, d.url+path, nil)
	if err != nil {
		return err
	}
	resp, err := d.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s: %s", path, resp.Status, b)
	}
	if p, ok := v.(*[]byte); ok {
		*p = b
		return nil
	}
	return json.Unmarshal(b, v)
}

func (d *demo) run(ctx context.Context) error {
	d.hc = &http.Client{Timeout: 30 * time.Second}
	n := d.n
	fmt.Fprintln(n.w, "tkms demo: the DEPA key release protocol, end to end on this machine.")
	fmt.Fprintln(n.w, "tkms demo: the TEE is SIMULATED (tkms's fake AMD chain): this shows the protocol, it protects nothing.")

	n.step("1.", "the KMS generates HPKE key pairs, each with a version (kid)")
	if err := d.startKMS(ctx); err != nil {
		return err
	}
	n.say("KMS: tkms dev at %s (ledger in %s)", d.url, d.data)
	var pub struct {
		Kid     string `json:"kid"`
		ID      int    `json:"id"`
		Receipt string `json:"receipt"`
	}
	if err := d.get(ctx, "/app/pubkey", &pub); err != nil {
		return err
	}
	verifier, err := translog.NewVerifier(d.info.LogPublicKey)
	if err != nil {
		return err
	}
	rc, err := translog.ParseReceipt([]byte(pub.Receipt))
	if err != nil {
		return fmt.Errorf("step 1: %w", err)
	}
	leaf, cp, err := rc.Verify(verifier)
	if err != nil {
		return fmt.Errorf("step 1: the key's receipt: %w", err)
	}
	var kc state.KeyCreated
	if err := json.Unmarshal(leaf.Body, &kc); err != nil || leaf.Type != ledger.TypeKeyCreated || kc.Kid != pub.Kid {
		return fmt.Errorf("step 1: the receipt of %s proves %s %s", pub.Kid, leaf.Type, kc.Kid)
	}
	n.say("primary key %s, id %d, suite %s", pub.Kid, pub.ID, kc.Suite)
	n.say("its log receipt verifies: key.created at ledger seq %d, in checkpoint %d of log %s", leaf.Seq, cp.Size, cp.Origin)
	n.say("(the receipt binds this kid to this public key; anyone can check it with the log key)")

	// The service: the client package, with narrating wrappers.
	sim, err := devtee.NewAttester(d.data, devtee.AttesterOptions{})
	if err != nil {
		return err
	}
	att := &narratingAttester{Attester: sim, n: n}
	tokens, err := devtee.NewTokenSource(d.data, devtee.TokenOptions{})
	if err != nil {
		return err
	}
	quiet := slog.New(slog.DiscardHandler)
	keys, err := client.NewKeys(client.KeysConfig{
		KMS: d.url, Attester: att, Tokens: &narratingTokens{TokenSource: tokens, n: n},
		LogKey: d.info.LogPublicKey, Logger: quiet, MaxAttempts: 2,
	})
	if err != nil {
		return err
	}
	key, err := keys.ByKID(ctx, pub.Kid)
	if err != nil {
		return fmt.Errorf("steps 2-10: %w", err)
	}
	n.say("POST %s/v1/keys/%s/release", d.url, key.Kid)

	var rel state.KeyReleased
	seq, err := d.lastEntry(ctx, ledger.TypeKeyReleased, &rel)
	if err != nil {
		return err
	}
	n.step("7.", "the KMS authenticated the token (signature, issuer, audience, expiry, claim policy)")
	n.say("caller: iss %s, oid %s", rel.Issuer, rel.Identity)
	n.step("8.", "the KMS verified the evidence and evaluated the key release policy")
	var policy json.RawMessage
	if err := d.get(ctx, "/app/keyReleasePolicy", &policy); err != nil {
		return err
	}
	n.say("evidence: %s (simulated: %v), report SHA-256 %s", rel.EvidenceType, rel.Simulated, shortHex(rel.ReportSHA256))
	n.say("policy in force: ledger seq %d, sha256 %s: %s", rel.PolicySeq, shortHex(rel.PolicySHA256), compactJSON(policy))
	for _, c := range []string{"x-ms-sevsnpvm-launchmeasurement", "x-ms-sevsnpvm-is-debuggable", "x-ms-sevsnpvm-hostdata"} {
		n.say("claim %s = %v", c, rel.Claims[c])
	}
	n.step("9-10.", "the KMS wrapped the private key to WK+ and recorded the release before answering")
	n.say("ledger entry seq %d: key.released of %v to %s via %s", seq, rel.Kids, rel.Identity, rel.API)
	n.say("it records wrapping_key_sha256 %s", shortHex(rel.WrappingKeySHA256))
	rd := att.reportData()
	if rel.WrappingKeySHA256 != fmt.Sprintf("%x", rd[:32]) {
		return fmt.Errorf("step 10: the ledger records wrapping key %s, the report bound %x", rel.WrappingKeySHA256, rd[:32])
	}
	n.say("= REPORT_DATA[0:32] of step 3: the key went to the wrapping key the TEE attested")
	if st := keys.State(); st.ReceiptsVerified == 0 {
		return errors.New("step 10: the release's receipt was not verified")
	}
	n.say("the answer's log receipt verified against the log key")

	n.step("11.", "the service unwraps the key and decrypts client requests")
	n.say("unwrapped %s (suite %s); its public key matches the published one", key.Kid, key.Suite)
	var configs []byte
	if err := d.get(ctx, "/v1/keys/ohttp", &configs); err != nil {
		return err
	}
	cfgs, err := ohttp.ParseKeyConfigs(configs)
	if err != nil {
		return err
	}
	var kcfg *ohttp.KeyConfig
	for i := range cfgs {
		if cfgs[i].ID == key.OHTTPKeyID {
			kcfg = &cfgs[i]
		}
	}
	if kcfg == nil || len(kcfg.Suites) == 0 {
		return fmt.Errorf("step 11: GET /v1/keys/ohttp has no configuration for key id 0x%02x", key.OHTTPKeyID)
	}
	n.say("a client fetched GET /v1/keys/ohttp: key id 0x%02x, KEM 0x%04x", kcfg.ID, kcfg.KEM)
	question := []byte(`{"interest_group":"cycling","bid_request":"demo"}`)
	msg, cctx, err := ohttp.EncapsulateRequest(*kcfg, kcfg.Suites[0], ohttp.BiddingAuction, question)
	if err != nil {
		return err
	}
	n.say("client → service: a Bidding & Auction encapsulated request, %d bytes", len(msg))
	gw := &ohttp.Gateway{Keys: keys}
	plain, gctx, err := gw.DecapsulateRequest(ctx, ohttp.BiddingAuction, msg)
	if err != nil {
		return fmt.Errorf("step 11: %w", err)
	}
	if !bytes.Equal(plain, question) {
		return errors.New("step 11: the service decrypted something else")
	}
	n.say("service decrypted: %s", plain)
	answer := []byte(`{"bid":1.25,"render":"https://ads.example/creative"}`)
	resp, err := gctx.EncapsulateResponse(answer)
	if err != nil {
		return err
	}
	got, err := cctx.DecapsulateResponse(resp)
	if err != nil || !bytes.Equal(got, answer) {
		return fmt.Errorf("step 11: the client could not read the response: %v", err)
	}
	n.say("service → client: encapsulated response, %d bytes; the client decrypted: %s", len(resp), got)

	n.step("denial.", "the same service running other code (another measurement) asks for the key")
	other := []byte(strings.Repeat("X", 48))
	simOther, err := devtee.NewAttester(d.data, devtee.AttesterOptions{Measurement: other})
	if err != nil {
		return err
	}
	bad, err := client.NewKeys(client.KeysConfig{KMS: d.url, Attester: simOther, Tokens: tokens, LogKey: d.info.LogPublicKey, Logger: quiet, MaxAttempts: 1})
	if err != nil {
		return err
	}
	_, err = bad.ByKID(ctx, pub.Kid)
	var kerr *client.KMSError
	if !errors.As(err, &kerr) || kerr.Code != "POLICY_DENIED" || !strings.Contains(kerr.Message, measurementHex(other)) {
		return fmt.Errorf("denial: want POLICY_DENIED naming the measurement, got %v", err)
	}
	n.say("MEASUREMENT = %s", shortHex(measurementHex(other)))
	n.say("the KMS answered %d %s: %s", kerr.Status, kerr.Code, kerr.Message)
	var den state.ReleaseDenied
	dseq, err := d.lastEntry(ctx, ledger.TypeReleaseDenied, &den)
	if err != nil || den.Code != kerr.Code || den.Identity != rel.Identity {
		return fmt.Errorf("denial: the ledger does not record it (%v, %+v)", err, den)
	}
	n.say("nothing was released; the ledger records the refusal: seq %d release.denied %s for %s", dseq, den.Code, den.Identity)

	n.step("formats.", "the same door verifies Intel TDX quotes (and Azure CVM evidence, Azure Attestation tokens): a TD of the approved MRTD obtains the key, a debuggable one is refused before any policy")
	td, err := devtee.NewTDXAttester(d.data, devtee.TDXAttesterOptions{})
	if err != nil {
		return err
	}
	tdKeys, err := client.NewKeys(client.KeysConfig{KMS: d.url, Attester: td, Tokens: tokens, LogKey: d.info.LogPublicKey, Logger: quiet, MaxAttempts: 1})
	if err != nil {
		return err
	}
	tdKey, err := tdKeys.ByKID(ctx, pub.Kid)
	if err != nil {
		return fmt.Errorf("formats: the simulated TD was refused the key: %w", err)
	}
	if !bytes.Equal(tdKey.PublicKey, key.PublicKey) || !bytes.Equal(tdKey.PrivateKey.PublicKey().Bytes(), key.PublicKey) {
		return errors.New("formats: the TD obtained another key than the service")
	}
	var tdRel state.KeyReleased
	tdSeq, err := d.lastEntry(ctx, ledger.TypeKeyReleased, &tdRel)
	if err != nil || tdRel.EvidenceType != "tdx" {
		return fmt.Errorf("formats: the ledger does not record the TD's release (%v, %q)", err, tdRel.EvidenceType)
	}
	n.say("a simulated TDX quote (TD_ATTRIBUTES.DEBUG clear) obtained %s: ledger seq %d key.released, evidence %s", tdKey.Kid, tdSeq, tdRel.EvidenceType)
	n.say("claim tdx_mrtd = %v, the policy's tdx branch; tdx_td_attributes_debug = %v", tdRel.Claims["tdx_mrtd"], tdRel.Claims["tdx_td_attributes_debug"])
	debugTD, err := devtee.NewTDXAttester(d.data, devtee.TDXAttesterOptions{Debug: true})
	if err != nil {
		return err
	}
	tdxKeys, err := client.NewKeys(client.KeysConfig{KMS: d.url, Attester: debugTD, Tokens: tokens, LogKey: d.info.LogPublicKey, Logger: quiet, MaxAttempts: 1})
	if err != nil {
		return err
	}
	_, err = tdxKeys.ByKID(ctx, pub.Kid)
	if !errors.As(err, &kerr) || !strings.Contains(kerr.Code+" "+kerr.Message, "TDX_DEBUG") {
		return fmt.Errorf("formats: want the debug TD refused with TDX_DEBUG, got %v", err)
	}
	n.say("a simulated TDX quote with TD_ATTRIBUTES.DEBUG set: the KMS answered %d %s: %s", kerr.Status, kerr.Code, kerr.Message)
	return nil
}

// demoReleasePolicy is the key release policy of the demo's KMS (SKR
// grammar, docs/release.md): the simulated TEE's ACI evidence with its
// default measurement, or its Intel TDX quote with its default MRTD; debug
// off in both.
func demoReleasePolicy() []byte {
	b, _ := json.Marshal(map[string]any{"version": "1.0.0", "anyOf": []any{
		map[string]any{"authority": "snp-aci", "allOf": []any{
			map[string]any{"claim": "tkms-evidence-type", "equals": "snp-aci"},
			map[string]any{"claim": "x-ms-sevsnpvm-is-debuggable", "equals": false},
			map[string]any{"claim": "x-ms-sevsnpvm-launchmeasurement", "equals": hex.EncodeToString([]byte(simsnp.DefaultMeasurement))},
		}},
		map[string]any{"authority": "tdx", "allOf": []any{
			map[string]any{"claim": "tkms-evidence-type", "equals": "tdx"},
			map[string]any{"claim": "tdx_td_attributes_debug", "equals": false},
			map[string]any{"claim": "tdx_mrtd", "equals": hex.EncodeToString([]byte(simtdx.DefaultMRTD))},
		}},
	}})
	return b
}

// lastEntry finds the newest entry of type typ among the last entries of
// the log, through the public read API, and decodes its body into v.
func (d *demo) lastEntry(ctx context.Context, typ ledger.Type, v any) (uint64, error) {
	var cpText []byte
	if err := d.get(ctx, "/log/checkpoint", &cpText); err != nil {
		return 0, err
	}
	lines := strings.SplitN(string(cpText), "\n", 3)
	if len(lines) < 3 {
		return 0, errors.New("malformed checkpoint")
	}
	size, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil {
		return 0, err
	}
	for i := size - 1; i >= 0 && i >= size-20; i-- {
		var e struct {
			Seq  uint64          `json:"seq"`
			Type string          `json:"type"`
			Body json.RawMessage `json:"body"`
		}
		if err := d.get(ctx, fmt.Sprintf("/v1/log/entries/%d", i), &e); err != nil {
			return 0, err
		}
		if e.Type == string(typ) {
			return e.Seq, json.Unmarshal(e.Body, v)
		}
	}
	return 0, fmt.Errorf("no %s entry at the end of the log", typ)
}

func compactJSON(b []byte) string {
	var buf bytes.Buffer
	if json.Compact(&buf, b) != nil {
		return string(b)
	}
	return buf.String()
}
