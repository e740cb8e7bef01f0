"""demo-task: families from `source`, disjoint balanced splits, train split only, rerun rules."""

from __future__ import annotations

import gzip
import json
import random

import pytest

from mlmctl.labelled import read_labelled
from mlmctl.manifest import Manifest, write_manifest
from mlmctl.shards import ShardInfo
from mlmctl.stages.demo_task import DemoTaskConfig, build_task, family_of

FAMILIES = {"numpy": 200, "torch": 150, "email": 120, "json": 90, "tiny": 10}


def _records(split: str, seed: int = 0):
    rng = random.Random(seed)
    out = []
    # The validation split has a family bigger than any other: it must never reach the task.
    families = {**FAMILIES, "valonly": 500} if split == "validation" else FAMILIES
    for fam, n in families.items():
        for i in range(n):
            words = [f"{fam}word{rng.randrange(30)}" for _ in range(rng.randrange(5, 60))]
            # Some texts share their first words so truncation makes duplicates.
            if i % 25 == 0:
                words = ["shared", "opening"] * 20
            out.append({"id": f"{split}-{fam}-{i}", "text": "\t".join(words[:3]) + "\n" + " ".join(words[3:]),
                        "source": f"python-docs:{fam}.sub{i % 3}"})
    rng.shuffle(out)
    return out


def make_clean_dir(root, n_shards=3):
    root.mkdir(parents=True)
    shards = []
    for split in ("train", "validation"):
        recs = _records(split, seed=1 if split == "train" else 2)
        (root / split).mkdir()
        for k in range(n_shards):
            name = f"{split}/shard-{k:05d}.jsonl.gz"
            part = recs[k::n_shards]
            (root / name).write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in part).encode()))
            shards.append(ShardInfo.of_file(root, name, split, {"documents": len(part)}))
    write_manifest(root, Manifest(stage="clean", config={}, config_hash="x", input_hash=None, shards=shards))
    return root


def test_family_of():
    assert family_of("python-docs:numpy.linalg") == "numpy"
    assert family_of("python-docs:json") == "json"
    assert family_of("wiki") == "wiki"


def test_build_task_splits_are_disjoint_balanced_and_deterministic():
    cfg = DemoTaskConfig(num_classes=3, test_per_class=15, dev_per_class=10, max_train_per_class=60,
                         min_train_per_class=5, max_words=12)
    recs = _records("train")
    splits, stats = build_task(recs, cfg)
    assert stats["labels"] == ["email", "numpy", "torch"]  # the three largest, sorted
    texts = {s: [t for t, _ in rows] for s, rows in splits.items()}
    assert not set(texts["train"]) & set(texts["dev"])
    assert not set(texts["train"]) & set(texts["test"])
    assert not set(texts["dev"]) & set(texts["test"])
    assert stats["counts"]["test"] == {"email": 15, "numpy": 15, "torch": 15}
    assert stats["counts"]["train"] == {"email": 60, "numpy": 60, "torch": 60}  # capped: balanced
    assert stats["dropped"]["duplicate_text"] > 0 and stats["dropped"]["too_short"] > 0
    assert all(len(t.split(" ")) <= 12 and "\t" not in t and "\n" not in t for t in texts["train"])
    # Same result whatever order the records come in (shard layout).
    again, _ = build_task(list(reversed(recs)), cfg)
    assert again == splits
    # Another seed draws another selection.
    other, _ = build_task(recs, DemoTaskConfig(**{**cfg.__dict__, "seed": 1}))
    assert other["test"] != splits["test"]


def test_too_few_families_is_a_clear_error():
    from mlmctl.errors import InputError

    with pytest.raises(InputError, match="only 4 families have at least"):
        build_task(_records("train"), DemoTaskConfig(num_classes=5, test_per_class=10, dev_per_class=10,
                                                     min_train_per_class=5))
    with pytest.raises(InputError, match=r"tiny: \d+"):
        build_task(_records("train"), DemoTaskConfig(families=["numpy", "tiny"]))


def test_stage_through_cli_reads_train_split_only(tmp_path, run_cli):
    clean = make_clean_dir(tmp_path / "clean")
    out = tmp_path / "task"
    args = ["demo-task", "--input", clean, "--output", out, "--set", "num_classes=2",
            "--set", "test_per_class=20", "--set", "dev_per_class=10", "--set", "min_train_per_class=5"]
    code, stdout, err = run_cli(*args)
    assert code == 0, err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stage"] == "demo-task"
    assert manifest["extra"]["labels"] == ["numpy", "torch"]  # not "valonly"
    for split in ("train", "dev", "test"):
        d = read_labelled(out / f"{split}.tsv")  # the files read back through finetune's reader
        assert set(d.labels) == {"numpy", "torch"}
        assert len(d) == manifest["extra"]["counts"][split]["numpy"] + manifest["extra"]["counts"][split]["torch"]
    assert "numpy" in stdout
    # Rerun: up to date, nothing done.
    code, _, err = run_cli(*args)
    assert code == 0 and "up to date" in err
    # A different config needs --force.
    code, _, err = run_cli(*args, "--set", "max_words=10")
    assert code == 1 and "--force" in err
