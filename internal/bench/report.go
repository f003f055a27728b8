package bench

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
)

// WriteText writes the report for people.
func (r *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	mode := fmt.Sprintf("closed loop, %d workers", r.Workers)
	if r.Open != nil {
		mode = fmt.Sprintf("open loop at %.0f ops/s, at most %d in flight", r.Open.TargetRate, r.Workers)
	}
	fmt.Fprintf(&b, "scenario     %s against %s (%s)\n", r.Scenario, r.URL, mode)
	fmt.Fprintf(&b, "measured     %.1f s after %.1f s of warm-up; %d CPUs, GOMAXPROCS %d, %s\n", r.Seconds, r.Warmup, r.NumCPU, r.GOMAXPROCS, r.GoVersion)
	fmt.Fprintf(&b, "throughput   %.0f ops/s, %.0f requests/s (%d operations, %d requests)\n", r.OpsPerSec, r.ReqPerSec, r.Operations, r.Requests)
	if r.ReleasesPerS > 0 || r.KeysPerSec > 0 {
		fmt.Fprintf(&b, "releases     %.0f releases/s, %.0f keys/s (%d keys in the KMS)\n", r.ReleasesPerS, r.KeysPerSec, r.KeysInKMS)
	}
	l := r.Latency
	fmt.Fprintf(&b, "latency      p50 %s  p90 %s  p99 %s  p99.9 %s  max %s  (mean %s, ms)\n", ms(l.P50), ms(l.P90), ms(l.P99), ms(l.P999), ms(l.Max), ms(l.Mean))
	if r.Open != nil {
		fmt.Fprintf(&b, "open loop    %d due, %d started, %d unsent; %d started late (max lag %s ms; counted in latency)\n", r.Open.Due, r.Open.Started, r.Open.Unsent, r.Open.Late, ms(r.Open.MaxLagMS))
	}
	if r.Errors == 0 {
		fmt.Fprintf(&b, "errors       0\n")
	} else {
		var parts []string
		for _, c := range sortedCodes(r.ErrorsByCode) {
			parts = append(parts, fmt.Sprintf("%s %d", c, r.ErrorsByCode[c]))
		}
		fmt.Fprintf(&b, "errors       %d: %s\n", r.Errors, strings.Join(parts, ", "))
	}
	if f := r.Flood; f != nil {
		from := "one address"
		if len(f.SourceAddrs) > 0 {
			from = fmt.Sprintf("%d addresses (%s-%s)", len(f.SourceAddrs), f.SourceAddrs[0], f.SourceAddrs[len(f.SourceAddrs)-1])
		}
		paced := ""
		if f.PacedPerSec > 0 {
			paced = fmt.Sprintf(", paced at %.0f req/s", f.PacedPerSec)
		}
		fmt.Fprintf(&b, "flood        %d workers from %s%s: %s with valid token, evidence binding another key\n", f.Workers, from, paced, f.Request)
		fmt.Fprintf(&b, "               offered %.0f req/s, answered %.0f req/s (%d, %d); latency p50 %s p99 %s max %s ms\n",
			f.OfferedPerSec, f.AnsweredPerSec, f.Offered, f.Answered, ms(f.Latency.P50), ms(f.Latency.P99), ms(f.Latency.Max))
		var parts []string
		for _, s := range slices.Sorted(maps.Keys(f.ByStatus)) {
			parts = append(parts, fmt.Sprintf("%s %d", s, f.ByStatus[s]))
		}
		var codes []string
		for _, c := range sortedCodes(f.ByCode) {
			codes = append(codes, fmt.Sprintf("%s %d", c, f.ByCode[c]))
		}
		fmt.Fprintf(&b, "               by status: %s; by code: %s\n", strings.Join(parts, ", "), strings.Join(codes, ", "))
		fmt.Fprintf(&b, "               200 OK %d, wrong shape %d, transport errors %d\n", f.OK, f.BadShape, f.Transport)
		if f.FirstBad != "" {
			fmt.Fprintf(&b, "               first wrong answer: %s\n", f.FirstBad)
		}
	}
	if r.Verified > 0 {
		fmt.Fprintf(&b, "verified     %d answers unwrapped and checked against the published keys\n", r.Verified)
	}
	if r.Server != nil {
		fmt.Fprintf(&b, "server       pid %d: %.0f%% CPU (of one CPU), RSS %.1f MB (peak %.1f MB)\n", r.Server.PID, r.Server.CPUPercent, r.Server.RSSMB, r.Server.RSSPeakMB)
	} else {
		fmt.Fprintf(&b, "server       CPU and RSS unknown (give --server-pid, or use --dev)\n")
	}
	fmt.Fprintf(&b, "client       %.0f%% CPU (this process, same machine)\n", r.ClientCPUPercent)
	if f := r.Floor; f != nil {
		fmt.Fprintf(&b, "floor        %.0f ops/s on %d goroutines: %s\n", f.OpsPerSec, f.Goroutines, f.Operation)
		for _, p := range f.Primitives {
			fmt.Fprintf(&b, "               %-44s %8.0f /s\n", p.Name, p.OpsPerSec)
		}
		fmt.Fprintf(&b, "ratio        achieved / floor = %.0f / %.0f = %.3f\n", r.OpsPerSec, f.OpsPerSec, f.Ratio)
		if f.CPURatio > 0 {
			fmt.Fprintf(&b, "cpu ratio    floor CPU per op / server CPU per op = %.0f us / %.0f us = %.3f (the ratio if the server kept its CPUs busy)\n",
				f.CPUMicrosPerOp, f.ServerCPUMicrosPerOp, f.CPURatio)
		}
	}
	if _, err := io.WriteString(w, b.String()); err != nil {
		return err
	}
	if len(r.Endpoints) > 0 {
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "request\tcount\tp50 ms\tp90 ms\tp99 ms\tp99.9 ms\tmax ms\t")
		for _, name := range slices.Sorted(maps.Keys(r.Endpoints)) {
			e := r.Endpoints[name]
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t\n", name, e.Count, ms(e.P50), ms(e.P90), ms(e.P99), ms(e.P999), ms(e.Max))
		}
		return tw.Flush()
	}
	return nil
}

func ms(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.2f", v)
}
