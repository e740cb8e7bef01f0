"""Write and read HF-compatible model directories.

A model directory holds `config.json` (HF `BertConfig` or `ModernBertConfig` keys + `architectures`),
`model.safetensors` (HF parameter names, tied decoder weight omitted as HF does) and the
tokenizer files copied from the build-vocab directory (`tokenizer.json`, `vocab.txt`, plus
a `tokenizer_config.json`/`special_tokens_map.json` so `AutoTokenizer.from_pretrained(dir)`
works). It loads as it stands with `transformers.AutoModelForMaskedLM.from_pretrained(dir)`.

`save_model_dir` writes the whole directory under a temporary name and renames it into
place, so a killed writer never leaves a directory that looks complete.
`load_model_dir` reads mlmctl directories and local HF BERT and ModernBERT directories alike;
the architecture is chosen by `config.json`'s `model_type` (`bert`, or `modernbert` for
`mlmctl.modernbert`), and the class asked for must be of that architecture.

A model directory is untrusted input (docs/security.md): config.json is parsed with
`mlmctl.safe_json` and every value checked (`ModelConfig`), the parameter count is estimated
and refused above the memory available before anything is allocated, every file named
inside the directory (a safetensors index's shards) must resolve inside it, and weights are
read from safetensors or with `torch.load(weights_only=True)`: no pickle is ever executed.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from mlmctl.errors import InputError
from mlmctl.layout import CONFIG_NAME, MANIFEST, MODEL_SUBDIRS, TOKENIZER_FILE, VOCAB_FILE, WEIGHTS_NAME
from mlmctl.layout import HF_SPECIAL_TOKENS as SPECIAL_TOKENS
from mlmctl.safe_json import read_json_file

# Tokenizer files copied verbatim when the tokenizer directory has them.
TOKENIZER_FILES = (TOKENIZER_FILE, VOCAB_FILE, "vocab.json", "merges.txt",
                   "tokenizer_config.json", "special_tokens_map.json")


def save_model_dir(model, path, *, tokenizer_dir=None, architectures, extra_config=None) -> Path:
    """Write `model` as an HF-compatible directory at `path`, atomically (an existing directory
    there is replaced only once the new one is complete)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    cfg = model.config
    hf_cfg = cfg.to_hf_config(architectures, **(extra_config or {}))
    _write_text(tmp / CONFIG_NAME, json.dumps(hf_cfg, indent=2, sort_keys=True) + "\n")
    to_hf_state_dict = _arch_module(arch_of(cfg)).to_hf_state_dict
    sd = {k: v.detach().to("cpu").contiguous() for k, v in to_hf_state_dict(model).items()}
    save_file(sd, str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
    _fsync_file(tmp / WEIGHTS_NAME)
    if tokenizer_dir is not None:
        _copy_tokenizer(Path(tokenizer_dir), tmp, cfg.max_position_embeddings)
    _fsync_dir(tmp)
    old = path.parent / f".{path.name}.old-{os.getpid()}"
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    _fsync_dir(path.parent)
    if old.exists():
        shutil.rmtree(old)
    return path


def load_model_dir(path, cls, **cls_kwargs):
    """Build `cls(ModelConfig, **cls_kwargs)` and load the weights found in `path`.

    Reads `model.safetensors` (or a sharded `model.safetensors.index.json`, or
    `pytorch_model.bin`) with HF names, with or without the `bert.` (`model.`) prefix.
    `cls` must be of the directory's architecture (`model_type`); `cls.config_class` names
    it (BERT classes have none). Parameters the
    file lacks (a new classifier head, the pooler of a BertForMaskedLM checkpoint) stay freshly
    initialised and are listed in `info["missing"]`; weights the model does not use are in
    `info["unexpected"]`. Returns (model, ModelConfig, info)."""
    path = Path(path)
    if not path.is_dir():
        raise InputError(f"model directory {path} does not exist; give a pretrain/finetune output or an HF BERT directory")
    raw, cfg = _read_config(path)
    arch = arch_of(cfg)
    _check_arch(path, arch, getattr(getattr(cls, "config_class", None), "model_type", "bert"))
    mod = _arch_module(arch)
    sd = _read_weights(path)
    model = cls(cfg, **cls_kwargs)
    try:
        missing, unexpected = mod.from_hf_state_dict(model, sd)
    except ValueError as e:
        raise InputError(f"{path}: weights do not fit {CONFIG_NAME} ({e})") from None
    # A file with none of the encoder's weights is the wrong kind of model, not a warm start.
    prefix = ENCODER_PREFIXES[arch]
    if not any(k.startswith(prefix) and k not in missing for k in mod.to_hf_state_dict(model)):
        raise InputError(f"{path}: the weights file holds no {arch} encoder weights; is this a {arch} model directory?")
    tok_files = [n for n in TOKENIZER_FILES if (path / n).is_file()]
    info = {
        "missing": missing,
        "unexpected": unexpected,
        "architectures": raw.get("architectures") or [],
        "config": raw,
        "tokenizer_files": tok_files,
        "tokenizer_dir": str(path) if TOKENIZER_FILE in tok_files else None,
    }
    return model, cfg, info


def read_model_config(path, reader: str = "mlmctl", arch: str | None = "bert"):
    """The checked config of a model directory (nothing is allocated): a `ModelConfig`, or a
    `ModernBertConfig` when `model_type` is `modernbert` (tell them apart with `arch_of`).
    `arch` is the architecture the caller can handle (None: either); another is an InputError."""
    cfg = _read_config(Path(path), reader)[1]
    if arch is not None:
        _check_arch(Path(path), arch_of(cfg), arch)
    return cfg


def load_own_arch(path, kind: str, reader: str = "mlmctl", **cls_kwargs):
    """`load_model_dir` with the class of the directory's own architecture (config.json
    `model_type`): `kind` is `masked_lm`, `classifier` or `tagger` (an `Arch` field)."""
    arch = architecture(arch_of(read_model_config(path, reader, arch=None)))
    return load_model_dir(path, getattr(arch, kind), **cls_kwargs)


# Names of the masked-LM head's weights (HF names): missing ones mean a classifier directory.
MLM_HEAD_PREFIXES = ("cls.predictions", "head.", "decoder.")


def _check_arch(path: Path, arch: str, want: str) -> None:
    if arch != want:
        raise InputError(f"{path} holds a {arch} model (config.json model_type) where a {want} model is needed; "
                         f"set `model.arch: {arch}` or give a {want} model directory")


# The config.json `model_type`s mlmctl reads, and the prefix of their encoder weights' names.
ENCODER_PREFIXES = {"bert": "bert.", "modernbert": "model."}


def arch_of(cfg) -> str:
    """`bert` or `modernbert`: the `model_type` of a config object."""
    return getattr(cfg, "model_type", "bert")


@dataclass(frozen=True)
class Arch:
    """What `model.arch` selects: the config class (with `from_preset`), its presets, the model
    classes, and the transformers class names written to `config.json`'s `architectures`."""

    name: str
    config: type
    presets: dict
    masked_lm: type
    classifier: type
    hf_masked_lm: str
    hf_classifier: str
    tagger: type  # a label per token (finetune `task: token-classification`)
    hf_tagger: str


def architecture(name: str) -> Arch:
    """The `Arch` of `bert` or `modernbert` (imports torch)."""
    if name not in ENCODER_PREFIXES:
        raise ValueError(f"unknown architecture {name!r}; use one of {', '.join(sorted(ENCODER_PREFIXES))}")
    mod = _arch_module(name)
    if name == "modernbert":
        return Arch(name, mod.ModernBertConfig, mod.PRESETS, mod.ModernBertForMaskedLM,
                    mod.ModernBertForSequenceClassification, "ModernBertForMaskedLM", "ModernBertForSequenceClassification",
                    mod.ModernBertForTokenClassification, "ModernBertForTokenClassification")
    return Arch(name, mod.ModelConfig, mod.PRESETS, mod.BertForPreTraining, mod.BertForSequenceClassification,
                "BertForMaskedLM", "BertForSequenceClassification", mod.BertForTokenClassification,
                "BertForTokenClassification")


def _arch_module(model_type: str):
    """The module implementing `model_type`: its config class and HF key map."""
    if model_type == "modernbert":
        from mlmctl import modernbert as mod
    else:
        from mlmctl import model as mod
    return mod


def _read_config(path: Path, reader: str = "mlmctl"):
    cfg_file = path / CONFIG_NAME
    if not cfg_file.is_file():
        raise InputError(f"{path} has no {CONFIG_NAME}; it is not a model directory (a pretrain run's model is in RUN/final)")
    raw = read_json_file(cfg_file, reader, fix="it is not a model config; give a model directory mlmctl or HF wrote")
    model_type = raw.get("model_type", "bert") if isinstance(raw, dict) else "bert"
    if not isinstance(model_type, str) or model_type not in ENCODER_PREFIXES:
        raise InputError(f"{reader}: {cfg_file}: model_type {model_type!r} is not supported; mlmctl reads "
                         f"{' and '.join(sorted(ENCODER_PREFIXES))} models")
    mod = _arch_module(model_type)
    config_cls = mod.ModernBertConfig if model_type == "modernbert" else mod.ModelConfig
    try:
        return raw, config_cls.from_hf_config(raw)
    except (ValueError, TypeError) as e:
        raise InputError(f"{reader}: {cfg_file}: {e}") from None


def inside(root: Path, name: str, what: str) -> Path:
    """`root / name`, refused unless it resolves (symbolic links followed) inside `root`: a
    file named by a file in a directory never reads anything outside that directory."""
    if not isinstance(name, str) or not name or "\0" in name:
        raise InputError(f"{what} names {name!r}, which is not a file name")
    real_root = root.resolve()
    target = (root / name).resolve()
    if os.path.isabs(name) or not target.is_relative_to(real_root) or target == real_root:
        raise InputError(f"{what} names {name!r}, outside {root}; refused (files must lie inside the directory)")
    return target


def _read_weights(path: Path) -> dict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        if (path / WEIGHTS_NAME).is_file():
            return load_file(str(inside(path, WEIGHTS_NAME, str(path))))
        index = path / "model.safetensors.index.json"
        if index.is_file():
            sd = {}
            for shard in _index_shards(index):
                sd.update(load_file(str(inside(path, shard, str(index)))))
            return sd
        if (path / "pytorch_model.bin").is_file():
            return _torch_load(inside(path, "pytorch_model.bin", str(path)))
    except (SafetensorError, OSError, RuntimeError, KeyError, ValueError, EOFError) as e:
        raise InputError(f"{path}: cannot read the weights ({type(e).__name__}: {_first_line(e)}); "
                         "the file is damaged or incomplete") from None
    raise InputError(f"{path} has no {WEIGHTS_NAME} (nor pytorch_model.bin); it is not a complete model directory")


def _index_shards(index: Path) -> list[str]:
    doc = read_json_file(index, "mlmctl")
    weight_map = doc.get("weight_map")
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise InputError(f"{index}: `weight_map` must map parameter names to shard file names")
    return sorted(set(weight_map.values()))


def _torch_load(file: Path) -> dict:
    """A `pytorch_model.bin` of plain tensors. `weights_only=True` makes torch refuse any pickled
    object that is not a tensor or a container of them; that refusal is reported as ours
    (torch's own message suggests `weights_only=False`, which mlmctl never does)."""
    import pickle

    import torch

    try:
        sd = torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # torch cannot tell a damaged file from one with pickled code: both end up here.
        raise InputError(
            f"{file} is not a plain tensor file (it holds pickled Python objects, or is damaged); mlmctl never "
            "loads pickles: convert the model to safetensors (model.safetensors) with a tool you trust"
        ) from None
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise InputError(f"{file} is not a state dict of tensors; convert the model to safetensors")
    return sd


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def _copy_tokenizer(src: Path, dst: Path, model_max_length: int) -> None:
    if not (src / TOKENIZER_FILE).is_file():
        raise InputError(f"{src} has no tokenizer.json; point the model at a build-vocab output directory")
    for name in TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copyfile(src / name, dst / name)
            _fsync_file(dst / name)
    # Without these, AutoTokenizer would not know the special tokens nor the length limit.
    if not (dst / "tokenizer_config.json").is_file():
        tok_cfg = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": model_max_length,
                   "clean_up_tokenization_spaces": False, **SPECIAL_TOKENS}
        _write_text(dst / "tokenizer_config.json", json.dumps(tok_cfg, indent=2) + "\n")
    if not (dst / "special_tokens_map.json").is_file():
        _write_text(dst / "special_tokens_map.json", json.dumps(SPECIAL_TOKENS, indent=2) + "\n")


def _write_text(p: Path, text: str) -> None:
    with open(p, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _fsync_file(p: Path) -> None:
    fd = os.open(p, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(p: Path) -> None:
    try:
        _fsync_file(p)
    except OSError:  # some filesystems do not allow fsync on directories
        pass


def resolve_model_dir(path: str | Path, reader: str) -> Path:
    """A model directory from what users pass: the model directory itself, a pretrain run
    directory (its `final/`) or a finetune run directory (its `best/`)."""
    path = Path(path)
    if (path / CONFIG_NAME).is_file():
        return path
    for sub in MODEL_SUBDIRS:
        if (path / sub / CONFIG_NAME).is_file():
            if not (path / MANIFEST).is_file():
                raise InputError(
                    f"{reader}: {path} has no manifest.json (the run did not finish); "
                    f"pass a model directory such as {path / sub} or a checkpoint directly"
                )
            return path / sub
    if not path.exists():
        raise InputError(f"{reader}: model directory {path} does not exist")
    raise InputError(
        f"{reader}: {path} is not a model directory (no config.json) nor a finished pretrain/finetune run "
        "(no final/ or best/); pass --input RUN or RUN/final"
    )
