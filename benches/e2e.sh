#!/usr/bin/env bash
# End-to-end benchmark against nginx and HAProxy; see benches/e2e.py
# (`--tls`: HTTPS termination and TLS to backends).
# Installs nginx, HAProxy, wrk and curl from Debian packages when missing,
# builds the example proxy in release mode, then runs the benchmark.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v nginx >/dev/null || missing+=(nginx-light)
command -v haproxy >/dev/null || missing+=(haproxy)
command -v wrk >/dev/null || missing+=(wrk)
command -v curl >/dev/null || missing+=(curl)
command -v openssl >/dev/null || missing+=(openssl)  # --tls: the test CA and certificate
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -q >/dev/null
  # The packages' own services are not wanted: we start what we measure.
  $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi
if [ "$(nproc)" -lt 2 ]; then
  echo "needs 2 cores (the balancer on one, load and backends on the other)" >&2
  exit 1
fi
cargo build --release --example proxy --example server_floor --example inline_floor
exec python3 benches/e2e.py "$@"
