"""``serve``: a loaded model behind an OpenAI-style HTTP API, with a playground page.

    gpt2_simple_plus serve --run_name run1            # http://127.0.0.1:8000

or from Python (in a notebook, ``background=True`` returns at once)::

    import gpt2_simple_plus as gpt2
    sess = gpt2.start_tf_sess()
    gpt2.load_gpt2(sess, run_name="run1")
    server = gpt2.serve(sess, background=True)     # server.url, then server.stop()

Routes: ``POST /v1/completions`` (OpenAI's completions format, streamed as
server-sent events with ``"stream": true``), ``GET /v1/models``, ``GET
/health``, ``POST /v1/next_token_probabilities`` (what the playground's "why
this token?" view shows) and the playground page at ``/``.

How it works. One worker thread owns the model. Requests wait in a bounded
queue (full: 503 with ``Retry-After``); the worker takes the oldest, and with
it every waiting request that samples the same way (same rule, temperature,
top-p and penalty, no seed), up to ``max_batch`` rows, and runs them as one
batch through the compiled decode loop, a few tokens per call, sending each
request its own text as it grows. A request with a ``seed`` runs alone, so
its text depends only on the request. A client that goes away is dropped
from its batch (or from the queue) at once.

Bad requests get OpenAI's error object with HTTP 400, naming the field; no
route reads or writes a file a request names. Needs the ``serve`` extra:
``pip install "gpt2_simple_plus[serve]"``.
"""

import asyncio
import collections
import dataclasses
import hmac
import ipaddress
import json
import math
import os
import secrets
import socket
import threading
import time
import uuid
from importlib import resources

from .errors import Gpt2Error
from .padding import length_bucket

API_KEY_ENV = "GPT2_SIMPLE_PLUS_API_KEY"
STREAM_CHUNK = 4  # tokens per compiled call: how often a streamed text grows
RETRY_AFTER = 1  # seconds a client is asked to wait when the queue is full
MAX_STOP = 4  # stop strings per request, as OpenAI allows
INSTALL_HINT = ('pip install "gpt2_simple_plus[serve]" (in a clone of the repository: '
                'pip install -e ".[serve]")')


class ServeError(Gpt2Error, RuntimeError):
    """The server cannot start: its extra is not installed, a setting is out of range, or
    the port is taken."""


class ApiError(Exception):
    """An HTTP error answered with OpenAI's error object."""

    def __init__(self, status, message, param=None, type="invalid_request_error", code=None,
                 headers=None):
        super().__init__(message)
        self.status, self.message, self.param = status, message, param
        self.type, self.code, self.headers = type, code, headers or {}

    def body(self):
        return {"error": {"message": self.message, "type": self.type, "param": self.param,
                          "code": self.code}}


# ---------------------------------------------------------------------------
# Limits and requests

@dataclasses.dataclass(frozen=True)
class Limits:
    """What one request may ask for, and how much may wait."""

    max_tokens: int = 512  # new tokens per choice
    max_batch: int = 32  # rows generated at once; also the most choices (prompts x n) a request has
    max_queue: int = 64  # requests waiting; beyond it, 503
    max_prompt_tokens: int = 1024  # tokens per prompt
    max_body_bytes: int = 1 << 20  # bytes of a request body

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ServeError(f"{field.name} must be a whole number of at least 1, "
                                 f"got {value!r}.")


@dataclasses.dataclass
class Completion:
    """One parsed ``POST /v1/completions`` body."""

    prompts: list  # token ids per prompt
    texts: list  # each prompt's text ("" means it starts from <|endoftext|>)
    max_tokens: int = 16
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 0.0  # 0 = off (OpenAI's 1.0)
    repetition_penalty: float = 1.0
    n: int = 1
    stop: tuple = ()
    seed: object = None
    stream: bool = False
    include_usage: bool = False

    @property
    def rows(self):
        return len(self.prompts) * self.n

    def config(self):
        from .sampling import SamplingConfig

        return SamplingConfig(temperature=self.temperature, top_k=self.top_k, top_p=self.top_p,
                              repetition_penalty=self.repetition_penalty)

    def batch_key(self):
        """Requests with equal keys can share a batch; a seeded request shares with none."""
        if self.seed is not None:
            return object()
        config = self.config()
        return (config.compile_key(), self.top_k, 0.0 if config.greedy else self.temperature,
                self.top_p, self.repetition_penalty)


