"""`mlmctl inspect DIR`: say what a stage, run or model directory holds, without loading a model.

- a stage directory (manifest.json): stage, mlmctl version, config and input hashes, whether
  the files still match the manifest (sizes), shard count / bytes / records per split, the
  stage's `extra` figures;
- an unfinished one (.work/ but no manifest.json): says so;
- a model directory (config.json): architecture, shape, vocabulary, labels, parameter count
  (read from the safetensors header, so nothing is loaded) and tokenizer files;
- a pretrain / finetune run: its manifest, then its final/ or best/ model, checkpoints and the
  last lines of metrics.jsonl; an eval output: the eval.json figures.
"""

from __future__ import annotations

import struct
from pathlib import Path

from mlmctl import safe_json
from mlmctl.errors import InputError
from mlmctl.head_config import architectures, head_labels
from mlmctl.layout import CHECKPOINTS, CONFIG_NAME, EVAL_JSON, MANIFEST, METRICS_FILE, MODEL_SUBDIRS, WORK


def run(path: Path) -> None:
    for title, rows in describe(Path(path)):
        _print(title, rows)


def describe(path: Path) -> list[tuple[str, list[tuple[str, object]]]]:
    """Sections (title, rows) describing `path`; raises InputError for anything else."""
    if not path.exists():
        raise InputError(f"inspect: {path} does not exist")
    if not path.is_dir():
        raise InputError(f"inspect: {path} is not a directory (give a stage, run or model directory)")
    sections = []
    if (path / MANIFEST).is_file():
        sections.append(_shown(_manifest_section, path))
    elif (path / WORK).is_dir():
        sections.append((f"{path}", [("status", "unfinished: .work/ present but no manifest.json; "
                                               "rerun the stage to finish it (or --force to start over)")]))
    if (path / CONFIG_NAME).is_file():
        sections.append(_shown(_model_section, path))
    for sub in MODEL_SUBDIRS:
        if (path / sub / CONFIG_NAME).is_file():
            sections.append(_shown(_model_section, path / sub))
    ckpts = sorted(p.name for p in (path / CHECKPOINTS).glob("step-*")) if (path / CHECKPOINTS).is_dir() else []
    if ckpts:
        sections.append(("checkpoints", [("count", len(ckpts)), ("latest", ckpts[-1])]))
    if (path / METRICS_FILE).is_file():
        sections.append(_shown(_metrics_section, path / METRICS_FILE))
    if (path / EVAL_JSON).is_file():
        sections.append(_shown(_eval_section, path / EVAL_JSON))
    if not sections:
        raise InputError(f"inspect: {path} is not an mlmctl stage, run or model directory "
                         "(no manifest.json, config.json or eval.json)")
    return sections


def _shown(section, path: Path):
    """The section, or a row saying its file is unreadable: inspect shows what is there, so no
    shape a damaged or crafted file can take (a list where an object belongs, a string where a
    number does) ends the command with a traceback."""
    try:
        return section(path)
    except Exception as e:  # noqa: BLE001 - any reader error of any file, shown as such
        return (f"{path}", [("unreadable", f"{type(e).__name__}: {e}")])


def _manifest_section(path: Path):
    from mlmctl.errors import MlmctlError
    from mlmctl.manifest import read_manifest, verify_files
    from mlmctl.progress import human_bytes

    try:
        m = read_manifest(path, reader="inspect", verify=False)
    except MlmctlError as e:
        return (f"{path}", [("manifest", f"damaged: {e}")])
    try:
        verify_files(path, m, reader="inspect", full=False)
        status = "complete (file sizes match the manifest)"
    except MlmctlError as e:
        status = f"DAMAGED: {e}"
    rows = [("stage", m.stage), ("mlmctl version", m.version), ("status", status),
            ("config hash", m.config_hash[:16]), ("input hash", (m.input_hash or "-")[:16])]
    splits = sorted({s.split or "-" for s in m.shards})
    for split in splits:
        shards = [s for s in m.shards if (s.split or "-") == split]
        records: dict[str, int] = {}
        for s in shards:
            for k, v in s.records.items():
                if isinstance(v, (int, float)):
                    records[k] = records.get(k, 0) + v
        recs = ", ".join(f"{k} {v:,}" for k, v in records.items())
        rows.append((f"shards [{split}]", f"{len(shards)} files, {human_bytes(sum(s.bytes for s in shards))}"
                     + (f"; {recs}" if recs else "")))
    if m.files:
        rows.append(("other files", f"{len(m.files)}, {human_bytes(sum(f.bytes for f in m.files))}"))
    for k, v in m.extra.items():
        if isinstance(v, (str, int, float, bool)) or v is None:
            rows.append((k, v))
        elif isinstance(v, list) and len(v) <= 12 and all(isinstance(x, (str, int, float)) for x in v):
            rows.append((k, ", ".join(map(str, v))))
        elif isinstance(v, dict) and 0 < len(v) <= 12 and all(isinstance(x, (int, float, str)) for x in v.values()):
            rows.append((k, ", ".join(f"{a}={b if isinstance(b, str) else _num(b)}" for a, b in v.items())))
    return (f"{path} (stage directory)", rows)


