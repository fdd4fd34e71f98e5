# Build: docker build -t waitroom .      Run the whole stack: docker compose up --build
FROM rust:1.95-bookworm AS builder
WORKDIR /src
# The whole context (see .dockerignore): sql/ is embedded into the binary at compile time.
COPY . .
RUN cargo build --release --locked

FROM debian:bookworm-slim
# ca-certificates: TLS to amqps:// endpoints (rustls with native roots).
# curl: the health checks of docker-compose.yml (GET /health).
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --no-create-home --shell /usr/sbin/nologin waitroom
COPY --from=builder /src/target/release/waitroom /usr/local/bin/waitroom
USER waitroom
ENV HTTP_ADDR=0.0.0.0:5000 \
    LOG_FORMAT=json
# 5000: the API (serve, run); 5001: METRICS_ADDR of relays and projectors (/metrics, /health).
EXPOSE 5000 5001
ENTRYPOINT ["waitroom"]
CMD ["run"]
