# deployd: a multi-stage build into a slim image that runs `deployd serve`.
#
#   docker build -t deployd .
#   docker run -p 7171:7171 -e DEPLOYD_STORE__URL=postgres://... deployd
#
# The image listens on 0.0.0.0, so it needs tokens in its config (see the
# README's Security section); mount your own config at /etc/deployd/deployd.toml.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY config config
COPY migrations migrations
COPY tests tests
RUN cargo build --release --locked --bins

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --home-dir /var/lib/deployd --create-home deployd
COPY --from=build /src/target/release/deployd /src/target/release/deployctl /usr/local/bin/
COPY config /etc/deployd/
USER deployd
WORKDIR /var/lib/deployd
ENV DEPLOYD_SERVER__LISTEN=0.0.0.0:7171 \
    DEPLOYD_SERVER__DATA_DIR=/var/lib/deployd
EXPOSE 7171
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s \
  CMD curl -fsS http://127.0.0.1:7171/healthz || exit 1
ENTRYPOINT ["deployd"]
CMD ["serve", "--config", "/etc/deployd/default.toml"]
