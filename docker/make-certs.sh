#!/usr/bin/env bash
# Local TLS material for docker/compose.tls.yml (and the TLS commands of docs/deployment.md):
# a private CA, a SuperLink certificate and one ECDSA key pair per SuperNode. Nothing here is
# committed: the output folder is git-ignored; keep the CA key off the devices.
#
#   docker/make-certs.sh [OUT_DIR] [EXTRA_SAN ...]
#
# OUT_DIR defaults to docker/certs. The SuperLink certificate always names localhost and
# 127.0.0.1 (the SuperLink's own SuperExec and the healthcheck connect there); add the DNS names or
# IP addresses your SuperNodes use, e.g. `docker/make-certs.sh docker/certs superlink.example.org
# 10.0.0.5`. SUPERNODES (default 3) sets how many SuperNode key pairs are made.
set -euo pipefail
out="${1:-$(dirname "$0")/certs}"
shift || true
nodes="${SUPERNODES:-3}"
command -v openssl >/dev/null || { echo "make-certs.sh: openssl is needed" >&2; exit 1; }
command -v ssh-keygen >/dev/null || { echo "make-certs.sh: ssh-keygen is needed" >&2; exit 1; }
case "$nodes" in '' | *[!0-9]*) echo "make-certs.sh: SUPERNODES must be a count" >&2; exit 1 ;; esac

mkdir -p "$out"
umask 077
san="DNS:localhost,IP:127.0.0.1"
for name in "$@"; do
    if [[ "$name" =~ ^[0-9.]+$ || "$name" == *:* ]]; then san+=",IP:$name"; else san+=",DNS:$name"; fi
done

openssl req -x509 -newkey rsa:2048 -nodes -days 365 -subj "/CN=maestro-fl-ca" \
    -keyout "$out/ca.key" -out "$out/ca.crt" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=superlink" \
    -keyout "$out/server.key" -out "$out/server.csr" 2>/dev/null
printf 'subjectAltName=%s\n' "$san" > "$out/san.ext"
openssl x509 -req -in "$out/server.csr" -CA "$out/ca.crt" -CAkey "$out/ca.key" \
    -CAcreateserial -days 365 -out "$out/server.pem" -extfile "$out/san.ext" 2>/dev/null
rm -f "$out/server.csr" "$out/san.ext" "$out/ca.srl"

for ((i = 0; i < nodes; i++)); do
    rm -f "$out/supernode-$i" "$out/supernode-$i.pub"
    ssh-keygen -q -t ecdsa -b 384 -N "" -C "supernode-$i" -f "$out/supernode-$i"
done
# The containers run as uid 1000 and mount this folder: private files stay 0600, owned by uid 1000
# (CERT_UID) when this runs as root; otherwise by you, which works where your uid is 1000.
chmod 0644 "$out"/ca.crt "$out"/server.pem "$out"/supernode-*.pub
chmod 0600 "$out"/ca.key "$out"/server.key "$out"/supernode-[0-9] "$out"/supernode-[0-9][0-9]* 2>/dev/null || true
chmod 0700 "$out"
if [ "$(id -u)" = 0 ]; then
    chown -R "${CERT_UID:-1000}" "$out"
elif [ "$(id -u)" != "${CERT_UID:-1000}" ]; then
    echo "make-certs.sh: note: the containers' uid ${CERT_UID:-1000} cannot read $out" >&2
fi
echo "make-certs.sh: wrote $out (SAN $san; $nodes SuperNode key pairs)"
