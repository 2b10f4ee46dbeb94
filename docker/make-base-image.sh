#!/usr/bin/env bash
# A local base image for docker/Dockerfile where no image registry is reachable: Debian bookworm
# (python3 3.11 with venv) from Debian's own packages, via debootstrap. Run as root.
#
#   docker/make-base-image.sh [IMAGE]        # default maestro-base:bookworm
#
# MIRROR (default http://deb.debian.org/debian) is the Debian mirror. CA_DIR (default
# /usr/local/share/ca-certificates) holds extra CA certificates (*.crt) copied into the image,
# for networks whose HTTPS goes through an inspecting proxy; PIP_CERT points pip at the result.
set -euo pipefail
image="${1:-maestro-base:bookworm}"
mirror="${MIRROR:-http://deb.debian.org/debian}"
ca_dir="${CA_DIR:-/usr/local/share/ca-certificates}"
[ "$(id -u)" = 0 ] || { echo "make-base-image.sh: run as root (debootstrap)" >&2; exit 1; }
command -v debootstrap >/dev/null || { echo "make-base-image.sh: apt-get install debootstrap" >&2; exit 1; }
docker=${DOCKER:-docker}

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$root" "$mirror"
if compgen -G "$ca_dir/*.crt" >/dev/null; then
    cp "$ca_dir"/*.crt "$root/usr/local/share/ca-certificates/"
    chroot "$root" update-ca-certificates >/dev/null
fi
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
here=$(cd "$(dirname "$0")" && pwd)
"$here/rootfs-tar.sh" "$root" | "$docker" import \
    --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
    --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
    --change 'CMD ["python3"]' - "$image"
# What the images built on it need: a non-root user reaches python3 and its venv module.
"$docker" run --rm --network none --user 1000:1000 "$image" \
    python3 -c 'import ensurepip, sys, venv; assert sys.version_info[:2] == (3, 11), sys.version' \
    || { echo "make-base-image.sh: $image is not usable by a non-root user" >&2; exit 1; }
echo "make-base-image.sh: made $image (Debian bookworm, python3 3.11)"
