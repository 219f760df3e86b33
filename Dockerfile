# allot: one static binary in an empty image.
#
# No Go base image is pulled: build/images.sh (or `go tool task images`)
# builds build/out/allot on the host with CGO_ENABLED=0 and sends a build
# context holding only the binary, the host's CA bundle and passwd/group
# files for an unprivileged user.
FROM scratch

COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY passwd /etc/passwd
COPY group /etc/group
COPY allot /allot

# 65532 is distroless's "nonroot". /data (for --data.dir of `allot all`) is
# owned by it, and docker gives a new named volume mounted there the same owner.
COPY --chown=65532:65532 data /data
WORKDIR /data
USER 65532:65532

# status pages, /metrics, the Target Allocator API, /-/healthy, /-/ready
EXPOSE 8080

# Scratch has no shell or curl, so the binary checks itself.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["/allot", "healthcheck"]

ENTRYPOINT ["/allot"]
