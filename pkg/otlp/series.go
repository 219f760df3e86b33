package otlp

import (
	"strings"
	"sync"
	"sync/atomic"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/metadata"
	"github.com/prometheus/prometheus/storage"
)

// refIDs hands out the high 32 bits of series references, so that a
// reference from an earlier table (a forgotten target, a swept entry whose
// slot was reused) never matches a new entry, and Prometheus's scrape cache,
// which tracks staleness by reference, never sees two series with one
// reference.
var refIDs atomic.Uint32

// seriesTable is the per-target memory of the series the scrape loop
// appends, indexed by the storage.SeriesRef the appender returned for each:
// the scrape loop passes that reference back with the series on the next
// scrape (its scrape cache), so that the appender finds everything it
// derived from the series' labels and metadata without hashing or parsing
// them again: the state key, the pre-encoded OTLP attributes, the family
// and group it belongs to. Only one appender uses a table at a time (mu).
type seriesTable struct {
	mu sync.Mutex // held by the appender using the table, from AppenderV2 to Commit/Rollback

	entries []*entry // by index; pointers stay valid as the table grows
	free    []uint32 // indexes of swept entries
	// chunk is where new entries are cut from: entries made together (a
	// target's first scrape, in exposition order) lie together, so that
	// a scrape walks the table through memory in order, and the collector
	// has one object per chunk to find instead of one per series.
	chunk []entry

	seq uint64 // appenders so far; an appender's number marks what it touched

	families  map[familyKey]*famEnc
	groups    map[groupKey]*groupEnc
	resources map[resourceKey]*resEnc
}

func newSeriesTable() *seriesTable {
	return &seriesTable{
		families:  make(map[familyKey]*famEnc),
		groups:    make(map[groupKey]*groupEnc),
		resources: make(map[resourceKey]*resEnc),
	}
}

// role is what an entry's samples are in the encoding.
type role uint8

const (
	// roleSlow: the sample needs the pdata builder (target_info, scopes,
	// _created counters, native histograms...).
	roleSlow role = iota
	roleNumber
	roleBucket
	roleQuantile
	roleSum
	roleCount
	roleCreated
)

// entry is one series of a target. The fields every sample reads (through
// resolved: options, role, attributes, family, resource) come first, so
// that a sample touches as few cache lines of a table that is cold between
// scrapes as it can.
type entry struct {
	ref   storage.SeriesRef // 0: free
	ls    labels.Labels
	seen  uint64       // seq of the last appender that used it
	key   uint64       // state key of the series (seriesRef of its labels)
	state *seriesState // cache of the state of key

	resolved
	// alt is the resolution for the other options the series came with:
	// a staleness marker comes without metadata, and should not cost two
	// resolutions (there and back).
	alt *resolved
}

// resolved is what the encoder derived from a series' labels and options.
type resolved struct {
	// famName (cloned: the scrape loop passes a view of its buffer) and
	// meta are the options the entry was resolved with; different options
	// resolve it again.
	famName string
	meta    metadata.Metadata

	role  role
	attrs []byte // encoded point attributes (roleNumber)
	fam   *famEnc
	res   *resEnc
	// Classic histogram and summary series only.
	group *groupEnc
	bound float64 // bucket bound or quantile
	label string  // le or quantile as exposed
}

// matches tells whether r was resolved with opts.
func (r *resolved) matches(opts *storage.AppendV2Options) bool {
	return r.meta == opts.Metadata && r.famName == opts.MetricFamilyName
}

// famEnc is one OTLP metric of a target, as encoded in the scrape of the
// appender that last touched it.
type famEnc struct {
	key    familyKey
	seq    uint64            // appender that touched it last
	live   uint64            // last sweep that found an entry of it
	meta   metadata.Metadata // what header was built from
	header []byte            // Metric fields before the data: name, description, unit, metadata; empty until built
	buf    []byte            // encoded data_points fields of this scrape
	groups []*groupEnc       // classic groups of this scrape, in order
}

