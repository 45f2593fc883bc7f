# Sourced by scripts/quickstart.sh and .ci/run: sets PYTHON to an interpreter that may pip-install.
# Inside a virtual environment, or where the system Python accepts `pip install`, that is python3 itself;
# where it refuses (PEP 668: an EXTERNALLY-MANAGED Python, as on current Debian/Ubuntu), a project venv
# `.venv/` is created once and used. PYTHON=... set by the caller wins.
if [ -z "${PYTHON:-}" ]; then
    if python3 -c 'import os, sys, sysconfig
managed = os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED"))
sys.exit(1 if managed and sys.prefix == sys.base_prefix else 0)'; then
        PYTHON=python3
    else
        [ -x .venv/bin/python ] || python3 -m venv .venv
        PYTHON=.venv/bin/python
        echo "system Python refuses pip install (PEP 668): using the project venv .venv/ ($PYTHON)" >&2
    fi
fi
export PYTHON
