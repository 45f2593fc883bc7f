"""One warm Python process that runs the entry scripts of a QUICK reproduction run, one after another.

A QUICK run trains for seconds, but every `python run_x.py` pays ~5 s of CPU importing torch and
transformers; a dozen runs spend most of their time importing. common.sh (or all.sh, for every script)
starts this server once and `launch` sends it each command line; the server runs the script in-process
with that argv, working directory and environment (as the tests do with `main([...])`) and returns its
exit status. Full runs never use it: each of them gets a fresh process.

    python scripts/runner.py serve SOCKET &                 # started and stopped by common.sh / all.sh
    python scripts/runner.py run SOCKET run_ner.py ARGS...  # prints nothing itself; exits with the script's status
    python scripts/runner.py run SOCKET -m bench.inference ARGS...
"""
from __future__ import annotations

import json
import os
import socket
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IDLE_SECONDS = 600


def execute(argv: list[str]) -> int:
    """Run `script args` or `-m module args` as `python` would, in this process; its exit status."""
    import runpy
    import traceback

    sys.argv = argv[1:] if argv[0] == "-m" else list(argv)
    try:
        if argv[0] == "-m":
            runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
        else:
            runpy.run_path(argv[0], run_name="__main__")
        return 0
    except SystemExit as e:
        if e.code is None or isinstance(e.code, int):
            return e.code or 0
        print(e.code, file=sys.stderr)
        return 1
    except BaseException:  # noqa: BLE001 -- report it like python would, and keep serving
        traceback.print_exc()
        return 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()


def serve(path: str) -> None:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    server.settimeout(IDLE_SECONDS)  # a server whose shell was killed does not linger
    sys.path.insert(0, ROOT)
    import bertorch.cli  # noqa: F401 -- warm up while the first command is on its way
    while True:
        try:
            conn, _ = server.accept()
        except socket.timeout:
            return
        conn.settimeout(None)
        with conn, conn.makefile("rw", encoding="utf-8") as stream:
            request = json.loads(stream.readline())
            os.chdir(request["cwd"])
            os.environ.clear()
            os.environ.update(request["env"])
            status = execute(request["argv"])
            stream.write(json.dumps({"status": status}) + "\n")
        import gc
        gc.collect()


def run(path: str, argv: list[str], wait: float = 120.0) -> int:
    """Send one command to the server and wait for it; exit status 1 if the server goes away."""
    deadline = time.monotonic() + wait
    while True:
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            client.connect(path)
            break
        except (FileNotFoundError, ConnectionRefusedError):
            client.close()
            if time.monotonic() > deadline:
                print(f"runner.py: no server at {path} after {wait:.0f} s", file=sys.stderr)
                return 1
            time.sleep(0.05)
    with client, client.makefile("rw", encoding="utf-8") as stream:
        stream.write(json.dumps({"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ)}) + "\n")
        stream.flush()
        reply = stream.readline()
    if not reply:
        print(f"runner.py: the server died while running {' '.join(argv)}", file=sys.stderr)
        return 1
    return json.loads(reply)["status"]


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "serve":
        serve(sys.argv[2])
    elif len(sys.argv) >= 4 and sys.argv[1] == "run":
        sys.exit(run(sys.argv[2], sys.argv[3:]))
    else:
        sys.exit(__doc__)
