package web

import (
	"context"
	"net/http"
	"sort"
	"sync"
	"time"
)

// Cluster is what the /cluster page shows: the members that own targets
// (scrapers, and collectors polling the Target Allocator API), their load,
// the balance, and the recent moves and failovers. Its JSON form is a
// superset of what `allot status` reads from /api/v1/cluster.
type Cluster struct {
	// Leader is the rebalancer leader's ID ("" when none is known).
	Leader string `json:"leader"`
	// Updated is when the numbers were computed (zero: unknown).
	Updated time.Time `json:"updated"`
	// Targets is the number of claimed targets.
	Targets int `json:"targets"`
	// BalanceRatio is busiest/mean by series, ByCountRatio by target count
	// (weighted by capacity); 1 is perfect balance.
	BalanceRatio float64 `json:"balance_ratio"`
	ByCountRatio float64 `json:"by_count_ratio"`
	// Recommended is the number of scrapers the load calls for.
	Recommended int `json:"recommended_scrapers"`
	// PendingMoves have started and not finished; QueuedMoves are planned.
	PendingMoves int `json:"pending_moves"`
	QueuedMoves  int `json:"queued_moves"`
	// Members are named "scrapers" in JSON for `allot status`; collectors
	// are among them with Kind "collector".
	Members   []ClusterMember `json:"scrapers"`
	Moves     []ClusterMove   `json:"recent_moves"`
	Failovers []Failover      `json:"failovers"`
	// Errors are problems the source met while gathering (a standby
	// rebalancer, an unreachable load report); the page shows them.
	Errors []string `json:"errors,omitempty"`
}

// ClusterMember is one scraper or collector.
type ClusterMember struct {
	ID       string  `json:"id"`
	Kind     string  `json:"kind,omitempty"`
	Addr     string  `json:"addr,omitempty"`
	Zone     string  `json:"zone,omitempty"`
	Weight   float64 `json:"weight"`
	Draining bool    `json:"draining"`
	// Targets and Series are what it owns by its claims.
	Targets int     `json:"targets"`
	Series  float64 `json:"series"`
	// From its last load report (zero when it sends none, as collectors).
	SamplesPerSecond       float64   `json:"samples_per_second,omitempty"`
	ScrapeSecondsPerSecond float64   `json:"scrape_seconds_per_second,omitempty"`
	LoadUpdated            time.Time `json:"load_updated,omitzero"`
}

// ClusterMove is a finished move of a target between members, or one in
// progress (Outcome MoveInProgress): then Time is when it was read, Duration
// is zero and Deadline is when the rebalancer gives up on it.
type ClusterMove struct {
	Time     time.Time     `json:"time"`
	Target   string        `json:"target"`
	From     string        `json:"from"`
	To       string        `json:"to"`
	Reason   string        `json:"reason"`
	Duration time.Duration `json:"duration"`
	Outcome  string        `json:"outcome"`
	Deadline time.Time     `json:"deadline,omitzero"`
}

// MoveInProgress is the Outcome of a move that has started and not ended.
const MoveInProgress = "in progress"

// Failover is a member that left the cluster (its lease ended) with the
// targets it owned, which the others then took over.
type Failover struct {
	Time    time.Time `json:"time"`
	Member  string    `json:"member"`
	Kind    string    `json:"kind,omitempty"`
	Targets int       `json:"targets"`
}

// ClusterSource provides the cluster's state. Implementations must be safe
// for concurrent use and return promptly when ctx ends.
type ClusterSource interface {
	Cluster(ctx context.Context) (Cluster, error)
}

// ClusterSourceFunc adapts a function to ClusterSource.
type ClusterSourceFunc func(ctx context.Context) (Cluster, error)

// Cluster calls f.
func (f ClusterSourceFunc) Cluster(ctx context.Context) (Cluster, error) { return f(ctx) }

// ClusterStore is what the coordination store says about the cluster
// without a rebalancer's evaluation: who owns how many targets by their
// claims, and which moves are under way. Implementations must be safe for
// concurrent use and return promptly when ctx ends.
type ClusterStore interface {
	// ClaimCounts returns the number of targets each owner (scraper or
	// collector) holds claims on.
	ClaimCounts(ctx context.Context) (map[string]int, error)
	// PendingMoves returns the moves in progress, with Outcome
	// MoveInProgress.
	PendingMoves(ctx context.Context) ([]ClusterMove, error)
}

// WithStore completes src's view from st when no rebalancer evaluated it
// (Updated is zero: the process runs no rebalancer, or a standby one).
// Such a view knows the members and their load reports only, so collectors,
// which send no load reports, would show no targets and the moves under way
// would not show at all. WithStore sets every member's Targets and the
// claimed total from the claims, and PendingMoves and the moves in progress
// (among Moves) from the store. A view a rebalancer leader evaluated is
// returned as it is: it has all of that already. A failed store read is
// reported in Errors and leaves the rest of the view as it was.
func WithStore(src ClusterSource, st ClusterStore) ClusterSourceFunc {
	return func(ctx context.Context) (Cluster, error) {
		c, err := src.Cluster(ctx)
		if err != nil || !c.Updated.IsZero() {
			return c, err
		}
		if counts, cerr := st.ClaimCounts(ctx); cerr != nil {
			c.Errors = append(c.Errors, "claims: "+cerr.Error())
		} else {
			c.Targets = 0
			for _, n := range counts {
				c.Targets += n
			}
			for i := range c.Members {
				c.Members[i].Targets = counts[c.Members[i].ID]
			}
		}
		if moves, merr := st.PendingMoves(ctx); merr != nil {
			c.Errors = append(c.Errors, "moves: "+merr.Error())
		} else {
			c.PendingMoves = len(moves)
			c.Moves = append(c.Moves, moves...)
		}
		return c, nil
	}
}

