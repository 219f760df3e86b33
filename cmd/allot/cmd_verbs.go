package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/allot-dev/allot/pkg/leases"
	"github.com/allot-dev/allot/pkg/web"
)

// The operator verbs talk to a running allot over its HTTP API, so they work
// the same against `allot all`, a discoverer or a rebalancer. They print
// what the /targets and /cluster pages show, as tables on stdout; what the
// server says it could not see (unreachable scrapers, failed reads) goes to
// stderr as warnings, so a partial answer is printed rather than lost.

// apiClient is how a verb reaches allot: --url and, for a server started
// with --web.tls-*, the CA and client certificate to use.
type apiClient struct {
	base                      string
	caFile, certFile, keyFile string
}

func (c *apiClient) register(fs *flag.FlagSet) {
	fs.StringVar(&c.base, "url", "http://127.0.0.1:8080", "Base URL of a running allot (all, discoverer or rebalancer); https:// for one serving TLS.")
	fs.StringVar(&c.caFile, "tls.ca-file", "", "CA certificate(s) to verify an https --url with (default: the system's).")
	fs.StringVar(&c.certFile, "tls.cert-file", "", "Client certificate for a server that requires one (--web.tls-client-ca-file).")
	fs.StringVar(&c.keyFile, "tls.key-file", "", "Key of --tls.cert-file.")
}

