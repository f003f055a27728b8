package main

// The transparency explorer (/explorer/, internal/explorer) in headless
// Chromium against a real `tkms dev` with rotations, releases, denials and
// a governance vote, behind a test reverse proxy that can tamper with an
// entry, forge the checkpoint or roll the log back.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/tkms-dev/tkms/internal/explorer/explorertest"
	"github.com/tkms-dev/tkms/internal/gov"
	"github.com/tkms-dev/tkms/internal/ledger"
	"github.com/tkms-dev/tkms/internal/translog"
	"golang.org/x/mod/sumdb/tlog"
)

// What the test proxy serves.
const (
	proxyHonest   int32 = iota
	proxyTamper         // one key.released entry changed in its entry bundle
	proxyForge          // the checkpoint's root changed, its signature kept
	proxyRollback       // an older (validly signed) checkpoint
)

// explorerProxy is a reverse proxy in front of tkms that misbehaves on
// demand.
type explorerProxy struct {
	mode    atomic.Int32
	oldCP   []byte // served in proxyRollback mode
	tamperd atomic.Int64
}

func (x *explorerProxy) modify(resp *http.Response) error {
	path := resp.Request.URL.Path
	mode := x.mode.Load()
	if resp.StatusCode != http.StatusOK || mode == proxyHonest {
		return nil
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return err
	}
	switch {
	case mode == proxyTamper && strings.HasPrefix(path, "/log/tile/entries/"):
		body = x.tamper(body, path)
	case mode == proxyForge && path == "/log/checkpoint":
		lines := strings.SplitN(string(body), "\n", 4)
		root := []byte(lines[2])
		// Another base64 character, so another root (flipping a bit could
		// make a character outside the alphabet: a malformed checkpoint,
		// not a forged one).
		if root[3] == 'A' {
			root[3] = 'B'
		} else {
			root[3] = 'A'
		}
		lines[2] = string(root)
		body = []byte(strings.Join(lines, "\n"))
	case mode == proxyRollback && path == "/log/checkpoint":
		body = x.oldCP
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	resp.ContentLength = int64(len(body))
	resp.Header.Set("Content-Length", strconv.Itoa(len(body)))
	return nil
}

// tamper changes one character of the caller's object id in the first
// key.released entry of an entry bundle, keeping its length.
func (x *explorerProxy) tamper(bundle []byte, path string) []byte {
	leaves, err := translog.SplitBundle(bundle)
	if err != nil {
		return bundle
	}
	t, _ := translog.ParseTilePath(strings.TrimPrefix(path, "/log/"))
	var out []byte
	done := false
	for i, l := range leaves {
		l = bytes.Clone(l)
		if e, err := ledger.UnmarshalLeaf(l); err == nil && e.Type == ledger.TypeKeyReleased && !done {
			if j := bytes.Index(l, []byte(`"oid":"`)); j >= 0 {
				l[j+len(`"oid":"`)] ^= 1
				done = true
				x.tamperd.Store(t.N*256 + int64(i))
			}
		}
		out, _ = translog.AppendBundleEntry(out, l)
	}
	return out
}

// ledgerLeaves reads every leaf of the log from tkms, as the explorer
// does, through the entry bundles.
func ledgerLeaves(t *testing.T, base string) []*ledger.Leaf {
	t.Helper()
	size := logSize(t, base)
	var out []*ledger.Leaf
	for n := int64(0); n*256 < size; n++ {
		w := min(256, size-n*256)
		resp, body := do(t, http.MethodGet, base+"/log/"+translog.TilePath(tlog.Tile{H: 8, L: -1, N: n, W: int(w)}), nil)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("entry bundle %d: %s", n, resp.Status)
		}
		leaves, err := translog.SplitBundle(body)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range leaves {
			e, err := ledger.UnmarshalLeaf(l)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, e)
		}
	}
	return out
}