COMPLETION_FIELDS = {"model", "prompt", "max_tokens", "temperature", "top_p", "n", "stop", "seed",
                     "stream", "stream_options", "top_k", "repetition_penalty", "user"}
# OpenAI fields accepted at their neutral value only.
NEUTRAL_FIELDS = {"echo": (False,), "logprobs": (None,), "best_of": (None, 1),
                  "frequency_penalty": (0, 0.0), "presence_penalty": (0, 0.0),
                  "suffix": (None, ""), "logit_bias": (None, {})}


def _show(value):
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _type_error(name, what, value):
    return ApiError(400, f"{name} must be {what}, got {_show(value)}.", name)


def _integer(body, name, default, lo, hi):
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise _type_error(name, "an integer", value)
    if not lo <= value <= hi:
        raise ApiError(400, f"{name} must be between {lo} and {hi}, got {value}.", name)
    return value


def _number(body, name, default, lo, hi, *, low_open=False):
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _type_error(name, "a number", value)
    if value > hi or value < lo or (low_open and value == lo):
        low = f"above {lo}" if low_open else f"at least {lo}"
        raise ApiError(400, f"{name} must be {low} and at most {hi}, got {value}.", name)
    return float(value)


def _boolean(body, name):
    value = body.get(name)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise _type_error(name, "true or false", value)
    return value


def check_fields(body, known, neutral=None):
    """400 for anything but a JSON object of known fields."""
    if not isinstance(body, dict):
        raise ApiError(400, f"The request body must be a JSON object, got {_show(body)}.")
    for name, value in body.items():
        if name in known:
            continue
        if neutral and name in neutral:
            if value is None or value in neutral[name]:
                continue
            raise ApiError(400, f"{name} is not supported by this server (leave it out).", name)
        raise ApiError(400, f"Unrecognized request argument supplied: {name}.", name)


def check_model(body, model_id):
    model = body.get("model")
    if model is not None and model != model_id:
        if not isinstance(model, str):
            raise _type_error("model", "a string", model)
        raise ApiError(404, f"The model {model!r} does not exist; this server serves "
                            f"{model_id!r}.", "model", code="model_not_found")


def encode_prompt(encoder, text, limit, param="prompt"):
    if not isinstance(text, str):
        raise _type_error(param, "a string or a list of strings", text)
    if text == "":
        if encoder.eot_token is None:
            raise ApiError(400, "This vocabulary has no <|endoftext|> token to start from: send "
                                "a prompt.", param)
        return [encoder.eot_token]
    ids = encoder.encode(text)
    if len(ids) > limit:
        raise ApiError(400, f"The prompt is {len(ids)} tokens long; this server takes at most "
                            f"{limit}.", param, code="context_length_exceeded")
    return ids


def parse_completion(body, limits, encoder, model_id):
    """A :class:`Completion`, or :class:`ApiError` naming the field that is wrong."""
    check_fields(body, COMPLETION_FIELDS, NEUTRAL_FIELDS)
    check_model(body, model_id)
    prompt = body.get("prompt", "")
    texts = prompt if isinstance(prompt, list) else [prompt]
    if not texts:
        raise ApiError(400, "prompt must not be an empty list.", "prompt")
    if len(texts) > limits.max_batch:
        raise ApiError(400, f"prompt holds {len(texts)} prompts; this server takes at most "
                            f"{limits.max_batch} per request.", "prompt")
    request = Completion(prompts=[], texts=texts)
    request.max_tokens = _integer(body, "max_tokens", 16, 1, limits.max_tokens)
    request.temperature = _number(body, "temperature", 1.0, 0.0, 2.0)
    request.top_k = _integer(body, "top_k", 0, 0, 1 << 30)
    top_p = _number(body, "top_p", 1.0, 0.0, 1.0)
    if top_p == 0.0:  # OpenAI: only the likeliest token
        request.temperature = 0.0
    request.top_p = 0.0 if top_p >= 1.0 else top_p  # 1.0 keeps every token: the filter is off
    request.repetition_penalty = _number(body, "repetition_penalty", 1.0, 0.0, 100.0,
                                         low_open=True)
    request.n = _integer(body, "n", 1, 1, limits.max_batch)
    if len(texts) * request.n > limits.max_batch:
        raise ApiError(400, f"{len(texts)} prompts x n={request.n} is {len(texts) * request.n} "
                            f"texts; this "
                            f"server makes at most {limits.max_batch} per request.", "n")
    stop = body.get("stop")
    stops = [] if stop is None else stop if isinstance(stop, list) else [stop]
    if len(stops) > MAX_STOP or not all(isinstance(s, str) and s for s in stops):
        raise _type_error("stop", f"a non-empty string or a list of up to {MAX_STOP} of them",
                          stop)
    request.stop = tuple(stops)
    request.seed = _integer(body, "seed", None, -(1 << 63), (1 << 64) - 1)
    request.stream = _boolean(body, "stream")
    options = body.get("stream_options")
    if options is not None:
        if not isinstance(options, dict) or set(options) - {"include_usage"}:
            raise _type_error("stream_options", 'an object like {"include_usage": true}', options)
        request.include_usage = _boolean(options, "include_usage")
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise _type_error("user", "a string", user)
    request.prompts = [encode_prompt(encoder, t, limits.max_prompt_tokens) for t in texts]
    return request


