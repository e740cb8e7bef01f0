"""Benchmark pretraining throughput: mlmctl's ModernBERT against `transformers`' ModernBertForMaskedLM.

Both models get the same config (ModernBERT preset shape, 30522-token vocabulary unless --vocab,
local window 128, global attention every 3rd layer), the same initial weights (ours copied into HF
through the key map), the same packed, dynamically masked batches (--tokens per batch, 15% masked,
no padding) and the same AdamW, in the same process, one after the other. HF runs twice: as it
ships (`sparse_prediction` off: logits at every position) and with `sparse_prediction=True`.
The models train in lockstep, one optimizer step each in turn (the order rotating every step),
so a machine shared with other jobs slows them all alike instead of whichever ran last.
Figures: training tokens/s (after --warmup untimed steps) and the losses of the first and last
steps, which must agree (same weights, same batches, no dropout).

    python benchmarks/bench_modernbert.py                          # mini, small x seq 128, 512
    python benchmarks/bench_modernbert.py --quick                  # mini x 128, 3 steps
    python benchmarks/bench_modernbert.py --presets small --seq-lens 512 --steps 20

Where the speed comes from: HF projects every position onto the vocabulary (B*T x H x V) and
takes a softmax over all of them; mlmctl gathers the ~15% masked positions first. HF also builds
its masks through its generic masking utilities and applies RoPE with extra copies.
Target: >= 1.5x HF (as shipped) at mini and small, seq 128 and 512, same loss.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from bench_pretrain import make_batches  # noqa: E402  (the same batches as the BERT benchmark)


def train_lockstep(runs: dict, batches, warmup: int, device: str = "cpu", bf16: bool = False):
    """runs: name -> (model, step_fn). Returns name -> (tokens/s, losses), timing each model's
    own optimizer steps only."""
    import contextlib
    import time

    import torch

    from mlmctl.optim import make_adamw

    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    opts = {}
    for name, (model, _) in runs.items():
        model.to(device).train()
        opts[name] = make_adamw(model, 1e-4, 0.01, (0.9, 0.98), 1e-6, torch.device(device).type)
    seconds = dict.fromkeys(runs, 0.0)
    losses = {name: [] for name in runs}
    names, tokens = list(runs), 0
    for i, (ids, labels) in enumerate(batches):
        ids, labels = ids.to(device), labels.to(device)
        for name in names[i % len(names):] + names[:i % len(names)]:
            model, step_fn = runs[name]
            sync()
            t0 = time.perf_counter()
            with torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
                loss = step_fn(model, ids, labels)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opts[name].step()
            opts[name].zero_grad(set_to_none=True)
            sync()
            if i >= warmup:
                seconds[name] += time.perf_counter() - t0
            losses[name].append(float(loss.detach()))
        if i >= warmup:
            tokens += ids.numel()
    return {name: (tokens / seconds[name], losses[name]) for name in runs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--presets", default="mini,small")
    ap.add_argument("--seq-lens", default="128,512")
    ap.add_argument("--tokens", type=int, default=4096, help="tokens per batch (batch size = tokens / seq len)")
    ap.add_argument("--steps", type=int, default=10, help="timed optimizer steps per model")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    ap.add_argument("--vocab", type=int, default=30522)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast (CUDA)")
    ap.add_argument("--no-hf-sparse", action="store_true", help="skip the HF sparse_prediction=True run")
    ap.add_argument("--quick", action="store_true", help="mini x 128, 3 steps")
    args = ap.parse_args()
    if args.quick:
        args.presets, args.seq_lens, args.steps, args.warmup = "mini", "128", 3, 1

    import torch
    import transformers

    from mlmctl.modernbert import ModernBertConfig, ModernBertForMaskedLM, to_hf_state_dict

    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, {torch.get_num_threads()} threads, "
          f"{args.tokens} tokens per batch, vocab {args.vocab}, {args.steps} timed steps, "
          f"{args.device}{' bf16' if args.bf16 else ''}", flush=True)

    def ours_step(model, ids, labels):
        return model(ids, labels=labels)[1]

    def hf_step(model, ids, labels):
        return model(input_ids=ids, labels=labels).loss

    def hf_copy(ours, sparse: bool):
        hf_cfg = transformers.ModernBertConfig(**ours.config.to_hf_config("ModernBertForMaskedLM"))
        hf_cfg.sparse_prediction = sparse
        hf_cfg._attn_implementation = "sdpa"
        hf = transformers.ModernBertForMaskedLM(hf_cfg)
        missing, unexpected = hf.load_state_dict(to_hf_state_dict(ours), strict=False)
        assert set(missing) <= {"decoder.weight"} and not unexpected, (missing, unexpected)
        assert hf.decoder.weight is hf.model.embeddings.tok_embeddings.weight, "HF decoder not tied"
        return hf

    rows = []
    for preset in args.presets.split(","):
        for seq_len in (int(s) for s in args.seq_lens.split(",")):
            batch_size = max(1, args.tokens // seq_len)
            batches = make_batches(args.warmup + args.steps, batch_size, seq_len, args.vocab)
            torch.manual_seed(0)
            cfg = ModernBertConfig.from_preset(preset, args.vocab)
            ours = ModernBertForMaskedLM(cfg)
            runs = {"mlmctl": (ours, ours_step), "HF": (hf_copy(ours, sparse=False), hf_step)}
            if not args.no_hf_sparse:
                runs["HF sparse"] = (hf_copy(ours, sparse=True), hf_step)
            result = train_lockstep(runs, batches, args.warmup, args.device, args.bf16)
            del runs, ours
            tps = {k: v[0] for k, v in result.items()}
            losses = {k: v[1] for k, v in result.items()}
            rows.append((preset, seq_len, tps, losses))
            line = "   ".join(f"{k} {v:8.0f} tok/s" for k, v in tps.items())
            print(f"{preset:6s} T={seq_len:<4d} {line}   x{tps['mlmctl'] / tps['HF']:4.2f}   loss first/last "
                  + "  ".join(f"{k} {v[0]:.4f}/{v[-1]:.4f}" for k, v in losses.items()), flush=True)

    names = list(rows[0][2])
    print("\npreset  seq   " + "  ".join(f"{n + ' tok/s':>16s}" for n in names) + "   vs HF   vs HF sparse   last loss "
          + " / ".join(names))
    for preset, seq_len, tps, losses in rows:
        vs_sparse = f"{tps['mlmctl'] / tps['HF sparse']:10.2f}x" if "HF sparse" in tps else f"{'-':>11s}"
        print(f"{preset:7s} {seq_len:<5d} " + "  ".join(f"{tps[n]:16.0f}" for n in names)
              + f"   {tps['mlmctl'] / tps['HF']:4.2f}x   {vs_sparse}   " + " / ".join(f"{losses[n][-1]:.4f}" for n in names))


if __name__ == "__main__":
    main()
