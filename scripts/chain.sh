#!/usr/bin/env bash
# The whole chain, clean -> eval, with one config set (configs/demo or configs/smoke), then a summary.
# Usage: CONFIGS=configs/demo WORKERS=2 MLMCTL=mlmctl bash scripts/chain.sh
# Every stage runs with --rebuild: a second run finds each output up to date and only prints the
# summary; after a config edit exactly the stages it affects are rebuilt (see docs/pipeline.md).
set -euo pipefail
MLMCTL=${MLMCTL:-mlmctl}
CONFIGS=${CONFIGS:-configs/demo}
WORKERS=${WORKERS:-2}
name=$(basename "$CONFIGS")
D=data/$name
R=runs/$name
C=$CONFIGS
m() { echo "+ mlmctl $* --rebuild" >&2; "$MLMCTL" "$@" --rebuild; }

m clean       -c "$C/clean.yaml"       --output "$D/clean"  --workers "$WORKERS"
m tokenize    -c "$C/tokenize.yaml"    --input "$D/clean"  --output "$D/tokens" --workers "$WORKERS"
m build-vocab -c "$C/build-vocab.yaml" --input "$D/tokens" --output "$D/vocab"  --workers "$WORKERS"
m pretrain    -c "$C/pretrain.yaml"    --input "$D/vocab"  --output "$R/pretrain"
m eval        -c "$C/eval-mlm.yaml"    --input "$R/pretrain" --output "$R/eval-mlm" --set "data=$D/vocab"
m demo-task   -c "$C/demo-task.yaml"   --input "$D/clean"  --output "$D/task"
for init in pretrained random; do
  m finetune -c "$C/finetune.yaml" --input "$R/pretrain" --output "$R/finetune-$init" --set "init=$init" \
    --set "train_file=$D/task/train.tsv" --set "dev_file=$D/task/dev.tsv"
  m eval -c "$C/eval.yaml" --input "$R/finetune-$init/best" --output "$R/eval-$init" \
    --set "test_file=$D/task/test.tsv"
done
# The second task: tag the code in docstrings (token classification), pretrained vs random init.
# A config set without demo-task-tagging.yaml skips it (configs/zh: its generated corpus has no code markup).
if [ -f "$C/demo-task-tagging.yaml" ]; then
  m demo-task -c "$C/demo-task-tagging.yaml" --input "$D/clean" --output "$D/tagging"
  for init in pretrained random; do
    m finetune -c "$C/finetune-tagging.yaml" --input "$R/pretrain" --output "$R/tagger-$init" --set "init=$init" \
      --set "train_file=$D/tagging/train.conll" --set "dev_file=$D/tagging/dev.conll"
    m eval -c "$C/eval-tagging.yaml" --input "$R/tagger-$init/best" --output "$R/eval-tagging-$init" \
      --set "test_file=$D/tagging/test.conll"
  done
else
  echo "(no $C/demo-task-tagging.yaml: the tagging task is skipped for this config set)" >&2
fi
# The summary tables, then a self-contained page with the curves and charts (its path printed last).
"$MLMCTL" report --data "$D" --runs "$R" --html "$R/report.html"
