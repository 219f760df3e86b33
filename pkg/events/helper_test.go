package events

import (
	"context"
	"fmt"
	"maps"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/allot-dev/allot/pkg/embedded"
)

const waitFor = 20 * time.Second

func startNATS(t testing.TB, dir, addr string) *embedded.NATS {
	t.Helper()
	n, err := embedded.StartNATS(embedded.NATSConfig{Dir: dir, Addr: addr}, nil)
	require.NoError(t, err)
	return n
}

// connect returns a JetStream client that reconnects forever, quickly.
func connect(t testing.TB, url string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond), nats.ReconnectJitter(0, 0))
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	return nc, js
}

// env is one NATS server with a publisher on its own connection.
type env struct {
	n   *embedded.NATS
	js  jetstream.JetStream
	pub *Publisher
}

func newEnv(t testing.TB) *env {
	t.Helper()
	n := startNATS(t, t.TempDir(), "")
	t.Cleanup(n.Close)
	_, js := connect(t, n.URL())
	pub, err := NewPublisher(context.Background(), js, Config{}, nil, nil)
	require.NoError(t, err)
	return &env{n: n, js: js, pub: pub}
}

// follower starts a follower on its own connection; it stops with the test.
func (e *env) follower(t testing.TB, h Handler, slots []int, reg prometheus.Registerer) *Follower {
	t.Helper()
	_, js := connect(t, e.n.URL())
	f := NewFollower(js, Config{}, h, reg, nil)
	if slots != nil {
		f.SetSlots(slots)
	}
	runFollower(t, f)
	return f
}

func runFollower(t testing.TB, f *Follower) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			require.NoError(t, err)
		case <-time.After(waitFor):
			t.Error("follower did not stop")
		}
	})
}

func allSlots() []int {
	s := make([]int, Slots)
	for i := range s {
		s[i] = i
	}
	return s
}

func target(job string, i int, extra ...string) Target {
	l := map[string]string{"__address__": fmt.Sprintf("host-%d:9100", i), "instance": fmt.Sprintf("host-%d", i)}
	for j := 0; j+1 < len(extra); j += 2 {
		l[extra[j]] = extra[j+1]
	}
	return NewTarget(job, l, "h1")
}

func targets(job string, from, to int, extra ...string) []Target {
	out := make([]Target, 0, to-from)
	for i := from; i < to; i++ {
		out = append(out, target(job, i, extra...))
	}
	return out
}

func ids(ts []Target) []string {
	out := make([]string, len(ts))
	for i, t := range ts {
		out[i] = t.ID
	}
	return out
}

// recorder is a Handler that keeps what it was told.
type recorder struct {
	mu      sync.Mutex
	jobs    map[string]Job
	targets map[string]Target
	synced  int
	upserts int
	deletes map[string]int
	// gate, if set, blocks the next handler call until it is closed.
	gate chan struct{}
}

func newRecorder() *recorder {
	return &recorder{jobs: map[string]Job{}, targets: map[string]Target{}, deletes: map[string]int{}}
}

func (r *recorder) wait() {
	r.mu.Lock()
	g := r.gate
	r.gate = nil
	r.mu.Unlock()
	if g != nil {
		<-g
	}
}

func (r *recorder) UpsertJob(j Job) {
	r.wait()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.jobs[j.Name] = j
}

func (r *recorder) DeleteJob(name string) {
	r.wait()
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.jobs, name)
}

func (r *recorder) UpsertTarget(t Target) {
	r.wait()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.targets[t.ID] = t
	r.upserts++
}

func (r *recorder) DeleteTarget(id string) {
	r.wait()
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.targets, id)
	r.deletes[id]++
}

func (r *recorder) Synced() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.synced++
}

func (r *recorder) syncCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.synced
}

func (r *recorder) target(id string) (Target, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	t, ok := r.targets[id]
	return t, ok
}

func (r *recorder) deleteCount(id string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.deletes[id]
}

func (r *recorder) snapshotTargets() map[string]Target {
	r.mu.Lock()
	defer r.mu.Unlock()
	return maps.Clone(r.targets)
}

func (r *recorder) snapshotJobs() map[string]Job {
	r.mu.Lock()
	defer r.mu.Unlock()
	return maps.Clone(r.jobs)
}

// forget drops targets outside slots, as a scraper does after SetSlots.
func (r *recorder) forget(keep func(slot int) bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for id := range r.targets {
		if !keep(SlotOf(id)) {
			delete(r.targets, id)
		}
	}
}

// readBucket reads the valid targets in the bucket.
func readBucket(t testing.TB, js jetstream.JetStream, keep func(slot int) bool) map[string]Target {
	t.Helper()
	kv, err := js.KeyValue(context.Background(), defaultTargetsBucket)
	require.NoError(t, err)
	out := map[string]Target{}
	require.NoError(t, listBucket(context.Background(), kv, func(e jetstream.KeyValueEntry) {
		tg, err := DecodeTarget(e.Value())
		if err == nil && (keep == nil || keep(SlotOf(tg.ID))) {
			out[tg.ID] = tg
		}
	}))
	return out
}

// eventually waits for cond, with a description of the last failure.
func eventually(t testing.TB, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// sameTargets compares two target sets and says how they differ.
func sameTargets(got, want map[string]Target) error {
	var missing, extra, differ int
	var example string
	for id, w := range want {
		g, ok := got[id]
		switch {
		case !ok:
			missing++
			example = "missing " + id
		case !maps.Equal(g.Labels, w.Labels) || g.ConfigHash != w.ConfigHash || g.Job != w.Job:
			differ++
			example = "differs " + id
		}
	}
	for id := range got {
		if _, ok := want[id]; !ok {
			extra++
			example = "extra " + id
		}
	}
	if missing+extra+differ == 0 {
		return nil
	}
	return fmt.Errorf("got %d want %d targets: %d missing, %d extra, %d differ (e.g. %s)", len(got), len(want), missing, extra, differ, example)
}
