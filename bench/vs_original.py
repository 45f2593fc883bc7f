"""Training speed and peak memory against the original bertorch itself: the same model, data, steps and flags.

The original program (github.com/zejunwang1/bertorch, kept in ../shared/peers/bertorch-original; without it
this prints one line and exits 0) and ours train the same random BERT (4 layers, hidden 312, 12 heads, FFN
1200, written once by ../shared/peers/make_tiny_model.py into outputs/bench/tiny-zh-bert) on the same prefix
of the same train file (--steps x batch 32 lines both read alike, in a temporary file; NER keeps the documents
that fit one window, as ours splits a longer one into windows where the original truncates it), batch 32, max
length 128, lr 1e-4, one epoch, no dev set, each writing its model once at the end. Every run is a fresh
process with CUDA_VISIBLE_DEVICES="" and OMP_NUM_THREADS=--threads, in turns (original, ours, ours padded,
original, ...), so a burst of load elsewhere hits all alike.

Per run: whole-process wall time; training steps/s from the timestamps of the program's own log lines
(`... | global step: N, ... speed: X step/s`, which both print), (step_last - step_first) / (t_last - t_first),
so start-up, tokenising and the first logging window are left out; "start-up (s)" is the time from the
process start to its first training log line; peak RSS of that child (os.wait4's ru_maxrss). Per case the
table has medians of wall time and steps/s, the largest peak RSS, and the ratios to the original (wall:
original / this; step/s and RSS: this / original). "ours --no-group_by_length" is ours padding each random
batch to its longest, as the original does: it is our program, not the original.

    python -m bench.vs_original [--steps 100] [--repeats 2] [--cases classification ner_linear ...]
        [--programs original ours ours_padded ours_bf16 ours_bf16_onednn_cap ours_bf16_glibc ours_bf16_pad16 ...]
    # the bf16 ones are not run by default
    # writes results/vs_original.json and .md (scripts/results.py's table) after every case
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime

from bench import results_script
from bench.train_throughput import ROOT, SHARED
from bertorch.memory import ALLOCATOR_ENV, ONEDNN_CACHE_ENV

PEERS = os.path.join(os.path.dirname(ROOT), "shared", "peers")
MODEL_DIR = os.path.join(ROOT, "outputs", "bench", "tiny-zh-bert")
BATCH_SIZE, MAX_SEQ_LENGTH, LEARNING_RATE = 32, 128, "1e-4"
SMOKE_BELOW_STEPS = 20  # fewer steps give too few log windows to quote: the table says it is a smoke run
# program -> flags of ours on top of the shared ones (None: the original)
PROGRAMS = {"original": None, "ours": [], "ours_padded": ["--no-group_by_length"], "ours_bf16": ["--bf16"],
            "ours_bf16_onednn_cap": ["--bf16"], "ours_bf16_glibc": ["--bf16"],
            "ours_bf16_pad16": ["--bf16", "--pad_to_multiple_of", "16"],
            "ours_bf16_pad32": ["--bf16", "--pad_to_multiple_of", "32"]}
# program -> environment on top of the shared one: oneDNN's per-shape primitive cache off (bertorch/memory.py)
# and glibc's allocator defaults instead of bertorch.memory's settings
PROGRAM_ENV = {"ours_bf16_onednn_cap": {ONEDNN_CACHE_ENV: "0"}, "ours_bf16_glibc": {ALLOCATOR_ENV: "glibc"}}
DEFAULT_PROGRAMS = ["original", "ours", "ours_padded"]
LABELS = {"original": "original bertorch", "ours": "ours", "ours_bf16": "ours --bf16 (bf16 autocast: not fp32's numerics)",
          "ours_bf16_glibc": "ours --bf16 with glibc's allocator defaults (BERTORCH_ALLOCATOR=glibc)",
          "ours_bf16_onednn_cap": "ours --bf16 with oneDNN's primitive cache off (ONEDNN_PRIMITIVE_CACHE_CAPACITY=0)",
          "ours_bf16_pad16": "ours --bf16 --pad_to_multiple_of 16",
          "ours_bf16_pad32": "ours --bf16 --pad_to_multiple_of 32",
          "ours_padded": "ours --no-group_by_length (padded like the original; ours, not the original)"}


@dataclass(frozen=True)
class Case:
    script: str  # the same name in both programs
    source: str  # the train file, under ../shared/data
    kind: str  # its format: tsv2 (text, label), tsv3 (text_a, text_b, label), ner (JSON lines), lines (one text)
    label_file: str | None = None
    flags: tuple = ()  # flags both programs spell alike (values given where the two defaults could differ)


CASES = {
    "classification": Case("run_classifier.py", "chnsenticorp/train.tsv", "tsv2", "chnsenticorp/labels.txt"),
    "ner_linear": Case("run_ner.py", "ner/resume/train.json", "ner", "ner/resume/labels.txt"),
    "ner_crf": Case("run_ner.py", "ner/resume/train.json", "ner", "ner/resume/labels.txt",
                    ("--use_crf", "--crf_learning_rate", "1e-3")),
    "sbert": Case("run_sentencebert.py", "afqmc/train.txt", "tsv3", None, ("--pooling_mode", "linear")),
    "simcse": Case("run_simcse.py", "unsup/sentences.txt", "lines", None,
                   ("--pooling_mode", "linear", "--dropout", "0.1", "--margin", "0.2", "--scale", "20")),
}
LOG_LINE = re.compile(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) \|[^\n]*?global step: (\d+),[^\n]*?"
                      r"speed: ([\d.]+) step/s")


def valid_line(kind: str, line: str) -> bool:
    """A line both programs read as the same one example: the original skips a tsv line of another field count
    and ours may refuse it, so neither gets one; a document longer than one window ([CLS] + 126 characters +
    [SEP]) is left out too, since ours trains it as overlapping windows where the original truncates it."""
    if kind == "ner":
        row = json.loads(line)
        return 0 < len(row["text"]) == len(row["label"]) <= MAX_SEQ_LENGTH - 2
    if kind == "lines":
        return bool(line.strip()) and "\t" not in line
    fields = line.split("\t")
    return len(fields) == int(kind[-1]) and all(f.strip() for f in fields)


def prefix_file(source: str, dest: str, count: int, kind: str) -> int:
    """The first `count` valid lines of `source` into `dest`, as they are; returns how many were written."""
    written = 0
    with open(source, encoding="utf-8") as src, open(dest, "w", encoding="utf-8") as out:
        for line in src:
            line = line.rstrip("\r\n")
            if written == count:
                break
            if line.strip() and valid_line(kind, line):
                out.write(line + "\n")
                written += 1
    return written


def command(program: str, case: Case, data: str, model: str, out: str, steps: int, original: str) -> list[str]:
    """`python ARGV` of one run. The original saves at --save_steps, so it writes its model at the last step;
    ours writes its model at the end and, with --save_steps 0, no resumable checkpoint."""
    log_every = max(1, steps // 10)
    shared = ["--pretrained_model_name_or_path", model, "--train_data_file", data,
              *(["--label_file", os.path.join(SHARED, case.label_file)] if case.label_file else []),
              "--batch_size", str(BATCH_SIZE), "--max_seq_length", str(MAX_SEQ_LENGTH), "--learning_rate",
              LEARNING_RATE, "--epochs", "1", "--logging_steps", str(log_every), "--saved_dir", out, *case.flags]
    if PROGRAMS[program] is None:
        return [os.path.join(original, case.script), *shared, "--local_rank", "-1", "--save_steps", str(steps)]
    return [os.path.join(ROOT, case.script), *shared, "--save_steps", "0", "--overwrite_output_dir",
            *PROGRAMS[program]]


def launch(argv: list[str], env: dict, log_path: str) -> tuple[int, object, float, float]:
    """Run `python ARGV` with stdout and stderr into log_path: (exit status, rusage, wall seconds, start time).
    Not bench.train_throughput.run_child: that keeps only the tail of stderr, and the log lines are needed."""
    start, clock = time.time(), time.perf_counter()
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.Popen([sys.executable, *argv], stdout=log, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
    return os.waitstatus_to_exitcode(status), usage, time.perf_counter() - clock, start


def log_speed(text: str) -> dict:
    """Steps/s between the first and the last training log line, from their timestamps; when the first one came."""
    lines = [(datetime.strptime(t, "%Y-%m-%d %H:%M:%S.%f").timestamp(), int(step), float(speed))
             for t, step, speed in LOG_LINE.findall(text)]
    if len(lines) < 2:
        raise RuntimeError(f"{len(lines)} training log line(s): give --steps 2 or more")
    (t0, s0, _), (t1, s1, _) = lines[0], lines[-1]
    return {"step/s": (s1 - s0) / max(t1 - t0, 1e-3), "first_log": t0,
            "own_speed": statistics.fmean(speed for _, _, speed in lines[1:])}  # what the lines say themselves


def run_once(program: str, case_name: str, data: str, steps: int, args, workdir: str) -> dict:
    case = CASES[case_name]
    out = os.path.join(workdir, f"{case_name}-{program}")
    log_path = out + ".log"
    argv = command(program, case, data, MODEL_DIR, out, steps, os.path.join(args.peers, "bertorch-original"))
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": str(args.threads),
           **PROGRAM_ENV.get(program, {})}
    status, usage, wall, start = launch(argv, env, log_path)
    text = open(log_path, encoding="utf-8", errors="replace").read()
    if status != 0:
        raise RuntimeError(f"{case_name}/{program} failed (exit {status}): python {' '.join(argv)}\n{text[-3000:]}")
    if program != "original":  # ours says how many steps it ran; the original runs ceil(lines / batch)
        done = json.load(open(os.path.join(out, "all_results.json"), encoding="utf-8"))["global_step"]
        if done != steps:
            raise RuntimeError(f"{case_name}/{program} ran {done} steps, the original {steps}")
    shutil.rmtree(out, ignore_errors=True)
    speed = log_speed(text)
    return {"wall_s": round(wall, 2), "step/s": round(speed["step/s"], 4), "own_speed": round(speed["own_speed"], 3),
            "startup_s": round(speed["first_log"] - start, 2), "peak_rss_gb": round(usage.ru_maxrss / 1024 ** 2, 3)}


def case_rows(case_name: str, runs: dict, steps: int, examples: int) -> list[dict]:
    """One table row per program: medians over the repeats, the largest peak, ratios to the original."""
    def summary(rs: list[dict]) -> dict:
        return {"wall": statistics.median(r["wall_s"] for r in rs), "speed": statistics.median(r["step/s"] for r in rs),
                "rss": max(r["peak_rss_gb"] for r in rs), "startup": statistics.median(r["startup_s"] for r in rs)}

    base = summary(runs["original"])
    rows = []
    for program, rs in runs.items():
        s = summary(rs)
        rows.append({"case": case_name, "program": LABELS[program], "wall (s)": round(s["wall"], 1),
                     "x wall (orig/this)": f"{base['wall'] / s['wall']:.2f}x", "step/s (log)": round(s["speed"], 3),
                     "x step/s (this/orig)": f"{s['speed'] / base['speed']:.2f}x", "peak RSS (GB)": round(s["rss"], 2),
                     "x RSS (this/orig)": f"{s['rss'] / base['rss']:.2f}x", "start-up (s)": round(s["startup"], 1),
                     "steps": steps, "_examples": examples, "_runs": rs})
    return rows


def write_table(rows: list[dict], meta: dict, output: str) -> None:
    """output/vs_original.json in scripts/results.py's format, and its rendering beside it (printed)."""
    results = results_script()
    os.makedirs(output, exist_ok=True)
    with open(os.path.join(output, "vs_original.json"), "w", encoding="utf-8") as f:
        json.dump({"name": "vs_original", "rows": rows, "meta": meta}, f, indent=2, ensure_ascii=False)
    results.RESULTS_DIR = output
    results.render(argparse.Namespace(name="vs_original"))


