// Package integration runs allot's real images on private Docker networks
// and breaks them the way production does: kill -9, rolling restarts, etcd
// member loss, NATS outages, network partitions and scaling. A sink records
// every sample per series, the test watches the claims in etcd, and each
// scenario asserts on both.
//
// The tests need the images built by build/images.sh and a Docker daemon;
// they carry the `integration` build tag so `go test ./...` never needs
// Docker:
//
//	bash build/images.sh
//	TESTCONTAINERS_RYUK_DISABLED=true go test -tags integration -count=1 -timeout 25m -v ./test/integration/
//
// With -artifacts (and -outputdir), every container's log is kept under
// the output directory. ALLOT_IMAGE, ETCD_IMAGE and NATS_IMAGE override the
// images. Published ports are bound to 127.0.0.1 only.
package integration
