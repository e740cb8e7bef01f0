"""finetune `task: token-classification`: a tag per word (NER, chunking, POS).

The run is `stages.finetune.Finetuner` (set-up, loop, dev selection, checkpoints, exact resume
after Ctrl-C) with the parts that depend on the task replaced: the data (tagged CoNLL / JSONL
files, `mlmctl.token_data`), the model (`BertForTokenClassification` or
`ModernBertForTokenClassification`), the loss (every first sub-word; -100 elsewhere) and the
dev report (entity-level F1 or token accuracy, `mlmctl.seq_metrics`).

    mlmctl finetune -c configs/demo/finetune-tagging.yaml --input runs/demo/pretrain \\
        --output runs/demo/tagger --set train_file=data/demo/tagging/train.conll

Tag ids: `labels` if configured, else `O` first then by type (`tagging.tag_list`); a dev/test tag
the train file lacks is an error naming file and line (add it to `labels`). A sentence longer than
`max_seq_len` is cut into windows at word boundaries; every window is a training example and the
windows' predictions are merged back, so no word loses its tag.
"""

from __future__ import annotations

import dataclasses

from mlmctl.errors import InputError, MlmctlError
from mlmctl.stages.finetune import STAGE, Finetuner
from mlmctl.token_data import TAG_METRICS, TagSpec


def tag_spec(cfg) -> TagSpec:
    return TagSpec(scheme=cfg.tag_scheme, ill_formed=cfg.ill_formed, fmt=cfg.tag_format, tag_column=cfg.tag_column,
                   tokens_field=cfg.tokens_field, tags_field=cfg.tags_field)


