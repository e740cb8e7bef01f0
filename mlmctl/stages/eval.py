"""eval: score a model directory and write `eval.json`.

Two modes, chosen from the model directory (`mode: auto`) or forced by the config:

- classifier (config.json `architectures` names a *ForSequenceClassification model): accuracy,
  precision / recall / F1 per class and macro / micro / weighted averages, and the confusion
  matrix on a labelled `test_file` (see mlmctl/metrics.py for the conventions), plus the
  majority-class baseline of the test file; `predictions: true` also writes predictions.jsonl.
- mlm (anything else): masked-LM loss and perplexity on held-out data: the `split` of a
  build-vocab directory (`data`) or raw text files (`text_files`, tokenised with the model's
  own tokenizer.json). Masks are a pure function of (seed, sequence index), so the same config
  gives the same number. Also the add-one-smoothed unigram perplexity of the same masked
  tokens, and pseudo-perplexity on request.

Reads: `--input` a model directory, or a pretrain run (its final/) or finetune run (its best/).
Writes: `OUTPUT/eval.json` (+ `predictions.jsonl`) and `manifest.json`.

    mlmctl eval -c configs/demo/eval.yaml --input runs/demo/finetune/best --output runs/demo/eval \\
        --set test_file=data/demo/task/test.tsv
    mlmctl eval -c configs/demo/eval-mlm.yaml --input runs/demo/pretrain --output runs/demo/eval-mlm \\
        --set data=data/demo/vocab
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from mlmctl.config import check
from mlmctl.errors import InputError, MlmctlError

EVAL_JSON = "eval.json"
PREDICTIONS = "predictions.jsonl"


@dataclass
class EvalConfig:
    """Score a classifier on a labelled file, or a pretrained model's masked-LM perplexity."""

    input: str = "runs/finetune/best"
    """Model directory, or a pretrain run (uses final/) or finetune run (uses best/)."""
    output: str = "runs/eval"
    """Directory for eval.json (+ predictions.jsonl) and manifest.json."""
    mode: Literal["auto", "classifier", "mlm"] = "auto"
    """auto = classifier when config.json's architectures names *ForSequenceClassification."""
    batch_size: int = 64
    """Examples (classifier) or sequences (mlm) per forward pass."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """auto = CUDA when available."""
    threads: int | None = None
    """CPU threads for torch (null = torch's default)."""
    # -- classifier
    test_file: str | None = None
    """Classifier: labelled file to score (.tsv, .csv or .jsonl, optionally .gz)."""
    format: Literal["auto", "tsv", "csv", "jsonl"] = "auto"
    """Classifier: file format; auto = from the file name."""
    has_header: bool = True
    """Classifier: TSV/CSV first row names the columns."""
    text_field: str | None = None
    """Classifier: text column (null = the one the model was fine-tuned with, else "text")."""
    text_pair_field: str | None = None
    """Classifier: second-text column for pair tasks (null = as fine-tuned)."""
    label_field: str | None = None
    """Classifier: label column (null = as fine-tuned, else "label")."""
    max_seq_len: int | None = None
    """Tokens per example (classifier) or sequence (mlm); null = as fine-tuned, else 128."""
    predictions: bool = False
    """Classifier: also write predictions.jsonl (index, gold, predicted, probabilities)."""
    max_field_chars: int = 10_000_000
    """Classifier: longest TSV/CSV field accepted, in characters (a longer one is an error naming its line)."""
    # -- mlm
    data: str | None = None
    """MLM: build-vocab directory whose `split` is scored (its train split gives the unigram)."""
    split: str = "validation"
    """MLM: split of `data` to score."""
    text_files: list[str] = field(default_factory=list)
    """MLM: raw text files to score instead of `data` (.txt or .txt.gz; a blank line separates
    documents), tokenised with the model's tokenizer."""
    max_sequences: int = 0
    """MLM: score at most this many sequences (0 = all)."""
    mask_prob: float = 0.15
    """MLM: fraction of (non-special) tokens masked per sequence."""
    mask_token_prob: float = 0.8
    """MLM: chosen tokens replaced by [MASK] with this probability (0.1 random, rest kept),
    as in pretraining, so the number is comparable with pretrain's val_ppl."""
    seed: int = 0
    """MLM: seed of the masks."""
    pppl: bool = False
    """MLM: also compute pseudo-perplexity (mask each token in turn; slow)."""
    pppl_max_docs: int = 20
    """MLM: pseudo-perplexity over the first this many documents (each cut to max_seq_len)."""

    def __post_init__(self):
        check(self.batch_size >= 1, "batch_size", "must be >= 1")
        check(self.threads is None or self.threads >= 1, "threads", "must be >= 1 or null")
        check(self.max_seq_len is None or self.max_seq_len >= 3, "max_seq_len", "must be at least 3 or null")
        check(self.max_sequences >= 0, "max_sequences", "must be >= 0 (0 = all)")
        check(0 < self.mask_prob < 1, "mask_prob", "must be in (0, 1)")
        check(0 <= self.mask_token_prob <= 1, "mask_token_prob", "must be in [0, 1]")
        check(self.pppl_max_docs >= 1, "pppl_max_docs", "must be >= 1")
        check(self.max_field_chars >= 1, "max_field_chars", "must be >= 1")
        check(self.seed >= 0, "seed", f"must be >= 0, got {self.seed}")
        check(not (self.data and self.text_files), "text_files", "give either `data` or `text_files`, not both")


CONFIG = EvalConfig
STAGE = "eval"
INPUT_STAGE = None


def input_fingerprint(cfg: EvalConfig) -> str:
    from mlmctl.labelled import resolve_model_dir
    from mlmctl.manifest import MANIFEST
    from mlmctl.stages.finetune import fingerprint_files

    model_dir = resolve_model_dir(cfg.input, STAGE)
    named = [("test_file", cfg.test_file)]
    if cfg.data:
        named.append(("data", str(Path(cfg.data) / MANIFEST)))
    named += [(f"text_files[{i}]", p) for i, p in enumerate(cfg.text_files)]
    return fingerprint_files(STAGE, model_dir, named)


def run(ctx) -> dict:
    import torch

    from mlmctl.devices import pick_device
    from mlmctl.labelled import resolve_model_dir
    from mlmctl.shards import atomic_write_json

    cfg: EvalConfig = ctx.cfg
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = pick_device(cfg.device, "eval")
    model_dir = resolve_model_dir(cfg.input, STAGE)
    raw_cfg = _read_config(model_dir)
    mode = cfg.mode
    if mode == "auto":
        mode = "classifier" if is_classifier_config(raw_cfg) else "mlm"
    ctx.log(f"{model_dir}: {mode} evaluation")
    if mode == "classifier":
        result, summary, preds = _eval_classifier(ctx, cfg, model_dir, raw_cfg, device)
    else:
        result, summary = _eval_mlm(ctx, cfg, model_dir, device)
        preds = None
    result = {"mode": mode, "model": str(model_dir), **result}

    files = []
    if ctx.is_main:
        atomic_write_json(ctx.output_dir / EVAL_JSON, result)
        files.append(ctx.describe(EVAL_JSON))
        if preds is not None:
            from mlmctl.shards import atomic_write_text

            atomic_write_text(ctx.output_dir / PREDICTIONS, "".join(json.dumps(p) + "\n" for p in preds))
            files.append(ctx.describe(PREDICTIONS))
    summ = {k: v for k, v in result.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    ctx.finish([], files, {"mode": mode, **summ})
    return summary


def is_classifier_config(raw: dict) -> bool:
    """config.json of a sequence classifier? HF writes a default id2label into every config, so
    only `architectures` (or mlmctl's own finetune marker) decides."""
    archs = raw.get("architectures") or []
    return any(a.endswith("ForSequenceClassification") for a in archs) or "mlmctl_finetune" in raw


# ----------------------------------------------------------------------------------------------
# Classifier


def _eval_classifier(ctx, cfg: EvalConfig, model_dir: Path, raw: dict, device):
    from mlmctl.labelled import TextEncoder, predict, read_labelled
    from mlmctl.metrics import classification_report, majority_baseline
    from mlmctl.model import BertForSequenceClassification
    from mlmctl.model_dir import load_model_dir

    if not cfg.test_file:
        raise MlmctlError("eval: classifier evaluation needs `test_file` (e.g. --set test_file=data/task/test.tsv)")
    id2label = raw.get("id2label") or {}
    try:
        labels = [id2label[str(i)] if str(i) in id2label else id2label[i] for i in range(len(id2label))]
    except KeyError:
        raise InputError(f"eval: {model_dir}/config.json has a malformed id2label (ids must be 0..K-1)") from None
    if len(labels) < 2:
        raise InputError(f"eval: {model_dir}/config.json has no id2label with at least 2 labels; is it a classifier?")
    ft = raw.get("mlmctl_finetune") or {}
    text_field = cfg.text_field or ft.get("text_field") or "text"
    pair_field = cfg.text_pair_field or ft.get("text_pair_field")
    label_field = cfg.label_field or ft.get("label_field") or "label"
    max_len = cfg.max_seq_len or ft.get("max_seq_len") or 128
    data = read_labelled(cfg.test_file, text_field=text_field, text_pair_field=pair_field, label_field=label_field,
                         fmt=cfg.format, has_header=cfg.has_header, max_field_chars=cfg.max_field_chars)
    encoder = TextEncoder(model_dir, max_len, STAGE)
    label2id = {x: i for i, x in enumerate(labels)}
    enc = encoder.encode(data, label2id)
    model, mcfg, info = load_model_dir(model_dir, BertForSequenceClassification, num_labels=len(labels))
    encoder.check_fits(mcfg, model_dir, STAGE, pairs=pair_field is not None)
    if max_len > mcfg.max_position_embeddings:
        raise MlmctlError(f"eval: `max_seq_len` {max_len} exceeds the model's max_position_embeddings "
                          f"{mcfg.max_position_embeddings}")
    if any(k.startswith("classifier.") for k in info["missing"]):
        raise InputError(f"eval: {model_dir} has no trained classifier head (classifier.* weights); "
                         "is it a fine-tuned model? use `mode: mlm` for a pretrained one")
    model.to(device)
    probs = predict(model, enc, cfg.batch_size, encoder.pad_id, device)
    pred = probs.argmax(-1).tolist()
    report = classification_report(enc.labels, pred, labels)
    # The majority class of the test file itself: the score of the best constant guess.
    report["majority_baseline_accuracy"] = majority_baseline(enc.labels, enc.labels, labels)["accuracy"]
    report["test_file"] = str(cfg.test_file)
    report["truncated"] = enc.truncated
    report["dropped"] = data.dropped
    _log_confusion(ctx, report)
    summary = {"examples": report["n"], "accuracy": f"{report['accuracy']:.4f}",
               "macro_f1": f"{report['macro_f1']:.4f}", "micro_f1": f"{report['micro_f1']:.4f}",
               "weighted_f1": f"{report['weighted_f1']:.4f}",
               "majority baseline": f"{report['majority_baseline_accuracy']:.4f}"}
    for name, pc in report["per_class"].items():
        summary[f"  {name}"] = (f"P {pc['precision']:.3f}  R {pc['recall']:.3f}  F1 {pc['f1']:.3f}  "
                                f"n={pc['support']}")
    preds = None
    if cfg.predictions:
        preds = [{"index": i, "label": labels[g], "prediction": labels[p],
                  "probs": {x: round(float(v), 6) for x, v in zip(labels, probs[i].tolist())}}
                 for i, (g, p) in enumerate(zip(enc.labels, pred))]
    return report, summary, preds


def _log_confusion(ctx, report: dict) -> None:
    labels = report["labels"]
    w = max(6, *(len(x) for x in labels)) + 1
    ctx.log("confusion matrix (rows = gold, columns = predicted):")
    ctx.log(" " * w + "".join(f"{x[:w - 1]:>{w}}" for x in labels))
    for name, row in zip(labels, report["confusion_matrix"]):
        ctx.log(f"{name[:w - 1]:<{w}}" + "".join(f"{v:>{w}}" for v in row))


# ----------------------------------------------------------------------------------------------
# Masked LM


def _eval_mlm(ctx, cfg: EvalConfig, model_dir: Path, device):
    import numpy as np
    import torch

    from mlmctl.labelled import TextEncoder
    from mlmctl.masking import STREAM_VAL_MASK, MaskSpec, mask_tokens, sequence_rng
    from mlmctl.model import BertForPreTraining
    from mlmctl.model_dir import load_model_dir

    model, mcfg, info = load_model_dir(model_dir, BertForPreTraining)
    if any(k.startswith("cls.predictions") for k in info["missing"]):
        raise InputError(f"eval: {model_dir} has no masked-LM head (cls.predictions.*); "
                         "for a fine-tuned classifier use `mode: classifier` with a test_file")
    model.to(device).eval()
    max_len = min(cfg.max_seq_len or 128, mcfg.max_position_embeddings)
    encoder = TextEncoder(model_dir, max_len, STAGE)
    docs, train_counts, source = _heldout_docs(cfg, model_dir, encoder)
    if encoder.mask_id is None:
        raise InputError(f"eval: {model_dir}/tokenizer.json has no [MASK] token")
    V = mcfg.vocab_size
    if docs and max(int(d.max()) for d in docs if d.size) >= V:
        raise InputError(f"eval: token ids of the held-out data exceed the model's vocab_size {V}; "
                         "the data was tokenised with another vocabulary")

    # Sequences: each document cut into pieces of max_len - 2 tokens, each [CLS] piece [SEP].
    room = max_len - 2
    seqs = []
    for d in docs:
        for s in range(0, len(d), room):
            piece = d[s:s + room]
            seqs.append(np.concatenate([[encoder.cls_id], piece, [encoder.sep_id]]).astype(np.int64))
    if cfg.max_sequences:
        seqs = seqs[:cfg.max_sequences]
    if not seqs:
        raise InputError(f"eval: the held-out data ({source}) has no tokens")

    spec = MaskSpec(vocab_size=V, mask_prob=cfg.mask_prob, mask_token_prob=cfg.mask_token_prob,
                    random_token_prob=min(0.1, 1 - cfg.mask_token_prob))
    special = {encoder.pad_id, encoder.cls_id, encoder.sep_id, encoder.mask_id}
    total_loss, n_masked, targets_all = 0.0, 0, []
    with torch.no_grad():
        for b in range(0, len(seqs), cfg.batch_size):
            batch = seqs[b:b + cfg.batch_size]
            ins, labs = [], []
            for j, seq in enumerate(batch):
                inp, lab = mask_tokens(seq, spec, sequence_rng(cfg.seed, 0, b + j, STREAM_VAL_MASK))
                ins.append(inp)
                labs.append(lab)
            T = max(len(x) for x in ins)
            ids = torch.full((len(ins), T), encoder.pad_id, dtype=torch.long)
            lab_t = torch.full((len(ins), T), -100, dtype=torch.long)
            att = torch.zeros((len(ins), T), dtype=torch.long)
            for j, (x, y) in enumerate(zip(ins, labs)):
                ids[j, :len(x)] = torch.from_numpy(x)
                lab_t[j, :len(y)] = torch.from_numpy(y)
                att[j, :len(x)] = 1
            if lab_t.ne(-100).sum() == 0:
                continue
            _, loss = model(ids.to(device), attention_mask=att.to(device), labels=lab_t.to(device),
                            loss_denominator=1)
            total_loss += float(loss)
            n_masked += int(lab_t.ne(-100).sum())
            targets_all.append(lab_t[lab_t.ne(-100)].numpy())
    if n_masked == 0:
        raise InputError(f"eval: no maskable tokens in the held-out data ({source})")
    mlm_loss = total_loss / n_masked
    targets = np.concatenate(targets_all)

    # Unigram baseline of the same masked tokens, add-one smoothed over the non-special vocabulary.
    counts = train_counts if train_counts is not None else np.bincount(np.concatenate(docs), minlength=V)[:V]
    counts = counts.astype(np.float64).copy()
    for s in special:
        if s is not None and s < V:
            counts[s] = 0
    n_types = V - len([s for s in special if s is not None and s < V])
    p = (counts[targets] + 1.0) / (counts.sum() + n_types)
    unigram_nll = float(-np.log(p).mean())

    result = {
        "mlm_loss": mlm_loss,
        "mlm_ppl": math.exp(mlm_loss),
        "unigram_ppl": math.exp(unigram_nll),
        "unigram_source": "train split counts" if train_counts is not None else "held-out text itself (optimistic)",
        "masked_tokens": n_masked,
        "sequences": len(seqs),
        "tokens": int(sum(len(s) for s in seqs)),
        "data": source,
        "seed": cfg.seed,
        "mask_prob": cfg.mask_prob,
        "max_seq_len": max_len,
    }
    summary = {"sequences": len(seqs), "masked tokens": n_masked, "mlm_loss": f"{mlm_loss:.4f}",
               "mlm_ppl": f"{result['mlm_ppl']:.2f}", "unigram_ppl": f"{result['unigram_ppl']:.2f}"}
    if cfg.pppl:
        pppl, n_tok = _pseudo_perplexity(model, docs[:cfg.pppl_max_docs], encoder, room, cfg.batch_size, device)
        result["pppl"] = pppl
        result["pppl_docs"] = min(len(docs), cfg.pppl_max_docs)
        result["pppl_tokens"] = n_tok
        summary["pppl"] = f"{pppl:.2f}"
    return result, summary


def _heldout_docs(cfg: EvalConfig, model_dir: Path, encoder):
    """Token-id arrays of the held-out documents, the train-split unigram counts (or None), and a
    description of the source."""
    import numpy as np

    from mlmctl.shards import file_sha256

    if cfg.data:
        from mlmctl.token_ids import open_vocab_dir

        vd = open_vocab_dir(cfg.data, full_verify=False, reader=STAGE)
        tok = model_dir / "tokenizer.json"
        if tok.is_file() and file_sha256(tok) != vd.tokenizer_sha256:
            raise InputError(f"eval: {cfg.data} was indexed with a different tokenizer than {model_dir}'s; "
                             "use the build-vocab directory the model was trained on, or `text_files`")
        split = vd.split(cfg.split)
        docs = []
        for d in range(split.n_docs):
            a, b = split.document_span(d)
            docs.append(split.tokens(a, b).astype(np.int64))
            if cfg.max_sequences and len(docs) >= cfg.max_sequences:
                break  # a document yields at least one sequence: enough documents for the cap
        counts = None
        try:
            tr = vd.split("train")
            counts = np.zeros(vd.vocab_size, dtype=np.int64)
            step = 1 << 22
            for s in range(0, tr.n_tokens, step):
                counts += np.bincount(tr.tokens(s, min(s + step, tr.n_tokens)), minlength=vd.vocab_size)[:vd.vocab_size]
        except InputError:
            counts = None  # no train split: fall back to the held-out counts
        return docs, counts, f"{cfg.data}:{cfg.split}"
    if cfg.text_files:
        texts = []
        for f in cfg.text_files:
            texts += _read_docs(Path(f))
        docs = [np.asarray(x, dtype=np.int64) for x in encoder.token_ids(texts)]
        return [d for d in docs if d.size], None, ", ".join(cfg.text_files)
    raise MlmctlError("eval: MLM evaluation needs held-out data: `data` (a build-vocab directory) or `text_files`")


def _read_docs(path: Path) -> list[str]:
    from mlmctl.labelled import read_text_docs

    return read_text_docs(path, STAGE)


def _pseudo_perplexity(model, docs, encoder, room: int, batch_size: int, device) -> tuple[float, int]:
    """Salazar et al. (2020): mask each token of a sequence in turn and score the original token;
    PPPL = exp(mean negative log-likelihood). One copy of the sequence per token, batched."""
    import torch
    import torch.nn.functional as F

    nll, n = 0.0, 0
    with torch.no_grad():
        for d in docs:
            piece = [int(x) for x in d[:room]]
            seq = torch.tensor([encoder.cls_id, *piece, encoder.sep_id], dtype=torch.long)
            positions = list(range(1, len(seq) - 1))
            for s in range(0, len(positions), batch_size):
                pos = torch.tensor(positions[s:s + batch_size])
                rows = torch.arange(len(pos))
                ids = seq.repeat(len(pos), 1)
                ids[rows, pos] = encoder.mask_id  # copy j has its j-th position masked
                logits, _ = model(ids.to(device))  # (B, T, V)
                logp = F.log_softmax(logits[rows.to(device), pos.to(device)].float(), dim=-1)  # (B, V)
                nll -= float(logp[rows.to(device), seq[pos].to(device)].sum())
                n += len(pos)
    return (math.exp(nll / n) if n else float("nan")), n


def _read_config(model_dir: Path) -> dict:
    from mlmctl.safe_json import read_json_file

    return read_json_file(model_dir / "config.json", STAGE)

