package targetallocator

import (
	"sync"

	"github.com/allot-dev/allot/pkg/events"
)

// catalog is the whole job and target catalog, as an events.Handler fed by
// a Follower of every slot. It survives follower restarts: a restarted
// watch replays its snapshot and reports only what vanished, so what this
// API serves never blinks empty while NATS is away.
type catalog struct {
	onChange func(jobs bool) // called outside the lock after every change

	mu      sync.RWMutex
	jobs    map[string]events.Job
	targets map[string]events.Target
	byJob   map[string]map[string]struct{}
	synced  bool   // the first snapshot has been delivered
	gen     uint64 // bumped by every change
	jobGen  uint64 // bumped by job changes only
}

func newCatalog(onChange func(jobs bool)) *catalog {
	return &catalog{
		onChange: onChange,
		jobs:     map[string]events.Job{},
		targets:  map[string]events.Target{},
		byJob:    map[string]map[string]struct{}{},
	}
}

func (c *catalog) UpsertJob(j events.Job) {
	c.mu.Lock()
	if old, ok := c.jobs[j.Name]; ok && old == j {
		c.mu.Unlock()
		return
	}
	c.jobs[j.Name] = j
	c.gen++
	c.jobGen++
	c.mu.Unlock()
	c.onChange(true)
}

func (c *catalog) DeleteJob(name string) {
	c.mu.Lock()
	if _, ok := c.jobs[name]; !ok {
		c.mu.Unlock()
		return
	}
	delete(c.jobs, name)
	c.gen++
	c.jobGen++
	c.mu.Unlock()
	c.onChange(true)
}

func (c *catalog) UpsertTarget(t events.Target) {
	c.mu.Lock()
	if old, ok := c.targets[t.ID]; ok && old.Job != t.Job {
		c.unindex(old)
	}
	c.targets[t.ID] = t
	ids := c.byJob[t.Job]
	if ids == nil {
		ids = map[string]struct{}{}
		c.byJob[t.Job] = ids
	}
	ids[t.ID] = struct{}{}
	c.gen++
	c.mu.Unlock()
	c.onChange(false)
}

func (c *catalog) DeleteTarget(id string) {
	c.mu.Lock()
	t, ok := c.targets[id]
	if !ok {
		c.mu.Unlock()
		return
	}
	delete(c.targets, id)
	c.unindex(t)
	c.gen++
	c.mu.Unlock()
	c.onChange(false)
}

func (c *catalog) unindex(t events.Target) {
	if ids := c.byJob[t.Job]; ids != nil {
		delete(ids, t.ID)
		if len(ids) == 0 {
			delete(c.byJob, t.Job)
		}
	}
}

func (c *catalog) Synced() {
	c.mu.Lock()
	first := !c.synced
	c.synced = true
	c.gen++
	c.mu.Unlock()
	if first {
		c.onChange(true)
	}
}

func (c *catalog) isSynced() bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.synced
}

// jobNames lists the configured jobs and the jobs that have targets.
func (c *catalog) jobNames() []string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := make([]string, 0, len(c.jobs))
	for n := range c.jobs {
		out = append(out, n)
	}
	for n := range c.byJob {
		if _, ok := c.jobs[n]; !ok {
			out = append(out, n)
		}
	}
	return out
}
