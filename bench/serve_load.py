"""Load test of `python -m bertorch.serve` on 127.0.0.1: dynamic batching vs one at a time, PyTorch vs ONNX int8.

Four servers (torch / onnx int8, each with dynamic batching and with --max_batch_size 1) run as subprocesses;
bounded sets of httpx async clients send ChnSentiCorp dev texts, one per request, a fixed count per level.
Levels take turns server by server, so a burst of load from elsewhere on a shared machine hits all alike.
Per server and concurrency it prints requests/s, items/s, p50/p95/p99 latency, the mean batch the
server ran, and how many answers equal the Predictor's own answer for that text alone (same backend).
Then: a burst of --burst requests at once (every answer must be 200 or 429, each 200 equal to the
Predictor's), and a memory soak (the server's RSS sampled while clients keep it busy).

    python -m bench.serve_load --model_dir /tmp/serve_model --dev_file chnsenticorp/dev.tsv \
        --onnx_dir /tmp/serve_onnx --output results/serve_load.json      # also writes results/serve_load.md
    python -m bench.serve_load --model_dir DIR --dev_file F --quick      # a smoke run: checks, does not measure

Clients and servers share the machine's cores: the figures are those of one box doing both.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

TIMEOUT = 120.0  # s: the bound on any one request, and on a server's start
TOL = 1e-4  # probabilities of a batched answer vs the text alone (fp32 padding noise is ~1e-6; dynamic int8
# quantises activations with one scale per batch tensor, so its answers move with the company they keep)
QUICK = {"clients": [1, 4], "requests": [4, 8], "burst": 24, "soak_seconds": 3.0}
SERVERS = {  # name -> (backend flags, batching flags)
    "torch dynamic": ([], []),
    "torch one-at-a-time": ([], ["--max_batch_size", "1"]),
    "onnx int8 dynamic": (["--backend", "onnx", "--int8"], []),
    "onnx int8 one-at-a-time": (["--backend", "onnx", "--int8"], ["--max_batch_size", "1"]),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One `python -m bertorch.serve` subprocess on a free port of 127.0.0.1."""

    def __init__(self, name: str, model_dir: str, onnx_dir: str, flags: list[str], log_dir: str):
        self.name, self.port = name, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        backend = flags + (["--onnx_dir", onnx_dir] if "onnx" in flags else [])
        self.log = open(os.path.join(log_dir, name.replace(" ", "_") + ".log"), "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "bertorch.serve", "--model_dir", model_dir,
                                      "--port", str(self.port), "--log_level", "warning", *backend], cwd=ROOT,
                                     env={**os.environ, "PYTHONPATH": ROOT}, stdout=self.log, stderr=subprocess.STDOUT)

    async def ready(self, client) -> None:
        import httpx

        for _ in range(int(TIMEOUT / 0.2)):
            if self.proc.poll() is not None:
                raise SystemExit(f"{self.name} exited with {self.proc.returncode}: see {self.log.name}")
            try:
                if (await client.get(self.url + "/health")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.2)
        raise SystemExit(f"{self.name} not ready after {TIMEOUT:.0f} s: see {self.log.name}")

    def rss_mb(self) -> float:
        with open(f"/proc/{self.proc.pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024

    def stop(self) -> int:
        """SIGTERM: the server drains and should exit 0."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(timeout=TIMEOUT)
        finally:
            self.log.close()


async def batches_run(client, url: str) -> tuple[float, float]:
    """(inputs, batches) the server has run so far, from its Prometheus metrics."""
    values = {}
    for line in (await client.get(url + "/metrics")).text.splitlines():
        if line.startswith(("bertorch_batch_size_sum ", "bertorch_batch_size_count ")):
            name, value = line.split()
            values[name] = float(value)
    return values.get("bertorch_batch_size_sum", 0.0), values.get("bertorch_batch_size_count", 0.0)


async def post(client, url: str, inputs: list[str]):
    start = time.perf_counter()
    r = await client.post(url + "/predict", json={"inputs": inputs, "return_probs": True})
    return r, time.perf_counter() - start


def matches(answer: dict, reference: dict, tol: float) -> bool:
    """Same label, and probabilities within `tol` (batched and single padding differ by float noise)."""
    return same_label(answer, reference) and all(abs(answer["probs"][k] - v) <= tol
                                                 for k, v in reference["probs"].items())


def same_label(answer: dict, reference: dict) -> bool:
    return answer["label"] == reference["label"]


def request_texts(texts: list[str], i: int, k: int) -> list[str]:
    return [texts[(i * k + j) % len(texts)] for j in range(k)]


async def level(client, server: Server, texts: list[str], clients: int, n: int, k: int, reference: dict,
                tol: float) -> dict:
    """n requests of k texts from `clients` concurrent clients, each sending its next request as soon as
    it has an answer."""
    todo, latencies, statuses, agree, labels = iter(range(n)), [], Counter(), 0, 0
    before = await batches_run(client, server.url)

    async def one_client():
        nonlocal agree, labels
        for i in todo:
            inputs = request_texts(texts, i, k)
            r, seconds = await post(client, server.url, inputs)
            statuses[r.status_code] += 1
            if r.status_code == 200:
                latencies.append(seconds)
                pairs = list(zip(r.json()["predictions"], (reference[t] for t in inputs)))
                agree += sum(matches(a, ref, tol) for a, ref in pairs)
                labels += sum(same_label(a, ref) for a, ref in pairs)

    start = time.perf_counter()
    await asyncio.gather(*[one_client() for _ in range(clients)])
    wall = time.perf_counter() - start
    after = await batches_run(client, server.url)
    ms = 1000 * np.asarray(latencies or [float("nan")])
    return {"server": server.name, "clients": clients, "requests": n, "items": n * k, "statuses": dict(statuses),
            "requests_per_s": len(latencies) / wall, "items_per_s": k * len(latencies) / wall,
            "p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
            "p99_ms": float(np.percentile(ms, 99)),
            "mean_batch": (after[0] - before[0]) / max(after[1] - before[1], 1), "agree": agree,
            "same_label": labels}


async def burst(client, server: Server, texts: list[str], predictor, tol: float) -> dict:
    """All at once: every answer 200 or 429 (none lost), each 200 equal to the Predictor on its text alone."""
    import httpx

    async def one(text):
        try:
            return text, (await post(client, server.url, [text]))[0]
        except httpx.HTTPError as e:
            return text, e
    results = await asyncio.gather(*[one(t) for t in texts])
    statuses = Counter(r.status_code if isinstance(r, httpx.Response) else type(r).__name__ for _, r in results)
    answered = [(t, r.json()["predictions"][0]) for t, r in results if isinstance(r, httpx.Response)
                and r.status_code == 200]
    wrong = sum(not matches(a, predictor.predict([t], return_probs=True)[0], tol) for t, a in answered)
    return {"server": server.name, "requests": len(texts), "statuses": {str(k): v for k, v in statuses.items()},
            "mismatched": wrong, "ok": wrong == 0 and set(statuses) <= {200, 429}}


async def soak(client, server: Server, texts: list[str], seconds: float, clients: int = 32) -> dict:
    """Clients keep the server busy for `seconds`; its RSS is sampled ~20 times."""
    samples, stop_at, sent = [], time.monotonic() + seconds, Counter()

    async def one_client(k):
        i = k
        while time.monotonic() < stop_at:
            r, _ = await post(client, server.url, [texts[i % len(texts)]])
            sent[r.status_code] += 1
            i += clients

    async def sample():
        start = time.monotonic()
        while time.monotonic() < stop_at:
            samples.append((time.monotonic() - start, server.rss_mb()))
            await asyncio.sleep(max(seconds / 20, 0.1))
        samples.append((time.monotonic() - start, server.rss_mb()))
    await asyncio.gather(sample(), *[one_client(k) for k in range(clients)])
    t, mb = np.array(samples).T
    settled = mb[len(mb) // 4:]  # after the first quarter: allocator and caches warmed up
    slope = float(np.polyfit(t[len(t) // 4:], settled, 1)[0] * 60) if len(settled) > 1 else 0.0
    return {"server": server.name, "seconds": seconds, "clients": clients, "requests": dict(sent),
            "rss_mb_first": float(mb[0]), "rss_mb_after_warmup": float(settled[0]), "rss_mb_last": float(mb[-1]),
            "rss_mb_max": float(mb.max()), "rss_mb_per_minute_after_warmup": slope,
            "samples": [[round(a, 1), round(b, 1)] for a, b in samples]}


def table(runs: list[dict]) -> str:
    """Requests/s side by side per concurrency, with the ratios the issue sets targets for."""
    at = {(r["server"], r["clients"]): r for r in runs}
    names = list(SERVERS)
    lines = ["| clients | " + " | ".join(f"{n} req/s" for n in names) + " | torch dyn / 1 | int8 dyn / 1 | "
             "int8 / torch (dyn) |", "| --- " * (len(names) + 4) + "|"]

    def rate(name, c):
        r = at.get((name, c))
        return r["requests_per_s"] if r else float("nan")
    for c in sorted({c for _, c in at}):
        t, t1, q, q1 = (rate(n, c) for n in names)
        lines.append(f"| {c} | " + " | ".join(cell(v, "") for v in (t, t1, q, q1)) +
                     f" | {cell(t / t1)} | {cell(q / q1)} | {cell(q / t)} |")
    return "\n".join(lines)


def cell(value: float, unit: str = "x") -> str:
    """A figure, or "-" for a level skipped by --max_seconds."""
    return "-" if value != value else f"{value:.{1 if not unit else 2}f}{unit}"


def latency_table(runs: list[dict]) -> str:
    lines = ["| server | clients | req/s | items/s | p50 ms | p95 ms | p99 ms | mean batch | same label | "
             "probs within 1e-4 |", "| --- " * 10 + "|"]
    for r in sorted(runs, key=lambda r: (list(SERVERS).index(r["server"]), r["clients"])):
        lines.append(f"| {r['server']} | {r['clients']} | {r['requests_per_s']:.1f} | {r['items_per_s']:.1f} | "
                     f"{r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['p99_ms']:.1f} | {r['mean_batch']:.1f} | "
                     f"{r['same_label']}/{r['items']} | {r['agree']}/{r['items']} |")
    return "\n".join(lines)


def ratios(runs: list[dict], clients: int) -> dict:
    """The issue's targets at `clients`: speed-ups, and p99 over 4 x (single-client p50 x the mean batch),
    which is under 1 when the target is met."""
    at = {(r["server"], r["clients"]): r for r in runs}
    out = {}
    for backend in ("torch", "onnx int8"):
        dyn, one = at.get((f"{backend} dynamic", clients)), at.get((f"{backend} one-at-a-time", clients))
        if dyn and one:
            out[f"{backend}: dynamic / one-at-a-time"] = dyn["requests_per_s"] / one["requests_per_s"]
        single = at.get((f"{backend} dynamic", 1))
        if dyn and single:
            out[f"{backend} dynamic: p99 / (4 x p50 at 1 client x batch)"] = (
                dyn["p99_ms"] / (4 * single["p50_ms"] * dyn["mean_batch"]))
    if ("onnx int8 dynamic", clients) in at and ("torch dynamic", clients) in at:
        out["dynamic: onnx int8 / torch"] = (at[("onnx int8 dynamic", clients)]["requests_per_s"] /
                                             at[("torch dynamic", clients)]["requests_per_s"])
    return out


async def run(args, texts: list[str], onnx_dir: str, log_dir: str) -> dict:
    import httpx

    from bertorch.predict import Predictor

    deadline = time.monotonic() + args.max_seconds
    servers = {name: Server(name, args.model_dir, onnx_dir, backend + batching, log_dir)
               for name, (backend, batching) in SERVERS.items()}
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=max(args.clients + [args.burst]))
    result = {"runs": [], "skipped": []}
    try:
        async with httpx.AsyncClient(timeout=TIMEOUT, limits=limits) as client:
            await asyncio.gather(*[s.ready(client) for s in servers.values()])
            predictors = {"torch": Predictor.from_pretrained(args.model_dir),
                          "onnx int8": Predictor.from_pretrained(os.path.join(onnx_dir, "model_int8.onnx"),
                                                                 backend="onnx")}
            used = texts[:max(args.requests) * args.items_per_request]
            reference = {b: dict(zip(used, (p.predict([t], return_probs=True)[0] for t in used)))
                         for b, p in predictors.items()}  # each text alone: what a client of the Predictor gets
            for s in servers.values():  # warm-up: first requests pay for lazy initialisation
                await asyncio.gather(*[post(client, s.url, [t]) for t in texts[:8]])
            for clients, n in zip(args.clients, args.requests):
                for name, s in servers.items():
                    if time.monotonic() > deadline:
                        result["skipped"].append(f"{name} at {clients} clients (--max_seconds)")
                        continue
                    backend = "onnx int8" if name.startswith("onnx") else "torch"
                    row = await level(client, s, used, clients, n, args.items_per_request, reference[backend], TOL)
                    result["runs"].append(row)
                    print(f"{name:>24} {clients:>4} clients: {row['requests_per_s']:7.1f} req/s  p50 "
                          f"{row['p50_ms']:7.1f}  p95 {row['p95_ms']:7.1f}  p99 {row['p99_ms']:7.1f} ms  batch "
                          f"{row['mean_batch']:5.1f}  = Predictor: label {row['same_label']}, probs {row['agree']} of {row['items']}",
                          flush=True)
            target = servers["torch dynamic"]
            result["burst"] = await burst(client, target, texts[:args.burst], predictors["torch"], TOL)
            print(f"burst of {args.burst} at {target.name}: {result['burst']['statuses']}, "
                  f"{result['burst']['mismatched']} answers differ from the Predictor's", flush=True)
            result["soak"] = await soak(client, target, texts, args.soak_seconds)
            print(f"soak {args.soak_seconds:.0f} s at {target.name}: RSS {result['soak']['rss_mb_first']:.0f} -> "
                  f"{result['soak']['rss_mb_after_warmup']:.0f} (after warm-up) -> {result['soak']['rss_mb_last']:.0f} "
                  f"MB, {result['soak']['rss_mb_per_minute_after_warmup']:+.1f} MB/min", flush=True)
    finally:
        result["exit_codes"] = {name: s.stop() for name, s in servers.items()}  # SIGTERM: drain, exit 0
    return result


def build_parser() -> argparse.ArgumentParser:
    from bench.inference import add_model_and_dev_args

    p = argparse.ArgumentParser(prog="python -m bench.serve_load", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_and_dev_args(p, model_help="a saved classifier directory")
    p.add_argument("--onnx_dir", default=None, help="export_onnx.py output with int8 (default: export to a temp dir)")
    p.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32, 128], help="concurrent clients per level")
    p.add_argument("--requests", type=int, nargs="+", default=[60, 160, 256, 384], help="requests per level")
    p.add_argument("--items_per_request", type=int, default=1, help="texts in each request")
    p.add_argument("--burst", type=int, default=1000, help="requests sent at once to the torch dynamic server")
    p.add_argument("--soak_seconds", type=float, default=300.0, help="memory soak length")
    p.add_argument("--max_seconds", type=float, default=900.0,
                   help="skip the levels left after this long (the burst and the soak are bounded on their own)")
    p.add_argument("--quick", action="store_true", help="a few requests a level: a smoke run")
    p.add_argument("--output", default=None, help="JSON results (and a .md table beside it)")
    return p


def main(argv=None) -> dict:
    from bench import results_script
    from bench.inference import prepare_onnx
    from bertorch.data.readers import read_classification, resolve_path

    args = build_parser().parse_args(argv)
    if args.quick:
        for k, v in QUICK.items():
            setattr(args, k, v)
    if len(args.requests) != len(args.clients):
        raise SystemExit("--requests takes one count per --clients level")
    texts = list(dict.fromkeys(r.text_a for r in read_classification(resolve_path(args.dev_file), None, False)))
    texts = texts[:args.limit] if args.limit else texts
    args.burst = min(args.burst, len(texts))
    load_before = os.getloadavg()[0]  # what else ran when it started: the header says quiet or shared
    with tempfile.TemporaryDirectory() as workdir:
        onnx_dir = os.path.dirname(prepare_onnx(args.model_dir, args.onnx_dir, workdir)[0])
        start = time.perf_counter()
        result = asyncio.run(run(args, texts, onnx_dir, workdir))
        result["seconds"] = time.perf_counter() - start
    result["ratios_at_32_clients"] = ratios(result["runs"], 32)
    result["setup"] = {"model_dir": args.model_dir, "dev_file": args.dev_file, "texts": len(texts),
                       "items_per_request": args.items_per_request, "cpus": os.cpu_count(), "machine": results_script().machine(),
                       "date": time.strftime("%Y-%m-%d"), "command": " ".join(sys.argv),
                       "load_before": round(load_before, 2)}
    print("\n" + table(result["runs"]) + "\n\n" + latency_table(result["runs"]))
    for k, v in result["ratios_at_32_clients"].items():
        print(f"at 32 clients, {k}: {v:.2f}x")
    print(f"exit codes after SIGTERM: {result['exit_codes']}")
    if args.output:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        with open(args.output, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2, ensure_ascii=False)
        with open(os.path.splitext(args.output)[0] + ".md", "w", encoding="utf-8") as f:
            f.write(markdown(result))
    return result


def machine_state(setup: dict) -> str:
    """Quiet or shared, from the 1-minute load average when the run started (older results did not record it)."""
    load = setup.get("load_before")
    if load is None:
        return "load not recorded."
    if load < 0.5:
        return f"otherwise idle (1-minute load average {load:.2f} when it started)."
    return (f"**shared with other work** (1-minute load average {load:.2f} when it started): the figures are "
            f"indicative, not a quiet-machine measurement.")


def markdown(result: dict) -> str:
    s, b, k = result["setup"], result["burst"], result["soak"]
    ratio = "; ".join(f"{k}: {v:.2f}x" for k, v in result["ratios_at_32_clients"].items())
    return (f"<!-- written by bench/serve_load.py -->\n"
            f"`bertorch.serve` load test, {s['date']}, {s['cpus']} CPUs ({s['machine']}), {machine_state(s)} "
            f"Clients and servers share those cores. Model `{s['model_dir']}`, ChnSentiCorp dev texts.\n\n"
            f"    {s['command']}\n\nRequests/s ({s['items_per_request']} text(s) a request):\n\n{table(result['runs'])}\n\n"
            f"Latency, the mean batch the server ran, and answers equal to the same backend's Predictor on each "
            f"text alone (dynamic int8 quantises activations with one scale per batch tensor, so its batched "
            f"probabilities move with the other texts in the batch):\n\n"
            f"{latency_table(result['runs'])}\n\n"
            f"At 32 clients: {ratio}.\n\n"
            f"Burst of {b['requests']} requests at once ({b['server']}): {b['statuses']}; {b['mismatched']} answers "
            f"differ from the Predictor's own on their text.\n\n"
            f"Memory soak ({k['server']}, {k['clients']} clients, {k['seconds']:.0f} s): RSS {k['rss_mb_first']:.0f} MB "
            f"at start, {k['rss_mb_after_warmup']:.0f} MB after warm-up, {k['rss_mb_last']:.0f} MB at the end "
            f"(max {k['rss_mb_max']:.0f}; {k['rss_mb_per_minute_after_warmup']:+.1f} MB/min after warm-up).\n\n"
            f"Exit codes after SIGTERM: {result['exit_codes']}."
            + (f" Skipped (--max_seconds): {'; '.join(result['skipped'])}." if result["skipped"] else "") + "\n")


if __name__ == "__main__":
    main()
