package bench

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// schedule is the open loop's arrival process: arrival i is due at
// start + i/rate, whatever happened to earlier ones. Latency is measured
// from an arrival's due time, so time spent waiting for a free worker
// counts (no coordinated omission).
type schedule struct {
	start time.Time
	rate  float64 // arrivals per second
	next  atomic.Int64
}

// at returns the due time of arrival i.
func (s *schedule) at(i int64) time.Time {
	return s.start.Add(time.Duration(float64(i) * float64(time.Second) / s.rate))
}

// claim takes the next arrival.
func (s *schedule) claim() (int64, time.Time) {
	i := s.next.Add(1) - 1
	return i, s.at(i)
}

// due returns the number of arrivals due in [from, to).
func (s *schedule) due(from, to time.Time) int64 {
	count := func(t time.Time) int64 { // arrivals due before t
		if !t.After(s.start) {
			return 0
		}
		n := int64(float64(t.Sub(s.start)) * s.rate / float64(time.Second))
		for n > 0 && !s.at(n-1).Before(t) {
			n--
		}
		for s.at(n).Before(t) {
			n++
		}
		return n
	}
	return count(to) - count(from)
}

// window is the run's timeline: [start, measureFrom) is warm-up,
// [measureFrom, end) is measured.
type window struct {
	start, measureFrom, end time.Time
	// drainUntil is when an overloaded open loop gives up on arrivals due
	// before end that it has not started yet (they are counted unsent).
	drainUntil time.Time
}

// an opFunc performs one operation. measured says whether it counts.
// It reports the error, if any, itself.
type opFunc func(ctx context.Context, worker int, intended time.Time, measured bool)

// openStats is what the open loop's workers observed of the schedule.
type openStats struct {
	mu        sync.Mutex
	started   int64 // measured arrivals started
	late      int64 // measured arrivals started more than lateAfter after their due time
	maxLag    time.Duration
	lateAfter time.Duration
}

// runClosed runs workers that each start a new operation as soon as the
// previous one ends, until w.end.
func runClosed(ctx context.Context, workers int, w window, op opFunc) {
	var wg sync.WaitGroup
	for id := range workers {
		wg.Go(func() {
			for ctx.Err() == nil {
				now := time.Now()
				if !now.Before(w.end) {
					return
				}
				op(ctx, id, now, !now.Before(w.measureFrom))
			}
		})
	}
	wg.Wait()
}

// runOpen runs arrivals of s on at most workers concurrent operations:
// each worker claims the next arrival, waits for its due time, and
// performs it; a worker that is late starts at once. Arrivals due from
// w.end on are not made. The number of measured arrivals started and
// how late they started are returned.
func runOpen(ctx context.Context, workers int, s *schedule, w window, op opFunc, lateAfter time.Duration) *openStats {
	st := &openStats{lateAfter: lateAfter}
	var wg sync.WaitGroup
	for id := range workers {
		wg.Go(func() {
			timer := time.NewTimer(time.Hour)
			defer timer.Stop()
			for ctx.Err() == nil {
				_, due := s.claim()
				if !due.Before(w.end) || time.Now().After(w.drainUntil) {
					return
				}
				if d := time.Until(due); d > 0 {
					timer.Reset(d)
					select {
					case <-ctx.Done():
						return
					case <-timer.C:
					}
				}
				measured := !due.Before(w.measureFrom)
				if measured {
					lag := time.Since(due)
					st.mu.Lock()
					st.started++
					if lag > lateAfter {
						st.late++
					}
					st.maxLag = max(st.maxLag, lag)
					st.mu.Unlock()
				}
				op(ctx, id, due, measured)
			}
		})
	}
	wg.Wait()
	return st
}
