// Package integration runs allot's real images on private Docker networks
// and breaks them the way production does: kill -9, rolling restarts, etcd
// member loss, NATS outages, network partitions and scaling. A sink records
// every sample per series and each test asserts on what arrived.
//
// The tests need the images built by build/images.sh and a Docker daemon;
// they carry the `integration` build tag so `go test ./...` never needs
// Docker:
//
//	bash build/images.sh
//	TESTCONTAINERS_RYUK_DISABLED=true go test -tags integration -count=1 ./test/integration/
package integration
