"""Training throughput and peak memory, measured side by side in one run.

Each case trains a fixed number of steps with the real entry script in a fresh process, once per padding
mode, and reports samples/s, tokens/s (real and padded) and peak RSS, as ratios to the baselines:
  ours     dynamic padding + length grouping (the default)
  longest  dynamic padding, no grouping (what the original bertorch does)
  max_len  every batch padded to --max_seq_length
The model is a random BERT (4 layers, hidden 312, 12 heads, FFN 1200; `--model_config tiny`: 2 x 64 for
smoke runs) with the data's character vocab, so nothing is downloaded.

    python -m bench.train_throughput --steps 40 [--cases classification ner_linear ner_crf ner_global_pointer simcse sbert]
    python -m bench   # this, then inference throughput, with a summary of every ratio (bench/__main__.py)
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
MODEL_CONFIGS = {"bench": dict(hidden_size=312, num_layers=4, num_heads=12, intermediate_size=1200),
                 "tiny": dict(hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128)}

# case -> (script, data flags, text reader for the vocab, samples per step multiplier)
CASES = {
    "classification": ("run_classifier.py", ["--train_data_file", "chnsenticorp/train.tsv",
                                             "--label_file", "chnsenticorp/labels.txt"], "chnsenticorp/train.tsv"),
    "ner_linear": ("run_ner.py", ["--train_data_file", "ner/resume/train.json",
                                  "--label_file", "ner/resume/labels.txt"], "ner/resume/train.json"),
    "ner_crf": ("run_ner.py", ["--train_data_file", "ner/resume/train.json", "--label_file",
                               "ner/resume/labels.txt", "--use_crf"], "ner/resume/train.json"),
    "ner_global_pointer": ("run_ner.py", ["--train_data_file", "ner/resume/train.json", "--label_file",
                                          "ner/resume/labels.txt", "--head", "global_pointer"], "ner/resume/train.json"),
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


def build_model(vocab_source: str, out: str, config: str = "bench") -> str:
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    from bertorch.models.random_init import build_char_vocab, make_random_bert

    vocab = build_char_vocab(data_texts(os.path.join(SHARED, vocab_source)))
    return make_random_bert(out, vocab, **MODEL_CONFIGS[config])


def warm_up() -> None:
    """Import what the entry scripts import, so forked runs start at once. No tensor work here: a child
    forked after OpenMP ran in its parent can hang."""
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401 -- training_curves.png, drawn at the end of every run
    import transformers.models.bert.modeling_bert  # noqa: F401

    import bertorch.cli  # noqa: F401


def run_child(argv: list[str], env: dict, fork: bool, quiet: bool = True) -> tuple[int, object, str]:
    """Run `python ARGV` (a script path, or `-m module`) in a child process: (exit status, rusage, stderr tail).

    fork=True forks this (warmed-up) process and runs the script in the child, skipping ~5 s of imports a
    run; the child's peak RSS includes those imports as a fresh process's would. fork=False spawns a fresh
    interpreter, so variables such as OMP_NUM_THREADS that libraries read when loaded take effect.
    quiet: the child's stdout is discarded (else it is ours).
    """
    if fork:
        return forked(lambda: run_script(argv, env), quiet)
    proc = subprocess.Popen([sys.executable, *argv], stdout=subprocess.DEVNULL if quiet else None,
                            stderr=subprocess.PIPE, text=True, env=env)
    stderr = proc.stderr.read()  # before waiting: a full pipe would block the child
    _, status, usage = os.wait4(proc.pid, 0)
    return os.waitstatus_to_exitcode(status), usage, stderr[-3000:]


def run_script(argv: list[str], env: dict) -> None:
    """What `python ARGV` does, in this process."""
    import runpy

    os.environ.clear()
    os.environ.update(env)
    if argv[0] == "-m":
        sys.argv = argv[1:]
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
    else:
        sys.argv = list(argv)
        runpy.run_path(argv[0], run_name="__main__")


def forked(target, quiet: bool = True) -> tuple[int, object, str]:
    """Call target() in a fork of this process: (exit status, rusage, stderr tail)."""
    with tempfile.TemporaryFile("w+", encoding="utf-8") as err:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the child never returns
            code = 1
            try:
                os.dup2(err.fileno(), 2)
                if quiet:
                    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
                target()
                code = 0
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else 0 if e.code is None else 1
                if not isinstance(e.code, (int, type(None))):
                    print(e.code, file=sys.stderr)
            except BaseException:  # noqa: BLE001 -- reported in the parent with the stderr tail
                import traceback
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        _, status, usage = os.wait4(pid, 0)
        err.seek(0)
        return os.waitstatus_to_exitcode(status), usage, err.read()[-3000:]


def run_once(case: str, mode: str, model: str, args, workdir: str) -> dict:
    script, data_flags, _ = CASES[case]
    out = os.path.join(workdir, f"{case}-{mode}")
    argv = [os.path.join(ROOT, script), "--pretrained_model_name_or_path", model, *data_flags,
            "--data_dir", SHARED, "--saved_dir", out, "--overwrite_output_dir", "--batch_size", str(args.batch_size),
            "--max_seq_length", str(args.max_seq_length), "--max_steps", str(args.steps),
            "--logging_steps", str(args.log_every), "--save_steps", "0", *MODES[mode], *args.extra]
    env = {**os.environ, **dict(kv.split("=", 1) for kv in args.env)}
    status, usage, stderr = run_child(argv, env, args.fork)
    if status != 0:
        raise RuntimeError(f"{case}/{mode} failed:\n{stderr}")
    rows = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"), encoding="utf-8")]
    windows = [r for r in rows if r["kind"] == "train"][1:]  # the first window includes warm-up
    if not windows:
        raise RuntimeError(f"{case}/{mode}: no timed window; give --steps at least 2 x --log_every")
    mean = lambda key: sum(r[key] for r in windows) / len(windows)  # noqa: E731
    return {"step/s": mean("speed"), "samples/s": mean("speed") * args.batch_size,
            "tokens/s": mean("tokens_per_s"), "pad_fraction": mean("pad_fraction"),
            "peak_rss_gb": usage.ru_maxrss / 1024 ** 2}


def build_model_in_child(case: str, out: str, config: str, fork: bool) -> str:
    """The random model of a case; built in a child when forking, so this process runs no tensor code."""
    if not fork:
        return build_model(CASES[case][2], out, config)
    status, _, stderr = forked(lambda: build_model(CASES[case][2], out, config))
    if status != 0:
        raise RuntimeError(f"building the {case} model failed:\n{stderr}")
    return out


def report_line(case: str, mode: str, base: dict) -> str:
    r = base[mode]
    line = (f"{case:15s} {mode:8s} {r['samples/s']:7.1f} samples/s  {r['step/s']:5.2f} step/s  "
            f"{r['tokens/s']:7.0f} tokens/s  padding {r['pad_fraction']:5.1%}  peak RSS {r['peak_rss_gb']:.2f} GB")
    for ref in ("longest", "max_len"):
        if ref in base and ref != mode:
            line += f"  x{r['samples/s'] / base[ref]['samples/s']:.2f} vs {ref}"
    return line


RUN_DEFAULTS = {"cases": ["classification"], "modes": list(MODES), "steps": 40, "batch_size": 32,
                "max_seq_length": 128, "fork": False}


def add_run_args(parser: argparse.ArgumentParser, defaults: dict, quick: dict | None = None) -> None:
    """The flags `python -m bench` shares: which cases and padding modes, how long and how big a run.
    With `quick` (bench's --quick budget) the size flags default to None and their help names both
    budgets; the caller picks one after parsing."""
    def sized(key: str) -> dict:
        if quick is None:
            return {"default": defaults[key], "help": f"default {defaults[key]}"}
        return {"default": None, "help": f"default {defaults[key]}; quick {quick[key]}"}

    parser.add_argument("--cases", nargs="+", default=defaults["cases"], choices=sorted(CASES), help="training cases")
    parser.add_argument("--modes", nargs="+", default=defaults["modes"], choices=list(MODES),
                        help="padding modes; ratios are to 'longest' (the original bertorch) and 'max_len'")
    parser.add_argument("--steps", type=int, **sized("steps"))
    parser.add_argument("--batch_size", type=int, **sized("batch_size"))
    parser.add_argument("--max_seq_length", type=int, **sized("max_seq_length"))
    parser.add_argument("--fork", action=argparse.BooleanOptionalAction,
                        default=None if quick is not None else defaults["fork"],
                        help="run each training in a fork of this warmed-up process instead of a fresh python "
                             "(no start-up cost; --env variables read at library load time then have no effect)"
                             + ("; default: only with --quick" if quick is not None else ""))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_args(parser, RUN_DEFAULTS)
    parser.add_argument("--log_every", type=int, default=5)
    parser.add_argument("--model_config", choices=list(MODEL_CONFIGS), default="bench",
                        help="bench: 4 layers x 312 (the issue's target); tiny: 2 x 64, for smoke runs")
    parser.add_argument("--env", nargs="*", default=[], help="KEY=VALUE environment for the runs")
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more flags for the scripts")
    parser.add_argument("--output", default=None, help="write the results as JSON here")
    return parser


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    if args.fork:
        warm_up()
    results: dict = {}
    with tempfile.TemporaryDirectory() as workdir:
        models: dict[str, str] = {}  # vocab source -> model (the two NER cases share one)
        for case in args.cases:
            source = CASES[case][2]
            if source not in models:
                models[source] = build_model_in_child(case, os.path.join(workdir, f"model-{case}"),
                                                      args.model_config, args.fork)
            model = models[source]
            results[case] = {mode: run_once(case, mode, model, args, workdir) for mode in args.modes}
            for mode in results[case]:
                print(report_line(case, mode, results[case]), flush=True)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    main()
