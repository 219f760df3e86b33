package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"io"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/allot-dev/allot/pkg/web"
)

// table splits tabwriter output into rows of fields: the header row, then
// each row up to the first blank line. Fields are separated by two or more
// spaces (tabwriter's padding), so a field may contain single spaces.
func table(t *testing.T, out string) (header []string, rows [][]string) {
	t.Helper()
	for i, line := range strings.Split(out, "\n") {
		if strings.TrimSpace(line) == "" {
			break
		}
		var fields []string
		for _, f := range strings.Split(line, "  ") {
			if f = strings.TrimSpace(f); f != "" {
				fields = append(fields, f)
			}
		}
		if i == 0 {
			header = fields
			continue
		}
		rows = append(rows, fields)
	}
	return header, rows
}

// runVerb parses args for a verb and runs it, returning stdout and stderr.
func runVerb(t *testing.T, verb func(*flag.FlagSet, io.Writer, io.Writer) func(context.Context, []string) error, args ...string) (string, string, error) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	fs := flag.NewFlagSet("verb", flag.ContinueOnError)
	fs.SetOutput(&stderr)
	runFn := verb(fs, &stdout, &stderr)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	err := runFn(t.Context(), fs.Args())
	return stdout.String(), stderr.String(), err
}

func TestTargetsVerb(t *testing.T) {
	now := time.Now()
	catalog := web.Targets{
		ActiveTargets: []web.ActiveTarget{
			{ID: "a", ScrapePool: "api", ScrapeURL: "http://10.0.0.1:9100/metrics", Health: "up", Scraper: "scraper-0", LastScrape: now.Add(-2 * time.Second), LastScrapeDuration: 0.012, ScrapeInterval: "15s", Series: 120},
			{ID: "b", ScrapePool: "api", ScrapeURL: "http://10.0.0.2:9100/metrics", Health: "down", Scraper: "scraper-1", LastScrape: now.Add(-time.Second), ScrapeInterval: "15s", LastError: "dial tcp 10.0.0.2:9100:\nconnection refused"},
			{ID: "c", ScrapePool: "db", ScrapeURL: "http://10.0.0.3:9187/metrics", ScrapeInterval: "30s"},
		},
		DroppedTargets: []web.DroppedTarget{{ScrapePool: "db", DiscoveredLabels: map[string]string{"__address__": "10.0.0.4:9187"}}},
	}
	var unreachable error
	srv := httptest.NewServer(web.TargetsAPI(web.TargetSourceFunc(func(context.Context) (web.Targets, error) {
		return catalog, unreachable
	})))
	defer srv.Close()

	for _, tc := range []struct {
		name        string
		args        []string
		unreachable error
		want        []string // endpoints, in order
		wantErr     string
		wantStderr  string
	}{
		{name: "all", want: []string{"http://10.0.0.1:9100/metrics", "http://10.0.0.2:9100/metrics", "http://10.0.0.3:9187/metrics"}},
		{name: "by job", args: []string{"--job=db"}, want: []string{"http://10.0.0.3:9187/metrics"}},
		{name: "by state", args: []string{"--state=down"}, want: []string{"http://10.0.0.2:9100/metrics"}},
		{name: "state any", args: []string{"--state=any", "--job=api"}, want: []string{"http://10.0.0.1:9100/metrics", "http://10.0.0.2:9100/metrics"}},
		{name: "by scraper", args: []string{"--scraper=scraper-0"}, want: []string{"http://10.0.0.1:9100/metrics"}},
		{name: "unowned", args: []string{"--scraper=(unowned)"}, want: []string{"http://10.0.0.3:9187/metrics"}},
		{name: "state and job that match nothing", args: []string{"--state=up", "--job=db"}, want: nil},
		{name: "bad state", args: []string{"--state=sideways"}, wantErr: `--state="sideways"`},
		{
			name: "a scraper unreachable: the rest is printed, the warning goes to stderr", args: []string{"--job=api"},
			unreachable: &web.UnreachableError{Addr: "10.9.9.9:8080", Err: errors.New("connection refused")},
			want:        []string{"http://10.0.0.1:9100/metrics", "http://10.0.0.2:9100/metrics"},
			wantStderr:  "warning: targets from 10.9.9.9:8080: connection refused",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			unreachable = tc.unreachable
			stdout, stderr, err := runVerb(t, targetsVerb, append([]string{"--url=" + srv.URL}, tc.args...)...)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one mentioning %s", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("%v\nstderr: %s", err, stderr)
			}
			if !strings.Contains(stderr, tc.wantStderr) || (tc.wantStderr == "" && stderr != "") {
				t.Errorf("stderr %q, want %q", stderr, tc.wantStderr)
			}
			header, rows := table(t, stdout)
			wantHeader := []string{"JOB", "ENDPOINT", "STATE", "OWNER", "LAST SCRAPE", "DURATION", "INTERVAL", "SERIES", "ERROR"}
			if !slices.Equal(header, wantHeader) {
				t.Fatalf("header %q, want %q", header, wantHeader)
			}
			var got []string
			for _, r := range rows {
				got = append(got, r[1])
				switch r[1] {
				case "http://10.0.0.1:9100/metrics":
					checkRow(t, r, "api", "up", "scraper-0", "ago", "12ms", "15s", "120")
				case "http://10.0.0.2:9100/metrics":
					checkRow(t, r, "api", "down", "scraper-1", "ago", "15s", "0", "dial tcp 10.0.0.2:9100: connection refused")
				case "http://10.0.0.3:9187/metrics":
					checkRow(t, r, "db", "unknown", "(unowned)", "never", "30s", "0")
				}
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("endpoints %q, want %q\n%s", got, tc.want, stdout)
			}
			if !strings.Contains(stdout, "\n"+strconv.Itoa(len(tc.want))+" targets\n") {
				t.Errorf("no count of %d targets:\n%s", len(tc.want), stdout)
			}
		})
	}
}

