package limit_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/tkms-dev/tkms/internal/limit"
)

// A server admits a costly request in two steps: the caller's bucket, then
// a slot of the verification pool.
func Example() {
	perCaller, _ := limit.NewKeyed(limit.KeyedConfig{Rate: 1, Burst: 2})
	pool, _ := limit.NewPool(limit.PoolConfig{Concurrency: 1, Queue: 0, Wait: time.Second})

	for i := range 3 {
		d := perCaller.Allow("10.0.0.7")
		if !d.Allowed {
			fmt.Printf("request %d: 429, Retry-After: %d\n", i, limit.RetryAfterSeconds(d.RetryAfter))
			continue
		}
		fmt.Printf("request %d: admitted\n", i)
	}

	release, _ := pool.Acquire(context.Background()) // a verification in progress
	if _, err := pool.Acquire(context.Background()); errors.Is(err, limit.ErrBusy) {
		fmt.Printf("second verification: 503, Retry-After: %d\n", limit.RetryAfterSeconds(pool.RetryAfter()))
	}
	release()
	fmt.Printf("%+v\n", pool.Stats())
	// Output:
	// request 0: admitted
	// request 1: admitted
	// request 2: 429, Retry-After: 1
	// second verification: 503, Retry-After: 1
	// {Admitted:1 Queued:0 Busy:1 Canceled:0 InFlight:0 Waiting:0}
}
