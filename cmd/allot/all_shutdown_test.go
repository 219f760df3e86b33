package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// lockedBuffer is an io.Writer a running command logs to while the test
// reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// runInProcess runs the allot command line args until its context is
// cancelled; stop cancels it and returns the exit code and how long the
// command took to return.
type runInProcess struct {
	cancel context.CancelFunc
	done   chan int
	stderr *lockedBuffer
}

func startRun(t *testing.T, args ...string) *runInProcess {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &runInProcess{cancel: cancel, done: make(chan int, 1), stderr: &lockedBuffer{}}
	go func() { r.done <- run(ctx, args, io.Discard, r.stderr) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(30 * time.Second):
			t.Errorf("allot %s did not stop", args[0])
		}
	})
	return r
}

func (r *runInProcess) stop(t *testing.T) (code int, took time.Duration) {
	t.Helper()
	start := time.Now()
	r.cancel()
	select {
	case code = <-r.done:
		r.done <- code // for Cleanup
		return code, time.Since(start)
	case <-time.After(30 * time.Second):
		t.Fatalf("did not stop within 30s:\n%s", r.stderr.String())
		return 0, 0
	}
}

// exited reports a command that ended before it was stopped.
func (r *runInProcess) exited() (int, bool) {
	select {
	case code := <-r.done:
		r.done <- code
		return code, true
	default:
		return 0, false
	}
}

type listedTarget struct {
	ID      string `json:"id"`
	Health  string `json:"health"`
	Scraper string `json:"scraper"`
}

func listTargets(addr string) ([]listedTarget, error) {
	resp, err := http.Get("http://" + addr + "/api/v1/targets?state=active")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var body struct {
		Data struct {
			ActiveTargets []listedTarget `json:"activeTargets"`
		} `json:"data"`
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("status %s", resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return nil, err
	}
	return body.Data.ActiveTargets, nil
}

// TestAllModeViewAndShutdown runs allot all with the Target Allocator API,
// joins a scraper from "another process" with the command allot all prints,
// and has an OTel Collector poll for its targets. The targets view must
// name every owner: the in-process scraper, the joined scraper (it reports
// over HTTP) and the collector (from its etcd claims; health unknown, since
// a collector reports no scrape state). Then a stop (what SIGTERM does)
// must be prompt and lose nothing the exporters held: they flush to the
// built-in sink, served by the HTTP server that used to stop first.
func TestAllModeViewAndShutdown(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a whole cluster")
	}
	logs := captureStderr(t)
	addr := freeAddr(t)
	all := startRun(t, "all", "--web.listen-address", addr, "--data.dir", t.TempDir(),
		"--demo.targets=6", "--scrapers=1", "--target-allocator.enabled", "--log.level=info")
	// The join command allot all prints, as a user would copy it.
	var join []string
	if !waitUntil(30*time.Second, func() bool {
		_, cmd, ok := strings.Cut(logs.String(), "Join more scrapers with:\n  allot ")
		if line, _, full := strings.Cut(cmd, "\n"); ok && full {
			join = strings.Fields(line)
		}
		return join != nil
	}) {
		t.Fatal("allot all printed no join command")
	}
	extra := startRun(t, append(join, "--scraper.id=joined-0", "--log.level=warn")...)

	// The collector polls as the OTel Collector's target_allocator client
	// does, every poll keeping its membership alive.
	poll := func() {
		resp, err := http.Get("http://" + addr + "/jobs/demo/targets?collector_id=otel-1")
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}
	var last string
	ok := waitUntil(60*time.Second, func() bool {
		for _, r := range []*runInProcess{all, extra} {
			if code, done := r.exited(); done {
				t.Fatalf("a command exited early with %d: %s", code, r.stderr.String())
			}
		}
		poll()
		ts, err := listTargets(addr)
		if err != nil {
			last = err.Error()
			return false
		}
		by := map[string][]string{}
		for _, tg := range ts {
			by[tg.Scraper] = append(by[tg.Scraper], tg.Health)
		}
		last = fmt.Sprint(by)
		if len(ts) != 6 || len(by[""]) > 0 || len(by["scraper-0"]) == 0 || len(by["joined-0"]) == 0 || len(by["otel-1"]) == 0 {
			return false
		}
		for _, h := range by["joined-0"] {
			if h != "up" {
				return false // reported over HTTP once scraped
			}
		}
		for _, h := range by["otel-1"] {
			if h != "unknown" {
				t.Fatalf("a collector's target has health %q, want unknown: %s", h, last)
			}
		}
		return true
	})
	if !ok {
		t.Fatalf("owners not all shown within 60s; last view (owner: healths): %s", last)
	}

	if code, _ := extra.stop(t); code != 0 {
		t.Errorf("joined scraper exited with %d:\n%s", code, extra.stderr.String())
	}
	// Samples reached the sink, so the exporters have been busy.
	if !waitUntil(20*time.Second, func() bool { return sinkPoints(addr) > 0 }) {
		t.Fatal("no samples reached the sink")
	}
	before := len(logs.String())
	code, took := all.stop(t)
	if code != 0 {
		t.Errorf("allot all exited with %d: %s", code, all.stderr.String())
	}
	if took > 8*time.Second {
		t.Errorf("allot all took %s to stop, want well under the exporters' 10s flush timeout", took)
	}
	if stopLogs := logs.String()[before:]; strings.Contains(stopLogs, "exporters stopped before sending everything") {
		t.Errorf("exporters could not flush on stop:\n%s", stopLogs)
	}
}

