"""Benchmarks: speed, memory and quality measured side by side (`python -m bench`, or one module each)."""
import importlib.util
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def results_script():
    """scripts/results.py (not a package): its table format, markdown rendering and machine description."""
    spec = importlib.util.spec_from_file_location("bertorch_results", os.path.join(ROOT, "scripts", "results.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
