package deploy_test

import (
	"fmt"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"text/template"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/ext/typeexpr"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	promnomad "github.com/prometheus/prometheus/discovery/nomad"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/convert"
	"github.com/zclconf/go-cty/cty/function"
	"github.com/zclconf/go-cty/cty/function/stdlib"
)

// nomadJob is a parsed Nomad job file, evaluated with its variables'
// defaults the way `nomad job run` would without -var.
type nomadJob struct {
	name   string
	ctx    *hcl.EvalContext
	groups []nomadGroup
}

type nomadGroup struct {
	name  string
	body  *hclsyntax.Body
	ctx   *hcl.EvalContext // the job's, plus the dynamic block's iterator
	count int
	ports []string
	tasks []nomadTask
}

type nomadTask struct {
	name      string
	driver    string
	image     string
	args      []string
	env       map[string]bool   // variables set by env templates
	templates map[string]string // destination → data
	volumes   []string          // volume_mount destinations
}

// nomadFunctions are the HCL functions the job files call.
var nomadFunctions = map[string]function.Function{
	"join": stdlib.JoinFunc,
}

// parseNomadJob parses path and evaluates its variables, locals and groups
// (static and `dynamic "group"`), and each group's tasks.
func parseNomadJob(t *testing.T, path string) *nomadJob {
	t.Helper()
	f, diags := hclparse.NewParser().ParseHCLFile(path)
	if diags.HasErrors() {
		t.Fatalf("%s: %s", path, diags.Error())
	}
	body := f.Body.(*hclsyntax.Body)
	ctx := &hcl.EvalContext{Variables: map[string]cty.Value{}, Functions: nomadFunctions}

	vars := map[string]cty.Value{}
	for _, b := range blocks(body, "variable") {
		name := b.Labels[0]
		def, ok := b.Body.Attributes["default"]
		if !ok {
			t.Fatalf("%s: variable %s has no default, so the job cannot run without -var", path, name)
		}
		v := evalExpr(t, def.Expr, ctx)
		if ta, ok := b.Body.Attributes["type"]; ok {
			ty, diags := typeexpr.TypeConstraint(ta.Expr)
			if diags.HasErrors() {
				t.Fatalf("%s: variable %s: %s", path, name, diags.Error())
			}
			var err error
			if v, err = convert.Convert(v, ty); err != nil {
				t.Fatalf("%s: variable %s: default is not a %s: %v", path, name, typeexpr.TypeString(ty), err)
			}
		}
		vars[name] = v
	}
	ctx.Variables["var"] = cty.ObjectVal(vars)
	locals := map[string]cty.Value{}
	for _, b := range blocks(body, "locals") {
		for name, a := range b.Body.Attributes {
			locals[name] = evalExpr(t, a.Expr, ctx)
		}
	}
	ctx.Variables["local"] = cty.ObjectVal(locals)

	jobs := blocks(body, "job")
	if len(jobs) != 1 {
		t.Fatalf("%s: %d job blocks, want 1", path, len(jobs))
	}
	job := &nomadJob{name: jobs[0].Labels[0], ctx: ctx}
	for _, g := range blocks(jobs[0].Body, "group") {
		job.groups = append(job.groups, parseGroup(t, g.Labels[0], g.Body, ctx))
	}
	for _, d := range blocks(jobs[0].Body, "dynamic") {
		if d.Labels[0] != "group" {
			continue
		}
		iter := "group"
		if a, ok := d.Body.Attributes["iterator"]; ok {
			iter = hcl.ExprAsKeyword(a.Expr)
		}
		forEach := evalExpr(t, d.Body.Attributes["for_each"].Expr, ctx)
		contents := blocks(d.Body, "content")
		if len(contents) != 1 {
			t.Fatalf("%s: dynamic group: %d content blocks", path, len(contents))
		}
		for it := forEach.ElementIterator(); it.Next(); {
			k, v := it.Element()
			gctx := ctx.NewChild()
			gctx.Variables = map[string]cty.Value{iter: cty.ObjectVal(map[string]cty.Value{"key": k, "value": v})}
			gctx.Functions = nomadFunctions
			labels := evalExpr(t, d.Body.Attributes["labels"].Expr, gctx)
			name := labels.Index(cty.NumberIntVal(0)).AsString()
			job.groups = append(job.groups, parseGroup(t, name, contents[0].Body, gctx))
		}
	}
	return job
}

func blocks(body *hclsyntax.Body, typ string) []*hclsyntax.Block {
	var out []*hclsyntax.Block
	for _, b := range body.Blocks {
		if b.Type == typ {
			out = append(out, b)
		}
	}
	return out
}

