//go:build unix

package bench

import (
	"syscall"
	"time"
)

// selfCPU returns the CPU time (user and system) this process has used,
// to the microsecond; 0 where it cannot be read.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
