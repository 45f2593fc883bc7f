"""The FastAPI app: routes, error codes, and the lifespan that loads the models and drains on shutdown.

    GET  /health /info /metrics (Prometheus) /docs (OpenAPI)
    POST /predict {"inputs": [...]}   /ner {"inputs": [...]}   /embed {"inputs": [...]}

Errors: 422 malformed body or wrong input kind (FastAPI's shape, naming the field), 413 more inputs than
--max_batch_size, 429 queue full, 503 while loading or draining, 404 an endpoint this model lacks.
"""
from __future__ import annotations

import contextlib
import time

from fastapi import FastAPI, HTTPException, Request
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from bertorch import __version__
from bertorch.serve.batcher import Closed, DynamicBatcher, QueueFull
from bertorch.serve.metrics import Metrics
from bertorch.serve.schemas import (EmbedRequest, EmbedResponse, Health, Info, NerRequest, NerResponse,
                                    PredictRequest, PredictResponse)
from bertorch.serve.service import InputError, ServeConfig, Service, load_models


def create_app(config: ServeConfig, loader=load_models, on_failed=None) -> FastAPI:
    """`loader(config) -> {name: Served}` runs in a thread at start-up; `on_failed(error)` if it raises."""
    service = Service(config, loader, on_failed)
    metrics = Metrics()

    def make_batcher(run):
        batcher = DynamicBatcher(run, config.max_batch_size, config.max_batch_tokens, config.max_wait_ms,
                                 config.max_concurrent, observe=metrics.observe_batch)
        metrics.queued.set_function(lambda: batcher.queued_items)
        return batcher

    @contextlib.asynccontextmanager
    async def lifespan(app):
        service.start(make_batcher)
        yield
        await service.close()  # after the server stopped accepting: answer everything queued, then exit

    app = FastAPI(title="bertorch serve", version=__version__, lifespan=lifespan,
                  description="Predictions, entities and embeddings from a saved bertorch model, batched.")
    app.state.service, app.state.metrics = service, metrics

    @app.middleware("http")
    async def count(request: Request, call_next):
        start = time.perf_counter()
        response = await call_next(request)
        path = request.url.path if request.url.path in KNOWN_PATHS else "other"  # bounded label values
        metrics.observe_request(path, response.status_code, time.perf_counter() - start)
        return response

    @app.exception_handler(InputError)
    async def input_error(request: Request, e: InputError):
        return await request_validation_exception_handler(request, RequestValidationError(
            [{"type": "value_error", "loc": ("body", *e.field), "msg": str(e), "input": e.value}]))

    def ready(body) -> None:
        if service.state != "ok":
            raise HTTPException(503, f"the server is {service.state}" + (f": {service.detail}" if service.detail
                                                                         else ""), headers={"Retry-After": "1"})
        if len(body.inputs) > config.max_batch_size:
            raise HTTPException(413, f"{len(body.inputs)} inputs in one request; at most --max_batch_size "
                                     f"{config.max_batch_size}: split the request")

    async def run(task: str, body, path: str) -> tuple:
        ready(body)
        try:
            model = service.model_for(task, body.task)
        except LookupError as e:
            raise HTTPException(404, str(e)) from None
        model.validate(body)
        try:
            results = await service.submit(model, body.inputs, body.truncate)
        except QueueFull as e:
            raise HTTPException(429, str(e), headers={"Retry-After": "1"}) from None
        except Closed as e:
            raise HTTPException(503, str(e)) from None
        metrics.items.labels(path).inc(len(results))
        return model, results

    @app.post("/predict", response_model=PredictResponse, response_model_exclude_none=True,
              summary="Labels (classifier; pairs for a text-pair model)")
    async def predict(body: PredictRequest):
        model, results = await run("classification", body, "/predict")
        return {"predictions": model.answer(results, body.return_probs, body.top_k)}

    @app.post("/ner", response_model=NerResponse, response_model_exclude_none=True,
              summary="Tags, entities (character offsets) and words (tagger)")
    async def ner(body: NerRequest):
        _, results = await run("ner", body, "/ner")
        return {"predictions": results}

    @app.post("/embed", response_model=EmbedResponse, summary="Sentence vectors (encoder)")
    async def embed(body: EmbedRequest):
        model, results = await run("sentence_embedding", body, "/embed")
        vectors = model.answer(results, body.normalize, body.dimensions) if results else []
        return {"embeddings": vectors, "dimensions": len(vectors[0]) if vectors else body.dimensions or 0}

    @app.get("/health", response_model=Health, response_model_exclude_none=True,
             responses={503: {"model": Health, "description": "loading, draining or failed"}})
    async def health():
        body = {"status": service.state, "detail": service.detail}
        return body if service.state == "ok" else JSONResponse(Health(**body).model_dump(exclude_none=True), 503)

    @app.get("/info", response_model=Info, response_model_exclude_none=True)
    async def info():
        if not service.models:
            raise HTTPException(503, f"the server is {service.state}", headers={"Retry-After": "1"})
        return {"version": __version__, "backend": config.backend + (" int8" if config.int8 else ""),
                "model_dir": config.model_dir, "models": [m.describe() for m in service.models.values()],
                "max_batch_size": config.max_batch_size, "max_batch_tokens": config.max_batch_tokens,
                "max_wait_ms": config.max_wait_ms, "max_concurrent": config.max_concurrent}

    @app.get("/metrics", summary="Prometheus metrics")
    async def prometheus():
        return Response(metrics.render(), media_type=metrics.content_type)

    KNOWN_PATHS = {route.path for route in app.routes}
    return app
