"""Training throughput and peak memory, measured side by side in one run.

Each case trains a fixed number of steps with the real entry script in a fresh process, once per padding
mode, and reports samples/s, tokens/s (real and padded) and peak RSS, as ratios to the baselines:
  ours     dynamic padding + length grouping (the default)
  longest  dynamic padding, no grouping (what the original bertorch does)
  max_len  every batch padded to --max_seq_length
The model is a random BERT (4 layers, hidden 312, 12 heads, FFN 1200) with the data's character vocab,
so nothing is downloaded.

    python -m bench.train_throughput --steps 40 [--cases classification ner_linear ner_crf simcse sbert]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(ROOT), "shared", "data")
MODES = {"ours": [], "longest": ["--no-group_by_length"], "max_len": ["--no-group_by_length", "--pad_to_max_length"]}

# case -> (script, data flags, text reader for the vocab, samples per step multiplier)
CASES = {
    "classification": ("run_classifier.py", ["--train_data_file", "chnsenticorp/train.tsv",
                                             "--label_file", "chnsenticorp/labels.txt"], "chnsenticorp/train.tsv"),
    "ner_linear": ("run_ner.py", ["--train_data_file", "ner/resume/train.json",
                                  "--label_file", "ner/resume/labels.txt"], "ner/resume/train.json"),
    "ner_crf": ("run_ner.py", ["--train_data_file", "ner/resume/train.json", "--label_file",
                               "ner/resume/labels.txt", "--use_crf"], "ner/resume/train.json"),
    "simcse": ("run_simcse.py", ["--train_data_file", "unsup/sentences.txt"], "unsup/sentences.txt"),
    "sbert": ("run_sentencebert.py", ["--train_data_file", "afqmc/train.txt"], "afqmc/train.txt"),
}


def data_texts(path: str, limit: int = 20000) -> list[str]:
    texts = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f):
            if i >= limit:
                break
            texts.append("".join(json.loads(line)["text"]) if path.endswith(".json") else line)
    return texts


def build_model(vocab_source: str, out: str) -> str:
    sys.path.insert(0, ROOT)
    from bertorch.models.random_init import build_char_vocab, make_random_bert

    vocab = build_char_vocab(data_texts(os.path.join(SHARED, vocab_source)))
    return make_random_bert(out, vocab, hidden_size=312, num_layers=4, num_heads=12, intermediate_size=1200)


def run_once(case: str, mode: str, model: str, args, workdir: str) -> dict:
    script, data_flags, _ = CASES[case]
    out = os.path.join(workdir, f"{case}-{mode}")
    cmd = [sys.executable, os.path.join(ROOT, script), "--pretrained_model_name_or_path", model, *data_flags,
           "--data_dir", SHARED, "--saved_dir", out, "--overwrite_output_dir", "--batch_size", str(args.batch_size),
           "--max_seq_length", str(args.max_seq_length), "--max_steps", str(args.steps),
           "--logging_steps", str(args.log_every), "--save_steps", "0", *MODES[mode], *args.extra]
    env = {**os.environ, **dict(kv.split("=", 1) for kv in args.env)}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise RuntimeError(f"{case}/{mode} failed:\n{proc.stderr.read()[-3000:]}")
    rows = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"), encoding="utf-8")]
    windows = [r for r in rows if r["kind"] == "train"][1:]  # the first window includes warm-up
    mean = lambda key: sum(r[key] for r in windows) / len(windows)  # noqa: E731
    return {"step/s": mean("speed"), "samples/s": mean("speed") * args.batch_size,
            "tokens/s": mean("tokens_per_s"), "pad_fraction": mean("pad_fraction"),
            "peak_rss_gb": usage.ru_maxrss / 1024 ** 2}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", default=["classification"], choices=sorted(CASES))
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--log_every", type=int, default=5)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--max_seq_length", type=int, default=128)
    parser.add_argument("--env", nargs="*", default=[], help="KEY=VALUE environment for the runs")
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more flags for the scripts")
    parser.add_argument("--output", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    results: dict = {}
    with tempfile.TemporaryDirectory() as workdir:
        for case in args.cases:
            model = build_model(CASES[case][2], os.path.join(workdir, f"model-{case}"))
            results[case] = {mode: run_once(case, mode, model, args, workdir) for mode in args.modes}
            base = results[case]
            for mode, r in base.items():
                line = (f"{case:15s} {mode:8s} {r['samples/s']:7.1f} samples/s  {r['step/s']:5.2f} step/s  "
                        f"{r['tokens/s']:7.0f} tokens/s  padding {r['pad_fraction']:5.1%}  "
                        f"peak RSS {r['peak_rss_gb']:.2f} GB")
                for ref in ("longest", "max_len"):
                    if ref in base and ref != mode:
                        line += f"  x{r['samples/s'] / base[ref]['samples/s']:.2f} vs {ref}"
                print(line, flush=True)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    main()