type clusterView struct {
	nav
	Cluster
	Err        string
	Rows       []memberRow
	Scrapers   int
	Collectors int
}

// memberRow is a member with its bars: its targets and series as a share
// of the busiest member's.
type memberRow struct {
	ClusterMember
	TargetBar, SeriesBar float64
}

// ClusterPage serves /cluster: members with their load and share, the
// balance, recent moves and failovers. ?format=json (or Accept:
// application/json) gives the Cluster as JSON, in the Prometheus API
// envelope; ClusterAPI gives it bare, as /api/v1/cluster.
func ClusterPage(src ClusterSource) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
		defer cancel()
		c, err := src.Cluster(ctx)
		c.normalise()
		if wantsJSON(r) {
			if err != nil && len(c.Members) == 0 {
				WriteError(w, http.StatusServiceUnavailable, "unavailable", err)
				return
			}
			WriteJSON(w, c)
			return
		}
		v := clusterView{nav: nav{Title: "Cluster", Active: "cluster"}, Cluster: c}
		if err != nil {
			v.Err = err.Error()
		}
		maxTargets, maxSeries := 0, 0.0
		for _, m := range c.Members {
			maxTargets, maxSeries = max(maxTargets, m.Targets), max(maxSeries, m.Series)
			if m.Kind == "collector" {
				v.Collectors++
			} else {
				v.Scrapers++
			}
		}
		for _, m := range c.Members {
			row := memberRow{ClusterMember: m}
			if maxTargets > 0 {
				row.TargetBar = 100 * float64(m.Targets) / float64(maxTargets)
			}
			if maxSeries > 0 {
				row.SeriesBar = 100 * m.Series / maxSeries
			}
			v.Rows = append(v.Rows, row)
		}
		render(w, "cluster.html", v)
	})
}

// ClusterAPI serves the Cluster as bare JSON, for /api/v1/cluster.
func ClusterAPI(src ClusterSource) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
		defer cancel()
		c, err := src.Cluster(ctx)
		if err != nil && len(c.Members) == 0 {
			WriteError(w, http.StatusServiceUnavailable, "unavailable", err)
			return
		}
		c.normalise()
		w.Header().Set("Content-Type", "application/json")
		writeJSONBody(w, c)
	})
}

// normalise sorts the members and gives empty lists instead of null.
func (c *Cluster) normalise() {
	sort.Slice(c.Members, func(i, j int) bool { return c.Members[i].ID < c.Members[j].ID })
	sort.SliceStable(c.Moves, func(i, j int) bool { return c.Moves[i].Time.After(c.Moves[j].Time) })
	sort.SliceStable(c.Failovers, func(i, j int) bool { return c.Failovers[i].Time.After(c.Failovers[j].Time) })
	if c.Members == nil {
		c.Members = []ClusterMember{}
	}
	if c.Moves == nil {
		c.Moves = []ClusterMove{}
	}
	if c.Failovers == nil {
		c.Failovers = []Failover{}
	}
}

// FailoverLog remembers the last members that left, for the cluster page.
// Feed it every member set you see (Observe); a member missing from the
// next set has failed over (or been shut down: both hand its targets to
// the others). Safe for concurrent use.
type FailoverLog struct {
	// Size is how many failovers are kept; zero means 100.
	Size int

	mu   sync.Mutex
	last map[string]ClusterMember
	seen bool
	log  []Failover
}

// Observe records the members present at now and logs each member of the
// previous set that is gone, with the targets it owned when last seen.
// The first call only sets the baseline.
func (l *FailoverLog) Observe(now time.Time, members []ClusterMember) {
	l.mu.Lock()
	defer l.mu.Unlock()
	cur := make(map[string]ClusterMember, len(members))
	for _, m := range members {
		cur[m.ID] = m
	}
	if l.seen {
		var gone []Failover
		for id, m := range l.last {
			if _, ok := cur[id]; !ok {
				gone = append(gone, Failover{Time: now, Member: id, Kind: m.Kind, Targets: m.Targets})
			}
		}
		sort.Slice(gone, func(i, j int) bool { return gone[i].Member < gone[j].Member })
		l.log = append(l.log, gone...)
		if size := l.size(); len(l.log) > size {
			l.log = append([]Failover(nil), l.log[len(l.log)-size:]...)
		}
	}
	l.last, l.seen = cur, true
}

func (l *FailoverLog) size() int {
	if l.Size <= 0 {
		return 100
	}
	return l.Size
}

// Recent returns the logged failovers, newest first.
func (l *FailoverLog) Recent() []Failover {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]Failover, len(l.log))
	for i, f := range l.log {
		out[len(l.log)-1-i] = f
	}
	return out
}