// checkRow checks a targets row: job, then (after the endpoint) the rest in
// order; "ago" matches any "… ago".
func checkRow(t *testing.T, row []string, job string, rest ...string) {
	t.Helper()
	checkFields(t, append([]string{row[0]}, row[2:]...), append([]string{job}, rest...))
}

// checkFields compares a row's fields; "ago" matches any "… ago".
func checkFields(t *testing.T, got, want []string) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("row %q, want fields %q", got, want)
		return
	}
	for i := range want {
		if got[i] != want[i] && !(want[i] == "ago" && strings.HasSuffix(got[i], " ago")) {
			t.Errorf("row %q: field %d is %q, want %q", got, i, got[i], want[i])
		}
	}
}

func TestStatusVerb(t *testing.T) {
	now := time.Now()
	cluster := web.Cluster{
		Leader: "rebalancer-0", Updated: now.Add(-3 * time.Second), Targets: 42,
		BalanceRatio: 1.0625, ByCountRatio: 1.5, Recommended: 3, PendingMoves: 2, QueuedMoves: 5,
		Members: []web.ClusterMember{
			{ID: "scraper-b", Kind: "scraper", Addr: "10.0.0.2:8080", Zone: "b", Weight: 2, Targets: 30, Series: 45000, SamplesPerSecond: 3000, ScrapeSecondsPerSecond: 0.25, LoadUpdated: now.Add(-time.Second)},
			{ID: "scraper-a", Addr: "10.0.0.1:8080", Zone: "a", Weight: 1, Targets: 10, Series: 900, Draining: true},
			{ID: "otelcol-1", Kind: "collector", Weight: 1, Targets: 2},
		},
		Moves: []web.ClusterMove{
			{Time: now.Add(-time.Minute), Target: "old-move", From: "scraper-a", To: "scraper-b", Reason: "balance", Duration: 40 * time.Millisecond, Outcome: "completed"},
			{Time: now.Add(-10 * time.Second), Target: "new-move", From: "scraper-a", To: "scraper-b", Reason: "drain", Duration: 12 * time.Millisecond, Outcome: "completed"},
		},
		Failovers: []web.Failover{{Time: now.Add(-5 * time.Second), Member: "scraper-c", Targets: 7}},
		Errors:    []string{"load reports: etcd slow"},
	}
	srv := httptest.NewServer(web.ClusterAPI(web.ClusterSourceFunc(func(context.Context) (web.Cluster, error) { return cluster, nil })))
	defer srv.Close()

	for _, tc := range []struct {
		name      string
		args      []string
		wantMoves []string
	}{
		{"all moves", nil, []string{"new-move", "old-move"}},
		{"newest move only", []string{"--limit=1"}, []string{"new-move"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stdout, stderr, err := runVerb(t, statusVerb, append([]string{"--url=" + srv.URL}, tc.args...)...)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(stderr, "warning: load reports: etcd slow") {
				t.Errorf("stderr %q does not carry the cluster view's error", stderr)
			}
			sections := strings.Split(stdout, "\n\n")
			if len(sections) != 4 {
				t.Fatalf("want summary, members, moves and failovers; got %d sections:\n%s", len(sections), stdout)
			}
			for _, want := range []string{"rebalancer-0 (evaluated 3", "scrapers:", "2 (3 recommended)", "collectors:", "claimed targets:", "42", "1.062", "1.500", "2 (5 queued)"} {
				if !strings.Contains(sections[0], want) {
					t.Errorf("summary lacks %q:\n%s", want, sections[0])
				}
			}
			header, rows := table(t, sections[1])
			wantHeader := []string{"MEMBER", "KIND", "ADDRESS", "ZONE", "WEIGHT", "TARGETS", "SERIES", "SAMPLES/S", "SCRAPE S/S", "LOAD REPORT", "DRAINING"}
			if !slices.Equal(header, wantHeader) {
				t.Fatalf("members header %q, want %q", header, wantHeader)
			}
			if len(rows) != 3 {
				t.Fatalf("%d member rows, want 3:\n%s", len(rows), sections[1])
			}
			// Sorted by ID; a member without a kind is a scraper; the
			// collector has no address or zone, so its row is shorter.
			wantRows := [][]string{
				{"otelcol-1", "collector", "1", "2", "0", "0", "0.000", "none", "false"},
				{"scraper-a", "scraper", "10.0.0.1:8080", "a", "1", "10", "900", "0", "0.000", "none", "true"},
				{"scraper-b", "scraper", "10.0.0.2:8080", "b", "2", "30", "45.0k", "3000", "0.250", "ago", "false"},
			}
			for i, want := range wantRows {
				checkFields(t, rows[i], want)
			}

			movesHead, moves := table(t, strings.TrimPrefix(sections[2], "recent moves: 2\n"))
			if !strings.HasPrefix(sections[2], "recent moves: 2\n") || !slices.Equal(movesHead, []string{"WHEN", "TARGET", "FROM", "TO", "REASON", "TOOK", "OUTCOME"}) {
				t.Fatalf("moves section:\n%s", sections[2])
			}
			var gotMoves []string
			for _, m := range moves {
				gotMoves = append(gotMoves, m[1])
			}
			if !slices.Equal(gotMoves, tc.wantMoves) {
				t.Errorf("moves %q, want %q (newest first)", gotMoves, tc.wantMoves)
			}
			if !slices.Equal(moves[0][2:], []string{"scraper-a", "scraper-b", "drain", "12ms", "completed"}) {
				t.Errorf("move row %q", moves[0])
			}

			failHead, fails := table(t, strings.TrimPrefix(sections[3], "failovers: 1\n"))
			if !slices.Equal(failHead, []string{"WHEN", "MEMBER", "KIND", "TARGETS TAKEN OVER"}) || len(fails) != 1 ||
				!slices.Equal(fails[0][1:], []string{"scraper-c", "scraper", "7"}) {
				t.Errorf("failovers section:\n%s", sections[3])
			}
		})
	}
}

// TestVerbsServerDown checks that a verb fails with the server's answer
// rather than printing an empty table.
func TestVerbsServerDown(t *testing.T) {
	srv := httptest.NewServer(web.TargetsAPI(web.TargetSourceFunc(func(context.Context) (web.Targets, error) {
		return web.Targets{}, errors.New("etcd unreachable")
	})))
	defer srv.Close()
	stdout, _, err := runVerb(t, targetsVerb, "--url="+srv.URL)
	if err == nil || !strings.Contains(err.Error(), "etcd unreachable") || !strings.Contains(err.Error(), "503") {
		t.Errorf("error %v, want the 503 and its reason", err)
	}
	if stdout != "" {
		t.Errorf("printed %q on failure", stdout)
	}
	closed := "http://" + closedPort(t)
	if _, _, err := runVerb(t, statusVerb, "--url="+closed); err == nil {
		t.Error("status against a closed port succeeded")
	}
}