func (c *apiClient) httpClient() (*http.Client, error) {
	if c.caFile == "" && c.certFile == "" && c.keyFile == "" {
		return http.DefaultClient, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.caFile != "" {
		pool, err := loadCertPool(c.caFile)
		if err != nil {
			return nil, fmt.Errorf("--tls.ca-file: %w", err)
		}
		cfg.RootCAs = pool
	}
	if c.certFile != "" || c.keyFile != "" {
		if c.certFile == "" || c.keyFile == "" {
			return nil, errors.New("--tls.cert-file and --tls.key-file go together")
		}
		cert, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
		if err != nil {
			return nil, fmt.Errorf("load --tls.cert-file=%s and --tls.key-file=%s: %w", c.certFile, c.keyFile, err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = cfg
	return &http.Client{Transport: tr}, nil
}

// loadCertPool reads PEM certificates from file; a file without any is an
// error rather than a pool that trusts nothing.
func loadCertPool(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: no PEM certificate found", file)
	}
	return pool, nil
}

// call sends a request to path and decodes the answer into v (if not nil).
// It unwraps the Prometheus API envelope when there is one and returns its
// warnings.
func (c *apiClient) call(ctx context.Context, method, path string, v any) (warnings []string, err error) {
	client, err := c.httpClient()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	u := strings.TrimSuffix(c.base, "/") + path
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("%s %s: read answer: %w", method, u, err)
	}
	if resp.StatusCode/100 != 2 {
		return nil, fmt.Errorf("%s %s: %s: %s", method, u, resp.Status, strings.TrimSpace(string(body)))
	}
	if v == nil {
		return nil, nil
	}
	var envelope struct {
		Status   string          `json:"status"`
		Data     json.RawMessage `json:"data"`
		Error    string          `json:"error"`
		Warnings []string        `json:"warnings"`
	}
	if err := json.Unmarshal(body, &envelope); err == nil && envelope.Status != "" {
		if envelope.Status != "success" {
			return envelope.Warnings, fmt.Errorf("%s: %s", u, envelope.Error)
		}
		body, warnings = envelope.Data, envelope.Warnings
	}
	if err := json.Unmarshal(body, v); err != nil {
		return warnings, fmt.Errorf("%s %s: decode answer: %w", method, u, err)
	}
	return warnings, nil
}

func printWarnings(w io.Writer, warnings []string) {
	for _, s := range warnings {
		fmt.Fprintf(w, "warning: %s\n", s)
	}
}

func targetsFlags(fs *flag.FlagSet) func(context.Context, []string) error {
	return targetsVerb(fs, os.Stdout, os.Stderr)
}

// targetsVerb prints the /targets page: every active target with its job,
// endpoint, state, owner, last scrape, duration, interval, series and
// error, filtered as the page's job, state and scraper selectors filter.
func targetsVerb(fs *flag.FlagSet, stdout, stderr io.Writer) func(context.Context, []string) error {
	var c apiClient
	c.register(fs)
	job := fs.String("job", "", "Only targets of this job (scrape pool).")
	state := fs.String("state", "", "Only targets in this state: up, down or unknown (default any).")
	scraperID := fs.String("scraper", "", `Only targets owned by this scraper; "`+web.Unowned+`" for targets nobody owns.`)
	return func(ctx context.Context, _ []string) error {
		switch *state {
		case "", "any", "up", "down", "unknown":
		default:
			return fmt.Errorf("--state=%q: want up, down, unknown or any", *state)
		}
		q := url.Values{"state": {"active"}}
		if *job != "" {
			q.Set("scrapePool", *job)
		}
		if *scraperID != "" && *scraperID != web.Unowned {
			q.Set("scraper", *scraperID)
		}
		var t web.Targets
		warnings, err := c.call(ctx, http.MethodGet, "/api/v1/targets?"+q.Encode(), &t)
		printWarnings(stderr, warnings)
		if err != nil {
			return err
		}
		health := *state
		if health == "any" {
			health = ""
		}
		// The server filters by job and owner already; filtering again
		// here covers health (which /api/v1/targets does not take) and
		// "(unowned)", and keeps the output right against older servers.
		t.ActiveTargets = web.MatchTargets(t.ActiveTargets, *job, health, *scraperID)
		t.Sort()
		return writeTargets(stdout, t.ActiveTargets, time.Now())
	}
}

func writeTargets(w io.Writer, targets []web.ActiveTarget, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "JOB\tENDPOINT\tSTATE\tOWNER\tLAST SCRAPE\tDURATION\tINTERVAL\tSERIES\tERROR")
	for _, a := range targets {
		owner := a.Scraper
		if owner == "" {
			owner = web.Unowned
		}
		health := a.Health
		if health == "" {
			health = "unknown"
		}
		dur := ""
		if a.LastScrapeDuration > 0 {
			dur = time.Duration(a.LastScrapeDuration * float64(time.Second)).Truncate(time.Microsecond).String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n",
			a.ScrapePool, a.ScrapeURL, health, owner, web.Ago(now, a.LastScrape), dur, a.ScrapeInterval, a.Series, oneLine(a.LastError))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "\n%d targets\n", len(targets))
	return err
}

func statusFlags(fs *flag.FlagSet) func(context.Context, []string) error {
	return statusVerb(fs, os.Stdout, os.Stderr)
}

// statusVerb prints the /cluster page: the balance, every member with its
// kind and load, recent moves and failovers.
func statusVerb(fs *flag.FlagSet, stdout, stderr io.Writer) func(context.Context, []string) error {
	var c apiClient
	c.register(fs)
	limit := fs.Int("limit", 20, "Recent moves and failovers to print, newest first (0 = all).")
	return func(ctx context.Context, _ []string) error {
		var st web.Cluster
		warnings, err := c.call(ctx, http.MethodGet, "/api/v1/cluster", &st)
		printWarnings(stderr, append(warnings, st.Errors...))
		if err != nil {
			return err
		}
		return writeCluster(stdout, st, *limit, time.Now())
	}
}

func writeCluster(w io.Writer, c web.Cluster, limit int, now time.Time) error {
	sort.Slice(c.Members, func(i, j int) bool { return c.Members[i].ID < c.Members[j].ID })
	sort.SliceStable(c.Moves, func(i, j int) bool { return c.Moves[i].Time.After(c.Moves[j].Time) })
	sort.SliceStable(c.Failovers, func(i, j int) bool { return c.Failovers[i].Time.After(c.Failovers[j].Time) })
	scrapers, collectors := 0, 0
	for _, m := range c.Members {
		if m.Kind == leases.KindCollector {
			collectors++
		} else {
			scrapers++
		}
	}
	leader := c.Leader
	if leader == "" {
		leader = "none known"
	}
	if !c.Updated.IsZero() {
		leader += " (evaluated " + web.Ago(now, c.Updated) + ")"
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "rebalancer leader:\t%s\n", leader)
	fmt.Fprintf(tw, "scrapers:\t%d", scrapers)
	if c.Recommended > 0 {
		fmt.Fprintf(tw, " (%d recommended)", c.Recommended)
	}
	fmt.Fprintln(tw)
	if collectors > 0 {
		fmt.Fprintf(tw, "collectors:\t%d\n", collectors)
	}
	fmt.Fprintf(tw, "claimed targets:\t%d\n", c.Targets)
	fmt.Fprintf(tw, "balance by series (busiest/mean):\t%s\n", ratio(c.BalanceRatio))
	fmt.Fprintf(tw, "balance by targets:\t%s\n", ratio(c.ByCountRatio))
	fmt.Fprintf(tw, "moves pending:\t%d (%d queued)\n", c.PendingMoves, c.QueuedMoves)
	if err := tw.Flush(); err != nil {
		return err
	}

	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "MEMBER\tKIND\tADDRESS\tZONE\tWEIGHT\tTARGETS\tSERIES\tSAMPLES/S\tSCRAPE S/S\tLOAD REPORT\tDRAINING")
	for _, m := range c.Members {
		report := "none"
		if !m.LoadUpdated.IsZero() {
			report = web.Ago(now, m.LoadUpdated)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%g\t%d\t%s\t%s\t%.3f\t%s\t%v\n",
			m.ID, kindName(m.Kind), m.Addr, m.Zone, m.Weight, m.Targets, web.Num(m.Series), web.Num(m.SamplesPerSecond), m.ScrapeSecondsPerSecond, report, m.Draining)
	}
	if err := tw.Flush(); err != nil {
		return err
	}

	err := writeRecent(w, "recent moves", "WHEN\tTARGET\tFROM\tTO\tREASON\tTOOK\tOUTCOME", c.Moves, limit, func(mv web.ClusterMove) string {
		return fmt.Sprintf("%s\t%s\t%s\t%s\t%s\t%s\t%s", web.Ago(now, mv.Time), mv.Target, mv.From, mv.To, mv.Reason, mv.Duration, mv.Outcome)
	})
	if err != nil {
		return err
	}
	return writeRecent(w, "failovers", "WHEN\tMEMBER\tKIND\tTARGETS TAKEN OVER", c.Failovers, limit, func(f web.Failover) string {
		return fmt.Sprintf("%s\t%s\t%s\t%d", web.Ago(now, f.Time), f.Member, kindName(f.Kind), f.Targets)
	})
}

