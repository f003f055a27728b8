package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/tkms-dev/tkms/api"
	"github.com/tkms-dev/tkms/internal/gov"
	"github.com/tkms-dev/tkms/internal/keys"
	"github.com/tkms-dev/tkms/internal/recovery"
)

// Members' recovery commands (docs/recovery.md): `tkms gov keygen` makes a
// member's signing and encryption keys, `tkms gov encryption-key` a new
// encryption key for an existing member, and `tkms gov share` opens the
// member's recovery share locally and submits it, signed, to a recovering
// node. The encryption private key never leaves the member's machine.

// encryptionKeyFile is a member's encryption key file (JSON, mode 0600).
type encryptionKeyFile struct {
	gov.EncryptionKey
	PrivateKey []byte `json:"private_key"` // RFC 9180 SerializePrivateKey, base64
}

func newEncryptionKey(suiteName string) (*encryptionKeyFile, error) {
	k := &encryptionKeyFile{EncryptionKey: gov.EncryptionKey{Suite: suiteName}}
	s, err := k.ParsedSuite()
	if err != nil {
		return nil, err
	}
	if k.PrivateKey, k.PublicKey, err = s.Generate(); err != nil {
		return nil, err
	}
	return k, nil
}

func writeEncryptionKey(path string, k *encryptionKeyFile) error {
	b, _ := json.MarshalIndent(k, "", "  ")
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("encryption key: %w", err)
	}
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// readEncryptionKey reads a member's encryption key file, which only its
// owner may read.
func readEncryptionKey(path string) (*encryptionKeyFile, error) {
	b, err := readOwnerOnly(path, "encryption key")
	if err != nil {
		return nil, err
	}
	defer clear(b)
	var k encryptionKeyFile
	if err := json.Unmarshal(b, &k); err != nil {
		return nil, fmt.Errorf("encryption key %s: %w", path, err)
	}
	if err := k.Check(); err != nil {
		return nil, fmt.Errorf("encryption key %s: %w", path, err)
	}
	return &k, nil
}

// readOwnerOnly reads the file of a member's private key (what names it
// in messages), which only its owner may read.
func readOwnerOnly(path, what string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%s %s: permissions %v are too open; run chmod 600 %s", what, path, fi.Mode().Perm(), path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return b, nil
}

// cmdGovKeygen makes a new member's keys: PREFIX.key (signing, PKCS#8
// PEM), PREFIX.pub and PREFIX.enc (encryption key), and prints the
// add_member action that adds it.
func cmdGovKeygen(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("gov keygen", stderr)
	out := fs.String("out", "", "`PREFIX` of the files to write: PREFIX.key, PREFIX.pub, PREFIX.enc")
	name := fs.String("name", "", "the member's `name`")
	suite := fs.String("suite", keys.X25519.Name, "the encryption key's `suite`: x25519 or mlkem768-x25519")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *out == "" || *name == "" {
		return fmt.Errorf("%w: give --out PREFIX and --name NAME", errUsage)
	}
	ek, err := newEncryptionKey(*suite)
	if err != nil {
		return err
	}
	priv, pub, err := gov.GenerateDevKey()
	if err != nil {
		return err
	}
	m, err := gov.NewMember(*name, string(pub), "")
	if err != nil {
		return err
	}
	m.EncryptionKey = &ek.EncryptionKey
	for _, f := range []struct {
		path string
		b    []byte
	}{{*out + ".key", priv}, {*out + ".pub", pub}} {
		if _, err := os.Stat(f.path); err == nil {
			return fmt.Errorf("%s exists: choose another --out", f.path)
		}
		if err := writeFileAtomic(f.path, f.b, 0o600); err != nil {
			return err
		}
	}
	if err := writeEncryptionKey(*out+".enc", ek); err != nil {
		return err
	}
	args2, _ := json.Marshal(m)
	return json.NewEncoder(stdout).Encode(gov.Action{Name: gov.ActAddMember, Args: args2})
}

