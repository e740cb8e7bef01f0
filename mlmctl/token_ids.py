"""Read the indexed corpus that `build-vocab` writes: memory-mapped token ids and their structure.

    vd = open_vocab_dir("data/vocab")          # checks manifest.json (stage build-vocab)
    vd.vocab_size, vd.special_ids["[MASK]"], vd.tokenizer_file, vd.dtype
    tr = vd.split("train")
    tr.n_docs, tr.n_sentences, tr.n_tokens
    tr.sent_offsets        # int64 memmap, n_sentences + 1: sentence k = tokens [s[k], s[k+1])
    tr.doc_sent_offsets    # int64 memmap, n_docs + 1: document d = sentences [o[d], o[d+1])
    tr.tokens(a, b)        # ids a..b-1 of the split's concatenated token stream (crosses shards)
    tr.word_starts(a, b)   # bool, True where a word (pre-token) starts: whole-word masking
    tr.sentence(k)         # == tr.tokens(s[k], s[k+1])
    tr.document(d)         # list of its sentences' id arrays

Token positions are global within a split: the shards `shard-00000.ids.bin`, `shard-00001...`
are concatenated in order, so `sent_offsets` and `tokens()` never mention shards. Every array
is a numpy memmap or a slice copied out of one: opening a split reads only the manifest, and
memory does not grow with the corpus. `tokens()` returns the stored dtype (uint16/uint32);
convert with `.astype(np.int64)` before using ids as a torch index. A packer typically walks
`sent_offsets` in order and calls `tokens(start, stop)` once per packed sequence; an NSP
pair builder picks documents through `doc_sent_offsets`.

A document never has zero sentences and a sentence never has zero tokens.

Opening checks, cheaply, what a damaged directory whose manifest was rewritten to match could
get wrong (no shard is scanned): `tokenizer.json` loads and has the recorded vocabulary size;
every ids shard holds exactly its recorded tokens; the max id recorded per shard at build time is
below the vocabulary size; the offset arrays have the right length and end where the shards end.
A token range read outside the split is an `InputError`, never an `IndexError`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from mlmctl.errors import InputError

if TYPE_CHECKING:
    import numpy as np

    from mlmctl.manifest import Manifest

__all__ = ["open_vocab_dir", "VocabDir", "TokenSplit"]


def open_vocab_dir(path: str | Path, *, full_verify: bool = True, reader: str = "mlmctl") -> VocabDir:
    """Open a finished build-vocab directory; refuses an unfinished or altered one with one line.

    `full_verify=False` checks file sizes only (sha256 of a large corpus takes seconds).
    """
    from mlmctl.manifest import read_manifest, verify_files

    path = Path(path)
    manifest = read_manifest(path, "build-vocab", reader=reader, verify=False)
    verify_files(path, manifest, reader=reader, full=full_verify)
    extra = manifest.extra
    rerun = "rerun `mlmctl build-vocab --force`"
    try:
        vd = VocabDir(
            path=path,
            manifest=manifest,
            vocab_size=int(extra["vocab_size"]),
            tokenizer_sha256=str(extra["tokenizer_sha256"]),
            dtype_name=str(extra["dtype"]),
            special_ids={str(k): int(v) for k, v in extra["special_ids"].items()},
        )
    except (KeyError, TypeError, ValueError, AttributeError):
        raise InputError(f"{reader}: {path}/manifest.json lacks the build-vocab fields; {rerun}") from None
    if vd.dtype_name not in ("uint16", "uint32") or not 0 < vd.vocab_size <= 2**32:
        raise InputError(f"{reader}: {path}/manifest.json has dtype {vd.dtype_name!r} and vocab_size {vd.vocab_size}; {rerun}")
    if any(not 0 <= i < vd.vocab_size for i in vd.special_ids.values()):
        raise InputError(f"{reader}: {path}/manifest.json has special token ids outside the vocabulary; {rerun}")
    _check_tokenizer(vd, reader, rerun)
    _check_shards(vd, reader, rerun)
    return vd


def _check_tokenizer(vd: VocabDir, reader: str, rerun: str) -> None:
    """tokenizer.json must load and agree with the manifest (a broken one must not reach a model dir)."""
    try:
        size = vd.tokenizer().get_vocab_size(with_added_tokens=True)
    except Exception as e:  # tokenizers raises a bare Exception for any bad file
        raise InputError(f"{reader}: {vd.tokenizer_file} is not a loadable tokenizer ({_first_line(e)}); {rerun}") from None
    if size != vd.vocab_size:
        raise InputError(f"{reader}: {vd.tokenizer_file} has {size} tokens but manifest.json says {vd.vocab_size}; {rerun}")


def _check_shards(vd: VocabDir, reader: str, rerun: str) -> None:
    """Recorded token counts against shard sizes, recorded max ids against the vocabulary."""
    item = vd.dtype.itemsize
    for s in vd.manifest.shards:
        if not s.name.endswith(".ids.bin"):
            continue
        try:
            tokens = int(s.records.get("tokens", 0))
            max_id = int(s.records.get("max_id", -1))
        except (TypeError, ValueError):
            raise InputError(f"{reader}: {vd.path}/manifest.json has malformed counts for {s.name}; {rerun}") from None
        if tokens < 0 or tokens * item != s.bytes:
            raise InputError(f"{reader}: {vd.path / s.name} holds {s.bytes} bytes, not the {tokens} tokens recorded; {rerun}")
        if max_id >= vd.vocab_size:
            raise InputError(f"{reader}: {vd.path / s.name} holds token id {max_id}, beyond the vocabulary "
                             f"of {vd.vocab_size}; {rerun}")


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


class RangeError(InputError, IndexError):
    """A token range outside the split: damaged offsets (an `IndexError` too, for callers that
    index like a sequence), reported by the CLI as one line."""


@dataclass
class VocabDir:
    path: Path
    manifest: Manifest
    vocab_size: int
    tokenizer_sha256: str
    dtype_name: str
    special_ids: dict[str, int]
    _splits: dict = field(default_factory=dict, repr=False)

    @property
    def tokenizer_file(self) -> Path:
        return self.path / "tokenizer.json"

    @property
    def dtype(self) -> np.dtype:
        import numpy as np

        return np.dtype("<u2" if self.dtype_name == "uint16" else "<u4")

    @property
    def pad_id(self) -> int:
        return self.special_ids["[PAD]"]

    @property
    def unk_id(self) -> int:
        return self.special_ids["[UNK]"]

    @property
    def cls_id(self) -> int:
        return self.special_ids["[CLS]"]

    @property
    def sep_id(self) -> int:
        return self.special_ids["[SEP]"]

    @property
    def mask_id(self) -> int:
        return self.special_ids["[MASK]"]

    def tokenizer(self):
        """The `tokenizers.Tokenizer` of this vocabulary."""
        from tokenizers import Tokenizer

        return Tokenizer.from_file(str(self.tokenizer_file))

    def split(self, name: str) -> TokenSplit:
        if name not in self._splits:
            shards = [s for s in self.manifest.shards_of(name) if s.name.endswith(".ids.bin")]
            if not shards and not (self.path / name / "sent_offsets.bin").exists():
                have = sorted({s.split for s in self.manifest.shards if s.split})
                raise InputError(f"{self.path} has no split '{name}' (it has: {', '.join(have) or 'none'})")
            self._splits[name] = TokenSplit(self.path, name, shards, self.dtype)
        return self._splits[name]


class TokenSplit:
    """Memory-mapped ids, word starts and sentence/document offsets of one split."""

    def __init__(self, root: Path, name: str, shards: list, dtype: np.dtype):
        import numpy as np

        self.name = name
        self.dtype = dtype
        self._ids_paths = [root / s.name for s in shards]
        self._ws_paths = [root / s.name.replace(".ids.bin", ".wstart.bin") for s in shards]
        counts = [int(s.records.get("tokens", 0)) for s in shards]
        # (n_shards + 1) small array: where each shard starts in the split's token stream.
        self.shard_offsets = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)]).astype(np.int64)
        self.sent_offsets = _memmap(root / name / "sent_offsets.bin", np.dtype("<i8"))
        self.doc_sent_offsets = _memmap(root / name / "doc_offsets.bin", np.dtype("<i8"))
        self._ids: dict[int, np.ndarray] = {}
        self._ws: dict[int, np.ndarray] = {}
        so, do = self.sent_offsets, self.doc_sent_offsets
        # Ends only (no scan): a bad offset in the middle is caught when it is read (`_read`).
        if (len(so) < 1 or len(do) < 1 or int(so[0]) != 0 or int(so[-1]) != int(self.shard_offsets[-1])
                or int(do[0]) != 0 or int(do[-1]) != len(so) - 1):
            raise InputError(f"{root / name}: sentence offsets and shards disagree; rerun `mlmctl build-vocab --force`")

    @property
    def n_tokens(self) -> int:
        return int(self.shard_offsets[-1])

    @property
    def n_sentences(self) -> int:
        return len(self.sent_offsets) - 1

    @property
    def n_docs(self) -> int:
        return len(self.doc_sent_offsets) - 1

    def tokens(self, start: int, stop: int) -> np.ndarray:
        """Ids at positions [start, stop) of the split, in the stored dtype (a copy)."""
        return self._read(self._ids, self._ids_paths, self.dtype, start, stop)

    def word_starts(self, start: int, stop: int) -> np.ndarray:
        """bool per position in [start, stop): True where a word starts (for whole-word masking)."""
        import numpy as np

        return self._read(self._ws, self._ws_paths, np.dtype(np.uint8), start, stop).astype(bool)

    def sentence(self, k: int) -> np.ndarray:
        return self.tokens(int(self.sent_offsets[k]), int(self.sent_offsets[k + 1]))

    def document(self, d: int) -> list[np.ndarray]:
        first, last = int(self.doc_sent_offsets[d]), int(self.doc_sent_offsets[d + 1])
        return [self.sentence(k) for k in range(first, last)]

    def document_span(self, d: int) -> tuple[int, int]:
        """Token positions [start, stop) covered by document d."""
        first, last = int(self.doc_sent_offsets[d]), int(self.doc_sent_offsets[d + 1])
        return int(self.sent_offsets[first]), int(self.sent_offsets[last])

    def _read(self, cache: dict, paths: list, dtype, start: int, stop: int) -> np.ndarray:
        import numpy as np

        if not 0 <= start <= stop <= self.n_tokens:
            raise RangeError(f"token range [{start}, {stop}) outside [0, {self.n_tokens}) of split '{self.name}': "
                             "its offsets are damaged; rerun `mlmctl build-vocab --force`")
        if start == stop:
            return np.zeros(0, dtype=dtype)
        first = int(np.searchsorted(self.shard_offsets, start, side="right")) - 1
        parts = []
        k = first
        while start < stop:
            lo, hi = int(self.shard_offsets[k]), int(self.shard_offsets[k + 1])
            if hi > start:
                if k not in cache:
                    cache[k] = _memmap(paths[k], dtype)
                parts.append(np.array(cache[k][start - lo:min(stop, hi) - lo]))
                start = min(stop, hi)
            k += 1
        return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _memmap(path: Path, dtype) -> np.ndarray:
    import numpy as np

    try:
        size = path.stat().st_size
        if size % dtype.itemsize:
            raise ValueError(f"{size} bytes is not a whole number of {dtype.itemsize}-byte items")
        if size == 0:  # numpy cannot map an empty file
            return np.zeros(0, dtype=dtype)
        return np.memmap(path, dtype=dtype, mode="r")
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: cannot map it ({e}); rerun `mlmctl build-vocab --force`") from None