// groupKey identifies a classic histogram or summary point of a target.
type groupKey struct {
	fam *famEnc
	gk  uint64
}

// groupEnc is one classic histogram or summary point of a target.
type groupEnc struct {
	seq   uint64
	live  uint64 // last sweep that found an entry of it
	attrs []byte // encoded point attributes without le/quantile
	g     group  // this scrape's series, as the pdata builder collects them
	state *seriesState
	// Scratch of the encoding.
	bounds []float64
	counts []uint64
}

// resEnc is one resource (job, instance) of a target.
type resEnc struct {
	key     resourceKey
	encoded []byte // Resource message, built on first commit under the state lock
}

// entryChunk is the number of entries allocated at once (about 50 KB).
const entryChunk = 256

// get returns the live entry of ref if it is the entry of ls.
func (tab *seriesTable) get(ref storage.SeriesRef, ls labels.Labels) *entry {
	i := uint64(uint32(ref)) - 1
	if ref == 0 || i >= uint64(len(tab.entries)) {
		return nil
	}
	e := tab.entries[i]
	if e.ref != ref || !labels.Equal(e.ls, ls) {
		return nil
	}
	return e
}

// index is the position of e in seriesTable.entries.
func (e *entry) index() uint32 { return uint32(e.ref) - 1 }

// add returns a new entry for ls.
func (tab *seriesTable) add(ls labels.Labels) *entry {
	var i uint32
	if n := len(tab.free); n > 0 {
		i = tab.free[n-1]
		tab.free = tab.free[:n-1]
	} else {
		if len(tab.chunk) == 0 {
			tab.chunk = make([]entry, entryChunk)
		}
		tab.entries = append(tab.entries, &tab.chunk[0])
		tab.chunk = tab.chunk[1:]
		i = uint32(len(tab.entries) - 1)
	}
	e := tab.entries[i]
	*e = entry{ref: storage.SeriesRef(uint64(refIDs.Add(1))<<32 | uint64(i+1)), ls: ls}
	return e
}

// family returns the encoder state of metric key.
func (tab *seriesTable) family(key familyKey) *famEnc {
	f, ok := tab.families[key]
	if !ok {
		f = &famEnc{key: familyKey{name: strings.Clone(key.name), kind: key.kind}}
		tab.families[f.key] = f
	}
	return f
}

func (tab *seriesTable) group(f *famEnc, gk uint64) *groupEnc {
	k := groupKey{fam: f, gk: gk}
	g, ok := tab.groups[k]
	if !ok {
		g = &groupEnc{}
		tab.groups[k] = g
	}
	return g
}

func (tab *seriesTable) resource(job, instance string) *resEnc {
	k := resourceKey{job: job, instance: instance}
	r, ok := tab.resources[k]
	if !ok {
		k = resourceKey{job: strings.Clone(job), instance: strings.Clone(instance)}
		r = &resEnc{key: k}
		tab.resources[k] = r
	}
	return r
}

// sweep frees the entries no appender used in the last idleCommits
// appenders (series that left the exposition), and the families and groups
// no live entry refers to.
func (tab *seriesTable) sweep() {
	if tab.seq%sweepEvery != 0 || tab.seq <= idleCommits {
		return
	}
	old := tab.seq - idleCommits
	// Families and groups are marked live with this sweep's number rather
	// than collected in a set: no allocation, no hashing.
	mark := tab.seq
	for i, e := range tab.entries {
		switch {
		case e.ref == 0:
		case e.seen < old:
			*e = entry{}
			tab.free = append(tab.free, uint32(i))
		default:
			e.resolved.markLive(mark)
			if e.alt != nil {
				e.alt.markLive(mark)
			}
		}
	}
	for k, g := range tab.groups {
		if g.live != mark {
			delete(tab.groups, k)
		}
	}
	for k, f := range tab.families {
		if f.live != mark {
			delete(tab.families, k)
		}
	}
}

func (r *resolved) markLive(mark uint64) {
	if r.fam != nil {
		r.fam.live = mark
	}
	if r.group != nil {
		r.group.live = mark
	}
}