# ---------------------------------------------------------------------------
# The worker: one thread owns the model and runs batches

class Job:
    """One request waiting for, or in, a batch. ``emit(event)`` is called from the worker."""

    def __init__(self, request, emit):
        self.request = request
        self.emit = emit
        self.cancelled = False
        self.done = False
        self.look_at = time.monotonic() + 0.5  # when the server next checks the client is there
        self.key = request.batch_key() if request is not None else object()
        self.rows = request.rows if request is not None else 1


class Task(Job):
    """A call to run on the worker thread (it owns the model), alone."""

    def __init__(self, fn, emit):
        super().__init__(None, emit)
        self.fn = fn


class Row:
    """One choice being generated: its tokens, its text, what was already sent."""

    def __init__(self, job, index, prompt_ids, prompt_text, encoder):
        self.job, self.index, self.encoder = job, index, encoder
        self.context = prompt_ids
        self.head = encoder.decode(prompt_ids) if prompt_text else ""
        self.tokens, self.text, self.sent, self.finish = [], "", 0, None
        self.reported = False  # its finish reason was sent
        stops = job.request.stop
        self.hold = max((len(s) for s in stops), default=1) - 1

    def add(self, ids, eot):
        """Take the new ids; returns the text that is now certain, and whether the row ended."""
        request = self.job.request
        for t in ids:
            if t == eot:
                self.finish = "stop"
                break
            self.tokens.append(t)
            if len(self.tokens) >= request.max_tokens:
                self.finish = "length"
                break
        self.text = self._tail()
        from .generation import _cut_at_stop  # generation's rule; TensorFlow loads late

        cut = _cut_at_stop(self.text, request.stop)
        if len(cut) < len(self.text):
            self.text, self.finish = cut, "stop"
        safe = len(self.text)
        if self.finish is None:
            safe -= self.hold
            if self.text.endswith("\ufffd"):  # maybe half a character: wait for the rest
                safe = min(safe, len(self.text) - 1)
        new = self.text[self.sent:safe] if safe > self.sent else ""
        self.sent = max(self.sent, safe)
        return new

    def _tail(self):
        if not self.head:
            return self.encoder.decode(self.tokens)
        full = self.encoder.decode(self.context + self.tokens)
        return full[len(self.head):] if full.startswith(self.head) else \
            self.encoder.decode(self.tokens)


def _bucket(rows, max_batch):
    """Rows padded to a power of two (at most ``max_batch``), so few shapes are compiled."""
    return max(rows, length_bucket(rows, max_batch, smallest=1))


