"""Does our training loop learn as well as a plain one? Dev accuracy of both, same data, seeds and recipe.

The plain loop is what a user writes from transformers' examples: AutoModelForSequenceClassification,
AdamW (weight decay on every weight matrix, none on biases and LayerNorm), linear warm-up then decay,
clipping at 1.0, random batches padded to their longest. Ours is `run_classifier.py` with the same flags,
in a fresh process, with its defaults (length grouping, low-memory training) unless --extra says otherwise.
Each seed gives both loops their own random batch order, head initialisation and dropout, so a single pair
says little: at half an epoch the spread across seeds is several points (see results/quality_parity.md).
Compare the means; `tests/test_loop_parity.py` pins that both do the same maths on the same batches.

`--pooling mean` gives the plain loop a mean-pooled encoder and a linear head instead of the [CLS] pooler
(m3e-small's pooler is untrained: does that cap the accuracy?); `--bf16` runs both loops under bf16 autocast.

    python -m bench.quality_parity [--model_dir M3E] [--steps 150] [--seeds 0 1 2] [--output FILE.jsonl]
        [--loops plain] [--pooling mean] [--bf16] [--dev_limit 0: the whole dev set]

Each run's row is printed and appended to --output as soon as it ends.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read_split(path: str, labels: list[str], limit: int | None = None) -> tuple[list[str], list[int]]:
    rows = [line.rstrip("\n").split("\t") for line in open(path, encoding="utf-8") if line.strip()]
    rows = rows[:limit] if limit else rows
    return [r[0] for r in rows], [labels.index(r[-1]) for r in rows]


def mean_pooled_classifier(model_dir: str, num_labels: int):
    """AutoModel without its pooler, the mask-weighted mean of the last layer, dropout and a linear head:
    the sentence vector m3e-small was trained to give, in place of the [CLS] pooler. Written out, not
    bertorch.models.pooling: the reference shares no code with the toolkit it checks."""
    import torch
    from transformers import AutoModel
    from transformers.modeling_outputs import SequenceClassifierOutput

    class MeanPooled(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = AutoModel.from_pretrained(model_dir, add_pooling_layer=False)
            self.dropout = torch.nn.Dropout(self.encoder.config.hidden_dropout_prob)
            self.head = torch.nn.Linear(self.encoder.config.hidden_size, num_labels)

        def forward(self, input_ids, attention_mask, token_type_ids=None):
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                                  token_type_ids=token_type_ids).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            return SequenceClassifierOutput(logits=self.head(self.dropout((hidden * mask).sum(1) / mask.sum(1))))

    return MeanPooled()


def plain_loop(model_dir: str, data_dir: str, seed: int, steps: int, lr: float, batch_size: int,
               max_length: int, warmup: float, weight_decay: float, dev_limit: int, pooling: str = "pooler",
               bf16: bool = False) -> dict:
    """The reference: a few lines of stock PyTorch + transformers. Returns dev accuracy and train seconds."""
    import contextlib

    import torch
    import torch.nn.functional as F
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, get_scheduler

    labels = [line.strip() for line in open(os.path.join(data_dir, "labels.txt"), encoding="utf-8") if line.strip()]
    train_x, train_y = read_split(os.path.join(data_dir, "train.tsv"), labels)
    dev_x, dev_y = read_split(os.path.join(data_dir, "dev.tsv"), labels, dev_limit)
    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if pooling == "mean":
        model = mean_pooled_classifier(model_dir, len(labels))
    else:
        model = AutoModelForSequenceClassification.from_pretrained(model_dir, num_labels=len(labels))
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext
    groups = [{"params": [p for p in model.parameters() if p.ndim >= 2], "weight_decay": weight_decay},
              {"params": [p for p in model.parameters() if p.ndim < 2], "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=lr)
    scheduler = get_scheduler("linear", optimizer, num_warmup_steps=round(steps * warmup), num_training_steps=steps)
    order = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(seed)).tolist()
    model.train()
    start = time.perf_counter()
    for step in range(steps):
        s = (step * batch_size) % len(order)
        batch = order[s:s + batch_size]
        enc = tokenizer([train_x[i] for i in batch], truncation=True, max_length=max_length, padding=True,
                        return_tensors="pt")
        with autocast():
            logits = model(**enc).logits
        loss = F.cross_entropy(logits.float(), torch.tensor([train_y[i] for i in batch]))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
    seconds = time.perf_counter() - start
    model.eval()
    correct = 0
    with torch.no_grad(), autocast():
        for s in range(0, len(dev_x), 64):
            enc = tokenizer(dev_x[s:s + 64], truncation=True, max_length=max_length, padding=True,
                            return_tensors="pt")
            correct += (model(**enc).logits.argmax(-1) == torch.tensor(dev_y[s:s + 64])).sum().item()
    return {"accuracy": correct / len(dev_x), "dev_examples": len(dev_x), "train_seconds": round(seconds, 1)}


def our_loop(model_dir: str, data_dir: str, seed: int, args, workdir: str) -> dict:
    out = os.path.join(workdir, f"ours-{seed}")
    argv = [sys.executable, os.path.join(ROOT, "run_classifier.py"), "--pretrained_model_name_or_path", model_dir,
            "--train_data_file", os.path.join(data_dir, "train.tsv"), "--dev_data_file",
            os.path.join(data_dir, "dev.tsv"), "--label_file", os.path.join(data_dir, "labels.txt"),
            *(["--max_eval_samples", str(args.dev_limit)] if args.dev_limit else []), "--saved_dir", out,
            "--overwrite_output_dir",
            "--max_steps", str(args.steps), "--learning_rate", str(args.learning_rate),
            "--warmup_proportion", str(args.warmup_proportion), "--weight_decay", str(args.weight_decay),
            "--batch_size", str(args.batch_size), "--max_seq_length", str(args.max_seq_length),
            "--seed", str(seed), "--save_steps", "0", "--logging_steps", "50", *(["--bf16"] if args.bf16 else []),
            *args.extra]
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"run_classifier.py failed (seed {seed}):\n{proc.stderr[-3000:]}")
    results = json.load(open(os.path.join(out, "all_results.json"), encoding="utf-8"))
    return {"accuracy": results["final_accuracy"], "train_seconds": results["train_seconds"]}


def default_model_dir() -> str:
    sys.path.insert(0, ROOT)
    from bertorch.pretrained import m3e_small_dir

    return m3e_small_dir()


def summarise(rows: list[dict]) -> dict:
    out = {}
    for loop in ("plain", "ours"):
        values = [r["accuracy"] for r in rows if r["loop"] == loop]
        if values:
            out[loop] = {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
                         "min": min(values), "max": max(values), "runs": len(values)}
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_dir", default=None, help="default: m3e-small (python -m bertorch.pretrained)")
    p.add_argument("--data_dir", default=os.path.join(ROOT, "data", "chnsenticorp"),
                   help="train.tsv, dev.tsv, labels.txt (text\\tlabel)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--loops", nargs="+", choices=["plain", "ours"], default=["plain", "ours"])
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--learning_rate", type=float, default=1e-4)
    p.add_argument("--warmup_proportion", type=float, default=0.1)
    p.add_argument("--weight_decay", type=float, default=0.01)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--max_seq_length", type=int, default=128)
    p.add_argument("--dev_limit", type=int, default=600, help="score the first N dev lines (0: all of them)")
    p.add_argument("--pooling", choices=["pooler", "mean"], default="pooler",
                   help="the plain loop's sentence vector: the model's [CLS] pooler, or the mean of the last layer")
    p.add_argument("--bf16", action="store_true", help="both loops under bf16 autocast")
    p.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more flags for run_classifier.py")
    p.add_argument("--output", default=None, help="append one JSON row per run here (JSON lines)")
    args = p.parse_args(argv)
    model_dir = args.model_dir or default_model_dir()
    if not os.path.isfile(os.path.join(model_dir, "config.json")):
        raise SystemExit(f"error: --model_dir {model_dir}: no config.json (fetch m3e-small: python -m bertorch.pretrained)")
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for seed in args.seeds:
            for loop in args.loops:
                if loop == "plain":
                    result = plain_loop(model_dir, args.data_dir, seed, args.steps, args.learning_rate,
                                        args.batch_size, args.max_seq_length, args.warmup_proportion,
                                        args.weight_decay, args.dev_limit, args.pooling, args.bf16)
                else:
                    result = our_loop(model_dir, args.data_dir, seed, args, workdir)
                row = {"loop": loop, "seed": seed, "steps": args.steps, "learning_rate": args.learning_rate,
                       "extra": args.extra, "bf16": args.bf16, **({"pooling": args.pooling} if loop == "plain" else {}),
                       **result}
                rows.append(row)
                print(json.dumps(row), flush=True)
                if args.output:
                    with open(args.output, "a", encoding="utf-8") as f:
                        f.write(json.dumps(row) + "\n")
    summary = summarise(rows)
    for loop, s in summary.items():
        print(f"{loop:5s} dev accuracy {s['mean']:.4f} +- {s['sd']:.4f} (min {s['min']:.4f}, max {s['max']:.4f}, "
              f"{s['runs']} seeds)")
    return summary


if __name__ == "__main__":
    main()