func evalExpr(t *testing.T, expr hcl.Expression, ctx *hcl.EvalContext) cty.Value {
	t.Helper()
	v, diags := expr.Value(ctx)
	if diags.HasErrors() {
		t.Fatalf("%s", diags.Error())
	}
	return v
}

// runtimeRoots are the names Nomad interpolates when it places a task: node
// attributes and metadata, and the task's environment.
func runtimeRoot(name string, env map[string]bool) bool {
	switch name {
	case "node", "attr", "meta":
		return true
	}
	return strings.HasPrefix(name, "NOMAD_") || env[name]
}

// evalRuntime evaluates expr like Nomad: var, local and iterators now, and
// runtime interpolations (${attr.x}, ${NOMAD_X}, env template variables)
// as placeholders "<name>". An interpolation Nomad could not resolve fails.
func evalRuntime(t *testing.T, where string, expr hcl.Expression, ctx *hcl.EvalContext, env map[string]bool) cty.Value {
	t.Helper()
	tree := map[string]any{}
	for _, tr := range expr.Variables() {
		root := tr.RootName()
		if defined(ctx, root) {
			continue
		}
		if !runtimeRoot(root, env) {
			t.Errorf("%s: ${%s} is neither a variable, a local nor something Nomad interpolates at run time", where, root)
			continue
		}
		node := tree
		path := []string{root}
		for i, step := range tr[1:] {
			attr, ok := step.(hcl.TraverseAttr)
			if !ok {
				t.Fatalf("%s: unsupported traversal in ${%s}", where, root)
			}
			path = append(path, attr.Name)
			if i == len(tr)-2 {
				node[attr.Name] = "<" + strings.Join(path, ".") + ">"
				break
			}
			next, ok := node[attr.Name].(map[string]any)
			if !ok {
				next = map[string]any{}
				node[attr.Name] = next
			}
			node = next
		}
		if len(tr) == 1 {
			tree[root] = "<" + root + ">"
		} else if _, ok := tree[root]; !ok {
			tree[root] = map[string]any{}
		}
	}
	child := ctx.NewChild()
	child.Functions = nomadFunctions
	child.Variables = map[string]cty.Value{}
	for k, v := range tree {
		child.Variables[k] = toCty(v)
	}
	v, diags := expr.Value(child)
	if diags.HasErrors() {
		t.Fatalf("%s: %s", where, diags.Error())
	}
	return v
}

// defined reports whether ctx or one of its parents has variable name.
func defined(ctx *hcl.EvalContext, name string) bool {
	for c := ctx; c != nil; c = c.Parent() {
		if _, ok := c.Variables[name]; ok {
			return true
		}
	}
	return false
}

// toCty turns the placeholder tree into nested objects.
func toCty(v any) cty.Value {
	switch v := v.(type) {
	case string:
		return cty.StringVal(v)
	case map[string]any:
		m := map[string]cty.Value{}
		for k, e := range v {
			m[k] = toCty(e)
		}
		return cty.ObjectVal(m)
	}
	panic(fmt.Sprintf("toCty(%T)", v))
}

func attrString(t *testing.T, where string, b *hclsyntax.Body, name string, ctx *hcl.EvalContext, env map[string]bool) (string, bool) {
	t.Helper()
	a, ok := b.Attributes[name]
	if !ok {
		return "", false
	}
	v := evalRuntime(t, where+"."+name, a.Expr, ctx, env)
	v, err := convert.Convert(v, cty.String)
	if err != nil {
		t.Fatalf("%s.%s: %v", where, name, err)
	}
	return v.AsString(), true
}

