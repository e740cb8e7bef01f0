"""tokenize stage: format, sentence/pre-token invariants, workers, resume, bad input."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import pytest

pytest.importorskip("tokenizers")

from mlmctl.config import config_hash, config_to_dict  # noqa: E402
from mlmctl.manifest import Manifest, manifest_hash, read_manifest, write_manifest  # noqa: E402
from mlmctl.shards import ShardWriter  # noqa: E402

WORDS = (
    "the of and to in is was for on that with as by at from his her it an are were which "
    "model data text token sentence corpus learning language pretraining vocabulary "
    "Dr. Smith e.g. U.S. 3.14 naïve café résumé Zürich"
).split()
CJK = "北京大学的学生在图书馆里学习中文和数学我们今天很高兴"
EXTRA = ["🙂", "ÅÉÎ", "\u00a0", "—", "(", ")", '"', "'", "\t", "x\u200by"]


def sample_docs(n: int, seed: int = 0, cjk: bool = True) -> list[str]:
    """Generated documents: English-like sentences, some Chinese, some odd characters."""
    rng = random.Random(seed)
    docs = []
    for d in range(n):
        sents = []
        for _ in range(rng.randint(1, 6)):
            if cjk and rng.random() < 0.2:
                sents.append("".join(rng.choice(CJK) for _ in range(rng.randint(3, 15))) + rng.choice("。！？；"))
                continue
            words = [rng.choice(WORDS) for _ in range(rng.randint(2, 14))]
            if rng.random() < 0.2:
                words.insert(rng.randint(0, len(words)), rng.choice(EXTRA))
            s = " ".join(words)
            sents.append(s[0].upper() + s[1:] + rng.choice([".", "!", "?", "...", '."']))
        sep = "\n\n" if rng.random() < 0.2 else rng.choice([" ", "\n"])
        docs.append(sep.join(sents))
    return docs


def make_clean_dir(out: Path, docs: list[str], shards: int = 2, validation: list[str] | None = None) -> Path:
    """A finished `clean` directory holding `docs` (train) and `validation` docs."""
    out.mkdir(parents=True, exist_ok=True)
    infos = []
    for split, items in (("train", docs), ("validation", validation if validation is not None else docs[:3])):
        per = max(1, -(-len(items) // shards))
        for k in range(0, max(len(items), 1), per):
            chunk = items[k:k + per]
            if not chunk:
                continue
            w = ShardWriter(out, split, ".jsonl.gz", start_index=k // per)
            for i, text in enumerate(chunk):
                w.write(json.dumps({"id": f"{split}-{k + i}", "text": text, "source": "test"}) + "\n", docs=1)
            infos += w.close()
    write_manifest(out, Manifest(stage="clean", config={}, config_hash="test", input_hash=None, shards=infos))
    return out
