package discoverer

// The SD mechanisms allot supports. Each registers its *_sd_configs with
// the config parser in init. static_configs is built into discovery.
// discovery/install is avoided on purpose: it pulls in every cloud SDK
// and makes builds much slower.
import (
	_ "github.com/prometheus/prometheus/discovery/consul"     // consul_sd_configs
	_ "github.com/prometheus/prometheus/discovery/dns"        // dns_sd_configs
	_ "github.com/prometheus/prometheus/discovery/file"       // file_sd_configs
	_ "github.com/prometheus/prometheus/discovery/http"       // http_sd_configs
	_ "github.com/prometheus/prometheus/discovery/kubernetes" // kubernetes_sd_configs
	_ "github.com/prometheus/prometheus/discovery/nomad"      // nomad_sd_configs
)
