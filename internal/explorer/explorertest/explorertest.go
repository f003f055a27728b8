// Package explorertest runs headless Chromium for the tests of the
// transparency explorer (internal/explorer, cmd/tkms), driven by chromedp.
//
// A test that needs the browser calls Browser: it skips, saying why, when
// Debian's chromium is not installed and CI is not set; under CI a missing
// browser fails the test (.ci/run installs it).
package explorertest

import (
	"context"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
)

// Deadline bounds a whole browser session, so that a hung browser fails
// the test instead of hanging it. It is not an assertion about speed.
const Deadline = 3 * time.Minute

// Browser starts a fresh headless Chromium (its own profile directory,
// no background networking) and returns a chromedp context for one tab.
// The browser is closed when the test ends.
func Browser(t testing.TB) context.Context {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("chromium is not installed but CI is set: .ci/run installs Debian's chromium (apt-get install chromium)")
		}
		t.Skip("skipping the browser test: chromium is not installed (apt-get install chromium to run it)")
	}
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(path),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.NoSandbox, // tests run as root in containers
		chromedp.Headless,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-default-apps", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("metrics-recording-only", true),
		chromedp.Flag("no-pings", true),
		chromedp.WindowSize(1200, 900),
	}
	ctx, cancelTimeout := context.WithTimeout(context.Background(), Deadline)
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	bctx, cancelBrowser := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	t.Cleanup(func() {
		cancelBrowser()
		cancelAlloc()
		cancelTimeout()
	})
	if err := chromedp.Do(bctx); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	return bctx
}

// Requests records the URL of every request the page makes from now on.
type Requests struct {
	mu   sync.Mutex
	urls []string
}

// RecordRequests starts recording the requests of the tab of ctx
// (chromedp enables the network domain of every tab).
func RecordRequests(t testing.TB, ctx context.Context) *Requests {
	t.Helper()
	r := &Requests{}
	err := chromedp.Listen(ctx, func(ev any) {
		if e, ok := ev.(*network.EventRequestWillBeSent); ok {
			r.mu.Lock()
			r.urls = append(r.urls, e.Request.URL)
			r.mu.Unlock()
		}
	})
	if err != nil {
		t.Fatalf("recording requests: %v", err)
	}
	return r
}

// URLs returns the URLs requested so far.
func (r *Requests) URLs() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.urls...)
}

// Foreign returns the recorded requests to any origin other than
// origin's (scheme, host and port). data: URLs (the page's empty icon)
// reach no origin and are not listed.
func (r *Requests) Foreign(origin string) []string {
	o, err := url.Parse(origin)
	if err != nil {
		return []string{"bad origin " + origin}
	}
	var out []string
	for _, u := range r.URLs() {
		if strings.HasPrefix(u, "data:") {
			continue
		}
		p, err := url.Parse(u)
		if err != nil || p.Scheme != o.Scheme || p.Host != o.Host {
			out = append(out, u)
		}
	}
	return out
}
