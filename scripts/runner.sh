# The warm runner of QUICK runs (scripts/runner.py), sourced by common.sh and all.sh.
PYTHON=${PYTHON:-python3}
RUNNER_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

py() {  # py ARGS...: what `python ARGS...` does, in the warm runner when there is one
    if [ -n "${RUNNER_SOCKET:-}" ]; then
        "$PYTHON" "$RUNNER_ROOT/scripts/runner.py" run "$RUNNER_SOCKET" "$@"
    else
        "$PYTHON" "$@"
    fi
}

start_runner() {  # one warm Python process for every run of this shell and of the scripts it starts
    RUNNER_SOCKET=$(mktemp -u "${TMPDIR:-/tmp}/bertorch-runner.XXXXXX")
    "$PYTHON" "$RUNNER_ROOT/scripts/runner.py" serve "$RUNNER_SOCKET" &
    RUNNER_PID=$!
    trap 'kill $RUNNER_PID 2> /dev/null || true; rm -f "$RUNNER_SOCKET"' EXIT
    export RUNNER_SOCKET
}
