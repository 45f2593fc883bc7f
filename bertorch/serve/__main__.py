"""Serve a saved bertorch model over HTTP with dynamic batching (needs `pip install .[serve]`).

    python -m bertorch.serve --model_dir outputs/quickstart/best            # or: bertorch-serve --model_dir ...
    python -m bertorch.serve --model_dir outputs/cls --backend onnx --onnx_dir outputs/cls-onnx --int8
    curl -s localhost:8000/predict -H 'content-type: application/json' -d '{"inputs": ["房间很干净"]}'

SIGTERM (or Ctrl-C) stops accepting, answers everything already queued, and exits 0.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys
from typing import Sequence

from bertorch.argtypes import add_backend_flag, add_model_dir_flag, non_negative_float, port_number, positive_int


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bertorch.serve", description=__doc__,
                                formatter_class=type("Formatter", (argparse.ArgumentDefaultsHelpFormatter,
                                                                   argparse.RawDescriptionHelpFormatter), {}))
    add_model_dir_flag(p, "a directory written by a run_*.py script (a multi-task student serves each task)")
    add_backend_flag(p)
    p.add_argument("--onnx_dir", default=None, help="export_onnx.py output (or an .onnx file); None: --model_dir")
    p.add_argument("--int8", action="store_true", help="with --backend onnx: the export's model_int8.onnx")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1; None: cuda when available")
    p.add_argument("--threads", type=positive_int, default=None, help="intra-op threads; None: the backend's own")
    p.add_argument("--host", default="127.0.0.1", help="0.0.0.0 to listen on every interface")
    p.add_argument("--port", type=port_number, default=8000, help="TCP port")
    p.add_argument("--max_batch_size", type=positive_int, default=32,
                   help="inputs per forward pass; a request with more is refused (413)")
    p.add_argument("--max_batch_tokens", type=positive_int, default=16384, help="padded tokens per forward pass")
    p.add_argument("--max_wait_ms", type=non_negative_float, default=5.0,
                   help="how long the oldest queued input waits for others to share its batch")
    p.add_argument("--max_concurrent", type=positive_int, default=512, help="requests queued or running; more get 429")
    p.add_argument("--log_level", default="info", choices=("critical", "error", "warning", "info", "debug"),
                   help="uvicorn's log level")
    p.add_argument("--access_log", action="store_true", help="one log line per request (off: it costs under load)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.backend != "onnx" and (args.int8 or args.onnx_dir):
        parser.error(f"{'--int8' if args.int8 else '--onnx_dir'} serves an ONNX export: add --backend onnx")
    if not os.path.exists(args.model_dir):
        raise SystemExit(f"--model_dir {args.model_dir}: no such directory")
    try:
        import uvicorn

        from bertorch.serve.app import create_app
    except ImportError as e:
        raise SystemExit(f"{e.name} is not installed: pip install 'bertorch[serve]'") from None
    from bertorch.memory import tune_allocator
    from bertorch.serve.service import ServeConfig

    tune_allocator()  # every batch has its own shape: glibc's defaults would let a long-running server's RSS creep
    config = ServeConfig(**{k: getattr(args, k) for k in ServeConfig.__dataclass_fields__})

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame):
            app.state.service.drain()  # new requests get 503 while the queued ones are answered
            super().handle_exit(sig, frame)

    def failed(error):
        server.should_exit = True

    app = create_app(config, on_failed=failed)
    server = Server(uvicorn.Config(app, host=args.host, port=args.port, log_level=args.log_level,
                                   access_log=args.access_log))
    # uvicorn re-raises the signal it caught once it has shut down, to the handler installed before it:
    # ignoring it here makes a drained shutdown a clean exit 0 rather than death by SIGTERM.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    server.run()
    return 1 if app.state.service.state == "failed" else 0


if __name__ == "__main__":
    sys.exit(main())
