package rebalancer

import (
	"sync"
	"time"
)

// recentMoves is how many finished moves Status keeps.
const recentMoves = 100

// Status is what the cluster page shows: the scrapers and their load, the
// balance, the recommendation and the recent moves. A standby fills in what
// it can see without claims (members, load reports, the leader).
type Status struct {
	// ID is this rebalancer's ID; Leader the current leader's ID ("" when
	// none is known) and IsLeader whether that is this one.
	ID       string `json:"id"`
	Leader   string `json:"leader"`
	IsLeader bool   `json:"is_leader"`
	// Updated is when the leader last evaluated the cluster (zero on a
	// standby, whose scraper list comes from load reports alone).
	Updated  time.Time       `json:"updated"`
	Scrapers []ScraperStatus `json:"scrapers"`
	// Targets is the number of claimed targets.
	Targets int `json:"targets"`
	// BalanceRatio is busiest/mean by series (as in ScraperStatus.Series),
	// ByCountRatio by target count (both per unit of capacity weight).
	BalanceRatio float64 `json:"balance_ratio"`
	ByCountRatio float64 `json:"by_count_ratio"`
	// Recommended is the number of scrapers the current series call for.
	Recommended int `json:"recommended_scrapers"`
	// Pending moves have been started and not finished; Queued are planned
	// and not yet started.
	Pending int `json:"pending_moves"`
	Queued  int `json:"queued_moves"`
	// Draining lists the scrapers marked for draining.
	Draining []string `json:"draining"`
	// Moves are the last finished moves, newest first.
	Moves []MoveRecord `json:"recent_moves"`
}

// ScraperStatus is one scraper as the cluster page shows it.
type ScraperStatus struct {
	ID       string  `json:"id"`
	Addr     string  `json:"addr"`
	Zone     string  `json:"zone,omitempty"`
	Weight   float64 `json:"weight"`
	Draining bool    `json:"draining"`
	// Targets is what it owns by its claims; Series is its last report's
	// series per target times that (on a standby: what its last load
	// report says).
	Targets int     `json:"targets"`
	Series  float64 `json:"series"`
	// Load is its last load report, if any.
	Load *LoadStatus `json:"load,omitempty"`
}

// LoadStatus is the summary of a scraper's load report.
type LoadStatus struct {
	Targets                int       `json:"targets"`
	Series                 int64     `json:"series"`
	SamplesPerSecond       float64   `json:"samples_per_second"`
	ScrapeSecondsPerSecond float64   `json:"scrape_seconds_per_second"`
	Updated                time.Time `json:"updated"`
}

// MoveRecord is a finished move.
type MoveRecord struct {
	// Time is when the move was started.
	Time   time.Time `json:"time"`
	Target string    `json:"target"`
	From   string    `json:"from"`
	To     string    `json:"to"`
	Reason string    `json:"reason"`
	// Duration is from start to the observed end.
	Duration time.Duration `json:"duration"`
	// Outcome is one of the Outcome* constants.
	Outcome string `json:"outcome"`
}

// moveLog is a ring buffer of the last recentMoves finished moves.
type moveLog struct {
	mu   sync.Mutex
	buf  [recentMoves]MoveRecord
	next int
	n    int
}

func (l *moveLog) add(r MoveRecord) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf[l.next] = r
	l.next = (l.next + 1) % len(l.buf)
	l.n = min(l.n+1, len(l.buf))
}

// list returns the records newest first.
func (l *moveLog) list() []MoveRecord {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]MoveRecord, 0, l.n)
	for i := 1; i <= l.n; i++ {
		out = append(out, l.buf[(l.next-i+len(l.buf))%len(l.buf)])
	}
	return out
}
