#!/bin/sh
# Entrypoint of the runtime image: runs `statefun "$@"`.
#
# With STATEFUN_MODULE_YAML set (the Terraform module passes the module.yaml it generates that way),
# its text is written to $STATEFUN_MODULE (default /tmp/statefun/module.yaml) first, and
# STATEFUN_MODULE points the runtime at it. Otherwise module.yaml comes from a mounted file named by
# STATEFUN_MODULE or --module, as with the plain binary.
set -eu

if [ -n "${STATEFUN_MODULE_YAML:-}" ]; then
    STATEFUN_MODULE="${STATEFUN_MODULE:-/tmp/statefun/module.yaml}"
    mkdir -p "$(dirname "$STATEFUN_MODULE")"
    printf '%s\n' "$STATEFUN_MODULE_YAML" >"$STATEFUN_MODULE"
    export STATEFUN_MODULE
    unset STATEFUN_MODULE_YAML
fi

exec statefun "$@"
