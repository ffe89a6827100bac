# One image with the three chatbus services; docker-compose.yml picks the
# binary per service.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p auth-server -p ingestor -p consumer --bins \
 && mkdir -p /out \
 && cp target/release/auth-server target/release/ingestor target/release/consumer /out/

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home /data chatbus \
 && mkdir -p /data/tokens /data/spool /data/db \
 && chown -R chatbus /data
COPY --from=build /out/ /usr/local/bin/
USER chatbus
WORKDIR /data
