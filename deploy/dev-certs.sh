#!/bin/sh
# Makes the development PKI that deploy/compose.yaml mounts at
# /etc/meridian/pki: a CA and, per region, a gateway and a router
# certificate carrying the SPIFFE identity
# spiffe://meridian.local/region/<region>/<service>.
#
#   deploy/dev-certs.sh              # writes deploy/pki (keeps an existing CA)
#   deploy/dev-certs.sh --new-ca     # extra arguments go to `meridian certs dev`
#   MERIDIAN_PKI_DIR=/elsewhere deploy/dev-certs.sh
#
# It runs `meridian certs dev` with, in order: $MERIDIAN if set, `meridian`
# on the PATH, or `cargo run --release` in this repository.
#
# Development only: the containers run as a non-root user (uid 65532) that
# does not own these files, so the service keys are made readable by all
# (the CA key stays private to you).
# Never do that with real keys; production issues certificates with
# cert-manager (see k8s/).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
out="${MERIDIAN_PKI_DIR:-$here/pki}"

if [ -n "${MERIDIAN:-}" ]; then
    set -- "$MERIDIAN" certs dev --out "$out" "$@"
elif command -v meridian >/dev/null 2>&1; then
    set -- meridian certs dev --out "$out" "$@"
else
    set -- cargo run --quiet --release --manifest-path "$here/../Cargo.toml" --bin meridian -- \
        certs dev --out "$out" "$@"
fi

"$@" --regions us-east,eu-west,apac-south --services gateway,router --trust-domain meridian.local
chmod 0644 "$out"/*-gateway-key.pem "$out"/*-router-key.pem
chmod 0755 "$out"
echo "development PKI in $out (private keys world-readable: development only)"
