package leases_test

import (
	"context"
	"fmt"
	"os"

	"github.com/allot-dev/allot/pkg/embedded"
	"github.com/allot-dev/allot/pkg/leases"
)

func ExampleClaims_Claim() {
	dir, _ := os.MkdirTemp("", "allot-example")
	defer os.RemoveAll(dir)
	etcd, err := embedded.StartEtcd(embedded.EtcdConfig{Dir: dir}, nil)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer etcd.Close()
	cli, _ := etcd.Client()
	defer cli.Close()
	ctx := context.Background()
	ks := leases.Keyspace{} // "/allot/"

	// Each scraper holds one session and claims on its lease.
	claimFor := func(owner string, targets []string) (*leases.Session, []leases.Claim) {
		s, err := leases.NewSession(ctx, cli, leases.SessionConfig{}, nil, nil)
		if err != nil {
			panic(err)
		}
		won, err := leases.NewClaims(s, ks, owner, 0, nil).Claim(ctx, targets)
		if err != nil {
			panic(err)
		}
		return s, won
	}
	a, wonA := claimFor("scraper-a", []string{"t1", "t2"})
	b, wonB := claimFor("scraper-b", []string{"t2", "t3"})
	fmt.Println("a won", len(wonA), "b won", len(wonB), "(t2 was taken)")

	// A graceful stop revokes the lease: a's claims are gone at once.
	_ = a.Close()
	wonB, _ = leases.NewClaims(b, ks, "scraper-b", 0, nil).Claim(ctx, []string{"t1", "t2"})
	fmt.Println("after a left, b won", len(wonB), "more")
	_ = b.Close()
	// Output:
	// a won 2 b won 1 (t2 was taken)
	// after a left, b won 2 more
}