def _model_section(path: Path):
    try:
        cfg = safe_json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        return (f"{path} (model)", [("config.json", f"unreadable: {e}")])
    if not isinstance(cfg, dict):
        return (f"{path} (model)", [("config.json", f"unreadable: a JSON {type(cfg).__name__}, not an object")])
    rows = []
    # inspect shows what is there, so a mangled head is a row saying so, not an error.
    try:
        archs = architectures(cfg, path, "inspect")
        rows.append(("architectures", ", ".join(archs or ["?"])))
    except InputError as e:
        archs = []
        rows.append(("architectures", f"unreadable: {e}"))
    rows.append(("model_type", cfg.get("model_type", "?")))
    for key in ("num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size", "vocab_size",
                "max_position_embeddings", "hidden_act"):
        if key in cfg:
            rows.append((key, cfg[key]))
    if cfg.get("model_type") == "modernbert":
        rows += _modern_rows(cfg)
    if any(a.endswith(("ForSequenceClassification", "ForTokenClassification")) for a in archs) and cfg.get("id2label"):
        try:
            rows.append(("labels", ", ".join(head_labels(cfg, path, "inspect"))))
        except InputError as e:
            rows.append(("labels", f"unreadable: {e}"))
    weights = path / "model.safetensors"
    if weights.is_file():
        try:
            n, dtypes = _safetensors_params(weights)
            rows.append(("parameters", f"{n:,} ({n / 1e6:.2f}M, {'/'.join(sorted(dtypes))})"))
        except (OSError, ValueError, KeyError, struct.error) as e:
            rows.append(("model.safetensors", f"unreadable header: {e}"))
    else:
        rows.append(("weights", "no model.safetensors"))
    tok = [n for n in ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json")
           if (path / n).is_file()]
    rows.append(("tokenizer files", ", ".join(tok) or "none"))
    return (f"{path} (model)", rows)


def _modern_rows(cfg: dict) -> list[tuple[str, object]]:
    """What sets a ModernBERT apart (HF ModernBertConfig names): which layers attend globally,
    the local window, the RoPE bases, and the classifier's pooling."""
    rows = [(k, cfg[k]) for k in ("hidden_activation", "local_attention", "global_attn_every_n_layers",
                                  "global_rope_theta", "local_rope_theta", "classifier_pooling") if k in cfg]
    n, every, kinds = cfg.get("num_hidden_layers"), cfg.get("global_attn_every_n_layers"), cfg.get("layer_types")
    if not isinstance(kinds, list) and isinstance(n, int) and isinstance(every, int) and every >= 1:
        # older configs: layer i is global when i % every == 0 (HF's rule)
        kinds = ["full_attention" if i % every == 0 else "sliding_attention" for i in range(n)]
    if isinstance(kinds, list):
        glob = [i for i, k in enumerate(kinds) if k == "full_attention"]
        rows.append(("attention", f"global at layers {', '.join(map(str, glob)) or 'none'}; local "
                                  f"(window {cfg.get('local_attention', '?')}) at the other {len(kinds) - len(glob)}"))
    return rows


def _safetensors_params(path: Path) -> tuple[int, set[str]]:
    """Parameter count from the safetensors header (8-byte little-endian length, then JSON)."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        if n > 100_000_000:
            raise ValueError("header length implausible")
        header = safe_json.loads(f.read(n))
    if not isinstance(header, dict):
        raise ValueError("the header is not a JSON object")
    total, dtypes = 0, set()
    for name, t in header.items():
        if name == "__metadata__":
            continue
        count = 1
        for d in t["shape"]:
            count *= d
        total += count
        dtypes.add(t["dtype"])
    return total, dtypes


def _metrics_section(path: Path):
    lines = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                row = safe_json.loads(line)
            except ValueError:
                continue  # a line cut by a kill
            if isinstance(row, dict):
                lines.append(row)
    rows = [("lines", len(lines))]
    train = [x for x in lines if "loss" in x]
    if train:
        rows.append(("last step", train[-1].get("step")))
        rows.append(("last loss", _num(train[-1]["loss"])))
    for key in ("val_ppl", "val_loss", "val_acc", "packing_efficiency", "batch_size", "dev_macro_f1",
                "dev_accuracy"):
        vals = [x[key] for x in lines if key in x]
        if vals:
            rows.append((f"last {key}", _num(vals[-1])))
    return (f"{path}", rows)


def _eval_section(path: Path):
    try:
        ev = safe_json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        return (f"{path}", [("eval.json", f"unreadable: {e}")])
    if not isinstance(ev, dict):
        return (f"{path}", [("eval.json", f"unreadable: a JSON {type(ev).__name__}, not an object")])
    rows = [("mode", ev.get("mode", "?"))]
    keys = ("n", "accuracy", "macro_f1", "micro_f1", "weighted_f1", "majority_baseline_accuracy",
            "mlm_loss", "mlm_ppl", "unigram_ppl", "pppl", "sequences", "masked_tokens")
    rows += [(k, _num(ev[k])) for k in keys if k in ev]
    if "labels" in ev:
        rows.append(("labels", ", ".join(ev["labels"])))
    return (f"{path}", rows)


def _num(v):
    return f"{v:.4f}" if isinstance(v, float) else v


def _print(title: str, rows) -> None:
    from mlmctl.progress import print_summary

    print_summary(title, rows)
