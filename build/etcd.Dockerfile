# etcd from source, laid out like the official gcr.io/etcd-development/etcd
# image (binaries in /usr/local/bin, data under /var/lib/etcd, CMD not
# ENTRYPOINT), so docker-compose.yaml and the integration tests run unchanged
# with either. Built by build/images.sh; the context holds only the binaries.
FROM scratch
COPY etcd etcdctl etcdutl /usr/local/bin/
WORKDIR /var/etcd/
WORKDIR /var/lib/etcd/
EXPOSE 2379 2380
CMD ["/usr/local/bin/etcd"]
