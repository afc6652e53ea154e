# portcullis container image.
#
#   docker build -t portcullis .
#   docker run --rm -p 127.0.0.1:8080:8080 -p 127.0.0.1:9090:9090 \
#       -e PORTCULLIS_SESSION__SECRET="$(docker run --rm portcullis keygen)" portcullis
#
# The image ships config/portcullis.toml as /etc/portcullis/portcullis.toml;
# mount your own file over it, or override keys with PORTCULLIS_<SECTION>__<KEY>
# environment variables. 8080 is the proxy listener, 9090 the admin listener.
# The image holds no session secret: give yours in PORTCULLIS_SESSION__SECRET
# (or mount a file and set PORTCULLIS_SESSION__SECRETS_FILE); without one, or
# with a secret printed in portcullis's own docs, `serve` refuses to start.
# Off loopback, set PORTCULLIS_SERVER__PUBLIC_URL to the https:// origin your
# users open (TLS ends here with server.tls, or at a load balancer in front).

# ---------------------------------------------------------------- build
FROM rust:1.95-slim-bookworm AS builder

# pkg-config and a C/C++ toolchain for the C crates (ring, aws-lc-sys); no cmake.
RUN apt-get update \
    && apt-get install -y --no-install-recommends pkg-config build-essential g++ \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /build

# Dependency cache: build the locked dependency graph against a stub crate, so
# that this layer is reused until Cargo.toml or Cargo.lock change. It is only an
# optimisation: if the stub cannot be built (e.g. the manifest names [[bench]] or
# [[test]] files that are not copied here), the real build below does all the work.
# The workspace's second member (testkit/, the tests' fakes) must exist for
# cargo to read the workspace; the release build never compiles it.
COPY Cargo.toml Cargo.lock ./
COPY testkit/Cargo.toml testkit/
RUN mkdir -p src testkit/src \
    && echo 'fn main() {}' > src/main.rs \
    && : > src/lib.rs \
    && : > testkit/src/lib.rs \
    && { cargo build --release --locked || echo "dependency pre-build skipped; building everything below"; } \
    && rm -rf src testkit/src

# The real sources. Touch them so cargo never takes the stub's artifacts for
# up to date (COPY keeps the build context's modification times).
COPY . .
RUN find src -name '*.rs' -exec touch {} + \
    && cargo build --release --locked \
    && install -D -m 0755 target/release/portcullis /out/portcullis

# ---------------------------------------------------------------- runtime
FROM debian:bookworm-slim

RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*

RUN groupadd --system --gid 10001 portcullis \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /var/lib/portcullis --shell /usr/sbin/nologin portcullis \
    && install -d -o portcullis -g portcullis -m 0750 /var/lib/portcullis

COPY --from=builder /out/portcullis /usr/local/bin/portcullis
COPY config/portcullis.toml /etc/portcullis/portcullis.toml

ENV PORTCULLIS_CONFIG=/etc/portcullis/portcullis.toml \
    PORTCULLIS_SERVER__LISTEN=0.0.0.0:8080 \
    PORTCULLIS_SERVER__ADMIN_LISTEN=0.0.0.0:9090
WORKDIR /var/lib/portcullis
USER 10001:10001

EXPOSE 8080 9090

ENTRYPOINT ["portcullis"]
CMD ["serve"]
