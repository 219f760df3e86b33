package events

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/allot-dev/allot/pkg/embedded"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func TestZZExperiment(t *testing.T) {
	if os.Getenv("EXP") == "" {
		t.Skip()
	}
	n, err := embedded.StartNATS(embedded.NATSConfig{Dir: t.TempDir()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	nc, _ := nats.Connect(n.URL())
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "t", History: 1, Storage: jetstream.FileStorage})
	if err != nil {
		t.Fatal(err)
	}
	const N = 100000
	start := time.Now()
	var last jetstream.PubAckFuture
	for i := 0; i < N; i++ {
		tg := NewTarget("job", map[string]string{"__address__": fmt.Sprintf("host-%d:9100", i), "a": "b"}, "h")
		b, _ := EncodeTarget(tg)
		last, err = js.PublishAsync("$KV.t."+TargetKey(tg.ID), b, jetstream.WithStallWait(10*time.Second))
		if err != nil {
			t.Fatal(err)
		}
	}
	<-last.Ok()
	<-js.PublishAsyncComplete()
	t.Logf("prefill %d: %s", N, time.Since(start))
	run := func(name string, filters []string, opts ...jetstream.WatchOpt) {
		start := time.Now()
		w, err := kv.WatchFiltered(ctx, append([]string(nil), filters...), opts...)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		created := time.Since(start)
		cnt := 0
		for e := range w.Updates() {
			if e == nil {
				break
			}
			cnt++
		}
		t.Logf("%s: create %s, snapshot %d in %s", name, created, cnt, time.Since(start))
		w.Stop()
	}
	slots := func(k int) []string {
		var f []string
		for s := 0; s < k; s++ {
			f = append(f, slotPrefix(s*Slots/k)+"*")
		}
		return f
	}
	_ = run
	for _, k := range []int{51, 341} {
		w, err := kv.WatchFiltered(ctx, slots(k), jetstream.IncludeHistory())
		if err != nil {
			t.Fatal(err)
		}
		cnt, marker := 0, -1
		tm := time.After(5 * time.Second)
	loop:
		for {
			select {
			case e := <-w.Updates():
				if e == nil {
					marker = cnt
					continue
				}
				cnt++
			case <-tm:
				break loop
			}
		}
		t.Logf("hist %d slots: marker after %d, total %d", k, marker, cnt)
		w.Stop()
	}
}
