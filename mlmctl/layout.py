"""The on-disk layout: every file and directory name that more than one module reads or writes.

The bottom floor of the package (imports nothing): a stage writes these names, the next stage,
`inspect`, `report` and the tests read them, so each is spelled once, here.

    out/manifest.json                     MANIFEST: written last, "this stage is finished"
    out/.work/                            WORK: unfinished units (`unit-NNNNN/` + DONE_FILE), run.json
    out/stats.json                        STATS_FILE (clean, tokenize, build-vocab)
    out/train/shard-00000.jsonl.gz        SPLITS, shard_name(0, ".jsonl.gz")
    run/final/  run/best/                 FINAL (pretrain), BEST (finetune): model directories
    run/checkpoints/step-000100/          CHECKPOINTS, step_dir_name(100)
    run/metrics.jsonl                     METRICS_FILE: one JSON line per logged step
    eval/eval.json                        EVAL_JSON
    model/config.json, model.safetensors, tokenizer.json, vocab.txt
"""

from __future__ import annotations

# A stage directory
MANIFEST = "manifest.json"
WORK = ".work"
RUN_FILE = "run.json"
LOCK_FILE = ".mlmctl.lock"
DONE_FILE = "done.json"
STATS_FILE = "stats.json"
SPLITS = ("train", "validation")
TRAIN, VALIDATION = SPLITS

# A training run
FINAL = "final"
BEST = "best"
CHECKPOINTS = "checkpoints"
METRICS_FILE = "metrics.jsonl"
MODEL_SUBDIRS = (FINAL, BEST)  # where a run directory keeps the model a later stage reads

# An eval directory
EVAL_JSON = "eval.json"
PREDICTIONS = "predictions.jsonl"

# A model directory (HF layout)
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
TOKENIZER_FILE = "tokenizer.json"
VOCAB_FILE = "vocab.txt"

# The special tokens: fixed ids, in this order, in every vocabulary mlmctl builds.
PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
SPECIAL_TOKENS = (PAD, UNK, CLS, SEP, MASK)
PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID = range(len(SPECIAL_TOKENS))
# The names `transformers` gives them (special_tokens_map.json, tokenizer_config.json).
HF_SPECIAL_TOKENS = {"pad_token": PAD, "unk_token": UNK, "cls_token": CLS, "sep_token": SEP, "mask_token": MASK}


def shard_name(index: int, suffix: str = "") -> str:
    """`shard-00000<suffix>`: numbered so that name order is shard order."""
    return f"shard-{index:05d}{suffix}"


def step_dir_name(step: int) -> str:
    """A checkpoint directory: `step-000100`."""
    return f"step-{step:06d}"


def unit_dir_name(index: int) -> str:
    """A work unit's folder under `.work/<phase>/`."""
    return f"unit-{index:05d}"
