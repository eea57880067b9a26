"""The FastAPI service of one bundle, in the request shapes of text-embeddings-inference (`/predict`,
`/embed`), OpenAI's embeddings (`/v1/embeddings`) and text-generation-inference (`/generate`,
`/generate_stream`).

Classification and embedding requests are tokenized on arrival and answered by the dynamic batcher; generation
requests run one at a time in a worker thread, with a bounded number waiting. Every answer carries
timing headers; errors are `{"error", "error_type"}` with the status a client can act on.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional, Union

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, StreamingResponse
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from ..errors import dotted_path, validation_detail
from ..runtime import Bundle
from ..runtime.errors import BundleError, InputError
from ..runtime.files import path_inside
from ..runtime.generation import Cancelled
from .batching import Batcher, BatchSettings, Overloaded, ShuttingDown

STATIC = Path(__file__).parent / "static"


@dataclass(frozen=True)
class ServeSettings:
    batching: BatchSettings = BatchSettings()
    max_client_batch_size: int = 32
    """Texts one /predict request may carry."""
    max_body_bytes: int = 1 << 20
    max_waiting_generations: int = 8
    web_assets: Path | None = None
    """transformers.js's dist folder (web/node_modules/@huggingface/transformers/dist) for the in-browser switch."""


class QuestionInput(BaseModel):
    """A question and the text its answer is to be found in (the inference API's question-answering input)."""

    model_config = ConfigDict(extra="forbid")
    question: str
    context: str


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    inputs: Union[str, list[str], QuestionInput, list[QuestionInput]]
    raw_scores: bool = False
    truncate: bool = True


class EmbedRequest(BaseModel):
    """text-embeddings-inference's `/embed` body."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    inputs: Union[str, list[str]]
    normalize: bool = True
    truncate: bool = True


class OpenAIEmbeddingsRequest(BaseModel):
    """OpenAI's `/v1/embeddings` body (text inputs; token-id inputs are not taken)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    input: Union[str, list[str]]
    model: Optional[str] = None
    encoding_format: Literal["float", "base64"] = "float"
    user: Optional[str] = None


class EmbeddingItem(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: Union[list[float], str]


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class OpenAIEmbeddingsResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingItem]
    model: str
    usage: EmbeddingUsage


class Score(BaseModel):
    label: str
    score: float


class Entity(BaseModel):
    """One named entity, as the inference API's aggregated token classification gives it."""

    entity_group: str
    score: float
    word: str
    start: int
    end: int


class Answer(BaseModel):
    """An answer span, as the inference API's question answering gives it."""

    answer: str
    score: float
    start: int
    end: int


class GenerateDetails(BaseModel):
    finish_reason: str
    generated_tokens: int
    prompt_tokens: int


class GenerateResponse(BaseModel):
    generated_text: str
    details: GenerateDetails


