//go:build !unix

package bench

import "time"

// selfCPU returns 0: the floor's CPU time is measured on Unix only.
func selfCPU() time.Duration { return 0 }
