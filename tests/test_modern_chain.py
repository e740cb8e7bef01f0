"""The whole chain with the modern recipe (configs/modern) through scripts/chain.sh, at smoke size:
configs/modern's files with only the sizes of configs/smoke laid over them, so every modern
setting (model.arch, documents packing, 30% masking, WSD, pseudo-perplexity) runs as shipped."""

from __future__ import annotations

import json
import math
import os
import subprocess
from pathlib import Path

import pytest

from test_pipeline_smoke import _mlmctl

ROOT = Path(__file__).resolve().parents[1]

# Only sizes and lengths: what makes the chain take seconds instead of minutes.
SMOKE_SIZES = {
    "clean": {"python_docs": {"packages": ["json", "email", "logging", "argparse", "collections", "typing",
                                           "pathlib", "unittest"], "max_documents": 1500, "units": 4},
              "validation_fraction": 0.05, "max_shard_mb": 1, "compresslevel": 1},
    "tokenize": {"compresslevel": 1},
    "build-vocab": {"vocab_size": 1000, "min_frequency": 2},
    "pretrain": {"model": {"hidden_size": 64, "num_attention_heads": 2, "intermediate_size": 96,
                           "num_hidden_layers": 2, "local_attention": 16},
                 "data": {"max_seq_len": 64}, "train": {"batch_size": 8, "max_steps": 20, "warmup_steps": 3},
                 "validation": {"every": 10, "max_sequences": 32}, "checkpoint": {"save_every": 10},
                 "log_every": 2},
    "eval-mlm": {"max_seq_len": 64, "max_sequences": 64, "pppl_tokens": 200},
    "demo-task": {"num_classes": 3, "max_words": 32, "test_per_class": 15, "dev_per_class": 10,
                  "max_train_per_class": 60, "min_train_per_class": 10},
    "finetune": {"max_seq_len": 48, "batch_size": 16, "max_steps": 12, "eval_every": 6},
    "eval": {},
}


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return out


def smoke_sized_modern(dest: Path) -> Path:
    import yaml

    dest.mkdir(parents=True)
    for stage, sizes in SMOKE_SIZES.items():
        cfg = yaml.safe_load((ROOT / "configs/modern" / f"{stage}.yaml").read_text())
        (dest / f"{stage}.yaml").write_text(yaml.safe_dump(_merge(cfg, sizes)))
    return dest


@pytest.mark.slow
def test_modern_chain_end_to_end_loads_in_transformers(tmp_path):
    transformers = pytest.importorskip("transformers")
    configs = smoke_sized_modern(tmp_path / "configs" / "modern")
    env = dict(os.environ, MLMCTL=_mlmctl(), CONFIGS=str(configs), WORKERS="2")
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "chain.sh")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=1200)  # 41 s idle, 128 s under load
    assert proc.returncode == 0, proc.stderr[-3000:]
    data, runs = tmp_path / "data" / "modern", tmp_path / "runs" / "modern"
    from mlmctl.manifest import read_manifest

    for d in [data / x for x in ("clean", "tokens", "vocab", "task")] + [
            runs / x for x in ("pretrain", "eval-mlm", "finetune-pretrained", "finetune-random", "eval-pretrained",
                               "eval-random")]:
        assert read_manifest(d, verify=True), d

    pre = read_manifest(runs / "pretrain").extra
    assert pre["architectures"] == ["ModernBertForMaskedLM"] and pre["steps"] == 20
    assert 0.3 < pre["packing_efficiency"] <= 1.0 and math.isfinite(pre["final_loss"])
    cfg = json.loads((runs / "pretrain" / "final" / "config.json").read_text())
    assert cfg["model_type"] == "modernbert" and cfg["local_attention"] == 16 and cfg["global_attn_every_n_layers"] == 3
    mlm = transformers.AutoModelForMaskedLM.from_pretrained(runs / "pretrain" / "final")
    assert type(mlm).__name__ == "ModernBertForMaskedLM"
    tok = transformers.AutoTokenizer.from_pretrained(runs / "pretrain" / "final")
    assert tok.mask_token == "[MASK]"
    for init in ("pretrained", "random"):
        clf = transformers.AutoModelForSequenceClassification.from_pretrained(runs / f"finetune-{init}" / "best")
        assert type(clf).__name__ == "ModernBertForSequenceClassification" and clf.config.num_labels == 3
        ev = json.loads((runs / f"eval-{init}" / "eval.json").read_text())
        assert ev["n"] == 45 and 0 <= ev["macro_f1"] <= 1
    ev = json.loads((runs / "eval-mlm" / "eval.json").read_text())
    assert ev["mask_prob"] == 0.15 and 1 < ev["mlm_ppl"] < cfg["vocab_size"] and 1 < ev["pppl"] < cfg["vocab_size"]
    # The closing report names the architecture and the packing.
    assert "modernbert: 2 layers x 64 hidden, 2 heads; global attention every 3 layers, local window 16" in proc.stdout
    assert "packing efficiency" in proc.stdout and "pseudo-perplexity" in proc.stdout
