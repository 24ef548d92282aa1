#!/bin/sh
# Makes the development PKI, signing key and tokens that deploy/compose.yaml
# mounts. Everything is written under deploy/ (or $MERIDIAN_DEV_DIR):
#
#   pki/        mounted at /etc/meridian/pki in every Meridian container:
#               ca.pem (+ ca-key.pem, which stays yours);
#               <region>-<service>.pem: the mesh's mTLS identities, carrying
#                 spiffe://meridian.local/region/<region>/<service>;
#               public-gateway-<region>.pem, public-router.pem: the public
#                 ports' TLS server certificates, naming the compose service
#                 (gateway-<region>, router) and localhost, 127.0.0.1, ::1.
#   signing/    the token signing key and its JWKS (`meridian token dev`).
#               Never mounted: whoever holds signing-key.json mints tokens.
#   auth/       mounted at /etc/meridian/auth: jwks.json, a copy of the
#               JWKS (public keys only), which every service's [auth] reads.
#   tokens/     development tokens (`meridian token mint`, valid 30 days):
#               agent-<region>.jwt, operator.jwt, sre.jwt, admin.jwt for you;
#               router.jwt (an sre's), mounted into the router only, is
#               what its own calls to the gateways carry.
#
#   deploy/dev-certs.sh              # keeps an existing CA and signing key;
#                                    # renews certificates and tokens
#   deploy/dev-certs.sh --new-ca     # extra arguments go to `meridian certs dev`
#   MERIDIAN_ROTATE_SIGNING_KEY=1 deploy/dev-certs.sh   # new signing key; the
#                                    # old one stays in the JWKS (see README)
#   MERIDIAN_DEV_DIR=/elsewhere deploy/dev-certs.sh
#
# It runs `meridian` from, in order: $MERIDIAN if set, `meridian` on the
# PATH, or `cargo run --release` in this repository; nothing is downloaded.
#
# Development only: the containers run as a non-root user (uid 65532) that
# does not own these files, so the service keys and the router's token are
# made readable by all (the CA key and the signing key stay private to you).
# Never do that with real keys; production issues certificates with
# cert-manager and tokens with its identity provider (see k8s/).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
dev="${MERIDIAN_DEV_DIR:-$here}"
pki="${MERIDIAN_PKI_DIR:-$dev/pki}"
signing="$dev/signing"
auth="$dev/auth"
tokens="$dev/tokens"
regions="us-east eu-west apac-south"

if [ -n "${MERIDIAN:-}" ]; then
    meridian() { "$MERIDIAN" "$@"; }
elif ! command -v meridian >/dev/null 2>&1; then
    meridian() { cargo run --quiet --release --manifest-path "$here/../Cargo.toml" --bin meridian -- "$@"; }
fi

# The mesh: a CA and the SPIFFE identities.
meridian certs dev --out "$pki" "$@" \
    --regions us-east,eu-west,apac-south --services gateway,router --trust-domain meridian.local

# The public ports: server certificates for the names clients dial (the
# router dials https://gateway-<region>:PORT; you dial localhost).
for region in $regions; do
    meridian certs server --pki "$pki" --name "public-gateway-$region" --dns "gateway-$region"
done
meridian certs server --pki "$pki" --name public-router --dns router
chmod 0644 "$pki"/*-gateway-key.pem "$pki"/*-router-key.pem "$pki"/public-*-key.pem
chmod 0755 "$pki"

# The signing key and the JWKS the services verify tokens with.
if [ -n "${MERIDIAN_ROTATE_SIGNING_KEY:-}" ]; then
    meridian token dev --out "$signing" --rotate
else
    meridian token dev --out "$signing"
fi
mkdir -p "$auth" "$tokens"
# Through a temporary name and a rename: the services poll the file and
# must never read half of it.
cp "$signing/jwks.json" "$auth/.jwks.json.tmp"
chmod 0644 "$auth/.jwks.json.tmp"
mv -f "$auth/.jwks.json.tmp" "$auth/jwks.json"
chmod 0755 "$auth"

mint() {
    name=$1
    shift
    meridian token mint --key "$signing/signing-key.json" "$@" >"$tokens/.$name.jwt.tmp"
    mv -f "$tokens/.$name.jwt.tmp" "$tokens/$name.jwt"
}
for region in $regions; do
    mint "agent-$region" --role agent --region "$region"
done
mint operator --role operator
mint sre --role sre
mint admin --role admin
mint router --role sre --subject meridian-router
chmod 0600 "$tokens"/*.jwt
chmod 0644 "$tokens/router.jwt"
chmod 0755 "$tokens"

echo "development PKI in $pki (service keys world-readable: development only)"
echo "JWKS in $auth/jwks.json; signing key in $signing (keep it private)"
echo "tokens in $tokens; for the CLI:"
echo "  export MERIDIAN_CA=$pki/ca.pem MERIDIAN_TOKEN=\"\$(cat $tokens/agent-us-east.jwt)\""
