"""The CUDA paths, checked end to end on a GPU machine: training, evaluation and inference (issue 21).

    bash scripts/gpu_check.sh                 # m3e-small; MODEL=DIR for another BERT-family directory
    python scripts/gpu_check.py --plan        # the commands it would run, as JSON (no GPU needed)

Runs, each in a fresh process: one epoch of ChnSentiCorp with --fp16 and with --bf16, Resume NER with a
CRF under --fp16, SimCSE and Sentence-BERT for a few hundred steps, distillation of the classifier into 2
layers, --no-do_train evaluation of every saved model (its metric must equal the training run's), ONNX
export with the parity check on the GPU and the ONNX Predictor on the CUDA provider, and bench.inference
torch vs ONNX on the GPU; with two or more GPUs also the classification under torchrun (nccl) at the
same global batch, whose dev accuracy must agree with the one-process run. Writes one JSON (what ran, the
metrics, samples/s, peak GPU memory) and exits non-zero if anything failed. On a machine without CUDA it
refuses at once (exit 2) instead of falling back to the CPU.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 300  # SimCSE, Sentence-BERT and distillation budgets: minutes on any recent GPU
EVAL_TOLERANCE = 0.005  # eval-only vs the training run's final metric (autocast kernels may differ slightly)
DDP_TOLERANCE = 0.02  # 2 processes x 16 vs 1 x 32: same global batches, other reduction order and dropout draws


def run_flags(out: str, precision: str) -> list[str]:
    return ["--saved_dir", out, "--overwrite_output_dir", "--save_steps", "0", "--logging_steps", "50",
            f"--{precision}"]


def plan(model: str, data_dir: str, out: str, gpus: int) -> list[dict]:
    """Every step: a name, the argv after `python`, what it leaves, and what its result is checked against."""
    d = lambda *p: os.path.join(out, *p)  # noqa: E731
    common = ["--pretrained_model_name_or_path", model, "--data_dir", data_dir]
    cls_data = ["--train_data_file", "chnsenticorp/train.tsv", "--dev_data_file", "chnsenticorp/dev.tsv",
                "--label_file", "chnsenticorp/labels.txt"]
    cls_recipe = ["--epochs", "1", "--learning_rate", "1e-4", "--warmup_proportion", "0.1", "--max_seq_length", "128"]
    ner_data = ["--train_data_file", "ner/resume/train.json", "--dev_data_file", "ner/resume/dev.json",
                "--label_file", "ner/resume/labels.txt"]
    sts_dev = ["--dev_data_file", "stsb/sts-b-dev.txt"]
    steps = [
        {"name": "classifier_fp16", "argv": ["run_classifier.py", *common, *cls_data, *cls_recipe, "--batch_size", "32",
                                            "--save_best_model", *run_flags(d("cls_fp16"), "fp16")],
         "model_dir": d("cls_fp16"), "metric": "accuracy", "min": 0.85, "batch": 32},
        {"name": "classifier_bf16", "argv": ["run_classifier.py", *common, *cls_data, *cls_recipe, "--batch_size", "32",
                                            *run_flags(d("cls_bf16"), "bf16")],
         "model_dir": d("cls_bf16"), "metric": "accuracy", "min": 0.85, "batch": 32, "needs": "bf16"},
        {"name": "ner_crf_fp16", "argv": ["run_ner.py", *common, *ner_data, "--use_crf", "--epochs", "1",
                                         "--learning_rate", "1e-4", "--batch_size", "32",
                                         *run_flags(d("ner_crf"), "fp16")],
         "model_dir": d("ner_crf"), "metric": "f1", "min": 0.5, "batch": 32},
        {"name": "simcse_fp16", "argv": ["run_simcse.py", *common, "--train_data_file", "unsup/sentences.txt",
                                        *sts_dev, "--pooling_mode", "mean", "--max_steps", str(STEPS),
                                        "--batch_size", "64", "--learning_rate", "3e-5",
                                        *run_flags(d("simcse"), "fp16")],
         "model_dir": d("simcse"), "metric": "spearman", "min": 0.5, "batch": 64},
        {"name": "sentencebert_fp16", "argv": ["run_sentencebert.py", *common, "--train_data_file", "afqmc/train.txt",
                                              "--dev_data_file", "afqmc/dev.txt", "--label_file", "afqmc/labels.txt",
                                              "--max_steps", str(STEPS), "--batch_size", "32",
                                              *run_flags(d("sbert"), "fp16")],
         "model_dir": d("sbert"), "metric": "accuracy", "min": 0.6, "batch": 32},
        {"name": "distill_2_layers_fp16", "argv": ["run_distill.py", "--task", "classification", "--teacher_model_dir",
                                                  d("cls_fp16", "best"), "--student_layers", "2", "--data_dir",
                                                  data_dir, *cls_data, "--max_steps", str(STEPS), "--batch_size", "32",
                                                  *run_flags(d("distill"), "fp16")],
         "model_dir": d("distill"), "metric": "accuracy", "min": 0.8, "batch": 32},
    ]
    evals = [("classifier_fp16", "run_classifier.py", cls_data), ("ner_crf_fp16", "run_ner.py", ner_data),
             ("simcse_fp16", "run_simcse.py", sts_dev),
             ("sentencebert_fp16", "run_sentencebert.py", ["--dev_data_file", "afqmc/dev.txt", "--label_file",
                                                           "afqmc/labels.txt"])]
    trained = {s["name"]: s for s in steps}
    for name, script, data in evals:
        source = trained[name]
        steps.append({"name": f"eval_only_{name}", "argv": [script, "--no-do_train", "--pretrained_model_name_or_path",
                                                           source["model_dir"], "--data_dir", data_dir, *data,
                                                           *run_flags(d(f"eval_{name}"), "fp16")],
                      "model_dir": d(f"eval_{name}"), "metric": source["metric"], "equals": name})
    onnx_dir = d("onnx_cls")
    steps += [
        {"name": "onnx_export_parity_gpu", "argv": ["export_onnx.py", "--model_dir", d("cls_fp16", "best"), "--output",
                                                   onnx_dir, "--quantize", "int8", "--dev_file",
                                                   os.path.join(data_dir, "chnsenticorp", "dev.tsv"), "--limit", "512"]},
        {"name": "onnx_predictor_cuda", "argv": [os.path.join("scripts", "gpu_check.py"), "--onnx_predictor",
                                                d("cls_fp16", "best"), onnx_dir,
                                                os.path.join(data_dir, "chnsenticorp", "dev.tsv")]},
        {"name": "bench_inference_gpu", "argv": ["-m", "bench.inference", "--model_dir", d("cls_fp16", "best"),
                                                "--dev_file", os.path.join(data_dir, "chnsenticorp", "dev.tsv"),
                                                "--onnx_dir", onnx_dir, "--device", "cuda", "--limit", "512",
                                                "--output", d("bench_inference.json")]},
    ]
    if gpus >= 2:
        steps.append({"name": "classifier_fp16_torchrun_2", "launcher": "torchrun",
                      "argv": ["run_classifier.py", *common, *cls_data, *cls_recipe, "--batch_size", "16",
                               *run_flags(d("cls_ddp"), "fp16")],
                      "model_dir": d("cls_ddp"), "metric": "accuracy", "agrees_with": "classifier_fp16"})
    return steps


def onnx_predictor_check(model_dir: str, onnx_dir: str, dev_file: str) -> None:
    """The ONNX Predictor on the CUDA provider labels the dev texts as the PyTorch Predictor does."""
    sys.path.insert(0, ROOT)
    from bertorch.predict import Predictor

    texts = [line.split("\t")[0] for line in open(dev_file, encoding="utf-8") if line.strip()][:256]
    onnx = Predictor.from_pretrained(onnx_dir, backend="onnx", device="cuda")
    providers = onnx.backend.providers
    if "CUDAExecutionProvider" not in providers:
        raise SystemExit(f"error: the ONNX Predictor runs on {providers}, not CUDAExecutionProvider "
                         f"(install onnxruntime-gpu instead of onnxruntime)")
    torch_labels = Predictor.from_pretrained(model_dir, backend="torch", device="cuda").predict(texts)
    onnx_labels = onnx.predict(texts)
    agree = sum(a == b for a, b in zip(torch_labels, onnx_labels)) / len(texts)
    print(json.dumps({"providers": providers, "agreement": agree}))
    if agree < 0.99:
        raise SystemExit(f"error: ONNX on CUDA agrees with PyTorch on {agree:.1%} of {len(texts)} texts")


def run_step(step: dict, env: dict, log_dir: str) -> dict:
    argv = step["argv"]
    if step.get("launcher") == "torchrun":
        command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", *argv]
    else:
        command = [sys.executable, *argv]
    log = os.path.join(log_dir, f"{step['name']}.log")
    start = time.perf_counter()
    with open(log, "w", encoding="utf-8") as f:
        proc = subprocess.run(command, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT)
    row = {"name": step["name"], "command": " ".join(command[1:]), "seconds": round(time.perf_counter() - start, 1),
           "ok": proc.returncode == 0, "log": log}
    if not row["ok"]:
        row["error"] = f"exit {proc.returncode}: " + open(log, encoding="utf-8").read()[-1500:]
        return row
    if "model_dir" in step:
        results = json.load(open(os.path.join(step["model_dir"], "all_results.json"), encoding="utf-8"))
        row["metric"] = step["metric"]
        row["value"] = results.get(f"final_{step['metric']}")
        row["peak_gpu_memory_gb"] = results.get("peak_gpu_memory_gb")
        if results.get("train_seconds"):
            row["samples_per_s"] = round(results["global_step"] * step.get("batch", 0) / results["train_seconds"], 1)
        if row["value"] is None or row["value"] != row["value"]:  # missing or NaN
            row["ok"], row["error"] = False, f"no final_{step['metric']} in all_results.json"
        elif "min" in step and row["value"] < step["min"]:
            row["ok"], row["error"] = False, f"{step['metric']} {row['value']:.4f} below {step['min']}"
    return row


def check_against(row: dict, step: dict, done: dict) -> None:
    """eval-only must reproduce its training run's metric; 2-process DDP must agree with one process."""
    for key, tolerance in (("equals", EVAL_TOLERANCE), ("agrees_with", DDP_TOLERANCE)):
        other = done.get(step.get(key))
        if not row["ok"] or other is None or other.get("value") is None:
            continue
        row["reference"] = other["value"]
        if abs(row["value"] - other["value"]) > tolerance:
            row["ok"], row["error"] = False, (f"{row['metric']} {row['value']:.4f} vs {other['value']:.4f} of "
                                              f"{other['name']} (tolerance {tolerance})")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=os.environ.get("MODEL"), help="default: $MODEL, else m3e-small")
    p.add_argument("--data_dir", default=os.environ.get("DATA_DIR", os.path.join(os.path.dirname(ROOT), "shared", "data")))
    p.add_argument("--out", default=os.environ.get("OUT", os.path.join(ROOT, "outputs", "gpu_check")))
    p.add_argument("--result", default=os.environ.get("RESULT", os.path.join(ROOT, "results", "gpu_check.json")))
    p.add_argument("--plan", action="store_true", help="print the steps as JSON and exit (no GPU needed)")
    p.add_argument("--onnx_predictor", nargs=3, metavar=("MODEL_DIR", "ONNX_DIR", "DEV_FILE"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.onnx_predictor:
        onnx_predictor_check(*args.onnx_predictor)
        return 0
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if args.plan:
        print(json.dumps(plan(args.model or "MODEL", args.data_dir, args.out, max(gpus, 2)), indent=2))
        return 0
    if gpus == 0:
        print(f"error: no CUDA device: torch {torch.__version__} (CUDA build: {torch.version.cuda or 'none'}) "
              f"sees no GPU. This check runs on a CUDA machine only and does not fall back to the CPU; "
              f"see the README's GPU section for the packages it needs.", file=sys.stderr)
        return 2
    if args.model is None:
        sys.path.insert(0, ROOT)
        from bertorch.pretrained import fetch_m3e_small
        args.model = fetch_m3e_small()
    os.makedirs(args.out, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    report = {"torch": torch.__version__, "cuda": torch.version.cuda, "gpus": gpus,
              "gpu_name": torch.cuda.get_device_name(0), "bf16_supported": torch.cuda.is_bf16_supported(),
              "model": args.model, "started": time.strftime("%Y-%m-%d %H:%M:%S"), "steps": []}
    done: dict[str, dict] = {}
    for step in plan(args.model, args.data_dir, args.out, gpus):
        if step.get("needs") == "bf16" and not report["bf16_supported"]:
            row = {"name": step["name"], "ok": True, "skipped": "this GPU has no bf16"}
        else:
            row = run_step(step, env, args.out)
            check_against(row, step, done)
        done[step["name"]] = row
        report["steps"].append(row)
        print(f"{'ok  ' if row['ok'] else 'FAIL'} {row['name']} {row.get('value', '')} "
              f"{row.get('seconds', '')}s {row.get('error', '')[:300]}", flush=True)
        os.makedirs(os.path.dirname(os.path.abspath(args.result)), exist_ok=True)
        with open(args.result, "w", encoding="utf-8") as f:  # rewritten after every step: a crash keeps the rest
            json.dump(report, f, indent=2, ensure_ascii=False)
    failed = [r["name"] for r in report["steps"] if not r["ok"]]
    print(f"{len(report['steps']) - len(failed)} passed, {len(failed)} failed" + (f": {failed}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
