"""inspect: stage directories (complete, damaged, unfinished), model and run directories, eval.json."""

from __future__ import annotations

import json

from mlmctl.inspect_dir import _safetensors_params, describe
from test_labelled import make_tiny_model_dir


def _rows(sections):
    return {title: dict(rows) for title, rows in sections}


def test_model_dir_parameter_count_matches_torch(tmp_path, run_cli):
    from mlmctl.model import BertForPreTraining
    from mlmctl.model_dir import load_model_dir

    path = make_tiny_model_dir(tmp_path, ["one two three four"] * 5)
    model, _, _ = load_model_dir(path, BertForPreTraining)
    # The file leaves out the decoder weight tied to the word embeddings, as torch counts it once.
    n, dtypes = _safetensors_params(path / "model.safetensors")
    assert n == sum(p.numel() for p in model.parameters()) and dtypes == {"F32"}
    rows = _rows(describe(path))[f"{path} (model)"]
    assert rows["architectures"] == "BertForMaskedLM" and rows["hidden_size"] == 32
    assert rows["parameters"].startswith(f"{n:,}")
    code, out, _ = run_cli("inspect", path)
    assert code == 0 and "parameters" in out and "BertForMaskedLM" in out


def test_stage_dir_states(tmp_path, run_cli):
    from mlmctl.manifest import Manifest, write_manifest
    from mlmctl.shards import ShardInfo

    d = tmp_path / "clean"
    (d / "train").mkdir(parents=True)
    (d / "train" / "shard-00000.jsonl.gz").write_bytes(b"x" * 100)
    (d / "train" / "shard-00001.jsonl.gz").write_bytes(b"y" * 50)
    shards = [ShardInfo.of_file(d, f"train/shard-0000{i}.jsonl.gz", "train", {"documents": 10 + i}) for i in range(2)]
    write_manifest(d, Manifest(stage="clean", config={}, config_hash="ab" * 32, input_hash="cd" * 32,
                               shards=shards, extra={"kept": 21, "steps": ["decode", "dedup"]}))
    rows = _rows(describe(d))[f"{d} (stage directory)"]
    assert rows["stage"] == "clean" and rows["status"].startswith("complete")
    assert rows["shards [train]"] == "2 files, 150 B; documents 21"
    assert rows["kept"] == 21 and rows["steps"] == "decode, dedup"
    # A shard cut short: reported, not hidden.
    (d / "train" / "shard-00001.jsonl.gz").write_bytes(b"y")
    assert _rows(describe(d))[f"{d} (stage directory)"]["status"].startswith("DAMAGED")
    # Unfinished: a work directory without a manifest.
    u = tmp_path / "unfinished"
    (u / ".work").mkdir(parents=True)
    assert "unfinished" in _rows(describe(u))[str(u)]["status"]
    code, out, _ = run_cli("inspect", d)
    assert code == 0 and "DAMAGED" in out


def test_run_dir_with_metrics_and_eval(tmp_path):
    path = make_tiny_model_dir(tmp_path, ["one two three four"] * 5)
    run = tmp_path / "run"
    run.mkdir()
    path.rename(run / "final")
    (run / "metrics.jsonl").write_text(json.dumps({"step": 10, "loss": 5.0}) + "\n"
                                       + json.dumps({"step": 10, "val_ppl": 99.5}) + "\n" + '{"step": 2')
    (run / "eval.json").write_text(json.dumps({"mode": "mlm", "mlm_ppl": 12.5, "unigram_ppl": 300.0}))
    rows = _rows(describe(run))
    assert rows[f"{run / 'final'} (model)"]["architectures"] == "BertForMaskedLM"
    m = rows[str(run / "metrics.jsonl")]
    assert m["last step"] == 10 and m["last val_ppl"] == "99.5000" and m["lines"] == 2  # cut line skipped
    assert rows[str(run / "eval.json")]["mlm_ppl"] == "12.5000"


def test_not_a_directory_we_know(tmp_path, run_cli):
    code, _, err = run_cli("inspect", tmp_path)
    assert code == 1 and "not an mlmctl stage, run or model directory" in err
    code, _, err = run_cli("inspect", tmp_path / "nope")
    assert code == 1 and "does not exist" in err
    (tmp_path / "f").write_text("x")
    code, _, err = run_cli("inspect", tmp_path / "f")
    assert code == 1 and "not a directory" in err
