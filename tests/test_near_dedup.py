"""near_dedup: MinHash LSH finds edited copies, keeps distinct documents, same output for workers/tasks."""

from __future__ import annotations

import gzip
import json
import random
import re
from pathlib import Path

import numpy as np

from mlmctl.near_dedup import MinHasher, NearDedupConfig, near_duplicates


def _vocab(rng: random.Random, n: int = 3000) -> list[str]:
    return ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 9))) for _ in range(n)]


def _doc(rng, vocab, tag: str, lines: int = 20, words: int = 20) -> list[list[str]]:
    doc = [[rng.choice(vocab) for _ in range(words)] for _ in range(lines)]
    doc[0][0] = tag
    return doc


def _near_copy(rng, vocab, doc, tag: str) -> list[list[str]]:
    """A few words changed (the tag among them) and one line dropped."""
    copy = [list(line) for line in doc]
    del copy[rng.randrange(1, len(copy))]
    for _ in range(3):
        line = rng.choice(copy)
        line[rng.randrange(len(line))] = rng.choice(vocab)
    copy[0][0] = tag
    return copy


def _text(doc) -> str:
    return "\n".join(" ".join(line) for line in doc)


def _corpus(root: Path, originals: int = 600, copies: int = 100) -> None:
    """Files o0..o3 hold distinct documents (tag docN); files p0, p1, read after them, hold edited
    copies of random earlier ones (tag copyN), so each cluster's first document is the original."""
    rng = random.Random(11)
    vocab = _vocab(rng)
    docs = [_doc(rng, vocab, f"doc{i}") for i in range(originals)]
    root.mkdir()
    per = originals // 4
    for f in range(4):
        (root / f"o{f}.txt").write_text("\n\n".join(_text(d) for d in docs[f * per:(f + 1) * per]) + "\n")
    picks = rng.sample(range(originals), copies)
    for f in range(2):
        part = picks[f::2]
        (root / f"p{f}.txt").write_text("\n\n".join(_text(_near_copy(rng, vocab, docs[i], f"copy{i}")) for i in part) + "\n")


def _tags(out: Path) -> list[str]:
    tags = []
    for shard in sorted(out.glob("*/shard-*.jsonl.gz")):
        with gzip.open(shard, "rt", encoding="utf-8") as f:
            tags += [re.match(r"\w+", json.loads(line)["text"]).group() for line in f]
    return tags


def _shards(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.glob("*/shard-*"))}


STEPS = "steps=[decode, remove_bom, normalize, remove_chars, urls, whitespace, length_filter, quality_filter, near_dedup]"


def test_injected_near_duplicates_removed_and_output_independent_of_workers_and_tasks(run_cli, tmp_path):
    _corpus(tmp_path / "in")
    base = ["clean", "--input", str(tmp_path / "in"), "--set", STEPS, "--set", "validation_fraction=0.05"]
    code, _, err = run_cli(*base, "--output", str(tmp_path / "w1"))
    assert code == 0, err
    tags = _tags(tmp_path / "w1")
    copies_left = sum(t.startswith("copy") for t in tags)
    originals_left = sum(t.startswith("doc") for t in tags)
    assert copies_left <= 10, copies_left  # >= 90% of the 100 injected copies removed
    assert originals_left >= 600 - 5, originals_left  # < 1% of distinct documents removed
    stats = json.loads((tmp_path / "w1" / "stats.json").read_text())
    assert stats["dropped"]["near_dedup"]["near_duplicate"]["documents"] == 100 - copies_left
    assert list(stats["dropped"])[-1] == "near_dedup"

    code, _, err = run_cli(*base, "--output", str(tmp_path / "w2"), "--workers", "2")
    assert code == 0, err
    for task in ("0/2", "1/2"):
        code, _, err = run_cli(*base, "--output", str(tmp_path / "t"), "--task", task)
        assert code == 0, err
    code, _, err = run_cli(*base, "--output", str(tmp_path / "t"))
    assert code == 0, err
    ref = _shards(tmp_path / "w1")
    assert _shards(tmp_path / "w2") == ref and _shards(tmp_path / "t") == ref
    assert (tmp_path / "t" / "stats.json").read_bytes() == (tmp_path / "w1" / "stats.json").read_bytes()


def _bands(texts, **cfg):
    mh = MinHasher(NearDedupConfig(**cfg))
    for t in texts:
        mh.add(t)
    return mh.band_hashes()


