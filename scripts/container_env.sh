# Sourced by `make image` and scripts/check_image.sh: which container tool to use, and how.
#
#   ENGINE       podman or docker, whichever is present (podman first); override by setting it
#   ENGINE_ARGS  global flags for podman where its defaults fail (see below)
#   BASE         the Dockerfile's base image (default: the official python:3.11-slim)
#
# On machines where podman's default runtime (crun) cannot set rlimits or use hybrid cgroups,
# as on this project's build machines, podman runs with runc, cgroupfs and no default ulimits
# (build/containers.conf); ZOO_PODMAN_DEFAULTS=1 keeps podman's own defaults instead.

if [ -z "${ENGINE:-}" ]; then
  if command -v podman >/dev/null 2>&1; then ENGINE=podman
  elif command -v docker >/dev/null 2>&1; then ENGINE=docker
  else echo "neither podman nor docker is installed" >&2; return 1 2>/dev/null || exit 1; fi
fi
ENGINE_ARGS=()
if [ "$ENGINE" = podman ] && [ -z "${ZOO_PODMAN_DEFAULTS:-}" ] && [ -x /usr/sbin/runc ]; then
  mkdir -p build
  printf '[containers]\ndefault_ulimits = []\n[engine]\ncgroup_manager = "cgroupfs"\n' \
    > build/containers.conf
  export CONTAINERS_CONF="$PWD/build/containers.conf"
  ENGINE_ARGS=(--runtime /usr/sbin/runc)
fi
BASE="${BASE:-python:3.11-slim}"
IMAGE="${IMAGE:-tfzoo:latest}"

# engine ARGS...: the container tool with its global flags
engine() { "$ENGINE" "${ENGINE_ARGS[@]}" "$@"; }

# build_image: the zoo's image from the Dockerfile on $BASE, tagged $IMAGE; pip reaches the
# package index through the host's network and certificates
build_image() {
  local certs=()
  [ -f /etc/ssl/certs/ca-certificates.crt ] &&
    certs=(-v /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro)
  engine build --network host "${certs[@]}" --build-arg "BASE=$BASE" -t "$IMAGE" .
}

# local_debian_base: a Debian bookworm base with Python 3 and venv, made with debootstrap from
# Debian's packages and imported as localhost/debian-py:bookworm (for machines that reach no
# image registry; needs root)
local_debian_base() {
  local name=localhost/debian-py:bookworm
  if engine image exists "$name" 2>/dev/null; then echo "$name"; return; fi
  local root mirror
  root=$(mktemp -d)
  mirror=$(grep -rhE '^(URIs:|deb )' /etc/apt/sources.list /etc/apt/sources.list.d 2>/dev/null |
    grep -oE 'https?://[^ ]+/debian/?' | head -1)
  debootstrap --variant=minbase --include=python3,python3-venv bookworm "$root" \
    "${mirror:-http://deb.debian.org/debian}" >&2
  tar -C "$root" -c . | engine import - "$name" >&2
  rm -rf "$root"
  echo "$name"
}