// writeRecent prints a count of items under title, then a table of the
// first limit of them (0 = all), one row each.
func writeRecent[T any](w io.Writer, title, header string, items []T, limit int, row func(T) string) error {
	fmt.Fprintf(w, "\n%s: %d\n", title, len(items))
	if limit > 0 && len(items) > limit {
		items = items[:limit]
	}
	if len(items) == 0 {
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, header)
	for _, it := range items {
		fmt.Fprintln(tw, row(it))
	}
	return tw.Flush()
}

// kindName is a member's kind as the tables print it (no kind: a scraper).
func kindName(kind string) string {
	if kind == "" {
		return leases.KindScraper
	}
	return kind
}

func ratio(f float64) string {
	if f == 0 || math.IsNaN(f) || math.IsInf(f, 0) {
		return "-"
	}
	return fmt.Sprintf("%.3f", f)
}

// oneLine keeps a multi-line scrape error on its table row.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

func drainFlags(fs *flag.FlagSet) func(context.Context, []string) error {
	var c apiClient
	c.register(fs)
	undo := fs.Bool("undo", false, "Stop draining the scraper instead.")
	return func(ctx context.Context, args []string) error {
		if len(args) != 1 {
			return errors.New("usage: allot drain [--url=...] [--undo] <scraper-id>")
		}
		method := http.MethodPost
		if *undo {
			method = http.MethodDelete
		}
		if _, err := c.call(ctx, method, "/api/v1/drain?scraper="+url.QueryEscape(args[0]), nil); err != nil {
			return err
		}
		if *undo {
			fmt.Printf("scraper %s is no longer drained\n", args[0])
		} else {
			fmt.Printf("draining scraper %s: its targets are being moved to the others\n", args[0])
		}
		return nil
	}
}
