# The mcpgate image: the same build CI runs (`cargo build --release --locked`), in a slim,
# non-root runtime that works with a read-only root filesystem and every capability dropped.
#
#   docker build -t mcpgate:0.1.0 .          # or: tests/image/build.sh (no registry needed)
#   docker run --read-only --cap-drop=ALL -p 8080:8080 -p 9090:9090 \
#     -v $PWD/config:/etc/mcpgate/config:ro mcpgate:0.1.0   # config/mcpgate.toml
#
# Runs as uid/gid 10001. Reads /etc/mcpgate/config/mcpgate.toml (the Helm chart mounts its
# ConfigMap as that folder, so its [[upstreams]] reload live, and its Secret at
# /etc/mcpgate/secrets/; mount a folder rather than the file, or an editor's save-by-rename is
# not seen); every setting can be overridden with
# MCPGATE_<SECTION>__<KEY> variables. Listens on 0.0.0.0:8080 (/mcp) and 0.0.0.0:9090 (/metrics,
# /healthz, /readyz). Writes nothing to disk. SIGTERM drains (server.drain_grace, 30s).
# Images adding stdio upstreams (Node, Python): deploy/images/.

FROM rust:1.95-slim-bookworm AS build
# Behind a TLS-intercepting proxy, point cargo at a CA bundle that trusts it (tests/image/build.sh
# mounts the host's bundle at /run/build-ca.crt for the build only and passes that path).
ARG CARGO_HTTP_CAINFO
WORKDIR /src
# make: jemalloc (the gateway's allocator) is built from C sources with configure and make.
RUN apt-get update \
    && apt-get install -y --no-install-recommends make \
    && rm -rf /var/lib/apt/lists/*
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# Cache mounts (BuildKit, buildah): crates and build artifacts survive between builds on one
# machine, so a rebuild after a source change compiles only mcpgate itself. The binary leaves the
# target cache in the same step.
RUN --mount=type=cache,id=mcpgate-cargo-registry,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,id=mcpgate-target,target=/src/target,sharing=locked \
    cargo build --release --locked --bin mcpgate \
    && install -D -m 0755 target/release/mcpgate /out/mcpgate

FROM debian:bookworm-slim
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="mcpgate" \
      org.opencontainers.image.description="A horizontally scaled gateway for the Model Context Protocol" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/mcpgate/mcpgate" \
      org.opencontainers.image.base.name="docker.io/library/debian:bookworm-slim"
# ca-certificates: the system roots rediss:// and https:// upstreams verify against (beside
# SSL_CERT_FILE, and for upstreams Mozilla's roots built in).
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* /var/log/apt /var/log/dpkg.log /var/cache/debconf/*-old \
    && groupadd --gid 10001 mcpgate \
    && useradd --uid 10001 --gid 10001 --no-log-init --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin mcpgate \
    && mkdir -p /etc/mcpgate/config /etc/mcpgate/secrets
COPY --from=build /out/mcpgate /usr/local/bin/mcpgate
USER 10001:10001
ENV MCPGATE_SERVER__LISTEN=0.0.0.0:8080 \
    MCPGATE_ADMIN__LISTEN=0.0.0.0:9090
EXPOSE 8080 9090
STOPSIGNAL SIGTERM
ENTRYPOINT ["mcpgate"]
CMD ["serve", "--config", "/etc/mcpgate/config/mcpgate.toml", "--json-logs"]
