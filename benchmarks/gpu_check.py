"""The GPU check of issue 12: `base` at seq 512, bf16 autocast, torch.compile, both architectures
against the `transformers` classes: training tokens/s and MFU, in one run.

    python benchmarks/gpu_check.py                      # base, seq 512, batch 32, bf16, compiled
    python benchmarks/gpu_check.py --no-compile --steps 10
    python benchmarks/gpu_check.py --peak-tflops 989    # a GPU the table below does not know
    python benchmarks/gpu_check.py --device cpu --preset tiny --seq-len 64 --steps 2 --warmup 1 --no-compile
                                   # the code path on CPU (fp32, no MFU): what the test runs, not a figure

On a machine without CUDA it prints one line saying so and exits 0, measuring nothing: the
figures of this script come only from a GPU (docs/benchmarks.md says whether any were recorded).

Four models train in lockstep (bench_modernbert.train_lockstep: one optimizer step each in turn,
the order rotating), on the same masked batches (15% masked, no padding) and from the same
weights within each architecture: mlmctl BERT vs HF BertForMaskedLM, mlmctl ModernBERT vs HF
ModernBertForMaskedLM (SDPA attention in both HF classes; FlashAttention is not assumed).

MFU (model FLOPs utilisation) counts the FLOPs the task needs, the same for ours and HF, so HF
gets no credit for projecting unmasked positions onto the vocabulary:
    per token   6 x (encoder parameters without the embeddings) + 12 x L x H x T_attended
    per masked  6 x H x V (the decoder; the prediction head's dense layer is in the first term)
with T_attended = T for a global layer and min(T, local window) for a ModernBERT local layer
(the PaLM appendix B formula, arXiv 2204.02311), divided by the GPU's dense bf16 peak.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

# Dense bf16 peak TFLOP/s (no sparsity) by device-name substring, from the vendors' data sheets.
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100 SXM": 989.0, "H100 PCIe": 756.0, "H100": 989.0, "A100": 312.0,
                    "L40S": 362.0, "L4": 121.0, "A10G": 70.0, "A10": 125.0, "RTX 4090": 165.0}


def peak_tflops(name: str, given: float | None) -> float | None:
    if given:
        return given
    for key, value in PEAK_BF16_TFLOPS.items():  # first match wins: longer names come first
        if key in name:
            return value
    return None


def flops_per_step(cfg, batch_size: int, seq_len: int, masked: int, modern: bool) -> float:
    """Training FLOPs of one step by the formula of the module docstring."""
    H, L, V, F_ = cfg.hidden_size, cfg.num_hidden_layers, cfg.vocab_size, cfg.intermediate_size
    if modern:  # fused QKV + output, GeGLU (Wi to 2F, Wo), head dense
        layer = 4 * H * H + 3 * H * F_
        attended = [seq_len if i % cfg.global_attn_every_n_layers == 0 else min(seq_len, cfg.local_attention)
                    for i in range(L)]
    else:
        layer = 4 * H * H + 2 * H * F_
        attended = [seq_len] * L
    dense = L * layer + H * H
    per_token = 6 * dense + 12 * H * sum(attended)
    return batch_size * seq_len * per_token + masked * 6 * H * V


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="base")
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=20, help="timed optimizer steps per model")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps first (compilation happens here)")
    ap.add_argument("--vocab", type=int, default=30522)
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--no-bf16", action="store_true")
    ap.add_argument("--device", default="cuda", help="cuda; cpu only to check the script itself (fp32)")
    ap.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak of this GPU")
    args = ap.parse_args()

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: skipped, no CUDA device here (torch.cuda.is_available() is False); "
              "run it on a GPU machine: nothing was measured")
        return 0
    import transformers

    from bench_modernbert import train_lockstep
    from bench_pretrain import make_batches
    from mlmctl import model as bert
    from mlmctl import modernbert as modern

    device = args.device
    on_gpu = device == "cuda"
    bf16 = on_gpu and not args.no_bf16
    name = torch.cuda.get_device_name(0) if on_gpu else "CPU (a check of the script, not a GPU figure)"
    peak = peak_tflops(name, args.peak_tflops) if on_gpu else None
    torch.backends.cuda.matmul.allow_tf32 = True
    print(f"{name}, torch {torch.__version__}, transformers {transformers.__version__}, {args.preset}, "
          f"batch {args.batch_size} x {args.seq_len}, {'bf16' if bf16 else 'fp32'}, "
          f"compile {'off' if args.no_compile else 'on'}, peak {peak or '?'} TFLOP/s", flush=True)
    batches = make_batches(args.warmup + args.steps, args.batch_size, args.seq_len, args.vocab)
    masked = sum(int((lab != -100).sum()) for _, lab in batches[args.warmup:]) / max(1, args.steps)

    def ours_step(m, ids, labels):
        return m(ids, labels=labels)[1]

    def hf_step(m, ids, labels):
        return m(input_ids=ids, labels=labels).loss

    def prepared(m):
        m.to(device)
        return m if args.no_compile else torch.compile(m)

    rows = []
    for arch in ("bert", "modernbert"):
        torch.manual_seed(0)
        if arch == "bert":
            cfg = bert.ModelConfig.from_preset(args.preset, args.vocab, hidden_dropout_prob=0.0,
                                               attention_probs_dropout_prob=0.0)
            ours = bert.BertForPreTraining(cfg)
            hf = transformers.BertForMaskedLM(transformers.BertConfig(**cfg.to_hf_config("BertForMaskedLM")))
            hf.load_state_dict(bert.to_hf_state_dict(ours), strict=False)
            hf.tie_weights()
        else:
            cfg = modern.ModernBertConfig.from_preset(args.preset, args.vocab)
            ours = modern.ModernBertForMaskedLM(cfg)
            hf_cfg = transformers.ModernBertConfig(**cfg.to_hf_config("ModernBertForMaskedLM"))
            hf_cfg._attn_implementation = "sdpa"
            hf = transformers.ModernBertForMaskedLM(hf_cfg)
            hf.load_state_dict(modern.to_hf_state_dict(ours), strict=False)
        runs = {"mlmctl": (prepared(ours), ours_step), "HF": (prepared(hf), hf_step)}
        result = train_lockstep(runs, batches, args.warmup, device, bf16)
        flops = flops_per_step(cfg, args.batch_size, args.seq_len, masked, arch == "modernbert")
        for who, (tps, losses) in result.items():
            steps_per_s = tps / (args.batch_size * args.seq_len)
            mfu = flops * steps_per_s / (peak * 1e12) if peak else None
            rows.append((arch, who, tps, mfu, losses[-1]))
            print(f"{arch:10s} {who:7s} {tps:10.0f} tok/s   MFU {f'{100 * mfu:.1f}%' if mfu else '?':>6s}   "
                  f"last loss {losses[-1]:.4f}", flush=True)
        del runs, ours, hf
        if on_gpu:
            torch.cuda.empty_cache()
    print("\narch        model      tokens/s     MFU   vs HF")
    for arch, who, tps, mfu, _ in rows:
        hf_tps = next(t for a, w, t, _, _ in rows if a == arch and w == "HF")
        print(f"{arch:11s} {who:7s} {tps:11.0f}  {f'{100 * mfu:5.1f}%' if mfu else '    ?':>6s}   {tps / hf_tps:4.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
