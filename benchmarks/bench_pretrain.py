"""Benchmark pretraining throughput: mlmctl's BERT against `transformers`' BertForMaskedLM.

Both models get the same config (preset shape, 30522-token vocabulary unless --vocab), the same
initial weights (ours copied into HF through the key map), the same packed, dynamically masked
batches (full-sentence sequences of --seq-len tokens, no padding, 15% masked), and the same AdamW
(foreach, weight decay off for biases/LayerNorm), in the same process, one after the other.
Figures: training tokens/s (after --warmup untimed steps) and the loss after the last step.

    python benchmarks/bench_pretrain.py                    # tiny, mini, small; 20 steps each
    python benchmarks/bench_pretrain.py --quick            # tiny and mini, 4 steps
    python benchmarks/bench_pretrain.py --presets mini --steps 50 --batch-size 32

Where the speed comes from: HF projects every position onto the vocabulary (B*T x H x V) and
takes a softmax over all of them; mlmctl gathers the ~15% masked positions first. The encoder
uses a fused QKV projection and SDPA without a mask (packed sequences have no padding).
Target: >= 2x HF at mini and small, same loss within noise.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def make_batches(n_batches: int, batch_size: int, seq_len: int, vocab: int, seed: int = 0):
    """Zipf-like token stream packed into full sequences, masked with mlmctl's masking."""
    import numpy as np
    import torch

    from mlmctl.masking import Masking, mask_batch
    from mlmctl.packing import CorpusPart, FullSentences, collate

    rng = np.random.default_rng(seed)
    n_tok = n_batches * batch_size * seq_len + 1000
    ranks = rng.zipf(1.2, n_tok) % (vocab - 5) + 5
    sent_lens = rng.integers(8, 40, n_tok // 8)
    so = np.concatenate([[0], np.cumsum(sent_lens)])
    so = so[so <= n_tok]
    docs = np.arange(0, len(so), 10)
    if docs[-1] != len(so) - 1:
        docs = np.append(docs, len(so) - 1)
    ds = FullSentences([CorpusPart(ranks.astype(np.uint16 if vocab < 65536 else np.uint32), so, docs)], seq_len)
    spec = Masking()
    out = []
    for b in range(n_batches):
        idx = list(range(b * batch_size, (b + 1) * batch_size))
        exs = [ds.get(i) for i in idx]
        inp, lab = mask_batch([e.ids for e in exs], idx, 0, seed, spec, vocab)
        ids, labels, am, _ = collate(inp, lab)
        assert am is None
        out.append((torch.from_numpy(ids), torch.from_numpy(labels)))
    return out


def train(step_fn, model, batches, warmup, device="cpu", bf16=False):
    """Time `warmup + steps` optimizer steps of mlmctl's own `training.train_step` (what
    `mlmctl pretrain` runs), with `step_fn(model, (ids, labels))` as the loss."""
    import torch

    from mlmctl.training import OptimSettings, Process, train_step

    proc = Process(rank=0, world=1, device=torch.device(device), use_bf16=bf16)
    optim = OptimSettings(lr=1e-4, total_steps=len(batches), decay="constant", weight_decay=0.01, betas=(0.9, 0.98),
                          eps=1e-6, grad_clip=1.0)
    model.to(device)
    opt = optim.make_optimizer(model, proc.device)
    model.train()
    losses, t0, tokens = [], None, 0
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    for i, (ids, labels) in enumerate(batches):
        ids, labels = ids.to(device), labels.to(device)
        if i == warmup:
            sync()
            t0 = time.perf_counter()
        loss, _ = train_step(model, opt, [(ids, labels)], step_fn, lr=optim.lr_at(i), grad_clip=optim.grad_clip,
                             proc=proc)
        losses.append(loss)
        if i >= warmup:
            tokens += ids.numel()
    sync()
    return tokens / (time.perf_counter() - t0), losses


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--presets", default="tiny,mini,small")
    ap.add_argument("--steps", type=int, default=20, help="timed optimizer steps per model")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--vocab", type=int, default=30522)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast (CUDA)")
    ap.add_argument("--quick", action="store_true", help="tiny and mini, 4 steps")
    args = ap.parse_args()
    if args.quick:
        args.presets, args.steps, args.warmup = "tiny,mini", 4, 1

    import torch
    import transformers

    from mlmctl.model import BertForPreTraining, ModelConfig, to_hf_state_dict

    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, {torch.get_num_threads()} threads, "
          f"batch {args.batch_size} x {args.seq_len}, vocab {args.vocab}, {args.steps} timed steps, "
          f"{args.device}{' bf16' if args.bf16 else ''}")
    batches = make_batches(args.warmup + args.steps, args.batch_size, args.seq_len, args.vocab)

    def ours_step(model, batch):
        ids, labels = batch
        return model(ids, labels=labels)[1]

    def hf_step(model, batch):
        ids, labels = batch
        return model(input_ids=ids, labels=labels).loss

    rows = []
    for preset in args.presets.split(","):
        torch.manual_seed(0)
        cfg = ModelConfig.from_preset(preset, args.vocab)
        ours = BertForPreTraining(cfg)
        hf_cfg = transformers.BertConfig(**cfg.to_hf_config("BertForMaskedLM"))
        hf = transformers.BertForMaskedLM(hf_cfg)
        hf.load_state_dict(to_hf_state_dict(ours), strict=False)
        hf.tie_weights()
        torch.manual_seed(1)
        tps_ours, loss_ours = train(ours_step, ours, batches, args.warmup, args.device, args.bf16)
        torch.manual_seed(1)
        tps_hf, loss_hf = train(hf_step, hf, batches, args.warmup, args.device, args.bf16)
        rows.append((preset, tps_ours, tps_hf, loss_ours[-1], loss_hf[-1], loss_ours[0], loss_hf[0]))
        print(f"{preset:7s} mlmctl {tps_ours:9.0f} tok/s   HF {tps_hf:9.0f} tok/s   x{tps_ours / tps_hf:4.2f}   "
              f"loss first {loss_ours[0]:.4f}/{loss_hf[0]:.4f}  last {loss_ours[-1]:.4f}/{loss_hf[-1]:.4f}",
              flush=True)
    print("\npreset   mlmctl tok/s   HF tok/s   speed-up   last loss mlmctl / HF")
    for preset, a, b, la, lb, _, _ in rows:
        print(f"{preset:8s} {a:12.0f} {b:10.0f}   {a / b:7.2f}x   {la:.4f} / {lb:.4f}")


if __name__ == "__main__":
    main()
