# NATS with JetStream for allot's target catalog: three servers in one
# cluster, one per node, on the hosts' networks. Each keeps its JetStream
# store in a host volume named "nats" (client config:
# host_volume "nats" { path = "/opt/nats" }).
#
#   nomad job run -var 'servers={nats1="10.0.0.11",nats2="10.0.0.12",nats3="10.0.0.13"}' deploy/nomad/nats.nomad.hcl

variable "image" {
  type    = string
  default = "nats:2.15.2"
}

variable "datacenters" {
  type    = list(string)
  default = ["*"]
}

variable "servers" {
  type        = map(string)
  description = "Server name → IP address of the node it runs on."
  default = {
    nats1 = "10.0.0.11"
    nats2 = "10.0.0.12"
    nats3 = "10.0.0.13"
  }
}

locals {
  routes = join(",", [for name, ip in var.servers : "nats://${ip}:6222"])
}

job "nats" {
  datacenters = var.datacenters
  type        = "service"

  update {
    max_parallel     = 1
    min_healthy_time = "15s"
    healthy_deadline = "3m"
    health_check     = "checks"
  }

  dynamic "group" {
    for_each = var.servers
    labels   = [group.key]

    content {
      count = 1

      constraint {
        attribute = "${attr.unique.network.ip-address}"
        value     = group.value
      }

      network {
        mode = "host"
        port "client" {
          static = 4222
        }
        port "cluster" {
          static = 6222
        }
        port "monitor" {
          static = 8222
        }
      }

      volume "data" {
        type   = "host"
        source = "nats"
      }

      service {
        provider = "nomad"
        name     = "nats"
        port     = "client"
        tags     = ["allot"]

        check {
          type     = "http"
          port     = "monitor"
          path     = "/healthz?js-enabled-only=true"
          interval = "10s"
          timeout  = "3s"
        }
      }

      task "nats" {
        driver = "docker"

        config {
          image        = var.image
          network_mode = "host"
          # The image's entrypoint is /nats-server; these replace its
          # default --config.
          args = [
            "--name=${group.key}",
            "--jetstream",
            "--store_dir=/data",
            "--http_port=8222",
            "--cluster_name=allot",
            "--cluster=nats://0.0.0.0:6222",
            "--cluster_advertise=${group.value}:6222",
            "--client_advertise=${group.value}:4222",
            "--routes=${local.routes}",
          ]
        }

        volume_mount {
          volume      = "data"
          destination = "/data"
        }

        # Time to hand JetStream leadership over before exiting.
        kill_signal  = "SIGTERM"
        kill_timeout = "60s"

        resources {
          cpu    = 500
          memory = 512
        }
      }
    }
  }
}
