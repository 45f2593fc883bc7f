"""Collect result rows from training runs and render them as a markdown table.

    python scripts/results.py add NAME --run OUTDIR --set dataset=msra --set head=CRF \
        --metric f1=best_f1 [--metric ...]            # appends a row to results/NAME.json
    python scripts/results.py render NAME             # writes results/NAME.md and prints it

--set columns identify a row (a rerun with the same ones replaces it); --value columns only describe it.

A metric is `column=key` where key is read from OUTDIR/all_results.json (or any JSON given by --file).
Rows keep the hardware, model and budget they were measured with, so a table says where it came from.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time

RESULTS_DIR = os.environ.get("RESULTS", os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                                     "results"))


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine() -> str:
    """The CPU and its core count, shortened: "Intel Xeon, 2 cores"."""
    name = cpu_name().replace("(R)", "").replace("(TM)", "").replace(" Processor", "").replace(" CPU", "")
    return f"{' '.join(name.split())}, {os.cpu_count()} cores"


def load(name: str) -> dict:
    path = os.path.join(RESULTS_DIR, f"{name}.json")
    if os.path.exists(path):
        return json.load(open(path, encoding="utf-8"))
    return {"name": name, "rows": []}


def add(args) -> None:
    table = load(args.name)
    values, sources = {}, []
    if args.run:
        sources.append(os.path.join(args.run, "all_results.json"))
        values.update(json.load(open(sources[-1], encoding="utf-8")))
    if args.file:  # alone or beside --run: its values win
        sources.append(args.file)
        found = json.load(open(args.file, encoding="utf-8"))
        found = found[args.index] if isinstance(found, list) else found  # a list: bench/inference.py rows
        budget = {k: values[k] for k in ("global_step", "train_seconds") if k in values}
        values.update(found)
        values.update(budget)  # beside --run (an evaluation of its model): the budget stays the run's
    source = " + ".join(sources)
    identity = dict(kv.split("=", 1) for kv in args.set)  # a rerun of the same row replaces it
    row = {**identity, **dict(kv.split("=", 1) for kv in args.value)}
    for spec in args.metric:
        column, key = spec.split("=", 1)
        value = values.get(key)
        if value is None:
            raise SystemExit(f"{source}: no value for {key!r} (have: {', '.join(values)})")
        row[column] = round(value, 4) if isinstance(value, float) else value
    if args.run:  # a training run: every row of a table gets the same budget columns ("-" where there is none)
        recipe = read_recipe(args.run)
        trained = recipe.pop("trained", True)
        by_epochs = trained and recipe.get("max_steps", -1) <= 0 and "epochs" in recipe  # else steps say it
        lr = recipe.get("learning_rate")
        row.setdefault("epochs", recipe["epochs"] if by_epochs else "-")
        row.setdefault("lr", f"{lr:.0e}".replace("e-0", "e-") if trained and lr else "-")  # "1e-4", not 0.0001
        row.setdefault("steps", values.get("global_step", "-") if trained else "-")
        row.setdefault("train time (s)", round(values["train_seconds"]) if trained and "train_seconds" in values
                       else "-")
        row["_recipe"] = recipe  # the flags that decide the result and the command line, kept in the JSON
        # the dev curve that scripts/plot_results.py draws: --curve's key, else the row's first metric
        curve_key = args.curve or (args.metric[0].split("=", 1)[1] if args.metric else None)
        row["_curve"] = read_curve(args.run, curve_key) if curve_key and trained else []
    else:  # a --file row (a benchmark) states its budget when it has one
        if "global_step" in values:
            row.setdefault("steps", values["global_step"])
        if "train_seconds" in values:
            row.setdefault("train time (s)", round(values["train_seconds"]))
    row["_machine"] = machine()  # rows of one table may come from different machines (reruns of a few rows)
    table["rows"] = [r for r in table["rows"] if any(r.get(k) != v for k, v in identity.items())]
    table["rows"].append(row)
    table["meta"] = {"hardware": machine(), "model": os.environ.get("MODEL", ""),
                     "batch_size": os.environ.get("BATCH_SIZE", ""),
                     "max_seq_length": os.environ.get("MAX_SEQ_LENGTH", ""),
                     "quick": os.environ.get("QUICK", "0"), "date": time.strftime("%Y-%m-%d")}
    os.makedirs(RESULTS_DIR, exist_ok=True)
    with open(os.path.join(RESULTS_DIR, f"{args.name}.json"), "w", encoding="utf-8") as f:
        json.dump(table, f, indent=2, ensure_ascii=False)


BUDGET_COLUMNS = ("train batch", "max length", "train dtype", "epochs", "lr", "steps", "train time (s)")
# the header states a table's batch size, max length and train dtype; where its rows differ (a sweep of one of
# them, a row rerun under --bf16), each row says its own, from its recipe
SHAPE_COLUMNS = {"train batch": "batch_size", "max length": "max_seq_length", "train dtype": "dtype"}
RECIPE_KEYS = ("epochs", "max_steps", "learning_rate", "warmup_proportion", "weight_decay", "batch_size",
               "max_seq_length", "crf_learning_rate", "layerwise_lr_decay", "pooling_mode", "scheduler", "seed")


def read_recipe(run_dir: str) -> dict:
    """The recipe of a run from its training_args.json (written by every training script): the flags that
    decide its result, and the command line as given."""
    path = os.path.join(run_dir, "training_args.json")
    if not os.path.exists(path):
        return {}
    flags = json.load(open(path, encoding="utf-8"))
    if not flags.get("do_train", True):  # an evaluation of a model as it is: no recipe of its own
        recipe = {"trained": False}
    else:
        recipe = {k: flags[k] for k in RECIPE_KEYS if flags.get(k) is not None}
        recipe["dtype"] = train_dtype(bool(flags.get("bf16")), bool(flags.get("fp16")))
    if "argv" in flags:
        recipe["command"] = " ".join([flags.get("script", ""), *flags["argv"]]).strip()
    return recipe


def train_dtype(bf16: bool, fp16: bool) -> str:
    """The dtype a run trained in: autocast is opt-in, so without --bf16 / --fp16 it is fp32."""
    return "bf16" if bf16 else "fp16" if fp16 else "fp32"


def recipe_value(recipe: dict, key: str):
    """A recipe's value for a SHAPE_COLUMNS key; a training run recorded before the dtype was kept says its own
    in its command line; an evaluation (no epochs: nothing trained) has none."""
    if key == "dtype" and key not in recipe and "command" in recipe and "epochs" in recipe:
        flags = recipe["command"].split()
        return train_dtype("--bf16" in flags, "--fp16" in flags)
    return recipe.get(key)


def read_curve(run_dir: str, key: str) -> list[list]:
    """[[step, value], ...] of the dev evaluations in the run's metrics.jsonl for a results key such as
    best_f1 or final_word_f1 (the metric without its best_/final_ prefix)."""
    path = os.path.join(run_dir, "metrics.jsonl")
    metric = key.split("_", 1)[1] if key.startswith(("best_", "final_")) else key
    if not os.path.exists(path):
        return []
    rows = [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]
    return [[r["step"], round(r[metric], 4)] for r in rows if r.get("kind") == "eval" and metric in r]


def cell(value) -> str:
    """Scores (below 1) keep 4 decimals; speeds, ratios and times keep 3 significant figures or whole units;
    big counts get thousands separators."""
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    if not isinstance(value, float):
        return str(value)
    magnitude = abs(value)
    return f"{value:.4f}" if magnitude < 1 else f"{value:.2f}" if magnitude < 10 else f"{value:.1f}" if magnitude < 100 else f"{value:.0f}"


def render(args) -> str:
    table = load(args.name)
    columns: list[str] = []
    for row in table["rows"]:
        columns += [c for c in row if c not in columns]
    columns = [c for c in columns if not c.startswith("_")]  # "_" columns only identify rows
    meta = dict(table.get("meta", {}))
    for column, key in SHAPE_COLUMNS.items():
        found = [recipe_value(r.get("_recipe", {}), key) for r in table["rows"]]
        values = set(found) - {None}
        # a dtype other than fp32 is said per row when some rows cannot say theirs (older rows, evaluations)
        unsaid = key == "dtype" and values - {"fp32"} and None in found
        if len(values) > 1 or unsaid:  # rows without a recipe (evaluations, older rows) read "-"
            for row, value in zip(table["rows"], found):
                row[column] = value or "-"
            columns.append(column)
            meta[key] = "per row"
        elif values and not meta.get(key):
            meta[key] = values.pop()
    # measurements first (in their order), then recipe, budget and cost in BUDGET_COLUMNS' order
    columns.sort(key=lambda c: BUDGET_COLUMNS.index(c) + 1 if c in BUDGET_COLUMNS else 0)
    machines = {r.get("_machine", meta.get("hardware", "?")) for r in table["rows"]}
    if len(machines) > 1:  # say per row where it was measured
        for row in table["rows"]:
            row["machine"] = row.get("_machine", meta.get("hardware", "?"))
        columns.append("machine")
        meta = {**meta, "hardware": " / ".join(sorted(machines))}
    lines = [f"<!-- written by scripts/results.py from results/{args.name}.json -->",
             f"Measured on {meta.get('hardware', '?')}; model `{os.path.basename(meta.get('model', '').rstrip('/'))}`; "
             f"batch {meta.get('batch_size', '?')}, max length {meta.get('max_seq_length', '?')}"
             f"{'' if meta.get('dtype', 'fp32') in ('fp32', 'per row') else ', trained in ' + meta['dtype']}; "
             f"{meta.get('date', '')}"
             + (" (QUICK mode: pipeline check, not real figures)" if meta.get("quick") == "1" else ""), "",
             "| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    for row in table["rows"]:
        # a budget cell a row lacks (an evaluation-only row, a row from before recipes were kept) reads "-"
        lines.append("| " + " | ".join(cell(row.get(c, "-" if c in BUDGET_COLUMNS else "")) for c in columns) + " |")
    text = "\n".join(lines) + "\n"
    with open(os.path.join(RESULTS_DIR, f"{args.name}.md"), "w", encoding="utf-8") as f:
        f.write(text)
    print(text)
    return text


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p_add = sub.add_parser("add")
    p_add.add_argument("name")
    p_add.add_argument("--run", default=None, help="a run directory: its all_results.json")
    p_add.add_argument("--file", default=None, help="a JSON file (object, or list of rows with --index)")
    p_add.add_argument("--index", type=int, default=0, help="row of a JSON list given by --file")
    p_add.add_argument("--set", action="append", default=[], help="COLUMN=VALUE identifying the row")
    p_add.add_argument("--value", action="append", default=[], help="COLUMN=VALUE describing the row, not its identity")
    p_add.add_argument("--metric", action="append", default=[])
    p_add.add_argument("--curve", default=None, help="the results key whose dev curve the row keeps, e.g. best_f1 "
                       "(default: the first --metric's)")
    p_render = sub.add_parser("render")
    p_render.add_argument("name")
    args = parser.parse_args(argv)
    add(args) if args.command == "add" else render(args)


if __name__ == "__main__":
    main()
