package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/allot-dev/allot/pkg/web"
)

// The operator verbs talk to a running allot over its HTTP API, so they work
// the same against `allot all`, a discoverer or a rebalancer.

func apiFlag(fs *flag.FlagSet) *string {
	return fs.String("url", "http://127.0.0.1:8080", "Base URL of a running allot (all, discoverer or rebalancer).")
}

func getJSON(ctx context.Context, method, u string, v any) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %s: %s", method, u, resp.Status, strings.TrimSpace(string(body)))
	}
	if v == nil {
		return nil
	}
	var envelope struct {
		Status string          `json:"status"`
		Data   json.RawMessage `json:"data"`
		Error  string          `json:"error"`
	}
	if err := json.Unmarshal(body, &envelope); err == nil && envelope.Status != "" {
		if envelope.Status != "success" {
			return fmt.Errorf("%s: %s", u, envelope.Error)
		}
		body = envelope.Data
	}
	return json.Unmarshal(body, v)
}

func targetsFlags(fs *flag.FlagSet) func(context.Context, []string) error {
	base := apiFlag(fs)
	pool := fs.String("job", "", "Only targets of this job.")
	scraperID := fs.String("scraper", "", "Only targets owned by this scraper.")
	return func(ctx context.Context, _ []string) error {
		q := url.Values{"state": {"active"}}
		if *pool != "" {
			q.Set("scrapePool", *pool)
		}
		if *scraperID != "" {
			q.Set("scraper", *scraperID)
		}
		var t web.Targets
		if err := getJSON(ctx, http.MethodGet, *base+"/api/v1/targets?"+q.Encode(), &t); err != nil {
			return err
		}
		t.Sort()
		tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "JOB\tURL\tHEALTH\tSCRAPER\tLAST SCRAPE\tSERIES\tERROR")
		for _, a := range t.ActiveTargets {
			last := "never"
			if !a.LastScrape.IsZero() {
				last = time.Since(a.LastScrape).Truncate(time.Millisecond).String() + " ago"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\n", a.ScrapePool, a.ScrapeURL, a.Health, a.Scraper, last, a.Series, a.LastError)
		}
		return tw.Flush()
	}
}

// clusterStatus is the part of /api/v1/cluster the status verb prints.
type clusterStatus struct {
	Leader             string  `json:"leader"`
	BalanceRatio       float64 `json:"balance_ratio"`
	RecommendedScraper int     `json:"recommended_scrapers"`
	Scrapers           []struct {
		ID      string  `json:"id"`
		Targets int     `json:"targets"`
		Series  float64 `json:"series"`
		Weight  float64 `json:"weight"`
		Zone    string  `json:"zone"`
		Drained bool    `json:"draining"`
	} `json:"scrapers"`
}

func statusFlags(fs *flag.FlagSet) func(context.Context, []string) error {
	base := apiFlag(fs)
	return func(ctx context.Context, _ []string) error {
		var st clusterStatus
		if err := getJSON(ctx, http.MethodGet, *base+"/api/v1/cluster", &st); err != nil {
			return err
		}
		sort.Slice(st.Scrapers, func(i, j int) bool { return st.Scrapers[i].ID < st.Scrapers[j].ID })
		fmt.Printf("rebalancer leader: %s\nbalance (busiest/mean series): %.3f\nrecommended scrapers: %d\n\n", st.Leader, st.BalanceRatio, st.RecommendedScraper)
		tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "SCRAPER\tTARGETS\tSERIES\tWEIGHT\tZONE\tDRAINED")
		for _, s := range st.Scrapers {
			fmt.Fprintf(tw, "%s\t%d\t%.0f\t%g\t%s\t%v\n", s.ID, s.Targets, s.Series, s.Weight, s.Zone, s.Drained)
		}
		return tw.Flush()
	}
}

func drainFlags(fs *flag.FlagSet) func(context.Context, []string) error {
	base := apiFlag(fs)
	undo := fs.Bool("undo", false, "Stop draining the scraper instead.")
	return func(ctx context.Context, args []string) error {
		if len(args) != 1 {
			return errors.New("usage: allot drain [--url=...] [--undo] <scraper-id>")
		}
		method := http.MethodPost
		if *undo {
			method = http.MethodDelete
		}
		if err := getJSON(ctx, method, *base+"/api/v1/drain?scraper="+url.QueryEscape(args[0]), nil); err != nil {
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
