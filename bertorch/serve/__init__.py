"""HTTP serving of saved models with dynamic batching: `python -m bertorch.serve --model_dir DIR`.

Modules: app (FastAPI routes, error codes, lifespan), batcher (the queue and the one inference thread),
service (models per endpoint: checks, costs, Predictor calls, answers), schemas (pydantic bodies),
metrics (Prometheus), __main__ (the CLI, uvicorn, SIGTERM drain). Needs the `serve` extra; importing
this package alone does not.
"""


def create_app(*args, **kwargs):
    """`bertorch.serve.app.create_app`, imported on first use (FastAPI is an optional dependency)."""
    from bertorch.serve.app import create_app as create

    return create(*args, **kwargs)