func parseGroup(t *testing.T, name string, body *hclsyntax.Body, ctx *hcl.EvalContext) nomadGroup {
	t.Helper()
	g := nomadGroup{name: name, body: body, ctx: ctx, count: 1}
	where := "group " + name
	if a, ok := body.Attributes["count"]; ok {
		v, err := convert.Convert(evalExpr(t, a.Expr, ctx), cty.Number)
		if err != nil {
			t.Fatalf("%s: count: %v", where, err)
		}
		n, _ := v.AsBigFloat().Int64()
		g.count = int(n)
	}
	for _, n := range blocks(body, "network") {
		for _, p := range blocks(n.Body, "port") {
			g.ports = append(g.ports, p.Labels[0])
		}
	}
	for _, tb := range blocks(body, "task") {
		task := nomadTask{name: tb.Labels[0], env: map[string]bool{}, templates: map[string]string{}}
		twhere := where + " task " + task.name
		// Templates first: their env variables may be interpolated in config.
		for _, tpl := range blocks(tb.Body, "template") {
			dest, _ := attrString(t, twhere+" template", tpl.Body, "destination", ctx, nil)
			data, ok := attrString(t, twhere+" template", tpl.Body, "data", ctx, nil)
			if !ok || dest == "" {
				t.Errorf("%s: template without destination or data", twhere)
				continue
			}
			task.templates[dest] = data
			if a, ok := tpl.Body.Attributes["env"]; ok && evalExpr(t, a.Expr, ctx).True() {
				for _, line := range strings.Split(data, "\n") {
					if k, _, ok := strings.Cut(strings.TrimSpace(line), "="); ok && k != "" && !strings.HasPrefix(k, "#") {
						task.env[k] = true
					}
				}
			}
		}
		task.driver, _ = attrString(t, twhere, tb.Body, "driver", ctx, nil)
		for _, cfg := range blocks(tb.Body, "config") {
			task.image, _ = attrString(t, twhere+" config", cfg.Body, "image", ctx, task.env)
			if a, ok := cfg.Body.Attributes["args"]; ok {
				v := evalRuntime(t, twhere+" config.args", a.Expr, ctx, task.env)
				for it := v.ElementIterator(); it.Next(); {
					_, e := it.Element()
					s, err := convert.Convert(e, cty.String)
					if err != nil {
						t.Fatalf("%s: args: %v", twhere, err)
					}
					task.args = append(task.args, s.AsString())
				}
			}
			if a, ok := cfg.Body.Attributes["ports"]; ok {
				for it := evalExpr(t, a.Expr, ctx).ElementIterator(); it.Next(); {
					_, p := it.Element()
					if !slices.Contains(g.ports, p.AsString()) {
						t.Errorf("%s: config.ports names %q, not a port of the group's network", twhere, p.AsString())
					}
				}
			}
		}
		for _, vm := range blocks(tb.Body, "volume_mount") {
			vol, _ := attrString(t, twhere+" volume_mount", vm.Body, "volume", ctx, nil)
			dest, _ := attrString(t, twhere+" volume_mount", vm.Body, "destination", ctx, nil)
			found := false
			for _, v := range blocks(body, "volume") {
				found = found || v.Labels[0] == vol
			}
			if !found {
				t.Errorf("%s: volume_mount of %q, which the group does not declare", twhere, vol)
			}
			task.volumes = append(task.volumes, dest)
		}
		g.tasks = append(g.tasks, task)
	}
	return g
}

// checkServices checks that the group registers its services with Nomad's
// own service discovery, on its declared ports, with at least one check.
func (g nomadGroup) checkServices(t *testing.T) (names []string) {
	t.Helper()
	where := "group " + g.name
	checks := 0
	for _, s := range blocks(g.body, "service") {
		name, _ := attrString(t, where+" service", s.Body, "name", g.ctx, nil)
		names = append(names, name)
		if p, _ := attrString(t, where+" service "+name, s.Body, "provider", g.ctx, nil); p != "nomad" {
			t.Errorf("%s: service %s: provider %q, want \"nomad\" (Nomad's native service discovery)", where, name, p)
		}
		if p, _ := attrString(t, where+" service "+name, s.Body, "port", g.ctx, nil); !slices.Contains(g.ports, p) {
			t.Errorf("%s: service %s on port %q, which the group does not declare (%v)", where, name, p, g.ports)
		}
		for _, c := range blocks(s.Body, "check") {
			checks++
			if p, ok := attrString(t, where+" check", c.Body, "port", g.ctx, nil); ok && !slices.Contains(g.ports, p) {
				t.Errorf("%s: service %s: check on undeclared port %q", where, name, p)
			}
			if typ, _ := attrString(t, where+" check", c.Body, "type", g.ctx, nil); typ == "http" {
				if path, _ := attrString(t, where+" check", c.Body, "path", g.ctx, nil); !strings.HasPrefix(path, "/") {
					t.Errorf("%s: service %s: http check without a path", where, name)
				}
			}
		}
	}
	if checks == 0 {
		t.Errorf("%s: no health check on any service", where)
	}
	return names
}

func (j *nomadJob) group(t *testing.T, name string) nomadGroup {
	t.Helper()
	for _, g := range j.groups {
		if g.name == name {
			return g
		}
	}
	t.Fatalf("job %s: no group %s", j.name, name)
	return nomadGroup{}
}