class Worker:
    """The generation thread: a bounded queue in, batches through the decoder, events out."""

    def __init__(self, sess, limits, batch_wait=0.005):
        from .generation import decoder_for

        self.sess, self.limits, self.batch_wait = sess, limits, float(batch_wait)
        self.model, self.encoder = sess.model, sess.encoder
        self.decoder = decoder_for(sess.model)
        self._queue = collections.deque()
        self._cond = threading.Condition()
        self._stopping = False
        self.running = 0  # rows in the batch being generated
        self._current = []  # its jobs
        self.stats = {"requests": 0, "batches": collections.Counter(), "rejected": 0,
                      "cancelled": 0, "tokens": 0}
        self._thread = threading.Thread(target=self._run, name="gpt2_simple_plus-serve-worker",
                                        daemon=True)
        self._thread.start()

    # -- called from the web server's thread ------------------------------------

    def submit(self, job):
        with self._cond:
            if self._stopping:
                raise ApiError(503, "The server is shutting down.", type="server_error")
            if len(self._queue) >= self.limits.max_queue:
                self.stats["rejected"] += 1
                raise ApiError(503, f"The server is busy ({len(self._queue)} requests waiting); "
                                    f"try again in {RETRY_AFTER} s.", type="server_error",
                               code="queue_full", headers={"Retry-After": str(RETRY_AFTER)})
            self._queue.append(job)
            self._cond.notify_all()

    def cancel(self, job):
        """Drop ``job``: from the queue at once, or from its batch at the next piece."""
        if job.cancelled or job.done:  # (a finished stream closes too)
            return
        job.cancelled = True
        with self._cond:
            self.stats["cancelled"] += 1
            try:
                self._queue.remove(job)
            except ValueError:
                pass

    @property
    def queued(self):
        return len(self._queue)

    def stop(self):
        with self._cond:
            self._stopping = True
            for job in list(self._queue) + self._current:  # the batch ends at its next piece
                if not (job.done or job.cancelled):
                    job.emit(("error", ApiError(503, "The server stopped.", type="server_error")))
                job.cancelled = True
            self._queue.clear()
            self._cond.notify_all()
        self._thread.join(timeout=60)

    # -- the worker thread -------------------------------------------------------

    def _run(self):
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            try:
                if isinstance(batch[0], Task):
                    result = batch[0].fn()
                    batch[0].done = True
                    batch[0].emit(("result", result))
                else:
                    self._generate(batch)
            except Exception as err:  # noqa: BLE001 - every request hears of it, the server lives
                failure = err if isinstance(err, ApiError) else ApiError(
                    500, f"Generation failed: {type(err).__name__}: {err}", type="server_error")
                for job in batch:
                    if not job.done:
                        job.emit(("error", failure))
            finally:
                for job in batch:
                    job.done = True
                self.running, self._current = 0, []

    def _next_batch(self):
        with self._cond:
            while not self._queue and not self._stopping:
                self._cond.wait()
            if self._stopping:
                return None
            first = self._queue.popleft()
            batch, rows = [first], first.rows
            if isinstance(first, Task):
                return batch
            deadline = time.monotonic() + self.batch_wait
            while True:
                for job in list(self._queue):
                    if job.key == first.key and rows + job.rows <= self.limits.max_batch:
                        self._queue.remove(job)
                        batch.append(job)
                        rows += job.rows
                left = deadline - time.monotonic()
                if left <= 0 or rows >= self.limits.max_batch or self._stopping:
                    break
                self._cond.wait(timeout=left)
            self.running, self._current = rows, batch
            return batch

    def _generate(self, jobs):
        encoder = self.encoder
        eot = encoder.eot_token
        rows = [Row(job, i * job.request.n + j, ids, text, encoder)
                for job in jobs for i, (ids, text) in enumerate(zip(job.request.prompts,
                                                                    job.request.texts))
                for j in range(job.request.n)]
        self.stats["requests"] += len(jobs)
        self.stats["batches"][len(rows)] += 1
        prompts = [r.context for r in rows]
        prompts += [prompts[-1]] * (_bucket(len(rows), self.limits.max_batch) - len(rows))
        first = jobs[0].request
        # A seeded request runs alone, seeded as generate(seed=...) seeds its first batch.
        seed = secrets.randbits(31) if first.seed is None else \
            (int(first.seed) * 1_000_003) & 0x7FFFFFFF
        length = max(job.request.max_tokens for job in jobs)
        pieces = self.decoder.stream(prompts, length, first.config(), seed=seed,
                                     stop_sequences=[[eot]] if eot is not None else (),
                                     chunk=STREAM_CHUNK)
        try:
            for piece in pieces:
                self._deliver(jobs, rows, piece, eot)
                if all(r.finish or r.job.cancelled for r in rows):
                    break
        finally:
            pieces.close()
        self._deliver(jobs, rows, None, eot)

    def _deliver(self, jobs, rows, piece, eot):
        """Send each job the text its rows gained (``piece`` of new ids per row; None at the
        end), each row's finish reason as soon as it ends, and "done" once all its rows have."""
        events = collections.defaultdict(list)
        for r, row in enumerate(rows):
            if row.job.cancelled or row.reported:
                continue
            if piece is not None:
                before = len(row.tokens)
                new = row.add(piece[r], eot)
                self.stats["tokens"] += len(row.tokens) - before
            else:  # the decoder ran out of room: whatever is left ends by length
                row.finish = row.finish or "length"
                new, row.sent = row.text[row.sent:], len(row.text)
            if row.finish:
                row.reported = True
            if new or row.finish:
                events[row.job].append((row.index, new, row.finish))
        for job in jobs:
            if job.cancelled or job.done:
                continue
            if events[job]:
                job.emit(("text", events[job]))
            mine = [r for r in rows if r.job is job]
            if all(r.reported for r in mine):
                job.done = True
                job.emit(("done", {
                    "prompt_tokens": sum(len(p) for p, t in zip(job.request.prompts,
                                                                job.request.texts) if t),
                    "completion_tokens": sum(len(r.tokens) for r in mine)}))


