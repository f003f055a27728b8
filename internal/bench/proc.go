package bench

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"
)

// procSample is what Linux's /proc says about a process at one time.
type procSample struct {
	at     time.Time
	cpu    time.Duration // user + system time since the process started
	rssKiB int64         // VmRSS
}

// clockTicks is USER_HZ, the unit of the times in /proc/<pid>/stat. The
// kernel fixes it at 100 for user space on every architecture Go runs on
// (sysconf(_SC_CLK_TCK) returns this constant).
const clockTicks = 100

// readProc samples process pid from /proc/<pid>/stat (utime and stime,
// fields 14 and 15, proc(5)) and /proc/<pid>/status (VmRSS).
func readProc(pid int) (procSample, error) {
	s := procSample{at: time.Now()}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s, err
	}
	// The command name (field 2) is in parentheses and may hold spaces:
	// fields are counted from the last ')'.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return s, errors.New("bench: malformed /proc stat")
	}
	f := bytes.Fields(stat[i+1:]) // f[0] is field 3 (state)
	if len(f) < 13 {
		return s, errors.New("bench: short /proc stat")
	}
	utime, err1 := strconv.ParseInt(string(f[11]), 10, 64)
	stime, err2 := strconv.ParseInt(string(f[12]), 10, 64)
	if err1 != nil || err2 != nil {
		return s, errors.New("bench: malformed /proc stat times")
	}
	s.cpu = time.Duration(utime+stime) * time.Second / clockTicks
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, err
	}
	for line := range bytes.Lines(status) {
		if v, ok := bytes.CutPrefix(line, []byte("VmRSS:")); ok {
			f := bytes.Fields(v) // "12345 kB"
			if len(f) > 0 {
				s.rssKiB, _ = strconv.ParseInt(string(f[0]), 10, 64)
			}
			break
		}
	}
	return s, nil
}

// cpuPercent is the CPU used between two samples, in percent of one CPU
// (200 is two CPUs busy).
func cpuPercent(a, b procSample) float64 {
	wall := b.at.Sub(a.at)
	if wall <= 0 {
		return 0
	}
	return 100 * float64(b.cpu-a.cpu) / float64(wall)
}
