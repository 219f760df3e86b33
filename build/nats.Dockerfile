# The NATS server from source, laid out like the official `nats` (scratch)
# image: /nats-server as ENTRYPOINT and /nats-server.conf as the default
# CMD, so `command:` in docker-compose.yaml means the same with either.
# Built by build/images.sh; the context holds only the binary and the config.
FROM scratch
COPY nats-server /nats-server
COPY nats-server.conf /nats-server.conf
EXPOSE 4222 8222 6222
ENTRYPOINT ["/nats-server"]
CMD ["--config", "nats-server.conf"]
