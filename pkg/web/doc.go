// Package web serves allot's HTTP surfaces that are not specific to one
// service: the Prometheus-format targets API, the status pages (/targets,
// /service-discovery, /cluster, /config), health and readiness.
//
// Pages are server-rendered Go templates (templates/*.html, embedded), with
// no JavaScript. Each page has a JSON form: ?format=json, or an Accept
// header that prefers application/json, gives the data the page shows in
// the Prometheus API envelope ({"status":"success","data":...}).
//
// Services provide what they know through the small interfaces here
// (TargetSource, ClusterSource, ConfigSource); the binary decides which are
// mounted and adapts its services to them.
package web
