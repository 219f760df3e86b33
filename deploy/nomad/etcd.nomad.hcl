# A 3-member etcd cluster for allot, one member per node, on the hosts'
# networks with fixed ports (members find each other by address, and the
# initial cluster must be known before any of them starts). Each member keeps
# its data in a host volume named "etcd" (client config:
# host_volume "etcd" { path = "/opt/etcd" }).
#
#   nomad job run -var 'members={etcd1="10.0.0.11",etcd2="10.0.0.12",etcd3="10.0.0.13"}' deploy/nomad/etcd.nomad.hcl
#
# If you run etcd elsewhere already, skip this job and register its members
# as a Nomad service named "etcd", or pass the endpoints to allot directly.

variable "image" {
  type    = string
  default = "gcr.io/etcd-development/etcd:v3.7.3"
}

variable "datacenters" {
  type    = list(string)
  default = ["*"]
}

variable "members" {
  type        = map(string)
  description = "Member name → IP address of the node it runs on."
  default = {
    etcd1 = "10.0.0.11"
    etcd2 = "10.0.0.12"
    etcd3 = "10.0.0.13"
  }
}

locals {
  initial_cluster = join(",", [for name, ip in var.members : "${name}=http://${ip}:2380"])
}

job "etcd" {
  datacenters = var.datacenters
  type        = "service"

  # Never two members down at once: restart one, wait until it is healthy.
  update {
    max_parallel     = 1
    min_healthy_time = "15s"
    healthy_deadline = "3m"
    health_check     = "checks"
  }

  dynamic "group" {
    for_each = var.members
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
          static = 2379
        }
        port "peer" {
          static = 2380
        }
        port "metrics" {
          static = 2381
        }
      }

      volume "data" {
        type   = "host"
        source = "etcd"
      }

      service {
        provider = "nomad"
        name     = "etcd"
        port     = "client"
        tags     = ["allot"]

        check {
          type     = "http"
          port     = "metrics"
          path     = "/readyz"
          interval = "10s"
          timeout  = "3s"
        }
      }

      service {
        provider = "nomad"
        name     = "etcd-metrics"
        port     = "metrics"
        tags     = ["allot", "prometheus"]
      }

      task "etcd" {
        driver = "docker"

        config {
          image        = var.image
          network_mode = "host"
          command      = "/usr/local/bin/etcd"
          args = [
            "--name=${group.key}",
            "--data-dir=/var/lib/etcd/data",
            "--listen-client-urls=http://0.0.0.0:2379",
            "--advertise-client-urls=http://${group.value}:2379",
            "--listen-peer-urls=http://0.0.0.0:2380",
            "--initial-advertise-peer-urls=http://${group.value}:2380",
            "--listen-metrics-urls=http://0.0.0.0:2381",
            "--initial-cluster=${local.initial_cluster}",
            "--initial-cluster-token=allot",
            "--initial-cluster-state=new",
            "--auto-compaction-mode=periodic",
            "--auto-compaction-retention=5m",
            "--quota-backend-bytes=4294967296",
          ]
        }

        volume_mount {
          volume      = "data"
          destination = "/var/lib/etcd"
        }

        # etcd blocks writes only for a moment when a follower stops; a
        # leader stepping down on SIGTERM is quicker than an election.
        kill_signal  = "SIGTERM"
        kill_timeout = "30s"

        resources {
          cpu    = 500
          memory = 1024
        }
      }
    }
  }
}
