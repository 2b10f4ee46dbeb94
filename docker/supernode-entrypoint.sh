#!/bin/sh
# A SuperNode container: flower-supernode --isolation process with the given flags, and beside it
# client.warm_superexec, which serves each ClientApp message from a fork of a process that has
# torch imported already. The container ends when either process ends (restart policy restarts).
# MAESTRO_RUNTIME_PORT must match the SuperNode's --port (default 9094); MAESTRO_SUPEREXEC_TLS
# holds the SuperExec's TLS flags towards that port (default --insecure: it is 127.0.0.1 only).
set -eu
port="${MAESTRO_RUNTIME_PORT:-9094}"
flower-supernode --isolation process "$@" &
node=$!
# shellcheck disable=SC2086  # the TLS flags are a word list on purpose
python -m client.warm_superexec ${MAESTRO_SUPEREXEC_TLS:---insecure} \
    --runtime-api-address "127.0.0.1:${port}" &
superexec=$!
trap 'kill -TERM "$node" "$superexec" 2>/dev/null' TERM INT
# POSIX sh has no `wait -n`: poll until one of the two is gone, then stop the other.
while kill -0 "$node" 2>/dev/null && kill -0 "$superexec" 2>/dev/null; do
    sleep 2
done
kill -TERM "$node" "$superexec" 2>/dev/null || true
wait "$node" 2>/dev/null || true
wait "$superexec" 2>/dev/null || true
exit 1