class GenerateParameters(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    max_new_tokens: Optional[int] = Field(None, ge=0)
    temperature: Optional[float] = Field(None, ge=0)
    top_k: Optional[int] = Field(None, ge=0)
    top_p: Optional[float] = Field(None, gt=0, le=1)
    repetition_penalty: Optional[float] = Field(None, gt=0)
    seed: Optional[int] = Field(None, ge=0, lt=2**64)
    stop: list[str] = []
    prompt_lookup: Optional[int] = Field(
        None,
        ge=0,
        le=64,
        description="Greedy only: draft up to this many tokens from n-grams of the text so far and check them in "
        "one step (0 or absent: off); the tokens are plain greedy decoding's",
    )


class GenerateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    inputs: str
    parameters: GenerateParameters = GenerateParameters()


class ErrorBody(BaseModel):
    """Every failure: what went wrong, in one line, and its kind."""

    error: str
    error_type: str


ERRORS = {
    status: {"model": ErrorBody, "description": why}
    for status, why in (
        (400, "a request the model cannot serve"),
        (404, "no such file"),
        (413, "a body, batch or prompt over the limits"),
        (422, "a body that does not match the schema"),
        (503, "overloaded or shutting down"),
    )
}
"""The documented error answers of the model endpoints (OpenAPI `responses`)."""


class ParsedOffTheLoop(Request):
    """A request whose JSON body is parsed in a worker thread: a 1 MiB body never stalls other requests."""

    async def json(self):
        if not hasattr(self, "_json"):
            self._json = await asyncio.to_thread(json.loads, await self.body())
        return self._json


class OffTheLoopRoute(APIRoute):
    def get_route_handler(self):
        handler = super().get_route_handler()

        async def parsed_off_the_loop(request: Request):
            return await handler(ParsedOffTheLoop(request.scope, request.receive))

        return parsed_off_the_loop


class ApiError(Exception):
    def __init__(self, status: int, error_type: str, message: str):
        super().__init__(message)
        self.status, self.error_type = status, error_type


def _ms(seconds: float) -> str:
    return f"{1000 * seconds:.3f}"


class Metrics:
    def __init__(self, queue_depth):
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "edgenlp_requests",
            "Requests answered, by endpoint and status",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "edgenlp_request_duration_seconds",
            "Time from arrival to answer",
            ["endpoint"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.batch_texts = Histogram(
            "edgenlp_batch_texts", "Texts per model run", buckets=(1, 2, 4, 8, 16, 32, 64), registry=self.registry
        )
        self.batch_requests = Histogram(
            "edgenlp_batch_requests", "Requests per model run", buckets=(1, 2, 4, 8, 16, 32, 64), registry=self.registry
        )
        depth = Gauge("edgenlp_queue_depth", "Requests waiting for the model", registry=self.registry)
        depth.set_function(queue_depth)

    def batch(self, texts: int, requests: int) -> None:
        self.batch_texts.observe(texts)
        self.batch_requests.observe(requests)


def create_app(bundle: Bundle, settings: ServeSettings = ServeSettings()) -> FastAPI:
    """The service of a loaded (and verified) bundle."""
    classifier = bundle.task == "text-classification"
    embedder = bundle.task == "feature-extraction"
    tagger = bundle.task == "token-classification"
    reader = bundle.task == "question-answering"
    batcher: Batcher | None = None
    generating = threading.Semaphore(1)
    waiting = {"generations": 0}
    metrics = Metrics(lambda: batcher.depth if batcher else waiting["generations"])

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        nonlocal batcher
        if classifier or embedder or tagger or reader:
            model = bundle.model
            # a classifier's answers carry raw scores too; vectors come back as pooled, each request normalises them or not
            options = {"raw_scores": True} if classifier else {"normalize": False} if embedder else {}
            batcher = Batcher(
                lambda items: list(
                    model.answer(
                        items,
                        batch_size=settings.batching.max_batch_texts,
                        max_batch_tokens=settings.batching.max_batch_tokens,
                        **options,
                    )
                ),
                settings.batching,
                on_batch=metrics.batch,
            )
            warm = [{"question": "warm up?", "context": "warm up"}] if reader else ["warm up"]
            model.answer(model.prepare(warm))  # the first run allocates; no client should pay for it
        yield
        if batcher is not None:
            batcher.close()  # uvicorn has finished the in-flight requests; the queue is empty by now

    app = FastAPI(
        title="edgenlp",
        version=bundle.manifest.get("edgenlp_version") or "0",
        description=f"{bundle.task} with {bundle.manifest['model']['variant']}",
        lifespan=lifespan,
    )
    app.router.route_class = OffTheLoopRoute

    app.add_middleware(Measured, metrics=metrics, max_body_bytes=settings.max_body_bytes)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):  # a bug, still in the documented shape
        return _error(500, "internal", f"internal error ({type(exc).__name__}): please report it")

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        return _error(exc.status, exc.error_type, str(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid_body(request: Request, exc: RequestValidationError):
        return _error(422, "validation", validation_detail(exc, name=dotted_path, skip=("body",)))

    def need(task: str, endpoint: str) -> None:
        if bundle.task != task:
            raise ApiError(
                400, "validation", f"this server runs a {bundle.task} bundle: {endpoint} needs a {task} bundle"
            )

    # both tasks' routes answer and are documented: the other task's with a 400 that says which bundle it needs
    @app.post(
        "/predict",
        summary="Classify one text or a batch (text-embeddings-inference's request shape), find its named "
        "entities, or answer a question from a context (the inference API's token-classification and "
        "question-answering shapes)",
        response_model=Union[list[Score], list[list[Score]], list[Entity], list[list[Entity]], Answer, list[Answer]],
        responses=ERRORS,
    )
    async def predict(body: PredictRequest):
        single = isinstance(body.inputs, (str, QuestionInput))
        items = [body.inputs] if single else list(body.inputs)  # type: ignore[arg-type]
        asked_questions = all(isinstance(i, QuestionInput) for i in items)
        if reader != asked_questions:
            raise ApiError(
                400,
                "validation",
                f"this server runs a {bundle.task} bundle: send "
                + (
                    '{"inputs": {"question": ..., "context": ...}}'
                    if reader
                    else '{"inputs": "text"} or a list of texts'
                ),
            )
        if not (tagger or reader):
            need("text-classification", "/predict")
        texts = [i.model_dump() for i in items] if reader else items
        answers, headers, _ = await batched(texts, body.truncate)
        shaped = answers if tagger or reader else [_ranked(a, body.raw_scores) for a in answers]
        return Response(
            json.dumps(shaped[0] if single else shaped),
            media_type="application/json",
            headers=headers,
        )

    async def batched(texts: list[str], truncate: bool):
        """The model's answers to `texts` through the batcher (tokenised on arrival, in a thread, so /health
        and other clients never wait on it), with the timing headers and the tokens they held."""
        if len(texts) > settings.max_client_batch_size:
            raise ApiError(
                413,
                "validation",
                f"{len(texts)} inputs, more than the {settings.max_client_batch_size} a request may carry: split the batch",
            )
        arrived = time.perf_counter()
        try:
            items = await asyncio.to_thread(bundle.model.prepare, texts, truncate=truncate)
        except InputError as exc:
            too_long = "longer than the model's maximum" in str(exc)
            raise ApiError(413 if too_long else 400, "validation", str(exc)) from None
        tokenized = time.perf_counter()
        try:
            job = batcher.submit(items, [len(e.ids) for e in items])
        except Overloaded as exc:
            raise ApiError(503, "overloaded", str(exc)) from None
        except ShuttingDown as exc:
            raise ApiError(503, "unhealthy", str(exc)) from None
        answers = await asyncio.wrap_future(job.future)
        done = time.perf_counter()
        headers = {
            "x-compute-time": _ms(done - arrived),
            "x-tokenization-time": _ms(tokenized - arrived),
            "x-queue-time": _ms(job.started - job.enqueued),
            "x-inference-time": _ms(done - job.started),
            "x-batch-size": str(job.batch_texts),
        }
        return answers, headers, sum(len(e.ids) for e in items)

    @app.post(
        "/embed",
        summary="Embed one text or a batch (text-embeddings-inference's request shape)",
        response_model=list[list[float]],
        responses=ERRORS,
    )
    async def embed(body: EmbedRequest):
        need("feature-extraction", "/embed")
        texts = [body.inputs] if isinstance(body.inputs, str) else body.inputs
        vectors, headers, _ = await batched(texts, body.truncate)
        rows = [_unit(v) if body.normalize else v for v in vectors]
        return Response(
            json.dumps([[float(x) for x in v] for v in rows]), media_type="application/json", headers=headers
        )

    @app.post(
        "/v1/embeddings",
        summary="Embed one text or a batch (OpenAI's embeddings request shape)",
        response_model=OpenAIEmbeddingsResponse,
        responses=ERRORS,
    )
    async def openai_embeddings(body: OpenAIEmbeddingsRequest):
        need("feature-extraction", "/v1/embeddings")
        texts = [body.input] if isinstance(body.input, str) else body.input
        vectors, headers, tokens = await batched(texts, True)
        own = bundle.model.pooling.normalize
        data = []
        for i, v in enumerate(vectors):
            v = _unit(v) if own else v
            value = _base64(v) if body.encoding_format == "base64" else [float(x) for x in v]
            data.append({"object": "embedding", "index": i, "embedding": value})
        answer = {
            "object": "list",
            "data": data,
            "model": bundle.manifest["model"]["variant"],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        return Response(json.dumps(answer), media_type="application/json", headers=headers)

    def generation_args(body: GenerateRequest) -> dict:
        """The generator's arguments, checked now: a bad setting is a 400 before any work (or stream) starts."""
        p = body.parameters
        sampling = {k: v for k, v in p.model_dump().items() if v is not None and k not in ("max_new_tokens", "stop")}
        try:
            args = bundle.generation_args(p.max_new_tokens, {**sampling, "stop": list(p.stop)})
            prompt_ids = bundle.model.encode(body.inputs) if body.inputs.strip() else []
            bundle.model.check_request(prompt_ids, args["max_new_tokens"])
        except InputError as exc:
            raise ApiError(_input_status(exc), "validation", str(exc)) from None
        return args

    async def run_generation(request: Request, work):
        """`work(cancelled)` in the generation thread, one at a time; `cancelled` is set once the client has gone,
        so an abandoned generation stops at its next token and one still waiting never starts."""
        if waiting["generations"] >= settings.max_waiting_generations:
            raise ApiError(
                503, "overloaded", f"{settings.max_waiting_generations} generations are already waiting: retry shortly"
            )
        waiting["generations"] += 1
        cancelled = threading.Event()
        watcher = asyncio.ensure_future(_until_disconnected(request, cancelled))
        try:
            return await asyncio.to_thread(_one_at_a_time, generating, work, cancelled)
        except InputError as exc:
            raise ApiError(_input_status(exc), "validation", str(exc)) from None
        finally:
            cancelled.set()  # the thread has returned, or the caller was cancelled: either way nothing more runs
            watcher.cancel()
            waiting["generations"] -= 1

    @app.post(
        "/generate",
        summary="Continue a prompt (text-generation-inference's request shape)",
        response_model=GenerateResponse,
        responses=ERRORS,
    )
    async def generate(body: GenerateRequest, request: Request, response: Response):
        need("text-generation", "/generate")
        arrived = time.perf_counter()
        timing = {}
        args = await asyncio.to_thread(generation_args, body)

        def work(cancelled: threading.Event):
            timing["started"] = time.perf_counter()
            return bundle.model.generate(body.inputs, **args, cancelled=cancelled.is_set)

        try:
            done = await run_generation(request, work)
        except Cancelled:
            return Response(status_code=499)  # nobody is listening; the status only reaches the metrics
        finished = time.perf_counter()
        response.headers.update(
            {
                "x-compute-time": _ms(finished - arrived),
                "x-queue-time": _ms(timing["started"] - arrived),
                "x-inference-time": _ms(finished - timing["started"]),
            }
        )
        return {
            "generated_text": done.text,
            "details": {
                "finish_reason": _finish(done.stopped_by),
                "generated_tokens": len(done.token_ids),
                "prompt_tokens": done.prompt_tokens,
            },
        }

    @app.post(
        "/generate_stream",
        summary="Continue a prompt, streamed as server-sent events",
        responses={
            **ERRORS,
            200: {
                "content": {"text/event-stream": {}},
                "description": "token events, then the whole text; a failure after the "
                "headers ends the stream with an {error, error_type} event",
            },
        },
    )
    async def generate_stream(body: GenerateRequest, request: Request):
        need("text-generation", "/generate_stream")
        args = await asyncio.to_thread(generation_args, body)  # refused before the stream starts
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()

        def emit(event) -> None:
            loop.call_soon_threadsafe(events.put_nowait, event)

        def work(cancelled: threading.Event):
            try:
                text, stopped = [], None
                for token, piece, reason in bundle.model.steps(body.inputs, **args):
                    if cancelled.is_set():
                        raise Cancelled("the client went away")
                    text.append(piece)
                    stopped = reason or stopped
                    if token is not None:  # the last step may only flush text held back for whole characters
                        emit(
                            {
                                "token": {"id": token, "text": piece, "special": False},
                                "generated_text": None,
                                "details": None,
                            }
                        )
                # the final event of text-generation-inference's stream has no token (a field, not a password: B105)
                emit(
                    {
                        "token": None,  # nosec B105
                        "generated_text": "".join(text),
                        "details": {"finish_reason": _finish(stopped)},
                    }
                )
            except Cancelled:
                raise
            except InputError as exc:
                emit({"error": str(exc), "error_type": "validation"})
            except Exception as exc:  # after the headers a status cannot change: the stream says it instead
                emit(
                    {
                        "error": f"the generation failed ({type(exc).__name__}): please report it",
                        "error_type": "internal",
                    }
                )
            finally:
                emit(None)

        if waiting["generations"] >= settings.max_waiting_generations:  # refuse before the stream starts
            raise ApiError(
                503, "overloaded", f"{settings.max_waiting_generations} generations are already waiting: retry shortly"
            )
        task = asyncio.ensure_future(run_generation(request, work))
        task.add_done_callback(lambda _: events.put_nowait(None))  # the stream ends even if work never ran

        async def stream():
            try:
                while (event := await events.get()) is not None:
                    yield f"data: {json.dumps(event)}\n\n"
            finally:
                if not task.done():  # the client went away mid-stream: stop the generation, free its slot
                    task.cancel()
            try:
                await task
            except (Cancelled, asyncio.CancelledError):
                pass
            except ApiError as exc:  # refused once queued (the server filled up meanwhile)
                yield f"data: {json.dumps({'error': str(exc), 'error_type': exc.error_type})}\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream")

    @app.get("/health", summary="200 while the model answers")
    async def health():
        return {"status": "ok"}

    @app.get("/info", summary="The bundle's manifest (less its file table) and the server's limits")
    async def info():
        manifest = {k: v for k, v in bundle.manifest.items() if k != "files"}
        return {
            "task": bundle.task,
            "model": manifest["model"]["variant"],
            "manifest": manifest,
            "benchmark": bundle.manifest.get("benchmark"),
            "limits": {
                "max_client_batch_size": settings.max_client_batch_size,
                "max_batch_tokens": settings.batching.max_batch_tokens,
                "max_batch_texts": settings.batching.max_batch_texts,
                "max_wait_ms": settings.batching.max_wait_ms,
                "max_queue": settings.batching.max_queue,
                "dynamic_batching": settings.batching.enabled,
            },
            "browser": settings.web_assets is not None and bundle.engine == "onnx",
            "browser_note": None
            if bundle.engine == "onnx"
            else f"In-browser mode runs ONNX bundles (transformers.js); this one is for {bundle.engine}.",
        }

    @app.get(
        "/metrics",
        summary="Prometheus metrics",
        response_class=PlainTextResponse,
        responses={
            200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Prometheus' text format"}
        },
    )
    async def prometheus():
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC / "index.html")

    @app.get("/static/{name}", include_in_schema=False)
    async def static(name: str):
        return _file_in(STATIC, name)

    listed = set(bundle.manifest.get("files") or {}) | {"manifest.json"}

    @app.get("/models/bundle/{path:path}", include_in_schema=False)
    async def bundle_file(path: str):
        if path not in listed:  # only what the manifest lists (names the schema keeps inside the folder)
            raise ApiError(404, "not_found", f"{path} is not a file of this bundle")
        try:  # and never through a link, whether hashes were checked or not
            return FileResponse(path_inside(bundle.path, path))
        except BundleError:
            raise ApiError(404, "not_found", f"{path} is not a file of this bundle") from None

    @app.get("/web/transformers/{name}", include_in_schema=False)
    async def web_asset(name: str):
        if settings.web_assets is None:
            raise ApiError(
                404,
                "not_found",
                "the in-browser runtime is not installed: run `npm ci --ignore-scripts` in web/ and restart",
            )
        return _file_in(settings.web_assets, name)

    return app


class Measured:
    """Counts and times every request by route and status (failures too), and refuses an oversized body.

    The limit holds for the bytes that actually arrive, not only for what `Content-Length` claims: a
    chunked body is read here, counted as it comes, and answered 413 at the first chunk past the
    limit; what was read is then handed to the app as one message. A plain ASGI middleware:
    FastAPI's `@app.middleware("http")` wraps every request in extra tasks and streams, about a
    millisecond of Python per request at the rates the server is built for.
    """

    def __init__(self, app, metrics: Metrics, max_body_bytes: int):
        self.app, self.metrics, self.max_body_bytes = app, metrics, max_body_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status = {"code": 500}

        async def send_and_note(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            length = dict(scope.get("headers") or ()).get(b"content-length", b"")
            if length.isdigit() and int(length) > self.max_body_bytes:
                await self._too_large(int(length), scope, receive, send_and_note)
                return
            body = await self._read_body(receive)
            if body is None:
                status["code"] = 499  # the client left before its body arrived
                return
            if len(body) > self.max_body_bytes:
                await self._too_large(len(body), scope, receive, send_and_note, counted=True)
                return
            await self.app(scope, _replay(body, receive), send_and_note)
        finally:
            route = scope.get("route")
            endpoint = getattr(route, "path", "unmatched")
            self.metrics.requests.labels(endpoint, str(status["code"])).inc()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - started)

    async def _read_body(self, receive) -> bytes | None:
        """The body, stopping one byte past the limit; None when the client disconnected."""
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            body += message.get("body", b"")
            if len(body) > self.max_body_bytes or not message.get("more_body", False):
                return bytes(body)

    async def _too_large(self, size: int, scope, receive, send, counted: bool = False) -> None:
        said = f"more than {self.max_body_bytes} bytes" if counted else f"{size} bytes, more than {self.max_body_bytes}"
        await _error(413, "validation", f"the body is {said}: send fewer or shorter texts")(scope, receive, send)


def _replay(body: bytes, receive):
    """A `receive` that gives the app the body already read, then passes on what the client sends next
    (its disconnect, which the generation endpoints watch for)."""
    sent = False

    async def replayed():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


def _finish(stopped_by: str | None) -> str:
    """text-generation-inference's finish reasons."""
    if stopped_by == "eos":
        return "eos_token"
    if stopped_by and stopped_by.startswith("stop:"):
        return "stop_sequence"
    return "length"


def _one_at_a_time(gate: threading.Semaphore, work, cancelled: threading.Event):
    with gate:
        if cancelled.is_set():  # its client left while it waited: it never starts
            raise Cancelled("the client went away before the generation started")
        return work(cancelled)


async def _until_disconnected(request: Request, cancelled: threading.Event) -> None:
    """Set `cancelled` when the client disconnects (the body has been read: what arrives next is the end)."""
    while not cancelled.is_set():
        message = await request.receive()
        if message["type"] == "http.disconnect":
            cancelled.set()
            return


def _input_status(exc: InputError) -> int:
    """400 for a request the model cannot serve, 413 for one that is too long for it."""
    text = str(exc)
    return 413 if ("context" in text or "longer than" in text or "exceeds" in text) else 400


def _file_in(folder: Path, name: str):
    path = (folder / name).resolve()
    if path.parent != folder.resolve() or not path.is_file():
        raise ApiError(404, "not_found", f"{name} not found")
    return FileResponse(path)


def _ranked(answer: dict, raw: bool) -> list[dict]:
    scores = answer["logits"] if raw else answer["probabilities"]
    return sorted(({"label": k, "score": float(v)} for k, v in scores.items()), key=lambda x: -x["score"])


def _unit(vector):
    import numpy as np

    return vector / max(float(np.linalg.norm(vector)), 1e-12)


def _base64(vector) -> str:
    """OpenAI's base64 encoding: the little-endian float32 bytes."""
    import base64

    import numpy as np

    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")


def _error(status: int, error_type: str, message: str) -> JSONResponse:
    return JSONResponse({"error": message, "error_type": error_type}, status_code=status)
