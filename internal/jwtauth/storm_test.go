package jwtauth_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/tkms-dev/tkms/internal/jwtauth"
)

// TestRefreshStormRandomKIDs: a flood of tokens, each naming a different
// made-up kid (an attacker chooses the header freely), arriving at once
// and in waves, costs the issuer's real loopback JWKS endpoint one fetch
// per MinRefreshInterval, whatever the number of tokens or kids.
func TestRefreshStormRandomKIDs(t *testing.T) {
	const perWave = 200
	clk := newClock(t0)
	p := newIDP(t, "RS256", 0, clk)
	a := newAuth(t, p, clk, nil, nil)
	good := "Bearer " + p.mint(t, issV1, audV1, nil)
	wave := func(w int) {
		t.Helper()
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range perWave {
			wg.Go(func() {
				<-start
				tok := withHeader(good, fmt.Sprintf(`{"alg":"RS256","typ":"JWT","kid":"storm-%d-%d"}`, w, i))
				if _, err := a.Authenticate(t.Context(), tok); jwtauth.Code(err) != jwtauth.CodeUnknownKID {
					t.Errorf("wave %d token %d: %v, want %s", w, i, err, jwtauth.CodeUnknownKID)
				}
			})
		}
		close(start)
		wg.Wait()
	}
	before := p.jwksFetches.Load()
	for _, step := range []struct {
		at   time.Duration // since t0
		want int64         // fetches since before
	}{
		{0, 1},
		{jwtauth.DefaultMinRefreshInterval / 2, 1},
		{jwtauth.DefaultMinRefreshInterval - time.Second, 1},
		{jwtauth.DefaultMinRefreshInterval, 2},
		{jwtauth.DefaultMinRefreshInterval + time.Second, 2},
		{3 * jwtauth.DefaultMinRefreshInterval, 3},
	} {
		clk.set(t0.Add(step.at))
		wave(int(step.at / time.Second))
		if got := p.jwksFetches.Load() - before; got != step.want {
			t.Fatalf("at t0+%v: %d JWKS fetches after %d tokens with random kids per wave, want %d", step.at, got, perWave, step.want)
		}
	}
	// The valid token still authenticates: the storm did not break the key set.
	if _, err := a.Authenticate(t.Context(), good); err != nil {
		t.Fatal(err)
	}
}