func (j *nomadJob) groupNames() []string {
	var names []string
	for _, g := range j.groups {
		names = append(names, g.name)
	}
	sort.Strings(names)
	return names
}

// nomadTemplate executes a Nomad template the way Nomad's template runner
// does (Go text/template), with env and nomadService answering from fakes.
func nomadTemplate(t *testing.T, where, data string, services map[string][]fakeService) string {
	t.Helper()
	tpl, err := template.New(where).Funcs(template.FuncMap{
		"env": func(name string) string { return "<" + name + ">" },
		"nomadService": func(name string) ([]fakeService, error) {
			s, ok := services[name]
			if !ok {
				return nil, fmt.Errorf("no service %q", name)
			}
			return s, nil
		},
	}).Parse(data)
	if err != nil {
		t.Fatalf("%s: %v", where, err)
	}
	var b strings.Builder
	if err := tpl.Execute(&b, nil); err != nil {
		t.Fatalf("%s: %v", where, err)
	}
	return b.String()
}

type fakeService struct {
	Address string
	Port    int
}

func fakeServices(port int, ips ...string) []fakeService {
	var out []fakeService
	for _, ip := range ips {
		out = append(out, fakeService{ip, port})
	}
	return out
}

func TestNomadAllotJob(t *testing.T) {
	job := parseNomadJob(t, filepath.Join("nomad", "allot.nomad.hcl"))
	if got, want := job.groupNames(), []string{"discoverer", "rebalancer", "scraper"}; !slices.Equal(got, want) {
		t.Fatalf("groups %v, want %v", got, want)
	}
	services := map[string][]fakeService{
		"etcd": fakeServices(2379, "10.0.0.11", "10.0.0.12", "10.0.0.13"),
		"nats": fakeServices(4222, "10.0.0.11", "10.0.0.12", "10.0.0.13"),
	}
	tests := []struct {
		group string
		count int
		env   []string // variables the endpoints template must set
	}{
		{"discoverer", 2, []string{"ETCD_ENDPOINTS", "NATS_URL"}},
		{"rebalancer", 2, []string{"ETCD_ENDPOINTS"}},
		{"scraper", 3, []string{"ETCD_ENDPOINTS", "NATS_URL"}},
	}
	for _, tc := range tests {
		t.Run(tc.group, func(t *testing.T) {
			g := job.group(t, tc.group)
			if g.count != tc.count {
				t.Errorf("count %d, want %d", g.count, tc.count)
			}
			if names := g.checkServices(t); !slices.Contains(names, "allot-"+tc.group) {
				t.Errorf("services %v: want allot-%s", names, tc.group)
			}
			if len(g.tasks) != 1 {
				t.Fatalf("%d tasks, want 1", len(g.tasks))
			}
			task := g.tasks[0]
			if task.driver != "docker" || !strings.Contains(task.image, "allot") {
				t.Errorf("driver %q image %q: want docker and an allot image", task.driver, task.image)
			}
			checkAllotArgs(t, "nomad group "+tc.group, task.args)
			if len(task.args) > 0 && task.args[0] != tc.group {
				t.Errorf("runs `allot %s`, want `allot %s`", task.args[0], tc.group)
			}
			for _, v := range tc.env {
				if !task.env[v] {
					t.Errorf("no env template sets %s", v)
				}
			}
			// The endpoints template renders every registered member.
			for dest, data := range task.templates {
				if !strings.HasSuffix(dest, ".env") {
					continue
				}
				out := nomadTemplate(t, dest, data, services)
				for _, want := range []string{
					"ETCD_ENDPOINTS=http://10.0.0.11:2379,http://10.0.0.12:2379,http://10.0.0.13:2379\n",
					"NATS_URL=nats://10.0.0.11:4222,nats://10.0.0.12:4222,nats://10.0.0.13:4222\n",
				} {
					name, _, _ := strings.Cut(want, "=")
					if task.env[name] && !strings.Contains(out, want) {
						t.Errorf("%s renders\n%s\nwant a line %q", dest, out, want)
					}
				}
			}
			if cf, ok := flagValue(task.args, "config.file"); ok {
				// Nomad's local/ directory is /local inside a docker task.
				data, ok := task.templates[strings.TrimPrefix(cf, "/")]
				if !ok {
					t.Fatalf("--config.file=%s is not rendered by a template", cf)
				}
				cfg := nomadTemplate(t, cf, data, services)
				checkAllotConfig(t, cf, []byte(cfg))
				checkNomadSD(t, cf, cfg)
			} else if tc.group == "discoverer" {
				t.Error("discoverer without --config.file")
			}
		})
	}
	t.Run("scraper spread", func(t *testing.T) {
		g := job.group(t, "scraper")
		if len(blocks(g.body, "spread")) == 0 && len(blocks(g.body, "constraint")) == 0 {
			t.Error("scrapers are not spread over nodes")
		}
	})
}