class TokenFinetuner(Finetuner):
    """Finetuner for a tag per word; see the module docstring."""

    def open_data(self) -> None:
        from mlmctl.model_dir import resolve_model_dir
        from mlmctl.shards import file_sha256
        from mlmctl.tagging import tag_list
        from mlmctl.text_encoder import TextEncoder

        cfg, ctx = self.cfg, self.ctx
        if cfg.class_weights != "none":
            raise MlmctlError("finetune: `class_weights` is for classification; remove it for token-classification")
        if cfg.text_pair_field is not None:
            raise MlmctlError("finetune: `text_pair_field` is for classification; token-classification reads words")
        self.spec = tag_spec(cfg)
        if cfg.selection_metric == "entity_f1" and self.spec.strict_scheme is None:
            raise MlmctlError("finetune: `tag_scheme: none` has no entities to score; set `metric: token_accuracy`")
        self.model_dir = resolve_model_dir(ctx.input_dir or cfg.input, STAGE)
        train = self.spec.read(cfg.train_file, STAGE)
        try:
            self.labels = tag_list(train.tags, cfg.labels or None)
        except InputError as e:
            raise InputError(f"finetune: {cfg.train_file}: {e}") from None
        if len(self.labels) < 2:
            raise InputError(f"finetune: {cfg.train_file} has a single tag ({self.labels[0]!r}); need at least 2")
        self.label2id = {name: i for i, name in enumerate(self.labels)}
        self.num_outputs = len(self.labels)
        self.train_sha256 = file_sha256(cfg.train_file)
        self.encoder = TextEncoder(self.model_dir, cfg.max_seq_len, STAGE)
        self.data = {"train": train}
        for split, path in (("dev", cfg.dev_file), ("test", cfg.test_file)):
            if path:
                self.data[split] = self.spec.read(path, STAGE)
                self.spec.check_known(self.data[split], self.label2id, STAGE,
                                 "the train file never has it: add it to `labels`, or fix the file")
        enc = {s: self._encode(d) for s, d in self.data.items()}
        self.train_enc, self.dev_enc, self.test_enc = enc["train"], enc.get("dev"), enc.get("test")
        self.dropped = {}
        for split, d in self.data.items():
            if d.ill_formed:
                ctx.log(f"{split}: repaired {d.ill_formed['count']} ill-formed tag sequence(s), first at "
                        f"{d.ill_formed['first']}")
                self.dropped[f"ill-formed tag sequences repaired ({split})"] = d.ill_formed["count"]
            if enc[split].split_sentences:
                ctx.log(f"{split}: {enc[split].split_sentences} sentence(s) longer than max_seq_len "
                        f"{cfg.max_seq_len} split into windows (no tag lost)")

    def _encode(self, data):
        from mlmctl.token_data import encode_tagged

        return encode_tagged(self.encoder, data.tokens, [[self.label2id[t] for t in s] for s in data.tags],
                             self.cfg.max_seq_len)

    def _class_weights(self):
        return None

    def build_model(self) -> None:
        super().build_model()
        cfg = self.cfg
        # What transformers' token-classification pipeline and `mlmctl eval` read back.
        self.extra_config = {
            "id2label": {str(i): x for i, x in enumerate(self.labels)}, "label2id": self.label2id,
            "mlmctl_finetune": {"task": cfg.task, "max_seq_len": cfg.max_seq_len, "tag_scheme": cfg.tag_scheme,
                                "ill_formed": cfg.ill_formed, "tag_format": cfg.tag_format,
                                "tag_column": cfg.tag_column, "tokens_field": cfg.tokens_field,
                                "tags_field": cfg.tags_field, "init": cfg.init}}
        self.run_meta["data"]["task"] = cfg.task
        self.ctx.log(f"{len(self.data['train'])} train sentences in {len(self.train_enc.ids)} windows; "
                     f"tags: {', '.join(self.labels)}")

    def with_head(self, arch):
        """The tagger classes in the classifier slots, so the inherited load, checkpoint and save
        code builds, writes and reloads the tagger."""
        if self.cfg.classifier_pooling is not None:
            raise MlmctlError("finetune: `classifier_pooling` is for sequence classification; a tagger "
                              "classifies every token: remove the key")
        return dataclasses.replace(arch, classifier=arch.tagger, hf_classifier=arch.hf_tagger)

    def train_step(self, rows: list[int]) -> tuple[float, float]:
        from mlmctl.text_encoder import pad_batch
        from mlmctl.token_data import pad_labels
        from mlmctl.training import NonFiniteLoss, train_step

        enc, device = self.train_enc, self.proc.device
        ids, mask, types = (x.to(device) for x in pad_batch(enc, rows, self.encoder.pad_id))
        y = pad_labels(enc, rows, device)

        def loss_fn(model, _):
            return model(ids, attention_mask=mask, token_type_ids=types, labels=y)[1]

        step = self.t["step"]
        try:
            return train_step(self.model, self.optimizer, [None], loss_fn, lr=self.optim.lr_at(step),
                              grad_clip=self.optim.grad_clip, proc=self.proc)
        except NonFiniteLoss as e:
            raise MlmctlError(f"finetune: the loss became {e.loss} at step {step}; lower `lr`") from None

    def evaluate(self, enc) -> dict:
        """The tagging report of the current weights on dev or test (`enc` is one of the two):
        the base class's dev selection and final test scoring call it."""
        from mlmctl.token_data import predict_tags, tagging_report

        split = "dev" if enc is self.dev_enc else "test"
        pred = predict_tags(self.raw_model, enc, self.cfg.eval_batch_size, self.encoder.pad_id, self.proc.device)
        return tagging_report(self.data[split].tags, [[self.labels[i] for i in s] for s in pred],
                              self.spec.strict_scheme)

    def _summary(self, best_step: int, best_report: dict | None, test_report: dict | None) -> tuple[dict, dict]:
        import time

        cfg = self.cfg
        train = self.data["train"]
        summary = {"tags": ", ".join(self.labels), "train sentences": len(train),
                   "train windows": len(self.train_enc.ids), "steps": self.t["step"], "best step": best_step}
        extra = {"task": cfg.task, "labels": self.labels, "tag_scheme": cfg.tag_scheme, "best_step": best_step,
                 "steps": self.t["step"], "epochs_started": self.t["epoch"], "train_examples": len(train),
                 "train_windows": len(self.train_enc.ids), "init": cfg.init, "model_dir": str(self.model_dir),
                 "seconds": round(time.monotonic() - self.started, 2), "dropped": self.dropped}
        for split, report in (("dev", best_report), ("test", test_report)):
            if report is None:
                continue
            extra[split] = _scalars(report)
            for key in TAG_METRICS:
                if key in report:
                    summary[f"{split} {key}"] = f"{report[key]:.4f}"
        return summary, extra


def _scalars(report: dict) -> dict:
    """The report's numbers (no per-type table): what metrics.jsonl and the manifest keep."""
    return {k: v for k, v in report.items() if isinstance(v, (int, float))}
