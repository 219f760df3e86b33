package deploy_test

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	promhttp "github.com/prometheus/prometheus/discovery/http"
	"go.yaml.in/yaml/v3"
)

// composeFile is the part of docker-compose.yaml the checks read. yaml.v3
// resolves the anchors and `<<` merge keys the file uses, as compose does.
type composeFile struct {
	Services map[string]composeService `yaml:"services"`
	Networks map[string]any            `yaml:"networks"`
	Volumes  map[string]any            `yaml:"volumes"`
}

type composeService struct {
	Image       string         `yaml:"image"`
	Hostname    string         `yaml:"hostname"`
	Command     []string       `yaml:"command"`
	Restart     string         `yaml:"restart"`
	Networks    []string       `yaml:"networks"`
	Ports       []string       `yaml:"ports"`
	Volumes     []string       `yaml:"volumes"`
	Healthcheck map[string]any `yaml:"healthcheck"`
	DependsOn   map[string]struct {
		Condition string `yaml:"condition"`
	} `yaml:"depends_on"`
}

// role is what a service runs: "etcd", "nats", or an allot subcommand.
func (s composeService) role() string {
	switch {
	case strings.HasPrefix(s.Image, "gcr.io/etcd-development/etcd:"):
		return "etcd"
	case strings.HasPrefix(s.Image, "nats:"):
		return "nats"
	case len(s.Command) > 0:
		return s.Command[0]
	}
	return ""
}

func loadCompose(t *testing.T) composeFile {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, "docker-compose.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var f composeFile
	if err := yaml.Unmarshal(b, &f); err != nil {
		t.Fatalf("docker-compose.yaml: %v", err)
	}
	return f
}

func TestCompose(t *testing.T) {
	f := loadCompose(t)
	byRole := map[string][]string{}
	for name, s := range f.Services {
		byRole[s.role()] = append(byRole[s.role()], name)
	}
	for _, names := range byRole {
		slices.Sort(names)
	}
	want := map[string]int{"etcd": 3, "nats": 3, "discoverer": 2, "rebalancer": 2, "scraper": 3, "demo": 1, "sink": 1}
	for role, n := range want {
		if len(byRole[role]) != n {
			t.Errorf("%d %s services (%v), want %d", len(byRole[role]), role, byRole[role], n)
		}
	}
	for role, names := range byRole {
		if _, ok := want[role]; !ok {
			t.Errorf("services %v: unexpected role %q", names, role)
		}
	}
	etcdURLs := serviceURLs(byRole["etcd"], "http", 2379)
	natsURLs := serviceURLs(byRole["nats"], "nats", 4222)

	hostPorts := map[string]string{}
	for name, s := range f.Services {
		t.Run(name, func(t *testing.T) {
			if s.Restart == "" || s.Restart == "no" {
				t.Errorf("no restart policy")
			}
			if len(s.Networks) != 1 || f.Networks[s.Networks[0]] == nil {
				t.Errorf("networks %v: want the one private network", s.Networks)
			}
			if s.Hostname != name {
				t.Errorf("hostname %q, want %q (members and the status pages name themselves by it)", s.Hostname, name)
			}
			for _, p := range s.Ports {
				// Only to loopback by default: ${ALLOT_BIND:-127.0.0.1}:host:container.
				bind, rest, _ := strings.Cut(p, "}:")
				if bind != "${ALLOT_BIND:-127.0.0.1" {
					t.Errorf("port %q is not bound to ${ALLOT_BIND:-127.0.0.1}", p)
				}
				host, _, _ := strings.Cut(rest, ":")
				if other, dup := hostPorts[host]; dup {
					t.Errorf("host port %s also published by %s", host, other)
				}
				hostPorts[host] = name
			}
			for _, v := range s.Volumes {
				src, _, _ := strings.Cut(v, ":")
				if strings.HasPrefix(src, ".") {
					if _, err := os.Stat(filepath.Join(repoRoot, src)); err != nil {
						t.Errorf("mounts %s: %v", src, err)
					}
				} else if _, ok := f.Volumes[src]; !ok {
					t.Errorf("volume %s is not declared", src)
				}
			}
			for dep := range s.DependsOn {
				if _, ok := f.Services[dep]; !ok {
					t.Errorf("depends on unknown service %s", dep)
				}
			}

			switch role := s.role(); role {
			case "etcd":
				checkComposeEtcd(t, name, s, byRole["etcd"])
			case "nats":
				checkComposeNATS(t, name, s, byRole["nats"])
			default:
				if s.Image != "${ALLOT_IMAGE:-allot:dev}" {
					t.Errorf("image %q, want ${ALLOT_IMAGE:-allot:dev} (what build/images.sh builds)", s.Image)
				}
				checkAllotArgs(t, "service "+name, s.Command)
				checkComposeAllot(t, f, name, s, etcdURLs, natsURLs)
			}
		})
	}
}

func serviceURLs(names []string, scheme string, port int) string {
	var urls []string
	for _, n := range names {
		urls = append(urls, fmt.Sprintf("%s://%s:%d", scheme, n, port))
	}
	return strings.Join(urls, ",")
}

