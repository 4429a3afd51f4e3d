#!/usr/bin/env bash
# The seq2seq `default` preset for seeds 0, 1 and 2, one after another (the machine has 2
# cores), to check that the recipe reaches its figure from any seed (issue 23).
# Each run: runs/seq2seq_robust_seed$S (its log: runs/seq2seq_robust_seed$S.log); the wall
# time, exit status and val BLEU of each run go to runs/seq2seq_robust_times.txt.
# Started again, it skips a seed whose run finished (metrics.json, written by `zoo train`
# last) and resumes an unfinished one from its last checkpoint (`zoo train` does that when
# the model dir exists). A second copy started while one runs exits at once.
# Usage: nohup setsid bash scripts/queue_translator_seeds.sh > runs/queue_translator.log 2>&1 &
# SEEDS="1 2" bash scripts/queue_translator_seeds.sh runs only those.
set -u
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data}
SEEDS=${SEEDS:-0 1 2}
mkdir -p runs
exec 9>runs/.queue_translator.lock
if ! flock -n 9; then
  echo "another queue_translator_seeds.sh is running (runs/.queue_translator.lock)"
  exit 1
fi
stamp() { date -u +%FT%TZ; }
# The runs import a snapshot of the code, not the working tree (as scripts/long_runs.sh
# does): autograph reads a function's source file when it traces it, so an edit made while
# a run trains can break it. The snapshot is the committed code plus this recipe's files as
# they are in the working tree (they may not be committed yet).
RECIPE_FILES="zoo/seq2seq/presets.py training/schedules.py training/tasks/sequence_objective.py"
# shellcheck disable=SC2086
SRC="runs/.src/translator-$(git rev-parse --short HEAD)-$(cat $RECIPE_FILES | sha1sum | cut -c1-8)"
if [ ! -d "$SRC" ]; then
  rm -rf "$SRC.tmp" && mkdir -p "$SRC.tmp" \
    && git archive HEAD tfzoo catalogue training zoo serving | tar -x -C "$SRC.tmp" \
    && for f in $RECIPE_FILES; do cp "$f" "$SRC.tmp/$f" || exit 1; done \
    && mv "$SRC.tmp" "$SRC" || { echo "[$(stamp)] could not snapshot the code"; exit 1; }
fi
# -P: the snapshot first on the path, not the current folder (the working tree)
ZOO="env PYTHONPATH=$PWD/$SRC TFZOO_PRETRAINED=$PWD/pretrained .venv/bin/python -P -m tfzoo"
echo "[$(stamp)] code: $SRC; seeds: $SEEDS"
TIMES=runs/seq2seq_robust_times.txt
for S in $SEEDS; do
  dir=runs/seq2seq_robust_seed$S
  if [ -f "$dir/metrics.json" ]; then
    echo "[$(stamp)] seed $S: already finished ($dir/metrics.json); skipped"
    continue
  fi
  echo "[$(stamp)] seed $S: start (log: $dir.log)"
  start=$(date +%s)
  # shellcheck disable=SC2086
  nice -n 19 $ZOO train seq2seq --preset default --data-dir "$DATA" --seed "$S" \
    --model-dir "$dir" --verbose 2 >> "$dir.log" 2>&1
  rc=$?
  seconds=$(($(date +%s) - start))
  bleu=$(.venv/bin/python -c "import json,sys; m=json.load(open(sys.argv[1])); \
print(f\"bleu {m['bleu']:.2f} greedy {m['bleu_greedy']:.2f}\")" "$dir/metrics.json" 2>/dev/null \
    || echo "no metrics")
  echo "$(stamp) seed $S exit $rc wall ${seconds}s ($((seconds / 60)) min) $bleu" >> "$TIMES"
  echo "[$(stamp)] seed $S: exit $rc after ${seconds}s; $bleu"
done
echo "[$(stamp)] done"
