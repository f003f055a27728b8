package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/tkms-dev/tkms/internal/bench"
)

const benchUsage = `usage: tkms bench [--kms URL | --dev] [--scenario S] [--workers N] [--rate R]
                  [--duration D] [--warmup D] [--json] [--data DIR] [--server-pid PID]
                  [--flood-workers F] [--flood-rate R] [--limits L]

Drives a KMS with one scenario and reports throughput, latency percentiles
(p50, p90, p99, p99.9, max), failures by x-ms-kms-error-code, and the
server's CPU and RSS. For release scenarios it also measures, in the same
run, the cryptographic floor of one release on this machine (ECDSA P-384
report signature, token signature, RSA-OAEP-4096 or HPKE wrap) and prints
achieved / floor (BENCHMARKS.md), and the CPU ratio: the floor's CPU time
per operation over the server's, which holds when other processes load the
machine (it is what achieved / floor would be if the server kept its CPUs
busy).

Scenarios:
  pubkeys        GET /app/listpubkeys and GET /v1/keys, alternately
  release-app    POST /app/key then POST /app/unwrapKey?fmt=jwk, RSA-4096 wrapping
  release-v1     POST /v1/keys/{kid}/release, HPKE X25519 wrapping
  release-batch  POST /v1/release {"all_valid":true}; the KMS is rotated to 4 keys first
  mixed          99 % pubkeys, 1 % release-app
  flood          pubkeys (give --rate) while --flood-workers goroutines send
                 invalid releases as fast as they are answered (or, with
                 --flood-rate R, at R requests a second in all): valid dev token,
                 simulated evidence that verifies but binds another wrapping key
                 (400 after the full verification), from several loopback
                 addresses; reports the flood's answers by status and code

By default (--dev) it starts its own 'tkms dev' on a temporary directory (or
--data DIR), with log level warn. With --kms it targets a running tkms dev;
release scenarios then need --data, that instance's data directory (its
SIMULATED TEE and token issuer). Without --rate, --workers workers each send
a request as soon as their last one is answered (closed loop); with --rate,
operations start at that fixed rate whatever the server does, at most
--workers at a time, and latency counts from when each was due (open loop).

--limits sets the admission control of the tkms dev it starts (README
"Limits"): default (the defaults of tkms serve), no-rates (the rate limits
off, the verification pool on; what every scenario but flood uses, so that
one client's rate is not limited), no-pool (rate limits on, pool off), or
off (neither).

`

