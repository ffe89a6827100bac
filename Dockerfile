# One image with the three chatbus services and the demo's fake Twitch;
# docker-compose.yml builds it once (chatbus:local) and picks the binary per
# service. Needs BuildKit (the default builder since Docker Engine 23) for
# the cache mounts, which keep cargo's downloads and target directory
# between builds.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p auth-server -p ingestor -p consumer --bins \
 && cargo build --release --locked -p testkit --bin fake-twitch \
 && mkdir -p /out \
 && cp target/release/auth-server target/release/ingestor target/release/consumer \
       target/release/fake-twitch /out/

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home /data chatbus \
 && mkdir -p /data/tokens /data/spool /data/db \
 && chown -R chatbus /data
COPY --from=build /out/ /usr/local/bin/
# fake-twitch (the compose demo profile) replays the corpus of real chat
# lines from where testkit was built: /src/testkit/../testdata/corpus.
COPY --from=build /src/testdata/corpus/twitch-irc-real.txt /src/testdata/corpus/
USER chatbus
WORKDIR /data
