#!/usr/bin/env bash
# The long training runs, one after another (the machine has 2 cores). Each resumes from its
# last checkpoint when started again, so run this script again in a later session.
# Usage: nice -n 19 scripts/long_runs.sh > runs/long_runs.log 2>&1 &
set -u
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data}
ZOO=".venv/bin/python -m tfzoo"
mkdir -p runs
run() {  # name, then the zoo train arguments
  local name=$1; shift
  echo "[$(date -u +%FT%TZ)] start $name: zoo train $*"
  if $ZOO train "$@" --verbose 2; then
    echo "[$(date -u +%FT%TZ)] done $name"
  else
    echo "[$(date -u +%FT%TZ)] FAILED $name (exit $?)"
  fi
}
run googlenet_imagenette googlenet --preset imagenette --data-dir "$DATA/imagenette" \
  --model-dir runs/googlenet_imagenette
# after GoogLeNet: its trained backbone is the captioner's frozen encoder (features cached)
run captioner_flickr8k captioner --preset default --data-dir "$DATA/flickr8k" \
  --model-dir runs/captioner_flickr8k --set encoder_init=runs/googlenet_imagenette