// captureStderr sends what the process writes to os.Stderr (allot's logs
// and banner) to a buffer until the test ends. Process-wide: tests that
// use it must not run in parallel.
func captureStderr(t *testing.T) *lockedBuffer {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	saved := os.Stderr
	os.Stderr = w
	buf := &lockedBuffer{}
	copied := make(chan struct{})
	go func() {
		defer close(copied)
		_, _ = io.Copy(buf, r)
	}()
	t.Cleanup(func() {
		os.Stderr = saved
		_ = w.Close()
		<-copied
		_ = r.Close()
		if t.Failed() {
			t.Logf("logs:\n%s", buf.String())
		}
	})
	return buf
}

func sinkPoints(addr string) int {
	resp, err := http.Get("http://" + addr + "/sink/api/v1/stats")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	var stats struct{ Points int }
	_ = json.NewDecoder(resp.Body).Decode(&stats)
	return stats.Points
}

// waitUntil polls cond every 100ms until it holds or timeout passes.
func waitUntil(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestServeUntilStopped: the HTTP server outlives the group, so that what
// runs after the group has stopped (the exporters flushing to the sink it
// serves) still reaches it; and a server that fails still stops the group.
func TestServeUntilStopped(t *testing.T) {
	for _, tc := range []struct {
		name      string
		breakIt   bool // close the listener: the server fails at once
		wantGroup string
	}{
		{"stops after the group", false, ""},
		{"a failed server stops the group", true, "http: http server"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, err := newServer("127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			srv.mux.HandleFunc("/sink/v1/metrics", func(w http.ResponseWriter, r *http.Request) {})
			if tc.breakIt {
				_ = srv.ln.Close()
			}
			logger := slog.New(slog.DiscardHandler)
			g := newGroup(t.Context())
			stop := serveUntilStopped(g, srv, logger)
			g.Go("worker", func(ctx context.Context) error { <-ctx.Done(); return nil })
			if !tc.breakIt {
				// Up and serving, then the process is asked to stop.
				if !waitUntil(10*time.Second, func() bool { return postSink(srv.Addr()) == nil }) {
					t.Fatal("not serving")
				}
				g.cancel()
			}
			err = g.Wait()
			if tc.wantGroup == "" && err != nil || tc.wantGroup != "" && (err == nil || !strings.Contains(err.Error(), tc.wantGroup)) {
				t.Fatalf("group: %v, want %q", err, tc.wantGroup)
			}
			if !tc.breakIt {
				if err := postSink(srv.Addr()); err != nil {
					t.Fatalf("after the group stopped, the sink is not served: %v", err)
				}
			}
			if err := stop(); err != nil {
				t.Errorf("stop: %v (a failure is the group's to report)", err)
			}
			if err := postSink(srv.Addr()); err == nil {
				t.Error("still serving after stop")
			}
		})
	}
}

func postSink(addr string) error {
	resp, err := http.Post("http://"+addr+"/sink/v1/metrics", "application/x-protobuf", strings.NewReader(""))
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %s", resp.Status)
	}
	return nil
}