func checkComposeEtcd(t *testing.T, name string, s composeService, members []string) {
	if s.Image != etcdImage(t) {
		t.Errorf("image %s, want %s", s.Image, etcdImage(t))
	}
	if len(s.Command) == 0 || s.Command[0] != "/usr/local/bin/etcd" {
		t.Errorf("command %v: the official image has no entrypoint; want /usr/local/bin/etcd first", s.Command)
	}
	var cluster []string
	for _, m := range members {
		cluster = append(cluster, m+"=http://"+m+":2380")
	}
	for flag, want := range map[string]string{
		"name":                        name,
		"initial-cluster":             strings.Join(cluster, ","),
		"initial-advertise-peer-urls": "http://" + name + ":2380",
		"advertise-client-urls":       "http://" + name + ":2379",
		"initial-cluster-state":       "new",
	} {
		if got := argOf(s.Command, flag); got != want {
			t.Errorf("--%s=%s, want %s", flag, got, want)
		}
	}
	if len(s.Volumes) == 0 || !strings.HasPrefix(argOf(s.Command, "data-dir"), "/var/lib/etcd") {
		t.Errorf("data (--data-dir=%s) is not on a volume at /var/lib/etcd", argOf(s.Command, "data-dir"))
	}
	if len(s.Healthcheck) == 0 {
		t.Error("no healthcheck")
	}
}

func checkComposeNATS(t *testing.T, name string, s composeService, servers []string) {
	if s.Image != natsImage(t) {
		t.Errorf("image %s, want %s", s.Image, natsImage(t))
	}
	if argOf(s.Command, "name") != name || !slices.Contains(s.Command, "--js") {
		t.Errorf("command %v: want --name=%s and --js", s.Command, name)
	}
	if got, want := argOf(s.Command, "routes"), serviceURLs(servers, "nats", 6222); got != want {
		t.Errorf("--routes=%s, want %s", got, want)
	}
	if argOf(s.Command, "store_dir") != "/data" || len(s.Volumes) == 0 {
		t.Error("JetStream does not store on the /data volume")
	}
}

func checkComposeAllot(t *testing.T, f composeFile, name string, s composeService, etcdURLs, natsURLs string) {
	role := s.role()
	needs := map[string]string{}
	switch role {
	case "discoverer", "scraper":
		needs["etcd.endpoints"] = etcdURLs
		needs["nats.url"] = natsURLs
	case "rebalancer":
		needs["etcd.endpoints"] = etcdURLs
	}
	for flag, want := range needs {
		if got := argOf(s.Command, flag); got != want {
			t.Errorf("--%s=%s, want every member: %s", flag, got, want)
		}
		for _, dep := range strings.Split(want, ",") {
			u, _ := url.Parse(dep)
			if _, ok := s.DependsOn[u.Hostname()]; !ok {
				t.Errorf("does not depend on %s", u.Hostname())
			}
		}
	}
	if role == "discoverer" || role == "scraper" {
		// JetStream KV buckets as replicated as the NATS cluster is large.
		if got, want := argOf(s.Command, "events.replicas"), strconv.Itoa(len(strings.Split(natsURLs, ","))); got != want {
			t.Errorf("--events.replicas=%s, want %s (one per NATS server)", got, want)
		}
	}
	if role == "scraper" {
		u, err := url.Parse(argOf(s.Command, "otlp.endpoint"))
		if err != nil || f.Services[u.Hostname()].role() != "sink" {
			t.Errorf("--otlp.endpoint=%s does not point at the sink", argOf(s.Command, "otlp.endpoint"))
		}
	}
	if role == "discoverer" {
		cf, ok := flagValue(s.Command, "config.file")
		if !ok {
			t.Fatal("no --config.file")
		}
		var host string
		for _, v := range s.Volumes {
			src, dst, _ := strings.Cut(strings.TrimSuffix(v, ":ro"), ":")
			if dst == cf {
				host = src
			}
		}
		if host == "" {
			t.Fatalf("--config.file=%s is not mounted", cf)
		}
		b, err := os.ReadFile(filepath.Join(repoRoot, host))
		if err != nil {
			t.Fatal(err)
		}
		checkComposeConfig(t, f, host, b)
	}
}

// checkComposeConfig loads the discoverers' configuration and checks that its
// HTTP SD points at the demo service where it listens.
func checkComposeConfig(t *testing.T, f composeFile, name string, b []byte) {
	cfg := mustParseConfig(t, name, string(b))
	found := false
	for _, sc := range cfg.ScrapeConfigs {
		for _, sd := range sc.ServiceDiscoveryConfigs {
			h, ok := sd.(*promhttp.SDConfig)
			if !ok {
				continue
			}
			found = true
			u, err := url.Parse(h.URL)
			if err != nil {
				t.Fatal(err)
			}
			demo := f.Services[u.Hostname()]
			if demo.role() != "demo" {
				t.Errorf("%s: http_sd %s is not a demo service", name, h.URL)
				continue
			}
			if listen := argOf(demo.Command, "web.listen-address"); !strings.HasSuffix(listen, ":"+u.Port()) {
				t.Errorf("%s: http_sd %s, but the demo listens on %q", name, h.URL, listen)
			}
		}
	}
	if !found {
		t.Errorf("%s: no http_sd_configs for the demo targets", name)
	}
}
