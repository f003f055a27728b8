package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"text/tabwriter"
	"time"

	"github.com/tkms-dev/tkms/api"
	"github.com/tkms-dev/tkms/internal/gov"
	"github.com/tkms-dev/tkms/internal/httpapi"
	"github.com/tkms-dev/tkms/internal/state"
	"github.com/tkms-dev/tkms/internal/store"
)

func cmdKeys(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: want 'keys list' or 'keys rotate'", errUsage)
	}
	switch args[0] {
	case "list":
		return cmdKeysList(args[1:], stdout, stderr)
	case "rotate":
		return cmdKeysRotate(args[1:], stdout, stderr)
	case "-h", "--help", "help":
		writeGroupHelp(stdout, "keys")
		return nil
	}
	return fmt.Errorf("%w: unknown subcommand %q; want list or rotate", errUsage, args[0])
}

func cmdKeysList(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("keys list", stderr)
	url := fs.String("kms", "", "base `URL` of a running tkms (reads GET /v1/keys?all=true; default $TKMS_ADDR without --data)")
	registerURLAlias(fs, url)
	dataDir := fs.String("data", "", "data `directory` of a stopped tkms (reads the ledger directly)")
	asJSON := fs.Bool("json", false, "print JSON, with a top-level result field, instead of a table")
	var kmsCA string
	registerKMSCA(fs, &kmsCA)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *url == "" && *dataDir == "" {
		*url = envKMS()
	}
	if (*url == "") == (*dataDir == "") {
		return fmt.Errorf("%w: give exactly one of --kms and --data (or set %s)", errUsage, envAddr)
	}
	var list api.V1Keys
	var err error
	if *url != "" {
		list, err = fetchKeys(*url, kmsCA)
	} else {
		list, err = readKeys(*dataDir)
	}
	if err != nil {
		return err
	}
	if *asJSON {
		return writeResultJSON(stdout, "ok", list)
	}
	printKeys(stdout, list)
	return nil
}

func fetchKeys(base, kmsCA string) (api.V1Keys, error) {
	client, err := kmsHTTPClient(base, kmsCA, 0) // getJSON's context bounds the request
	if err != nil {
		return api.V1Keys{}, err
	}
	return fetchKeysWith(client, base)
}

// readKeys replays the ledger of a data directory read-only. Only public
// parts are read: no master key is needed.
func readKeys(dir string) (api.V1Keys, error) {
	s, err := store.Open(dir, store.Options{ReadOnly: true})
	if errors.Is(err, store.ErrInUse) {
		return api.V1Keys{}, fmt.Errorf("%w; while it runs, use --kms URL", err)
	}
	if err != nil {
		return api.V1Keys{}, err
	}
	defer s.Close()
	st := state.New()
	if err := st.Replay(s.Scan, nil); err != nil {
		return api.V1Keys{}, err
	}
	return httpapi.AllKeys(st, time.Now()), nil
}

func printKeys(w io.Writer, list api.V1Keys) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KID\tID\tSUITE\tSTATE\tCREATED\tPUBLISHED\tRETIRES\tRELEASED UNTIL")
	f := func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05Z") }
	for _, k := range list.Keys {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\n", k.Kid, k.ID, k.Suite, k.State, f(k.Created), f(k.NotBefore), f(k.NotAfter), f(k.ReleaseUntil))
	}
	tw.Flush()
	if len(list.Keys) == 0 {
		fmt.Fprintln(w, "(no keys)")
	}
}

func cmdKeysRotate(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("keys rotate", stderr)
	tokenFile := fs.String("token-file", "", "`file` holding the operator token (or set TKMS_OPERATOR_TOKEN); for a KMS without governance")
	var g govFlags
	g.register(fs, true)
	registerURLAlias(fs, &g.kms)
	reason := fs.String("reason", "", "with a member key: the `reason` recorded with the proposal")
	asJSON := fs.Bool("json", false, "print JSON with a top-level result field: created (and the key) or pending (and the proposal)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	base, err := g.kmsURL()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/app/refresh", nil)
	if err != nil {
		return err
	}
	member := g.key != "" || g.signCommand != "" || (g.data != "" && *tokenFile == "") || (os.Getenv(envMemberKey) != "" && *tokenFile == "")
	devToken := ""
	if member && g.key == "" && g.signCommand == "" {
		// A tkms dev directory from before governance has no member:
		// its operator token rotates.
		if info, err := readDevInfo(g.data); err == nil && info.MemberKey == "" {
			member, devToken = false, info.OperatorToken
		}
	}
	var signer *gov.Signer
	if member {
		// A governed KMS rotates on a proposal of rotate_key_now, signed
		// by a member, that the constitution accepts.
		if signer, err = g.signer(); err != nil {
			return err
		}
		args := []byte("{}")
		if *reason != "" {
			args, _ = json.Marshal(gov.RotateArgs{Reason: *reason})
		}
		msg, err := signer.SignProposal([]gov.Action{{Name: "rotate_key_now", Args: args}}, time.Now())
		if err != nil {
			return fmt.Errorf("signing the proposal: %w", err)
		}
		req.Body = io.NopCloser(bytes.NewReader(msg))
		req.ContentLength = int64(len(msg))
		req.Header.Set("Content-Type", "application/cose")
	} else {
		token := os.Getenv("TKMS_OPERATOR_TOKEN")
		if devToken != "" {
			token = devToken
		}
		if *tokenFile != "" {
			if token, err = readSecretFile(*tokenFile); err != nil {
				return err
			}
		}
		if token == "" {
			return fmt.Errorf("%w: give a member's key (--key FILE) for a governed KMS, or the operator token (--token-file FILE or TKMS_OPERATOR_TOKEN) for one without governance", errUsage)
		}
		req.Header.Set("Authorization", "Bearer "+token)
	}
	client, err := g.client(base)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	switch {
	case resp.StatusCode == http.StatusAccepted && member:
		var st api.GovResult
		if err := json.Unmarshal(body, &st); err != nil {
			return fmt.Errorf("POST /app/refresh: %w", err)
		}
		return reportPendingRotation(client, stdout, base, g, st, *asJSON)
	case resp.StatusCode != http.StatusOK:
		return apiError("POST /app/refresh", resp, body)
	}
	var item struct {
		Kid string `json:"kid"`
		ID  int    `json:"id"`
	}
	if err := json.Unmarshal(body, &item); err != nil {
		return err
	}
	return reportRotation(client, stdout, base, item.Kid, item.ID, *asJSON)
}