def test_signatures_are_deterministic_and_chinese_uses_characters():
    rng = random.Random(3)
    zh = "".join(rng.choice("的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说产种面而方后多定行学法所民得经十三之进着等部度家电力里如水化高自二理起小物现实加量都两体制机当使点从业本去把性好应开它合还因由其些然前外天政四日那社义事平形相全表间样与关各重新线内数正心反你明看原又么利比或但质气第向道命此变条只没结解问意建月公无系军很情者最立代想已通并提直题党程展五果料象员革位入常文总次品式活设及管特件长求老头基资边流路级少图山统接知较将组见计别她手角期根论运农指几九区强放决西被干做必战先回则任取据处理府研质信话究查各")
             for _ in range(300))
    copy = zh[:100] + "天" + zh[101:250] + zh[262:]
    other = "".join(reversed(zh))
    b = _bands([zh, copy, other])
    assert np.array_equal(b, _bands([zh, copy, other]))
    assert (b[0] == b[1]).any() and not (b[0] == b[2]).any()
    assert not (_bands(["a b c d e f"], seed=1) == _bands(["a b c d e f"], seed=2)).any()


def test_clusters_keep_their_first_document(tmp_path):
    # Bands: documents 0, 2, 3 linked through a chain (0~2 in band 0, 2~3 in band 1); 1 and 4 alone.
    sig = np.array([[1, 10], [2, 11], [1, 12], [3, 12], [4, 13]], dtype=np.uint64)
    sig[:2].tofile(tmp_path / "u0")
    sig[2:].tofile(tmp_path / "u1")
    drop = near_duplicates([tmp_path / "u0", tmp_path / "u1"], [2, 3], 2)
    assert drop.tolist() == [False, False, True, True, False]


def test_near_dedup_must_be_the_last_step(run_cli, tmp_path):
    (tmp_path / "a.txt").write_text("some words here for the test of order\n")
    code, _, err = run_cli("clean", "--input", str(tmp_path / "a.txt"), "--output", str(tmp_path / "o"),
                           "--set", "steps=[decode, near_dedup, whitespace]")
    assert code != 0 and "`near_dedup` must be the last step" in err
    assert err.count("\n") <= 2