// cmdBench implements `tkms bench`.
func cmdBench(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("bench", stderr)
	fs.Usage = func() { fmt.Fprint(stderr, benchUsage); fs.PrintDefaults(); writeHelpFoot(stderr, "bench") }
	url := fs.String("kms", "", "base `URL` of a running tkms dev (default: start one, --dev)")
	registerURLAlias(fs, url)
	var kmsCA string
	registerKMSCA(fs, &kmsCA)
	dev := fs.Bool("dev", false, "start a tkms dev on a temporary directory (or --data) and benchmark it (the default without --kms)")
	scenario := fs.String("scenario", bench.ScenarioPubKeys, "`scenario`: "+strings.Join(bench.Scenarios, ", "))
	workers := fs.Int("workers", 0, "concurrent operations: closed-loop workers (default 8), or the open loop's maximum in flight (default 64)")
	rate := fs.Float64("rate", 0, "open loop: start operations at this `rate` per second (0: closed loop)")
	duration := fs.Duration("duration", 10*time.Second, "measured `time`")
	warmup := fs.Duration("warmup", 2*time.Second, "unmeasured load before it (`time`)")
	asJSON := fs.Bool("json", false, "print the report as JSON on stdout")
	data := fs.String("data", "", "tkms dev data `directory`: with --dev, use it instead of a temporary one; with --kms, the running instance's")
	floorIter := fs.Int("floor-iterations", 200, "minimum `calls` of each floor measurement (each also runs at least 500 ms)")
	serverPID := fs.Int("server-pid", 0, "with --kms: the server's process `id`, for its CPU and RSS (Linux /proc)")
	floodWorkers := fs.Int("flood-workers", bench.DefaultFloodWorkers, "flood scenario: goroutines sending invalid releases (`F`)")
	floodRate := fs.Float64("flood-rate", 0, "flood scenario: pace the flood at `R` requests a second in all (0: each worker as fast as it is answered)")
	limits := fs.String("limits", "", "admission control of the tkms dev started: `L` is default, no-rates, no-pool or off (default: default for flood, no-rates otherwise)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *url != "" && *dev {
		return fmt.Errorf("%w: give one of --kms and --dev", errUsage)
	}
	tlsConf, err := kmsTLSConfig(*url, kmsCA)
	if err != nil {
		return err
	}
	if *workers < 0 || *rate < 0 || *duration <= 0 || *warmup < 0 || *floorIter <= 0 {
		return fmt.Errorf("%w: --workers, --rate and --warmup must not be negative, --duration and --floor-iterations must be positive", errUsage)
	}
	if !slices.Contains(bench.Scenarios, *scenario) {
		return fmt.Errorf("%w: --scenario %q: want one of %s", errUsage, *scenario, strings.Join(bench.Scenarios, ", "))
	}
	if *url != "" && *data == "" && *scenario != bench.ScenarioPubKeys {
		return fmt.Errorf("%w: --scenario %s against --kms needs --data DIR, the data directory of that tkms dev (its simulated TEE and token issuer)", errUsage, *scenario)
	}
	if *limits == "" {
		*limits = "no-rates"
		if *scenario == bench.ScenarioFlood {
			*limits = "default"
		}
	}
	devLimits, ok := benchLimits[*limits]
	if !ok || *floodWorkers <= 0 || *floodRate < 0 {
		return fmt.Errorf("%w: --limits %q: want default, no-rates, no-pool or off; --flood-workers must be positive, --flood-rate not negative", errUsage, *limits)
	}
	if *workers == 0 {
		*workers = 8
		if *rate > 0 {
			*workers = 64
		}
	}
	cfg := bench.Config{
		URL: *url, Scenario: *scenario, Workers: *workers, Rate: *rate,
		Duration: *duration, Warmup: *warmup, DataDir: *data, ServerPID: *serverPID, Progress: stderr,
		FloorIterations: *floorIter, TLS: tlsConf, FloodWorkers: *floodWorkers, FloodRate: *floodRate,
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	if *url == "" {
		kms, err := startBenchDev(ctx, *data, devLimits)
		if kms != nil {
			defer kms.stop()
		}
		if err != nil {
			return err
		}
		cfg.URL, cfg.DataDir, cfg.ServerPID = kms.info.KMSURL, kms.info.DataDir, kms.cmd.Process.Pid
		cfg.MemberKey, cfg.LogKey = kms.info.MemberKey, kms.info.LogPublicKey
		fmt.Fprintf(stderr, "tkms bench: started tkms dev (pid %d) at %s on %s\n", cfg.ServerPID, cfg.URL, cfg.DataDir)
	} else if *data != "" {
		info, err := readDevInfo(*data)
		if err != nil {
			return fmt.Errorf("--data: %w", err)
		}
		if strings.TrimRight(info.KMSURL, "/") == strings.TrimRight(*url, "/") {
			cfg.MemberKey, cfg.LogKey = info.MemberKey, info.LogPublicKey
		}
		abs, err := filepath.Abs(*data)
		if err != nil {
			return err
		}
		cfg.DataDir = abs
	}
	rep, err := bench.Run(ctx, cfg)
	if rep == nil {
		return err
	}
	if *asJSON {
		if err := writeResultJSON(stdout, "ok", rep); err != nil {
			return err
		}
	} else if err := rep.WriteText(stdout); err != nil {
		return err
	}
	if err != nil {
		return fmt.Errorf("interrupted: %w", err)
	}
	return nil
}

// benchDev is a tkms dev started by tkms bench.
type benchDev struct {
	cmd    *exec.Cmd
	tmp    string // removed by stop, if not ""
	info   DevInfo
	stderr *os.File
	exited chan struct{}
}

// benchLimits are the "limits" objects of --limits for the tkms dev that
// bench starts.
var benchLimits = map[string]string{
	"default":  `{}`,
	"no-rates": `{"per_address_rate":0,"per_identity_rate":0}`,
	"no-pool":  `{"verify_concurrency":0}`,
	"off":      `{"per_address_rate":0,"per_identity_rate":0,"verify_concurrency":0}`,
}

// startBenchDev starts `tkms dev --listen 127.0.0.1:0` on dataDir (a new
// temporary directory if "") with log level warn and the "limits" object
// limits (JSON), and waits until it listens.
func startBenchDev(ctx context.Context, dataDir, limits string) (*benchDev, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp("", "tkms-bench-")
	if err != nil {
		return nil, err
	}
	d := &benchDev{tmp: tmp, exited: make(chan struct{})}
	if dataDir == "" {
		dataDir = filepath.Join(tmp, "kms")
	}
	if dataDir, err = filepath.Abs(dataDir); err != nil {
		return d, err
	}
	config := filepath.Join(tmp, "tkms.json")
	if err := os.WriteFile(config, []byte(`{"log_level":"warn","limits":`+limits+`}`+"\n"), 0o600); err != nil {
		return d, err
	}
	// The server's log goes to a file, shown if it fails to start.
	if d.stderr, err = os.OpenFile(filepath.Join(tmp, "tkms-dev.log"), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600); err != nil {
		return d, err
	}
	d.cmd = exec.Command(exe, "dev", "--listen", "127.0.0.1:0", "--data", dataDir, "--config", config)
	d.cmd.Stderr = d.stderr
	out, err := d.cmd.StdoutPipe()
	if err != nil {
		return d, err
	}
	if err := d.cmd.Start(); err != nil {
		d.cmd = nil
		return d, err
	}
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if m := demoListening.FindStringSubmatch(sc.Text()); m != nil {
				found <- m[1]
			}
		}
		close(found)
	}()
	go func() {
		d.cmd.Wait()
		close(d.exited)
	}()
	logTail := func() string {
		b, _ := os.ReadFile(d.stderr.Name())
		return truncateTail(string(b), 4000)
	}
	select {
	case _, ok := <-found:
		if !ok {
			<-d.exited
			return d, fmt.Errorf("tkms dev exited before listening; its log:\n%s", logTail())
		}
	case <-time.After(30 * time.Second):
		return d, fmt.Errorf("tkms dev did not listen within 30 s; its log:\n%s", logTail())
	case <-ctx.Done():
		return d, ctx.Err()
	}
	info, err := readDevInfo(dataDir)
	if err != nil {
		return d, err
	}
	if info.PID != d.cmd.Process.Pid {
		return d, fmt.Errorf("%s/dev.json is of another tkms dev (pid %d)", dataDir, info.PID)
	}
	d.info = *info
	return d, nil
}

// stop interrupts the tkms dev, waits for it (killing it after 10 s) and
// removes the temporary directory.
func (d *benchDev) stop() {
	if d.cmd != nil && d.cmd.Process != nil {
		d.cmd.Process.Signal(syscall.SIGINT)
		select {
		case <-d.exited:
		case <-time.After(10 * time.Second):
			d.cmd.Process.Kill()
			<-d.exited
		}
	}
	if d.stderr != nil {
		d.stderr.Close()
	}
	if d.tmp != "" {
		os.RemoveAll(d.tmp)
	}
}

func truncateTail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "..." + s[len(s)-n:]
}
