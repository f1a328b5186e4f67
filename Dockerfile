# syntax=docker/dockerfile:1
#
# The runtime's container image: the `statefun` binary on a slim Debian, as a non-root user.
#
#   docker build -t statefun .
#   docker run --rm statefun --help
#   docker run --rm -e STATEFUN_BACKEND=aws -e STATEFUN_MODULE_YAML="$(cat module.yaml)" ... statefun run
#
# It builds for the platform Docker builds for (linux/amd64 or linux/arm64, `--platform` to choose);
# the Terraform module's cpu_architecture must match. infra/docker/entrypoint.sh writes
# STATEFUN_MODULE_YAML, if set, to a file and points STATEFUN_MODULE at it.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS build
WORKDIR /src
# The whole workspace: Cargo needs every member's manifest, and proto/ compiles its .proto files
# in-process (no protoc).
COPY . .
# Cache mounts keep the registry and the target directory between builds.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p statefun-runtime --bin statefun \
    && install -D -m 0755 target/release/statefun /out/statefun

# The runtime stage. scripts/image.sh builds the same stage around a host-built binary when no
# Docker daemon or registry is at hand (infra/docker/Containerfile.prebuilt): keep the two in step.
FROM debian:${DEBIAN_RELEASE}-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --create-home --uid 10001 statefun
COPY --from=build /out/statefun /usr/local/bin/statefun
COPY infra/docker/entrypoint.sh /usr/local/bin/statefun-entrypoint
USER statefun
WORKDIR /home/statefun
# The admin server on the container's loopback, for the health check (`statefun health` asks it).
ENV STATEFUN_ADMIN_LISTEN=127.0.0.1:9464
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s CMD ["statefun", "health"]
ENTRYPOINT ["/usr/local/bin/statefun-entrypoint"]
CMD ["run"]
