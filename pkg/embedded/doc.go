// Package embedded runs an etcd member and a NATS server with JetStream
// inside the current process, on loopback addresses.
//
// It backs `allot all` (a whole cluster in one process for laptops and demos)
// and the component tests, which start one [Etcd] and one [NATS] per test on
// random ports. Production deployments use external clusters instead.
package embedded
