#!/usr/bin/env bash
# Write a root filesystem folder as a tar stream on stdout, for `docker import`.
#
#   docker/rootfs-tar.sh ROOT > rootfs.tar
#
# The folder's top becomes the image's `/`, with the folder's own mode. A folder made by
# `mktemp -d` is 0700: in the image nobody but root could then reach any path, and a container
# running as another user fails to start (`exec: "python": executable file not found`). So the
# top is set to 0755 first, and the stream's top entry is checked to be 0755 owned by root.
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: rootfs-tar.sh ROOT" >&2; exit 2; }
root=$1
[ -d "$root" ] || { echo "rootfs-tar.sh: $root is not a folder" >&2; exit 2; }
chmod 0755 "$root"
top=$(tar -C "$root" --numeric-owner --no-recursion -cf - . | tar -tvf - | head -n 1)
case "$top" in
drwxr-xr-x\ *) ;;
*) echo "rootfs-tar.sh: top of the tree would be '$top', not drwxr-xr-x" >&2; exit 1 ;;
esac
exec tar -C "$root" --numeric-owner -c .
