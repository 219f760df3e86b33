#!/usr/bin/env bash
# Builds the images docker-compose.yaml and the integration tests use, without
# pulling anything: every binary is built statically from Go source on the
# host and copied into a FROM scratch image. The etcd and NATS images carry
# the names, tags and file layout of the official images, so the same
# docker-compose.yaml runs with images built here or pulled from the
# registries.
#
# Idempotent: an etcd or NATS binary in build/out that was built from the
# version go.mod pins is not rebuilt (FORCE=1 rebuilds it); allot is handed to
# `go build`, which relinks only when a source changed, so an image never
# carries a stale allot. docker reuses layers that did not change.
#
#   build/images.sh            # all three images
#   build/images.sh allot      # only some: allot, etcd, nats
#   ALLOT_BIN=/path/to/allot build/images.sh allot   # a static allot built elsewhere
set -euo pipefail

cd "$(dirname "$0")/.."
root=$PWD
out=$root/build/out
mkdir -p "$out"

force=${FORCE:-0}
export CGO_ENABLED=0

allot_image=${ALLOT_IMAGE:-allot:dev}
etcd_version=$(go list -m -f '{{.Version}}' go.etcd.io/etcd/server/v3)
# The NATS server version follows go.mod too (the embedded server's version),
# so the image and `allot all` run the same server.
nats_version=$(go list -m -f '{{.Version}}' github.com/nats-io/nats-server/v2)
etcd_image=gcr.io/etcd-development/etcd:${etcd_version}
nats_image=nats:${nats_version#v}

log() { printf 'images: %s\n' "$*" >&2; }

# needs NAME MODULE VERSION: true when build/out/NAME must be (re)built, that
# is when FORCE=1, when it is missing, or when its embedded build info does
# not name MODULE at VERSION.
needs() {
	[[ $force == 1 || ! -x $out/$1 ]] && return 0
	! go version -m "$out/$1" 2>/dev/null | grep -qP "^\t(mod|dep)\t\Q$2\E\t\Q$3\E(\t|$)"
}

# ctx NAME FILE...: a fresh, minimal build context, so docker never sends the
# repository (or other binaries) to the daemon.
ctx() {
	local dir=$out/ctx-$1
	shift
	rm -rf "$dir"
	mkdir -p "$dir"
	cp "$@" "$dir"/
	printf '%s\n' "$dir"
}

# CA bundle for TLS from scratch images (OTLP endpoints, remote write, SD APIs).
ca_bundle() {
	local f
	for f in /etc/ssl/certs/ca-certificates.crt /etc/pki/tls/certs/ca-bundle.crt /etc/ssl/cert.pem; do
		if [[ -r $f ]]; then
			cp "$f" "$out/ca-certificates.crt"
			return
		fi
	done
	log "no CA bundle found on this host"
	exit 1
}

build_allot() {
	if [[ -n ${ALLOT_BIN:-} ]]; then
		# A static allot built elsewhere (another checkout, a release).
		log "using $ALLOT_BIN"
		cp "$ALLOT_BIN" "$out/allot"
	else
		local version
		version=${ALLOT_VERSION:-$(git -C "$root" describe --tags --always --dirty 2>/dev/null || echo dev)}
		log "go build ./cmd/allot ($version)"
		go build -trimpath -ldflags "-s -w -X main.version=$version" -o "$out/allot" ./cmd/allot
	fi
	ca_bundle
	# One unprivileged user (65532, as in distroless "nonroot"), so the image
	# needs no shell to drop root.
	printf 'root:x:0:0:root:/:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$out/passwd"
	printf 'root:x:0:\nnonroot:x:65532:\n' >"$out/group"
	local c
	c=$(ctx allot "$out/allot" "$out/ca-certificates.crt" "$out/passwd" "$out/group")
	# An empty /data owned by the image's user: docker copies its owner into
	# a fresh named volume mounted there, so the user can write to it.
	mkdir -p "$c/data"
	log "docker build $allot_image"
	docker build -q -f "$root/Dockerfile" -t "$allot_image" "$c" >/dev/null
}

build_etcd() {
	# etcd's own go.mod has replace directives, so `go install ...@version`
	# fails; etcd, etcdctl and etcdutl are tools of our module instead
	# (`tool` lines in go.mod), built at the version go.mod pins.
	local bin pkg
	for bin in etcd etcdctl etcdutl; do
		case $bin in
		etcd) pkg=go.etcd.io/etcd/server/v3 ;;
		*) pkg=go.etcd.io/etcd/$bin/v3 ;;
		esac
		if needs "$bin" "$pkg" "$etcd_version"; then
			log "go build $pkg ($etcd_version)"
			go build -trimpath -ldflags "-s -w" -o "$out/$bin" "$pkg"
		fi
	done
	local c
	c=$(ctx etcd "$out/etcd" "$out/etcdctl" "$out/etcdutl")
	log "docker build $etcd_image"
	docker build -q -f "$root/build/etcd.Dockerfile" -t "$etcd_image" "$c" >/dev/null
}

build_nats() {
	# Built with the module's own go.mod (go install pkg@version), as upstream
	# builds its release binaries.
	if needs nats-server github.com/nats-io/nats-server/v2 "$nats_version"; then
		log "go install nats-server $nats_version"
		GOBIN=$out go install -trimpath -ldflags "-s -w" "github.com/nats-io/nats-server/v2@${nats_version}"
	fi
	local c
	c=$(ctx nats "$out/nats-server" "$root/build/nats-server.conf")
	log "docker build $nats_image"
	docker build -q -f "$root/build/nats.Dockerfile" -t "$nats_image" "$c" >/dev/null
}

targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(etcd nats allot)
for t in "${targets[@]}"; do
	case $t in
	allot) build_allot ;;
	etcd) build_etcd ;;
	nats) build_nats ;;
	*)
		log "unknown image $t (want allot, etcd or nats)"
		exit 2
		;;
	esac
done
docker image ls --format '{{.Repository}}:{{.Tag}}\t{{.Size}}' |
	grep -E "^(${allot_image%%:*}|${etcd_image%%:*}|nats):" >&2 || true
