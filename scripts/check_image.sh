#!/usr/bin/env bash
# Build the zoo's image and check it for real (`make check_image`); too slow for `make test`.
#
#   scripts/check_image.sh            # on a local Debian base made with debootstrap
#   BASE=python:3.11-slim scripts/check_image.sh    # on the official base, where it can be pulled
#
# Prints the build time and image size, then scripts/check_image.py's checks and table.
set -euo pipefail
cd "$(dirname "$0")/.."
WANT_BASE="${BASE:-}"
IMAGE="${IMAGE:-tfzoo:check}"
# shellcheck source=scripts/container_env.sh
source scripts/container_env.sh
BASE="${WANT_BASE:-$(local_debian_base)}"
echo "building $IMAGE on $BASE with $ENGINE"
start=$(date +%s)
build_image
seconds=$(( $(date +%s) - start ))
size=$(engine image inspect --format '{{.Size}}' "$IMAGE")
echo "built $IMAGE in ${seconds} s; image size $(( size / 1000000 )) MB"
ZOO_ENGINE="$ENGINE ${ENGINE_ARGS[*]}" .venv/bin/python scripts/check_image.py --image "$IMAGE" "$@"