def _union_find_labels(total: int, u, v) -> list[int]:
    """Reference: textbook union-find, each document labelled by the smallest index of its cluster."""
    parent = list(range(total))

    def root(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in zip(u, v):
        ra, rb = root(int(a)), root(int(b))
        parent[max(ra, rb)] = min(ra, rb)
    return [root(x) for x in range(total)]


def test_components_match_union_find_and_a_long_chain_is_fast():
    from mlmctl.near_dedup import _components

    rng = np.random.default_rng(0)
    for total, links in ((1, 0), (10, 3), (200, 150), (500, 2000)):
        u, v = rng.integers(0, total, links), rng.integers(0, total, links)
        assert _components(total, u, v).tolist() == _union_find_labels(total, u, v)
    # A chain of edited copies in random canonical order: min-label propagation needed one round
    # per link (200,000 links: 270 s); hooking needs O(log n) rounds.
    n = 200_000
    perm = rng.permutation(n)
    assert (_components(n, perm[1:], perm[:-1]) == 0).all()


def test_chain_a_b_c_keeps_only_the_first(tmp_path):
    # A~B share band 0, B~C share band 1, A and C share nothing: one cluster, A (first) kept.
    sig = np.array([[7, 1], [7, 2], [3, 2]], dtype=np.uint64)
    sig.tofile(tmp_path / "u")
    assert near_duplicates([tmp_path / "u"], [3], 2).tolist() == [False, True, True]
    # Order decides, not similarity: C first in canonical order keeps C.
    sig[::-1].copy().tofile(tmp_path / "u")
    assert near_duplicates([tmp_path / "u"], [3], 2).tolist() == [False, True, True]


def test_empty_corpus_and_empty_units(tmp_path):
    (tmp_path / "e").write_bytes(b"")
    assert near_duplicates([tmp_path / "e", tmp_path / "e"], [0, 0], 14).tolist() == []
    assert len(_bands([])) == 0


def test_edge_documents_short_identical_symbols_and_unspaced():
    docs = [
        "Hello, world!",        # 0: 2 words: the whole document is one shingle
        "hello   WORLD",        # 1: same words after lower-casing, punctuation and spacing dropped
        "hello there",          # 2: another short document
        "😀🎉😀🎉🚀",            # 3: no word character: its characters are the units
        "😀 🎉 😀 🎉 🚀",        # 4: same characters, spaces do not count
        "😀🎉😀🎉🌍",            # 5: one symbol changed: a different single shingle
        "",                     # 6: nothing at all: one (empty) shingle, like any other empty text
    ]
    b = _bands(docs)
    same = lambda i, j: bool((b[i] == b[j]).all())  # noqa: E731
    assert same(0, 1) and not (b[0] == b[2]).any()
    assert same(3, 4) and not (b[3] == b[5]).any()
    assert not (b[6] == b[0]).any()


def test_long_documents_stream_with_bounded_blocks_and_the_same_signature(monkeypatch):
    import mlmctl.near_dedup as nd

    rng = random.Random(4)
    vocab = _vocab(rng, 50)
    texts = [" ".join(rng.choice(vocab) for _ in range(rng.randint(1, 3000))) for _ in range(20)]
    texts += ["".join(rng.choice("的一是在不了有和人这中 ") for _ in range(rng.randint(1, 5000))) for _ in range(5)]
    texts += ["a" * 5000, "x y " * 10]
    ref = _bands(texts), _bands(texts, ngram=1), _bands(texts, ngram=3)
    # Tiny slices and blocks: every long document is cut into many pieces; the windows that
    # cross a cut are carried, so the signatures do not change.
    monkeypatch.setattr(nd, "SLICE_CHARS", 37)
    monkeypatch.setattr(nd, "BATCH_SHINGLES", 11)
    blocks = list(nd.document_shingles(texts[0], 5))
    assert all(len(x) <= 11 for x in blocks)
    small = _bands(texts), _bands(texts, ngram=1), _bands(texts, ngram=3)
    assert all(np.array_equal(x, y) for x, y in zip(ref, small))


def test_all_identical_corpus_keeps_one(tmp_path):
    sig = _bands(["the same text in every document of the corpus"] * 5)
    sig.tofile(tmp_path / "u")
    assert near_duplicates([tmp_path / "u"], [5], sig.shape[1]).tolist() == [False, True, True, True, True]


def test_thai_and_japanese_use_character_shingles():
    from mlmctl.near_dedup import unit_hashes

    thai = "ระบบนี้ใช้ภาษาไทย"  # no spaces: every non-space character is a unit
    assert sum(len(x) for x in unit_hashes(thai)) == len(thai)
    ja = "東京は日本の首都であり、世界でも有数の大都市です。毎日たくさんの人が電車で通勤しています。" * 3
    edited = ja.replace("首都", "都市", 1)
    b = _bands([ja, edited, ja[::-1]])
    assert (b[0] == b[1]).any() and not (b[0] == b[2]).any()


def test_hostile_documents_are_linear():
    """1 M units of pathological repetition sign in seconds (a quadratic step would take hours)."""
    import time

    for text in ("a\n" * 1_000_000, "a " * 1_000_000, "a" * 2_000_000, "ab " * 700_000):
        start = time.process_time()  # CPU seconds, which a loaded machine does not stretch
        sig = _bands([text])
        assert sig.shape == (1, 14) and time.process_time() - start < 60


def test_words_keep_their_marks_and_unknown_unspaced_scripts_use_characters():
    from mlmctl.near_dedup import unit_hashes

    # Devanagari vowel signs are combining marks, not \w: without them "कम" (less) and "काम" (work)
    # would be one unit. Four words: the whole document is one shingle.
    assert not (_bands(["यह कम है ।"]) == _bands(["यह काम है ।"])).any()
    assert sum(len(x) for x in unit_hashes("हिन्दी भारत की राजभाषा है")) == 5  # five words, marks inside
    # Khmer has no spaces between words and no profile in mlmctl.scripts: its runs average more
    # than LONG_RUN_CHARS, so every non-space character is a unit (not one unit per phrase).
    khmer = "ភាសាខ្មែរគឺជាភាសាផ្លូវការនៃប្រទេសកម្ពុជា និងជាភាសាកំណើតរបស់ប្រជាជនខ្មែរ"
    assert sum(len(x) for x in unit_hashes(khmer)) == len(khmer.replace(" ", ""))
