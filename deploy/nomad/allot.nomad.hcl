# allot on Nomad: discoverers, rebalancers and scrapers as one service job.
# Targets are found through Nomad's native service discovery
# (nomad_sd_configs): every service registered with the tag "prometheus" is
# scraped. etcd and NATS are found the same way (services "etcd" and "nats"
# from etcd.nomad.hcl and nats.nomad.hcl), or given as variables.
#
#   nomad job run deploy/nomad/etcd.nomad.hcl
#   nomad job run deploy/nomad/nats.nomad.hcl
#   nomad job run -var image=ghcr.io/allot-dev/allot:v0.1.0 deploy/nomad/allot.nomad.hcl

variable "image" {
  type        = string
  default     = "ghcr.io/allot-dev/allot:latest"
  description = "The allot image."
}

variable "datacenters" {
  type    = list(string)
  default = ["*"]
}

variable "otlp_endpoint" {
  type        = string
  default     = "http://otel-collector.service.nomad:4318"
  description = "Where scrapers send OTLP."
}

variable "events_replicas" {
  type        = number
  default     = 3
  description = "Replicas of the catalog's JetStream KV buckets: the number of NATS servers, up to 3."
}

variable "scrapers" {
  type    = number
  default = 3
}

job "allot" {
  datacenters = var.datacenters
  type        = "service"

  # One allocation at a time: a scraper that stops revokes its lease and the
  # others take its targets over before the next one goes.
  update {
    max_parallel      = 1
    min_healthy_time  = "10s"
    healthy_deadline  = "3m"
    progress_deadline = "10m"
    health_check      = "checks"
    auto_revert       = true
  }

  group "discoverer" {
    count = 2

    network {
      port "http" {
        to = 8080
      }
    }

    service {
      provider = "nomad"
      name     = "allot-discoverer"
      port     = "http"
      tags     = ["allot", "prometheus"]

      check {
        type     = "http"
        path     = "/-/ready"
        interval = "10s"
        timeout  = "3s"
      }
    }

    task "discoverer" {
      driver = "docker"

      config {
        image = var.image
        ports = ["http"]
        args = [
          "discoverer",
          "--config.file=/local/allot.yml",
          "--etcd.endpoints=${ETCD_ENDPOINTS}",
          "--nats.url=${NATS_URL}",
          "--events.replicas=${var.events_replicas}",
          "--web.external-address=${NOMAD_ADDR_http}",
          "--log.format=json",
        ]
      }

      # etcd and NATS endpoints from Nomad's service catalog; a change
      # restarts the task with the new list.
      template {
        destination = "local/endpoints.env"
        env         = true
        change_mode = "restart"
        data        = <<-EOT
          ETCD_ENDPOINTS={{ range $i, $s := nomadService "etcd" }}{{ if $i }},{{ end }}http://{{ $s.Address }}:{{ $s.Port }}{{ end }}
          NATS_URL={{ range $i, $s := nomadService "nats" }}{{ if $i }},{{ end }}nats://{{ $s.Address }}:{{ $s.Port }}{{ end }}
        EOT
      }

      # The Prometheus configuration the discoverers read. Nomad's API is
      # on the client agent of the node the task runs on.
      template {
        destination = "local/allot.yml"
        change_mode = "restart"
        data        = <<-EOT
          global:
            scrape_interval: 30s
            scrape_timeout: 10s
          scrape_configs:
            - job_name: nomad-services
              nomad_sd_configs:
                - server: http://{{ env "attr.unique.network.ip-address" }}:4646
                  refresh_interval: 30s
              relabel_configs:
                # Only services tagged "prometheus".
                - source_labels: [__meta_nomad_tags]
                  regex: .*,prometheus,.*
                  action: keep
                - source_labels: [__meta_nomad_service]
                  target_label: service
                - source_labels: [__meta_nomad_namespace]
                  target_label: namespace
                - source_labels: [__meta_nomad_dc]
                  target_label: datacenter
                - source_labels: [__meta_nomad_node_id]
                  target_label: node_id
        EOT
      }

      resources {
        cpu    = 200
        memory = 256
      }
    }
  }

  group "rebalancer" {
    count = 2

    network {
      port "http" {
        to = 8080
      }
    }

    service {
      provider = "nomad"
      name     = "allot-rebalancer"
      port     = "http"
      tags     = ["allot", "prometheus"]

      check {
        type     = "http"
        path     = "/-/ready"
        interval = "10s"
        timeout  = "3s"
      }
    }

    task "rebalancer" {
      driver = "docker"

      config {
        image = var.image
        ports = ["http"]
        args = [
          "rebalancer",
          "--etcd.endpoints=${ETCD_ENDPOINTS}",
          "--web.external-address=${NOMAD_ADDR_http}",
          "--log.format=json",
        ]
      }

      template {
        destination = "local/endpoints.env"
        env         = true
        change_mode = "restart"
        data        = <<-EOT
          ETCD_ENDPOINTS={{ range $i, $s := nomadService "etcd" }}{{ if $i }},{{ end }}http://{{ $s.Address }}:{{ $s.Port }}{{ end }}
        EOT
      }

      resources {
        cpu    = 100
        memory = 128
      }
    }
  }

  group "scraper" {
    count = var.scrapers

    # Spread scrapers over nodes, so one node lost costs one scraper.
    spread {
      attribute = "${node.unique.id}"
    }

    network {
      port "http" {
        to = 8080
      }
    }

    service {
      provider = "nomad"
      name     = "allot-scraper"
      port     = "http"
      tags     = ["allot", "prometheus"]

      check {
        type     = "http"
        path     = "/-/healthy"
        interval = "10s"
        timeout  = "3s"
      }
    }

    task "scraper" {
      driver = "docker"

      # SIGTERM, then time to flush exports and revoke the lease.
      kill_signal  = "SIGTERM"
      kill_timeout = "30s"

      config {
        image = var.image
        ports = ["http"]
        args = [
          "scraper",
          "--etcd.endpoints=${ETCD_ENDPOINTS}",
          "--nats.url=${NATS_URL}",
          "--events.replicas=${var.events_replicas}",
          "--otlp.endpoint=${var.otlp_endpoint}",
          "--web.external-address=${NOMAD_ADDR_http}",
          "--lease.ttl=5s",
          "--log.format=json",
        ]
      }

      template {
        destination = "local/endpoints.env"
        env         = true
        change_mode = "restart"
        data        = <<-EOT
          ETCD_ENDPOINTS={{ range $i, $s := nomadService "etcd" }}{{ if $i }},{{ end }}http://{{ $s.Address }}:{{ $s.Port }}{{ end }}
          NATS_URL={{ range $i, $s := nomadService "nats" }}{{ if $i }},{{ end }}nats://{{ $s.Address }}:{{ $s.Port }}{{ end }}
        EOT
      }

      resources {
        cpu    = 500
        memory = 512
      }
    }
  }
}