# ---------------------------------------------------------------------------
# The web app

def _require_extra():
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as err:
        raise ServeError(f"serve needs Starlette and uvicorn ({err.name} is not installed): "
                         f"{INSTALL_HINT}.") from None


def _static(name):
    return resources.files(__package__).joinpath("static", name).read_bytes()


class App:
    """The routes, over one :class:`Worker`."""

    def __init__(self, worker, model_id, limits, api_key=None):
        self.worker, self.model_id, self.limits = worker, model_id, limits
        self.api_key = api_key.encode("utf-8") if api_key else None
        self.created = int(time.time())
        self.page = _static("playground.html")
        self.script = _static("playground.js")

    def starlette(self):
        from starlette.applications import Starlette
        from starlette.exceptions import HTTPException
        from starlette.routing import Route

        routes = [
            Route("/", self.playground, methods=["GET"]),
            Route("/playground.js", self.playground_js, methods=["GET"]),
            Route("/health", self.health, methods=["GET"]),
            Route("/v1/models", self.models, methods=["GET"]),
            Route("/v1/completions", self.completions, methods=["POST"]),
            Route("/v1/next_token_probabilities", self.probabilities, methods=["POST"]),
        ]
        handlers = {HTTPException: self._http_error, Exception: self._internal_error}
        return Starlette(routes=routes, exception_handlers=handlers)

    # -- helpers -----------------------------------------------------------------

    @staticmethod
    def _json(body, status=200, headers=None):
        from starlette.responses import JSONResponse

        return JSONResponse(body, status_code=status, headers=headers)

    def _error(self, err):
        return self._json(err.body(), err.status, err.headers)

    async def _http_error(self, request, exc):
        kinds = {404: "Not found: " + request.url.path,
                 405: f"{request.method} is not allowed on {request.url.path}."}
        return self._error(ApiError(exc.status_code, kinds.get(exc.status_code, str(exc.detail))))

    async def _internal_error(self, request, exc):
        return self._error(ApiError(500, f"Internal error: {type(exc).__name__}.",
                                    type="server_error"))

    def _authorized(self, request):
        if self.api_key is None:
            return True
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            token.strip().encode("utf-8"), self.api_key)

    async def _body(self, request):
        if not self._authorized(request):
            raise ApiError(401, "Incorrect or missing API key: send the header "
                                "'Authorization: Bearer <key>'.", code="invalid_api_key")
        limit = self.limits.max_body_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise ApiError(413, f"The request body is {declared} bytes; this server takes at "
                                f"most {limit}.")
        data = bytearray()
        async for part in request.stream():
            data += part
            if len(data) > limit:
                raise ApiError(413, f"The request body is over {limit} bytes, the most this "
                                    f"server takes.")
        try:
            return json.loads(bytes(data))
        except (UnicodeDecodeError, ValueError) as err:
            raise ApiError(400, f"The body is not valid JSON: {err}.") from None

    def _submit(self, make_job):
        """A job of ours with an event queue the worker feeds from its thread."""
        loop = asyncio.get_running_loop()
        events = asyncio.Queue()

        def emit(event):
            try:
                loop.call_soon_threadsafe(events.put_nowait, event)
            except RuntimeError:  # the event loop has closed: the server is stopping
                pass

        job = make_job(emit)
        self.worker.submit(job)
        return job, events

    async def _wait(self, request, job, events):
        """The next event, or None when the client has gone (its job is then cancelled).

        The client is looked at every half second by the clock, not only when no event
        came: a running request's text events can come faster than that for its whole
        length, and a client that left must not keep its rows busy until the end."""
        while True:
            now = time.monotonic()
            if now >= job.look_at:
                job.look_at = now + 0.5
                if await request.is_disconnected():
                    self.worker.cancel(job)
                    return None
            try:
                return await asyncio.wait_for(events.get(), job.look_at - now)
            except asyncio.TimeoutError:
                pass

    # -- routes --------------------------------------------------------------------

    async def playground(self, request):
        from starlette.responses import Response

        return Response(self.page, media_type="text/html; charset=utf-8")

    async def playground_js(self, request):
        from starlette.responses import Response

        return Response(self.script, media_type="text/javascript; charset=utf-8")

    async def health(self, request):
        return self._json({"status": "ok", "model": self.model_id,
                           "queued": self.worker.queued, "running": self.worker.running,
                           "batches": {str(k): v for k, v in
                                       sorted(self.worker.stats["batches"].items())}})

    async def models(self, request):
        if not self._authorized(request):
            return self._error(ApiError(401, "Incorrect or missing API key: send the header "
                                             "'Authorization: Bearer <key>'.",
                                        code="invalid_api_key"))
        hp = self.worker.model.hparams
        return self._json({"object": "list", "data": [{
            "id": self.model_id, "object": "model", "created": self.created,
            "owned_by": "gpt2_simple_plus", "context_length": hp.n_ctx,
            "max_tokens": self.limits.max_tokens, "max_batch": self.limits.max_batch}]})

    async def completions(self, request):
        try:
            body = await self._body(request)
            parsed = parse_completion(body, self.limits, self.worker.encoder, self.model_id)
            job, events = self._submit(lambda emit: Job(parsed, emit))
        except ApiError as err:
            return self._error(err)
        head = {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion",
                "created": int(time.time()), "model": self.model_id}
        if parsed.stream:
            return _EventStream(self._events(job, events, head),
                                on_close=lambda: self.worker.cancel(job))
        texts = [""] * parsed.rows
        reasons = [None] * parsed.rows
        while True:
            event = await self._wait(request, job, events)
            if event is None:
                return self._error(ApiError(499, "The client closed the request."))
            kind, value = event
            if kind == "text":
                for index, text, reason in value:
                    texts[index] += text
                    reasons[index] = reason or reasons[index]
            elif kind == "error":
                return self._error(value)
            elif kind == "done":
                return self._json(dict(head, choices=[
                    {"text": t, "index": i, "logprobs": None, "finish_reason": r}
                    for i, (t, r) in enumerate(zip(texts, reasons))], usage=_usage(value)))

    async def _events(self, job, events, head):
        while True:
            kind, value = await events.get()
            if kind == "text":
                for index, text, reason in value:
                    chunk = dict(head, choices=[{"text": text, "index": index, "logprobs": None,
                                                 "finish_reason": reason}])
                    yield f"data: {json.dumps(chunk)}\n\n"
            elif kind == "error":
                yield f"data: {json.dumps(value.body())}\n\n"
                return
            elif kind == "done":
                if job.request.include_usage:
                    yield f"data: {json.dumps(dict(head, choices=[], usage=_usage(value)))}\n\n"
                yield "data: [DONE]\n\n"
                return

    async def probabilities(self, request):
        try:
            body = await self._body(request)
            check_fields(body, {"model", "prompt", "top_k", "temperature"})
            check_model(body, self.model_id)
            prompt = body.get("prompt", "")
            if not isinstance(prompt, str):
                raise _type_error("prompt", "a string", prompt)
            encode_prompt(self.worker.encoder, prompt, float("inf"))  # reads its last n_ctx
            top_k = _integer(body, "top_k", 10, 1, 1000)
            temperature = _number(body, "temperature", 1.0, 0.0, 100.0)
        except ApiError as err:
            return self._error(err)
        from .teaching import next_token_probabilities

        def compute():
            table = next_token_probabilities(self.worker.sess, prompt, top_k=top_k,
                                             temperature=temperature)
            return [{"token": p.token, "id": p.id, "probability": p.probability}
                    for p in table]
        try:
            job, events = self._submit(lambda emit: Task(compute, emit))
        except ApiError as err:
            return self._error(err)
        event = await self._wait(request, job, events)
        if event is None:
            return self._error(ApiError(499, "The client closed the request."))
        kind, value = event
        if kind == "error":
            return self._error(value)
        return self._json({"object": "next_token_probabilities", "model": self.model_id,
                           "prompt": prompt, "temperature": temperature, "tokens": value})


