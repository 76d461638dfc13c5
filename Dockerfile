# The same build CI runs (`cargo build --release --locked`), in a slim runtime image.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN cargo build --release --locked --bin mcpgate

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 mcpgate
COPY --from=build /src/target/release/mcpgate /usr/local/bin/mcpgate
USER 10001
ENV MCPGATE_SERVER__LISTEN=0.0.0.0:8080 \
    MCPGATE_ADMIN__LISTEN=0.0.0.0:9090
EXPOSE 8080 9090
ENTRYPOINT ["mcpgate"]
CMD ["serve", "--config", "/etc/mcpgate/mcpgate.toml"]