// checkNomadSD checks that the configuration discovers targets through
// Nomad's service catalog.
func checkNomadSD(t *testing.T, where, cfg string) {
	t.Helper()
	f := mustParseConfig(t, where, cfg)
	for _, sc := range f.ScrapeConfigs {
		for _, sd := range sc.ServiceDiscoveryConfigs {
			if n, ok := sd.(*promnomad.SDConfig); ok {
				if !strings.Contains(n.Server, "<attr.unique.network.ip-address>") {
					t.Errorf("%s: nomad_sd_configs server %q: want the local Nomad agent", where, n.Server)
				}
				return
			}
		}
	}
	t.Errorf("%s: no nomad_sd_configs", where)
}

func TestNomadClusterJobs(t *testing.T) {
	tests := []struct {
		file, job, image string
		// member name → address, as in the file's default variable
		members map[string]string
		check   func(t *testing.T, name, ip string, args []string, members map[string]string)
	}{
		{
			file: "etcd.nomad.hcl", job: "etcd", image: etcdImage(t),
			members: map[string]string{"etcd1": "10.0.0.11", "etcd2": "10.0.0.12", "etcd3": "10.0.0.13"},
			check: func(t *testing.T, name, ip string, args []string, members map[string]string) {
				var want []string
				for _, n := range sortedKeys(members) {
					want = append(want, n+"=http://"+members[n]+":2380")
				}
				if got := argOf(args, "initial-cluster"); got != strings.Join(want, ",") {
					t.Errorf("--initial-cluster=%s, want %s", got, strings.Join(want, ","))
				}
				if argOf(args, "name") != name {
					t.Errorf("--name=%s, want %s", argOf(args, "name"), name)
				}
				if argOf(args, "initial-advertise-peer-urls") != "http://"+ip+":2380" || argOf(args, "advertise-client-urls") != "http://"+ip+":2379" {
					t.Errorf("member %s does not advertise its node's address %s", name, ip)
				}
				if !strings.HasPrefix(argOf(args, "data-dir"), "/var/lib/etcd") {
					t.Errorf("--data-dir=%s is not on the data volume", argOf(args, "data-dir"))
				}
			},
		},
		{
			file: "nats.nomad.hcl", job: "nats", image: natsImage(t),
			members: map[string]string{"nats1": "10.0.0.11", "nats2": "10.0.0.12", "nats3": "10.0.0.13"},
			check: func(t *testing.T, name, ip string, args []string, members map[string]string) {
				var want []string
				for _, n := range sortedKeys(members) {
					want = append(want, "nats://"+members[n]+":6222")
				}
				if got := argOf(args, "routes"); got != strings.Join(want, ",") {
					t.Errorf("--routes=%s, want %s", got, strings.Join(want, ","))
				}
				if argOf(args, "name") != name || !slices.Contains(args, "--jetstream") {
					t.Errorf("args %v: want --name=%s and --jetstream", args, name)
				}
				if argOf(args, "store_dir") != "/data" {
					t.Errorf("--store_dir=%s, want /data (the volume)", argOf(args, "store_dir"))
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.job, func(t *testing.T) {
			job := parseNomadJob(t, filepath.Join("nomad", tc.file))
			if job.name != tc.job {
				t.Errorf("job %q, want %q", job.name, tc.job)
			}
			if got := job.groupNames(); !slices.Equal(got, sortedKeys(tc.members)) {
				t.Fatalf("groups %v, want one per member %v", got, sortedKeys(tc.members))
			}
			for _, g := range job.groups {
				if g.count != 1 {
					t.Errorf("group %s: count %d, want 1", g.name, g.count)
				}
				if names := g.checkServices(t); !slices.Contains(names, tc.job) {
					t.Errorf("group %s: services %v, want %q (allot finds it by that name)", g.name, names, tc.job)
				}
				if len(g.tasks) != 1 {
					t.Fatalf("group %s: %d tasks", g.name, len(g.tasks))
				}
				task := g.tasks[0]
				if task.image != tc.image {
					t.Errorf("group %s: image %s, want %s", g.name, task.image, tc.image)
				}
				if len(task.volumes) == 0 {
					t.Errorf("group %s: no data volume", g.name)
				}
				tc.check(t, g.name, tc.members[g.name], task.args, tc.members)
			}
		})
	}
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