// cmdGovEncryptionKey makes a new encryption key for a member and prints
// the set_member_encryption_key action that registers it.
func cmdGovEncryptionKey(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("gov encryption-key", stderr)
	out := fs.String("out", "", "encryption key `file` to write (mode 0600)")
	member := fs.String("member-id", "", "the member's `id`")
	suite := fs.String("suite", keys.X25519.Name, "the key's `suite`: x25519 or mlkem768-x25519")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *out == "" || *member == "" {
		return fmt.Errorf("%w: give --out FILE and --member-id ID", errUsage)
	}
	ek, err := newEncryptionKey(*suite)
	if err != nil {
		return err
	}
	a, _ := json.Marshal(gov.MemberEncryptionKeyArgs{MemberID: *member, EncryptionKey: &ek.EncryptionKey})
	act := gov.Action{Name: gov.ActSetMemberEncryptionKey, Args: a}
	if err := gov.ValidateAction(act); err != nil {
		return err
	}
	if err := writeEncryptionKey(*out, ek); err != nil {
		return err
	}
	return json.NewEncoder(stdout).Encode(act)
}

// cmdGovShare fetches the member's sealed share from a recovering node,
// opens it with the member's encryption key and submits it signed for
// the node's recovery.
func cmdGovShare(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("gov share", stderr)
	var g govFlags
	g.register(fs, true)
	encKey := fs.String("encryption-key", "", "the member's encryption key `file` (as tkms gov keygen or encryption-key wrote it); it is read here and never sent")
	asJSON := fs.Bool("json", false, "print the node's JSON answer, with a top-level result field: recovered once the threshold is reached, else accepted")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *encKey == "" {
		return fmt.Errorf("%w: give --encryption-key FILE", errUsage)
	}
	base, hc, err := g.connect()
	if err != nil {
		return err
	}
	signer, err := g.signer()
	if err != nil {
		return err
	}
	ek, err := readEncryptionKey(*encKey)
	if err != nil {
		return err
	}
	defer clear(ek.PrivateKey)
	raw, err := getJSON(hc, base+"/v1/recovery")
	if err != nil {
		return err
	}
	var st api.RecoveryStatus
	if err := json.Unmarshal(raw, &st); err != nil {
		return fmt.Errorf("GET /v1/recovery: %w", err)
	}
	raw, err = getJSON(hc, base+"/v1/recovery/shares")
	if err != nil {
		return err
	}
	var sh recovery.Shares
	if err := json.Unmarshal(raw, &sh); err != nil {
		return fmt.Errorf("GET /v1/recovery/shares: %w", err)
	}
	if err := sh.Check(); err != nil {
		return fmt.Errorf("GET /v1/recovery/shares: %w", err)
	}
	fmt.Fprintf(stderr, "tkms gov share: recovery %s of log %s (%d entries, root %s); shares of entry %d, threshold %d\n",
		st.RecoveryID, st.LogOrigin, st.TreeSize, st.TreeRoot, st.SharesSeq, st.Threshold)
	share, err := sh.OpenShare(signer.MemberID(), ek.EncryptionKey, ek.PrivateKey)
	if err != nil {
		return err
	}
	defer clear(share)
	payload, _ := json.Marshal(api.RecoveryShare{SharesSeq: st.SharesSeq, KeyHash: ek.Hash(), Share: share})
	defer clear(payload)
	msg, err := signer.SignRecoveryShare(st.RecoveryID, payload, time.Now())
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var res api.RecoveryShareResult
	if err := postCOSE(ctx, hc, base+"/v1/recovery/share", msg, &res); err != nil {
		return err
	}
	if *asJSON {
		result := "accepted"
		if res.Recovered {
			result = "recovered"
		}
		return writeResultJSON(stdout, result, res)
	}
	if res.Recovered {
		fmt.Fprintf(stdout, "share accepted: %d of %d; the service is recovered\n", res.Received, res.Threshold)
	} else {
		fmt.Fprintf(stdout, "share accepted: %d of %d\n", res.Received, res.Threshold)
	}
	return nil
}