def _usage(counts):
    return dict(counts, total_tokens=counts["prompt_tokens"] + counts["completion_tokens"])


def _event_stream_class():
    from starlette.responses import StreamingResponse

    class EventStream(StreamingResponse):
        """Server-sent events that stop, and call ``on_close``, as soon as the client goes."""

        def __init__(self, body, on_close):
            super().__init__(body, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
            self.on_close = on_close

        async def __call__(self, scope, receive, send):
            import anyio

            try:
                async with anyio.create_task_group() as group:
                    async def stream():
                        await self.stream_response(send)
                        group.cancel_scope.cancel()

                    group.start_soon(stream)
                    await self.listen_for_disconnect(receive)
                    group.cancel_scope.cancel()
            except OSError:  # the client went away while we wrote
                pass
            finally:
                self.on_close()

    return EventStream


_classes = {}  # built on first use: Starlette is an optional extra


def _EventStream(body, on_close):  # noqa: N802 - stands for the class
    if "stream" not in _classes:
        _classes["stream"] = _event_stream_class()
    return _classes["stream"](body, on_close)


# ---------------------------------------------------------------------------
# Running it

class Server:
    """A running server: ``url``, ``stats`` (the worker's counters) and ``stop()``.

    Also a context manager (``with gpt2.serve(sess, background=True) as server:``)."""

    def __init__(self, worker, uvicorn_server, thread, url):
        self.worker, self._server, self._thread, self.url = worker, uvicorn_server, thread, url

    @property
    def stats(self):
        """Requests served, rejected (503) and cancelled, tokens made, and
        ``batches``: how many batches had each number of rows."""
        return self.worker.stats

    @property
    def running(self):
        return self._thread.is_alive()

    def stop(self):
        """Stop answering, finish or drop what is waiting, and free the port."""
        self._server.should_exit = True
        self.worker.stop()
        self._thread.join(timeout=30)

    def wait(self):
        """Block until the server stops; Ctrl-C (or Colab's stop button) stops it."""
        try:
            while self._thread.is_alive():
                self._thread.join(timeout=0.5)
        except KeyboardInterrupt:
            print("Stopping the server.", flush=True)
        finally:
            self.stop()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def __repr__(self):
        state = "running" if self.running else "stopped"
        return f"<gpt2_simple_plus server at {self.url} ({state})>"


def _bind(host, port):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise ServeError(f"Cannot listen on {host}:{port}: {err.strerror or err}. Choose another "
                         f"port (--port 8001, or port=0 for any free one).") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def network_warning(host, api_key):
    """What to print when ``host`` lets other machines in (None for this machine only).

        >>> network_warning("127.0.0.1", None) is None
        True
        >>> print(network_warning("0.0.0.0", None))  # doctest: +ELLIPSIS
        Warning: listening on 0.0.0.0: the API is reachable from the network...
    """
    if host == "localhost":
        return None
    try:
        if ipaddress.ip_address(host).is_loopback:
            return None
    except ValueError:  # a host name: it may resolve to anything
        pass
    return (f"Warning: listening on {host}: the API is reachable from the network, by anyone "
            f"who can reach this machine"
            + (" and has the API key." if api_key else
               f"; set an API key (--api_key, or ${API_KEY_ENV}) to keep others out."))


def _colab_url(port):
    """The address Colab's port proxy gives the server, or None outside Colab."""
    from .colab import _in_colab

    if not _in_colab():
        return None
    try:
        from google.colab.output import eval_js

        return eval_js(f"google.colab.kernel.proxyPort({int(port)})")
    except Exception:  # noqa: BLE001 - the local address still works inside the notebook
        return None


def serve(sess=None, *, run_name="run1", checkpoint_dir="checkpoint", model_name=None,
          model_dir="models", checkpoint="latest", host="127.0.0.1", port=8000, api_key=None,
          max_tokens=512, max_batch=32, max_queue=64, max_prompt_tokens=None,
          max_body_bytes=1 << 20, batch_wait=0.005, compute_dtype="float32", quantize=None,
          runtime=None, background=False):
    """Serve a model over HTTP: OpenAI's completions API and a playground page at ``/``.

    The model is the one in ``sess``, else the run ``checkpoint_dir/run_name``
    (or ``model_dir/model_name``) is loaded, as :func:`load_gpt2` does, with its
    ``compute_dtype``, ``quantize`` (``"int8"``: the fastest on a CPU) and ``runtime``.
    ``host``/``port`` is where it listens: the default, 127.0.0.1, is this
    machine only; ``host="0.0.0.0"`` lets other machines in (a classroom), and
    says so. ``api_key`` (default: ``$GPT2_SIMPLE_PLUS_API_KEY``) makes every
    route but ``/health`` and the page itself require ``Authorization: Bearer
    <key>``. Limits: ``max_tokens`` new tokens per text, ``max_batch`` texts
    generated at once (and per request), ``max_queue`` requests waiting before
    503s, ``max_prompt_tokens`` per prompt (default: the model's context),
    ``max_body_bytes`` per request. ``batch_wait`` seconds the worker waits for
    more compatible requests before starting a batch.

    ``background=False`` serves until Ctrl-C (or the notebook's stop button).
    ``background=True`` returns a :class:`Server` at once: ``server.url``,
    ``server.stop()``.

        >>> import gpt2_simple_plus as gpt2
        >>> from gpt2_simple_plus._examples import example_session
        >>> server = gpt2.serve(example_session(), port=0, background=True)
        ... # doctest: +ELLIPSIS
        Serving ... at http://127.0.0.1:...
        >>> import json, urllib.request
        >>> json.load(urllib.request.urlopen(server.url + "/health"))["status"]
        'ok'
        >>> server.stop()
    """
    _require_extra()
    import uvicorn

    from .eager import ensure_eager
    from .generation import load_gpt2
    from .session import start_tf_sess

    ensure_eager()  # a notebook that imported gpt_2_simple first gets eager execution back

    api_key = api_key if api_key is not None else os.environ.get(API_KEY_ENV) or None
    if sess is None:
        sess = start_tf_sess()
    if sess.model is None:
        load_gpt2(sess, checkpoint=checkpoint, run_name=run_name, checkpoint_dir=checkpoint_dir,
                  model_name=model_name, model_dir=model_dir, compute_dtype=compute_dtype,
                  quantize=quantize, runtime=runtime)
    limits = Limits(max_tokens=max_tokens, max_batch=max_batch, max_queue=max_queue,
                    max_prompt_tokens=max_prompt_tokens or sess.model.hparams.n_ctx,
                    max_body_bytes=max_body_bytes)
    if not (isinstance(batch_wait, (int, float)) and 0 <= batch_wait <= 10):
        raise ServeError(f"batch_wait must be between 0 and 10 seconds, got {batch_wait!r}.")
    model_id = sess.run_name or os.path.basename(os.path.normpath(sess.model_path or "")) \
        or "gpt2"
    sock = _bind(host, int(port))
    worker = Worker(sess, limits, batch_wait)
    app = App(worker, model_id, limits, api_key).starlette()
    config = uvicorn.Config(app, log_level="warning", access_log=False,
                            timeout_graceful_shutdown=3)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]},
                              name="gpt2_simple_plus-serve-http", daemon=True)
    thread.start()
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{bound}"
    while not server.started and thread.is_alive():
        time.sleep(0.01)
    handle = Server(worker, server, thread, url)
    try:
        print(f"Serving {model_id} at {url} (the playground; the API is {url}/v1)"
              + ("" if background else ". Ctrl-C stops it."), flush=True)
        warning = network_warning(host, api_key)
        if warning:
            print(warning, flush=True)
        colab = _colab_url(bound)
        if colab:
            print(f"In Colab, open: {colab}", flush=True)
    except KeyboardInterrupt:  # Ctrl-C already: stop what was started
        if background:
            handle.stop()
            raise
        print("Stopping the server.", flush=True)
        handle.stop()
        return None
    if background:
        return handle
    handle.wait()
    return None


__all__ = ["serve"]