def ensure_model(peers: str) -> str:
    """The random BERT both programs load, built once (make_tiny_model.py is deterministic)."""
    if not all(os.path.isfile(os.path.join(MODEL_DIR, f)) for f in ("config.json", "vocab.txt", "pytorch_model.bin")):
        subprocess.run([sys.executable, os.path.join(peers, "make_tiny_model.py"), "--data", SHARED, "--out",
                        MODEL_DIR], check=True, stdout=subprocess.DEVNULL)
    return MODEL_DIR


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.vs_original", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=100, help="training steps (the prefix is steps x 32 lines)")
    p.add_argument("--repeats", type=int, default=2, help="turns of every program (A B C A B C ...)")
    p.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    p.add_argument("--programs", nargs="+", default=DEFAULT_PROGRAMS, choices=list(PROGRAMS),
                   help="which to run in turns; the original is always one (the ratios are to it)")
    p.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS of every run")
    p.add_argument("--peers", default=PEERS, help="the folder holding bertorch-original/ and make_tiny_model.py")
    p.add_argument("--output", default=os.path.join(ROOT, "results"), help="where vs_original.json and .md go")
    return p


def main(argv=None) -> list[dict]:
    args = build_parser().parse_args(argv)
    if not os.path.isdir(os.path.join(args.peers, "bertorch-original")):
        print(f"vs_original: skipped, the original bertorch is not in {os.path.join(args.peers, 'bertorch-original')}")
        return []
    if args.steps < 2:
        build_parser().error("--steps must be at least 2 (steps/s is measured between two log lines)")
    programs = ["original", *(p for p in dict.fromkeys(args.programs) if p != "original")]
    model = ensure_model(args.peers)
    results = results_script()
    meta = {"hardware": f"{results.cpu_name()}, {os.cpu_count()} cores", "model": model, "batch_size": BATCH_SIZE,
            "max_seq_length": MAX_SEQ_LENGTH, "quick": "1" if args.steps < SMOKE_BELOW_STEPS else "0",
            "date": time.strftime("%Y-%m-%d"), "learning_rate": LEARNING_RATE, "repeats": args.repeats,
            "threads": args.threads, "command": "python -m bench.vs_original " + " ".join(argv or sys.argv[1:]),
            "step/s": "from the timestamps of each program's own training log lines, first to last"}
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as workdir:
        for case_name in args.cases:
            case = CASES[case_name]
            data = os.path.join(workdir, f"{case_name}-train{os.path.splitext(case.source)[1]}")
            examples = prefix_file(os.path.join(SHARED, case.source), data, args.steps * BATCH_SIZE, case.kind)
            steps = math.ceil(examples / BATCH_SIZE)
            runs: dict[str, list[dict]] = {program: [] for program in programs}
            for _ in range(args.repeats):
                for program in programs:
                    runs[program].append(run_once(program, case_name, data, steps, args, workdir))
                    print(f"{case_name:15s} {program:12s} {json.dumps(runs[program][-1])}", flush=True)
            rows += case_rows(case_name, runs, steps, examples)
            write_table(rows, meta, args.output)
    return rows


if __name__ == "__main__":
    main()