// TestExplorer: every view of the explorer shows what the ledger holds,
// verified; a tampered entry, a forged checkpoint and a rolled-back log
// each turn their item red; the page asks nothing of another origin.
func TestExplorer(t *testing.T) {
	ctx := explorertest.Browser(t)
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	hostData, hostData2 := strings.Repeat("ab", 32), strings.Repeat("cd", 32)
	cfg := filepath.Join(dir, "tkms.json")
	writeJSONFile(t, cfg, map[string]any{"key_release_policy": map[string]any{"claims": map[string]any{"x-ms-sevsnpvm-hostdata": []string{hostData}}}})
	p := startDev(t, data, "--config", cfg)

	// Rotations (governance proposals of the dev member, 1 of 1), releases
	// and denials.
	refresh(t, p.URL, p.Token)
	refresh(t, p.URL, p.Token)
	unwrapRelease(t, p, data, hostData)
	if code, out := unwrap(t, p, data, hostData2); code == http.StatusOK {
		t.Fatalf("release to host data outside the policy: %d %s", code, out)
	}
	// A second member and a constitution under which a release policy
	// change needs both (each accepted at once under the dev's 1 of 1),
	// then a policy change proposed by one, approved by the other's ballot.
	a := devSigner(t, p)
	b, bPub := newTestMember(t)
	addMember, _ := json.Marshal(map[string]string{"name": "sro-b", "signing_key": string(bPub)})
	var constitution map[string]any
	c, _ := json.Marshal(gov.DevConstitution())
	json.Unmarshal(c, &constitution)
	constitution["rules"].(map[string]any)["set_key_release_policy"] = map[string]any{"approvals": "all"}
	setConstitution, _ := json.Marshal(constitution)
	for _, act := range []gov.Action{{Name: "add_member", Args: addMember}, {Name: "set_constitution", Args: setConstitution}} {
		msg, err := a.SignProposal([]gov.Action{act}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if resp, body := postCOSETest(t, p.URL+"/v1/gov/proposals", msg); resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"accepted"`) {
			t.Fatalf("%s: %s %s", act.Name, resp.Status, body)
		}
	}
	oldCP := func() []byte { _, b := do(t, http.MethodGet, p.URL+"/log/checkpoint", nil); return b }()
	args, _ := json.Marshal(map[string]any{"policy": map[string]any{"claims": map[string]any{"x-ms-sevsnpvm-hostdata": []string{hostData, hostData2}}}})
	msg, err := a.SignProposal([]gov.Action{{Name: "set_key_release_policy", Args: args}}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	resp, body := postCOSETest(t, p.URL+"/v1/gov/proposals", msg)
	var prop GovResultWire
	if err := json.Unmarshal(body, &prop); err != nil || resp.StatusCode != http.StatusOK || prop.State != "open" {
		t.Fatalf("set_key_release_policy: %s %s", resp.Status, body)
	}
	ballot, err := b.SignBallot(prop.ID, true, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if resp, body := postCOSETest(t, p.URL+"/v1/gov/proposals/"+prop.ID+"/ballots", ballot); resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"accepted"`) {
		t.Fatalf("ballot: %s %s", resp.Status, body)
	}
	unwrapRelease(t, p, data, hostData2) // allowed now
	if code, out := unwrap(t, p, data, strings.Repeat("ef", 32)); code == http.StatusOK {
		t.Fatalf("release to host data outside the policy: %d %s", code, out)
	}

	// tkms serves the page, and answers what is not in it in its own
	// error shape.
	if resp, body := do(t, http.MethodGet, p.URL+"/explorer", nil); resp.StatusCode != http.StatusOK || !strings.Contains(resp.Header.Get("Content-Security-Policy"), "connect-src 'self'") || !strings.Contains(string(body), "explorer.js") {
		t.Errorf("GET /explorer: %s %v", resp.Status, resp.Header)
	}
	if resp, body := do(t, http.MethodGet, p.URL+"/explorer/nope.js", nil); resp.StatusCode != http.StatusNotFound || resp.Header.Get("x-ms-kms-error-code") != "NOT_FOUND" || !strings.Contains(string(body), `"code":"NOT_FOUND"`) {
		t.Errorf("GET /explorer/nope.js: %s %v %s", resp.Status, resp.Header, body)
	}

	// What the ledger holds.
	leaves := ledgerLeaves(t, p.URL)
	var kids, denialCodes, proposals, ballots []string
	var releasedKids, releasedOIDs, policySeqs []string
	releases := 0
	for _, l := range leaves {
		var body map[string]any
		json.Unmarshal(l.Body, &body)
		switch l.Type {
		case ledger.TypeKeyCreated:
			kids = append(kids, body["kid"].(string))
		case ledger.TypeKeyReleased:
			releases++
			for _, k := range body["kids"].([]any) {
				releasedKids = append(releasedKids, k.(string))
			}
			releasedOIDs = append(releasedOIDs, body["oid"].(string))
			policySeqs = append(policySeqs, fmt.Sprint(body["policy_seq"]))
		case ledger.TypeReleaseDenied:
			denialCodes = append(denialCodes, body["code"].(string))
		case ledger.TypeGovProposal:
			proposals = append(proposals, body["id"].(string))
		case ledger.TypeGovBallot:
			ballots = append(ballots, body["member"].(string))
		}
	}
	if len(kids) < 3 || releases != 2 || len(denialCodes) == 0 || len(proposals) != 5 || len(ballots) != 1 {
		t.Fatalf("the ledger holds %d keys, %d releases, denials %v, %d proposals, %d ballots", len(kids), releases, denialCodes, len(proposals), len(ballots))
	}
	var primary string
	for _, k := range allKeys(t, p.URL) {
		if k.State == "primary" {
			primary = k.Kid
		}
	}

	// The explorer, through the proxy.
	target, _ := url.Parse(p.URL)
	px := &explorerProxy{oldCP: oldCP}
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.ModifyResponse = px.modify
	ts := httptest.NewServer(rp)
	defer ts.Close()
	reqs := explorertest.RecordRequests(t, ctx)
	loads := 0
	open := func(hash string) {
		t.Helper()
		loads++ // a new URL each time: a real load, not a hash change
		if err := chromedp.Do(ctx, chromedp.Navigate(fmt.Sprintf("%s/explorer/?load=%d%s", ts.URL, loads, hash)), chromedp.WaitReady(`body[data-state="ready"]`)); err != nil {
			t.Fatalf("loading the explorer: %v", err)
		}
	}
	eval := func(expr string, out any) {
		t.Helper()
		raw, err := chromedp.Run(ctx, chromedp.Evaluate[[]byte](expr))
		if err != nil {
			t.Fatalf("evaluate %s: %v", expr, err)
		}
		if err := json.Unmarshal(raw, out); err != nil {
			t.Fatalf("evaluate %s: %v: %s", expr, err, raw)
		}
	}
	show := func(hash string) {
		t.Helper()
		// hashchange is an event of its own: wait for the view it renders.
		view := `main[data-view="` + strings.TrimPrefix(hash, "#") + `"]`
		if err := chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void](`location.hash = `+strconv.Quote(hash)), chromedp.WaitReady(view)); err != nil {
			t.Fatal(err)
		}
	}

	// Before a key is pinned: a warning, nothing shown as verified.
	open("#keys")
	var banner struct {
		NoPin    bool
		Verified int
	}
	eval(`({NoPin: !!document.getElementById('nopin'), Verified: document.querySelectorAll('main .badge.ok').length})`, &banner)
	if !banner.NoPin || banner.Verified != 0 {
		t.Errorf("without a pinned key: warning %v, %d items verified; want the warning and none", banner.NoPin, banner.Verified)
	}

	// Pin the log key from dev.json, by keyboard.
	open("#pin")
	vkey := readDevJSONField(t, data, "log_public_key")
	if err := chromedp.Do(ctx, chromedp.SendKeys(`#pin-key`, vkey), chromedp.Click(`#pin-save`)); err != nil {
		t.Fatal(err)
	}
	// Pinning reloads the page; the new one knows the key.
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](`window.tkmsExplorer && window.tkmsExplorer.vkeyStr !== '' && document.body.dataset.state === 'ready'`)); err != nil {
		t.Fatalf("after pinning: %v", err)
	}
	open("#log")
	var logView struct {
		Problems  string
		NoPin     bool
		Age       string
		Size      string
		Sig, Cons string
		Bad       int
		Pending   int
		Verified  int
	}
	evalLog := `({Problems: document.body.dataset.problems, NoPin: !!document.getElementById('nopin'),
		Age: [...document.querySelectorAll('#checkpoint dt')].filter(d => d.textContent === 'age').map(d => d.nextElementSibling.textContent).join(''),
		Size: document.getElementById('cp-size').textContent, Sig: document.getElementById('cp-sig').className,
		Cons: document.getElementById('cp-cons').className, Bad: document.querySelectorAll('.bad').length,
		Pending: document.querySelectorAll('.badge.pending').length, Verified: document.querySelectorAll('#recent .badge.ok').length})`
	eval(evalLog, &logView)
	if logView.Problems != "0" || logView.NoPin || logView.Sig != "ok" || logView.Cons != "ok" || logView.Bad != 0 || logView.Size != fmt.Sprintf("%d entries", len(leaves)) || logView.Verified != min(50, len(leaves)) ||
		!strings.Contains(logView.Age, "newest entry written") {
		t.Fatalf("log view of an honest log: %+v; want no problem, signature and consistency ok, %d entries and their age, all verified", logView, len(leaves))
	}
	// The entry browser shows entry i as the ledger holds it.
	show("#log/3")
	var ent struct{ Text string }
	eval(`({Text: document.getElementById('entry-3').textContent})`, &ent)
	if !strings.Contains(ent.Text, string(leaves[3].Type)) || !strings.Contains(ent.Text, "verified") {
		t.Errorf("entry 3 shows %q; want its type %s, verified", ent.Text, leaves[3].Type)
	}

	// Keys: every key, the primary marked, each key.created verified.
	show("#keys")
	var keysView struct {
		Kids     []string
		Suites   []string
		Created  int
		Primary  []string
		Verified int
		Timeline int
	}
	eval(`({Kids: [...document.querySelectorAll('#keys tr[data-kid]')].map(r => r.dataset.kid),
		Suites: [...document.querySelectorAll('#keys tr[data-kid] td:nth-child(3)')].map(td => td.textContent),
		Created: [...document.querySelectorAll('#keys tr[data-kid] td:nth-child(5)')].filter(td => /\d{4}-\d\d-\d\d/.test(td.textContent)).length,
		Primary: [...document.querySelectorAll('#keys tr.primary')].map(r => r.dataset.kid),
		Verified: document.querySelectorAll('#keys .badge.ok').length,
		Timeline: document.querySelectorAll('svg.chart rect.adv').length})`, &keysView)
	if !slices.Equal(keysView.Kids, kids) || !slices.Equal(keysView.Primary, []string{primary}) || keysView.Verified != len(kids) || keysView.Timeline != len(kids) ||
		keysView.Created != len(kids) || slices.ContainsFunc(keysView.Suites, func(s string) bool { return s != "x25519" }) {
		t.Errorf("keys view: %+v; want kids %v, primary %s, each x25519 with its creation time, verified and on the timeline", keysView, kids, primary)
	}

	// Releases: each release and denial, with its code; the filter by code.
	show("#releases")
	var relView struct {
		Released, Verified, Bars int
		Codes                    []string
		PolicySeqs               []string
	}
	evalRel := `({Released: document.querySelectorAll('article[data-kind="key.released"]').length,
		Codes: [...document.querySelectorAll('article[data-kind="release.denied"]')].map(a => a.dataset.code),
		Verified: document.querySelectorAll('#release-list .badge.ok').length,
		Bars: document.querySelectorAll('#release-chart rect').length,
		PolicySeqs: [...document.querySelectorAll('article[data-kind="key.released"] dd')].map(d => d.textContent).filter(s => s.startsWith('version seq'))})`
	eval(evalRel, &relView)
	slices.Reverse(denialCodes)
	if relView.Released != releases || !slices.Equal(relView.Codes, denialCodes) || relView.Verified != releases+len(denialCodes) || relView.Bars == 0 || len(relView.PolicySeqs) != 2 || relView.PolicySeqs[0] == relView.PolicySeqs[1] {
		t.Errorf("releases view: %+v; want %d releases under two policy versions, denials %v, all verified, a chart", relView, releases, denialCodes)
	}
	// The README's screenshot (docs/explorer.png), on demand.
	if os.Getenv("TKMS_UPDATE_SCREENSHOT") != "" {
		png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile("../../docs/explorer.png", png, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// The filters by kid and by identity.
	filter := func(name, value string) {
		t.Helper()
		js := fmt.Sprintf(`(() => { const i = document.querySelector('input[name="%s"]'); i.value = %s; i.dispatchEvent(new Event('input')); })()`, name, strconv.Quote(value))
		if err := chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void](js)); err != nil {
			t.Fatal(err)
		}
	}
	count := func(list []string, v string) (n int) {
		for _, x := range list {
			if strings.Contains(x, v) {
				n++
			}
		}
		return n
	}
	kid := releasedKids[0][:10]
	filter("kid", kid)
	eval(evalRel, &relView)
	if relView.Released != count(releasedKids, kid) || len(relView.Codes) != 0 {
		t.Errorf("filtered by kid %s: %+v; want its %d releases and no denial (denials name no key)", kid, relView, count(releasedKids, kid))
	}
	filter("kid", "no-such-kid")
	eval(evalRel, &relView)
	if relView.Released != 0 {
		t.Errorf("filtered by a kid no release names: %+v", relView)
	}
	filter("kid", "")
	filter("who", releasedOIDs[0])
	eval(evalRel, &relView)
	if relView.Released != count(releasedOIDs, releasedOIDs[0]) {
		t.Errorf("filtered by identity %s: %+v; want its %d releases", releasedOIDs[0], relView, count(releasedOIDs, releasedOIDs[0]))
	}
	filter("who", "nobody-at-all")
	eval(evalRel, &relView)
	if relView.Released != 0 || len(relView.Codes) != 0 {
		t.Errorf("filtered by an identity nobody has: %+v", relView)
	}
	filter("who", "")

	if err := chromedp.Do(ctx, chromedp.SetValue(`select[name="code"]`, denialCodes[0]), chromedp.Evaluate[chromedp.Void](`document.querySelector('select[name="code"]').dispatchEvent(new Event('change'))`)); err != nil {
		t.Fatal(err)
	}
	eval(evalRel, &relView)
	if relView.Released != 0 || len(relView.Codes) == 0 {
		t.Errorf("filtered by code %s: %+v", denialCodes[0], relView)
	}

	// Governance: every proposal with its outcome, the ballot and its
	// member, the policy diff.
	show("#governance")
	var govView struct {
		Proposals []string
		Ballots   []string
		Outcomes  []string
		Diff      string
		Members   int
		Versions  []string
		SetBy     []string
		InForce   string
	}
	eval(`({Proposals: [...document.querySelectorAll('article[data-proposal]')].map(a => a.dataset.proposal),
		Ballots: [...document.querySelectorAll('li[data-ballot]')].map(l => l.dataset.ballot),
		Outcomes: [...document.querySelectorAll('article[data-proposal] .outcome')].map(o => o.textContent),
		Diff: [...document.querySelectorAll('.diff .add')].map(d => d.textContent).join(''),
		Members: document.querySelectorAll('#members li').length,
		Versions: [...document.querySelectorAll('#policy-history li[data-seq]')].map(l => l.dataset.seq),
		SetBy: [...document.querySelectorAll('#policy-history li[data-seq]')].map(l => l.dataset.proposal),
		InForce: document.getElementById('policy').textContent})`, &govView)
	// The key release policy's versions are those the releases name: the
	// configuration's, then the one B's ballot accepted.
	if !slices.Equal(govView.Versions, policySeqs) || len(govView.SetBy) != 2 || govView.SetBy[0] != "" || govView.SetBy[1] != prop.ID || !strings.Contains(govView.InForce, hostData2) {
		t.Errorf("key release policy: versions %v set by %v, in force %q; want the releases' %v, the second by %s, in force with %s", govView.Versions, govView.SetBy, govView.InForce, policySeqs, prop.ID, hostData2)
	}
	slices.Reverse(proposals)
	if !slices.Equal(govView.Proposals, proposals) || !slices.Equal(govView.Ballots, ballots) || govView.Members != 2 ||
		slices.ContainsFunc(govView.Outcomes, func(s string) bool { return s != "accepted" }) || !strings.Contains(govView.Diff, hostData2) {
		t.Errorf("governance view: %+v; want proposals %v all accepted, ballots %v, 2 members, a diff adding %s", govView, proposals, ballots, hostData2)
	}

	// Keyboard: a new view takes the focus to its heading; from the skip
	// link, Tab reaches the views.
	var focus struct{ A, B string }
	eval(`({A: document.activeElement.tagName, B: document.activeElement.textContent})`, &focus)
	if focus.A != "H2" || focus.B != "Governance" {
		t.Errorf("after choosing a view the focus is on %+v; want its heading", focus)
	}
	if err := chromedp.Do(ctx, chromedp.Evaluate[chromedp.Void](`document.querySelector('.skip').focus()`), chromedp.KeyEvent("\t")); err != nil {
		t.Fatal(err)
	}
	eval(`({A: document.activeElement.textContent, B: document.activeElement.getAttribute('href')})`, &focus)
	if focus.B != "#keys" {
		t.Errorf("two tabs focus %+v; want the Keys link", focus)
	}

	// A phone: nothing wider than the screen.
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(390, 844)); err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"#keys", "#releases", "#governance", "#log"} {
		show(v)
		var w struct {
			Scroll, Inner int
			Wide          []string
		}
		eval(`({Scroll: document.documentElement.scrollWidth, Inner: window.innerWidth,
			Wide: [...document.querySelectorAll('body *')].filter(e => (e.getBoundingClientRect().right > window.innerWidth || e.scrollWidth > window.innerWidth) && !e.closest('.scroll')).map(e => e.tagName + '.' + e.className + ' ' + Math.round(e.getBoundingClientRect().right)).slice(0, 5)})`, &w)
		if w.Scroll > w.Inner {
			t.Errorf("%s on a 390 px screen is %d px wide: %v", v, w.Scroll, w.Wide)
		}
	}
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(1100, 860)); err != nil {
		t.Fatal(err)
	}
	// A tampered entry: red on the entry, in the banner.
	px.mode.Store(proxyTamper)
	open("#releases")
	i := px.tamperd.Load()
	var bad struct {
		Item    string
		Banner  string
		Sig     string
		Problem string
	}
	eval(fmt.Sprintf(`({Item: (document.querySelector('article[data-index="%d"]') || {}).className,
		Banner: [...document.querySelectorAll('.banner.bad')].map(b => b.textContent).join(' | '),
		Problem: document.body.dataset.problems})`, i), &bad)
	if !strings.Contains(bad.Item, "bad") || !strings.Contains(bad.Banner, fmt.Sprintf("Entry %d (key.released) fails its inclusion proof", i)) {
		t.Errorf("tampered entry %d: item class %q, banners %q; want it red and named", i, bad.Item, bad.Banner)
	}
	var others int
	eval(`document.querySelectorAll('#release-list article.bad').length`, &others)
	if others != 1 {
		t.Errorf("%d release items red, want only the tampered one", others)
	}

	// A forged checkpoint.
	evalCP := `({Item: document.getElementById('checkpoint').className, Sig: document.getElementById('cp-sig').className,
		Banner: [...document.querySelectorAll('.banner.bad')].map(b => b.textContent).join(' | ')})`
	px.mode.Store(proxyForge)
	open("#log")
	eval(evalCP, &bad)
	if !strings.Contains(bad.Item, "bad") || bad.Sig != "bad" || !strings.Contains(bad.Banner, "signature does not verify under the pinned log key") {
		t.Errorf("forged checkpoint: %+v; want the checkpoint red and the banner", bad)
	}

	// A rolled-back log: an older checkpoint, validly signed.
	px.mode.Store(proxyRollback)
	open("#log")
	eval(evalCP, &bad)
	if !strings.Contains(bad.Item, "bad") || bad.Sig != "ok" || !strings.Contains(bad.Banner, "The log has been rolled back") {
		t.Errorf("rolled-back log: %+v; want the checkpoint red for consistency and the banner", bad)
	}
	// Honest again: the saved checkpoint was never replaced by the old one.
	px.mode.Store(proxyHonest)
	open("#log")
	eval(evalLog, &logView)
	if logView.Problems != "0" || logView.Cons != "ok" {
		t.Errorf("honest log after the attacks: %+v", logView)
	}

	if foreign := reqs.Foreign(ts.URL); len(foreign) > 0 {
		t.Errorf("the explorer requested other origins: %v", foreign)
	}
	if n := len(reqs.URLs()); n < 20 {
		t.Errorf("only %d requests recorded: is the recorder working?", n)
	}
}

// GovResultWire is the answer to a governance message, as a client reads it.
type GovResultWire struct {
	ID    string `json:"id"`
	State string `json:"state"`
}

// readDevJSONField returns a string field of the dev.json of dir.
func readDevJSONField(t *testing.T, dir, field string) string {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(readFile(t, filepath.Join(dir, "dev.json")), &m); err != nil {
		t.Fatal(err)
	}
	s, _ := m[field].(string)
	if s == "" {
		t.Fatalf("dev.json has no %s", field)
	}
	return s
}
