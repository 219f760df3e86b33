package deploy_test

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"golang.org/x/mod/modfile"

	"github.com/prometheus/prometheus/config"

	"github.com/allot-dev/allot/pkg/configfile"

	// The service discoveries the shipped configurations use; the Prometheus
	// config loader knows only registered ones.
	_ "github.com/prometheus/prometheus/discovery/http"
	_ "github.com/prometheus/prometheus/discovery/kubernetes"
	_ "github.com/prometheus/prometheus/discovery/nomad"
)

// repoRoot is where go.mod, docker-compose.yaml and build/ are.
const repoRoot = ".."

// moduleVersion returns the version go.mod requires of module path. The
// etcd and NATS images are built from these versions (build/images.sh), so
// every deployment file must name exactly these tags.
func moduleVersion(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	f, err := modfile.ParseLax("go.mod", b, nil)
	if err != nil {
		t.Fatalf("parse go.mod: %v", err)
	}
	for _, r := range f.Require {
		if r.Mod.Path == path {
			return r.Mod.Version
		}
	}
	t.Fatalf("go.mod does not require %s", path)
	return ""
}

// Image names the deployment files must use for etcd and NATS: those of
// the official images, at the versions go.mod pins.
func etcdImage(t *testing.T) string {
	return "gcr.io/etcd-development/etcd:" + moduleVersion(t, "go.etcd.io/etcd/server/v3")
}

func natsImage(t *testing.T) string {
	return "nats:" + strings.TrimPrefix(moduleVersion(t, "github.com/nats-io/nats-server/v2"), "v")
}

// mustParseConfig loads an allot configuration with allot's own loader.
func mustParseConfig(t *testing.T, name, b string) *config.Config {
	t.Helper()
	f, err := configfile.Parse([]byte(b), nil)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return f.Prometheus
}

// checkAllotConfig loads an allot configuration with allot's own loader and
// returns the names of its scrape jobs.
func checkAllotConfig(t *testing.T, name string, b []byte) []string {
	t.Helper()
	cfg := mustParseConfig(t, name, string(b))
	var jobs []string
	for _, sc := range cfg.ScrapeConfigs {
		jobs = append(jobs, sc.JobName)
	}
	if len(jobs) == 0 {
		t.Errorf("%s: no scrape_configs", name)
	}
	return jobs
}

// flagValue returns the value of --name=value in args and whether it is there.
func flagValue(args []string, name string) (string, bool) {
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v, true
		}
	}
	return "", false
}

// The flags of each allot subcommand that deployment files may pass, so a
// typo or a flag a role does not have fails here instead of in a crash loop.
// They mirror cmd/allot (log, cluster and web options) and the RegisterFlags
// of leases.SessionConfig, events.Config, discoverer.Config, scraper.Config,
// rebalancer.Config and export.Config; only the ones deployments use are
// listed.
var (
	logFlags  = []string{"log.level", "log.format"}
	roleFlags = []string{"etcd.endpoints", "etcd.prefix", "nats.url", "startup.timeout",
		"web.listen-address", "web.external-address", "data.dir"}
	eventFlags = []string{"events.replicas", "events.jobs-bucket", "events.targets-bucket"}
	leaseFlags = []string{"lease.ttl", "lease.margin"}
	flagsOf    = map[string][]string{
		"discoverer": slices.Concat(logFlags, roleFlags, eventFlags,
			[]string{"config.file", "discoverer.id"}),
		"scraper": slices.Concat(logFlags, roleFlags, eventFlags, leaseFlags,
			[]string{"config.file", "otlp.endpoint", "scraper.id", "scraper.zone", "scraper.weight", "scraper.claim-grace"}),
		"rebalancer": slices.Concat(logFlags, roleFlags, leaseFlags,
			[]string{"rebalancer.id", "rebalancer.interval", "rebalancer.tolerance", "rebalancer.moves-per-second"}),
		"demo": slices.Concat(logFlags, []string{"web.listen-address", "demo.targets", "demo.advertise"}),
		"sink": slices.Concat(logFlags, []string{"web.listen-address", "sink.samples-per-series"}),
	}
)

var flagName = regexp.MustCompile(`^--([a-z][a-z0-9.-]*)(=|$)`)

// checkAllotArgs checks an allot command line: a known subcommand followed by
// --flag=value arguments the subcommand accepts.
func checkAllotArgs(t *testing.T, where string, args []string) {
	t.Helper()
	if len(args) == 0 {
		t.Errorf("%s: no allot subcommand", where)
		return
	}
	flags, ok := flagsOf[args[0]]
	if !ok {
		t.Errorf("%s: unknown allot subcommand %q", where, args[0])
		return
	}
	allowed := map[string]bool{}
	for _, f := range flags {
		allowed[f] = true
	}
	for _, a := range args[1:] {
		m := flagName.FindStringSubmatch(a)
		if m == nil {
			t.Errorf("%s: argument %q is not --flag=value", where, a)
			continue
		}
		if !allowed[m[1]] {
			t.Errorf("%s: allot %s has no flag --%s", where, args[0], m[1])
		}
	}
}
