"""``serve``: real servers on 127.0.0.1 (free ports), the official ``openai`` client, raw HTTP
for what a client library hides (bad bodies, 503s, disconnects), the command line in a
subprocess, and the playground in headless Chromium.

The model is a tiny random GPT-2 with sharpened weights (clear greedy picks). Its decoder
is compiled without XLA and kept for the module, so each shape is traced once.
"""

import concurrent.futures
import doctest
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse

import pytest

import helpers

NO_EXTRA = 'the serve extra is not installed: pip install -e ".[test]"'
pytest.importorskip("starlette", reason=NO_EXTRA)
pytest.importorskip("uvicorn", reason=NO_EXTRA)
openai = pytest.importorskip("openai", reason='pip install -e ".[test]" installs openai')

import gpt2_simple_plus as gpt2  # noqa: E402
from gpt2_simple_plus import serving  # noqa: E402
from gpt2_simple_plus.generation import decoder_for  # noqa: E402

ARTIFACTS = os.path.join(helpers.REPO, "test-artifacts")


def make_model(folder, *, endless=False):
    """A random 2-layer GPT-2 whose greedy choices are clear; ``endless``: with no
    <|endoftext|> in its vocabulary, so its texts never end early."""
    from gpt2_simple_plus.checkpoints import save_pretrained_layout
    from gpt2_simple_plus.hparams import hparams_for

    n_vocab = helpers.make_tiny_vocab(folder)
    if endless:
        path = os.path.join(folder, "encoder.json")
        with open(path, encoding="utf-8") as f:
            vocab = json.load(f)
        del vocab["<|endoftext|>"]
        with open(path, "w", encoding="utf-8") as f:
            json.dump(vocab, f)
        n_vocab -= 1
    hparams = hparams_for("tiny", n_vocab=n_vocab)
    save_pretrained_layout(folder, helpers.decisive_weights(hparams, 3), hparams)
    return folder


def load(folder):
    sess = gpt2.start_tf_sess()
    gpt2.load_gpt2(sess, model_name="tiny", model_dir=os.path.dirname(folder))
    decoder_for(sess.model, jit_compile=False)  # tracing only: the shapes are compiled once
    return sess


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_model(str(tmp_path_factory.mktemp("serve") / "models" / "tiny"))


@pytest.fixture(scope="module")
def sess(model_dir):
    return load(model_dir)


@pytest.fixture(scope="module")
def endless_sess(tmp_path_factory):
    return load(make_model(str(tmp_path_factory.mktemp("endless") / "models" / "tiny"),
                           endless=True))


@pytest.fixture
def own_endless_sess(tmp_path):
    """A session of its own (the module's shared one is used by servers before)."""
    return load(make_model(str(tmp_path / "models" / "tiny"), endless=True))


@pytest.fixture
def start(sess):
    """``start(**settings)``: a background server on a free port, stopped after the test."""
    servers = []

    def start(**settings):
        server = gpt2.serve(sess, port=0, background=True, **settings)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def server(start):
    return start()


def client(server, **kwargs):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=kwargs.pop("api_key", "none"),
                         max_retries=0, timeout=120, **kwargs)


def call(server, method, path, body=None, headers=None, raw=None):
    """``(status, headers, parsed body)`` of one HTTP request."""
    url = urllib.parse.urlparse(server.url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=120)
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    conn.request(method, path, body=data,
                 headers=dict({"Content-Type": "application/json"}, **(headers or {})))
    response = conn.getresponse()
    text = response.read().decode("utf-8")
    conn.close()
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = text
    return response.status, dict(response.getheaders()), parsed


def complete(server, **body):
    status, _, answer = call(server, "POST", "/v1/completions", dict(model="tiny", **body))
    assert status == 200, answer
    return answer


def seed_running_to_length(server, prompt, max_tokens):
    """A seed whose text does not end early (this model often picks <|endoftext|>)."""
    for seed in range(100):
        answer = complete(server, prompt=prompt, max_tokens=max_tokens, seed=seed)
        if answer["choices"][0]["finish_reason"] == "length":
            return seed, answer["choices"][0]["text"]
    raise AssertionError("every seed stopped early")


# ---------------------------------------------------------------------------
# The OpenAI client

def test_openai_client_completion_matches_generate(server, sess):
    answer = client(server).completions.create(model="tiny", prompt="the hat", max_tokens=12,
                                                seed=7)
    assert answer.object == "text_completion" and answer.model == "tiny"
    assert answer.id.startswith("cmpl-") and answer.created > 0
    [choice] = answer.choices
    assert choice.index == 0 and choice.finish_reason == "length"
    assert answer.usage.prompt_tokens == len(sess.encoder.encode("the hat"))
    assert answer.usage.completion_tokens == 12
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + 12
    # a seeded request is reproducible, and is exactly what generate(seed=...) makes
    again = client(server).completions.create(model="tiny", prompt="the hat", max_tokens=12,
                                               seed=7)
    assert again.choices[0].text == choice.text
    [expected] = gpt2.generate(sess, prefix="the hat", length=12, seed=7, temperature=1.0,
                               include_prefix=False, return_as_list=True)
    assert choice.text.lstrip("\n") == expected
    other = client(server).completions.create(model="tiny", prompt="the hat", max_tokens=12,
                                               seed=8)
    assert other.choices[0].text != choice.text


def test_list_of_prompts_and_n(server, sess):
    prompts = ["the hat", "on the mat and"]
    answer = client(server).completions.create(model="tiny", prompt=prompts, n=2, max_tokens=6,
                                                temperature=0)
    assert [c.index for c in answer.choices] == [0, 1, 2, 3]
    texts = [c.text for c in answer.choices]
    # greedy: both choices of a prompt agree, and each prompt gets its own continuation
    assert texts[0] == texts[1] and texts[2] == texts[3] and texts[0] != texts[2]
    for prompt, text in zip(prompts, texts[::2]):
        alone = complete(server, prompt=prompt, max_tokens=6, temperature=0)
        assert alone["choices"][0]["text"] == text
    assert answer.usage.prompt_tokens == sum(len(sess.encoder.encode(p)) for p in prompts)
    assert answer.usage.completion_tokens == 4 * 6


def test_stop_ends_the_text_before_the_stop_string(server):
    seed, full = seed_running_to_length(server, "the", 20)
    stop = full[len(full) // 2:len(full) // 2 + 2]
    cut = full.index(stop)
    answer = client(server).completions.create(model="tiny", prompt="the", max_tokens=20,
                                                seed=seed, stop=[stop, "never appears"])
    assert answer.choices[0].text == full[:cut]
    assert answer.choices[0].finish_reason == "stop"


def test_streaming_gives_the_same_text_piece_by_piece(server):
    seed, expected = seed_running_to_length(server, "the hat", 24)
    chunks = list(client(server).completions.create(model="tiny", prompt="the hat",
                                                    max_tokens=24, seed=seed, stream=True))
    assert len(chunks) > 2  # it really came in pieces
    assert "".join(c.choices[0].text for c in chunks) == expected
    assert [c.choices[0].finish_reason for c in chunks][-1] == "length"
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])
    assert len({c.id for c in chunks}) == 1
    # the wire format: server-sent events ending with [DONE], usage when asked
    status, headers, text = call(server, "POST", "/v1/completions", dict(
        prompt="the hat", max_tokens=5, stream=True, stream_options={"include_usage": True}))
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    events = [e for e in text.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    assert json.loads(events[-2][6:])["usage"]["completion_tokens"] == 5
    assert server.stats["cancelled"] == 0  # streams that finish are not counted as dropped


def test_streaming_a_list_of_prompts(server):
    chunks = list(client(server).completions.create(
        model="tiny", prompt=["the", "a hat"], n=2, max_tokens=8, stream=True, stop="\n"))
    finished = sorted(c.choices[0].index for c in chunks if c.choices[0].finish_reason)
    assert finished == [0, 1, 2, 3]


def test_models_and_health(server):
    models = client(server).models.list()
    assert [m.id for m in models.data] == ["tiny"]
    status, _, health = call(server, "GET", "/health")
    assert status == 200 and health["status"] == "ok" and health["model"] == "tiny"


def test_next_token_probabilities_endpoint(server, sess):
    status, _, answer = call(server, "POST", "/v1/next_token_probabilities",
                             {"prompt": "the h", "top_k": 5, "temperature": 0.5})
    assert status == 200, answer
    expected = gpt2.next_token_probabilities(sess, "the h", top_k=5, temperature=0.5)
    assert [t["id"] for t in answer["tokens"]] == expected.ids
    assert [t["probability"] for t in answer["tokens"]] == pytest.approx(
        [p.probability for p in expected], rel=1e-5)


# ---------------------------------------------------------------------------
# Load: batching, no interleaving, a bounded queue, clients that leave

def test_concurrent_requests_are_batched_and_never_mixed(start):
    prompts = ["the hat", "a", "on the mat", "and the", "of", "to the sea and"]
    sequential = start(batch_wait=0)
    alone = [complete(sequential, prompt=p, max_tokens=10, temperature=0)["choices"][0]["text"]
             for p in prompts]
    assert sorted(sequential.stats["batches"].elements()) == [1] * len(prompts)
    assert len(set(alone)) > 1
    batched = start(batch_wait=1.0)  # waits up to 1 s for compatible requests to join
    with concurrent.futures.ThreadPoolExecutor(len(prompts)) as pool:
        answers = list(pool.map(
            lambda p: complete(batched, prompt=p, max_tokens=10, temperature=0), prompts))
    assert [a["choices"][0]["text"] for a in answers] == alone
    assert dict(batched.stats["batches"]) == {len(prompts): 1}, batched.stats
    # incompatible settings (another temperature) never share a batch
    before = sum(batched.stats["batches"].values())
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda t: complete(batched, prompt="the", max_tokens=4, temperature=t),
                      [0.5, 0.9]))
    assert sum(batched.stats["batches"].values()) == before + 2


def test_a_full_queue_answers_503_with_retry_after(start):
    server = start(max_queue=1, batch_wait=1.5)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        running = pool.submit(complete, server, prompt="the", max_tokens=4, temperature=1.0)
        time.sleep(0.3)  # the worker holds it, waiting for company
        waiting = pool.submit(complete, server, prompt="the", max_tokens=4, temperature=0.5)
        time.sleep(0.3)  # incompatible: it waits in the queue, which is now full
        status, headers, answer = call(server, "POST", "/v1/completions",
                                       {"prompt": "the", "max_tokens": 4})
        assert status == 503, answer
        assert headers["retry-after"] == "1"
        assert answer["error"]["code"] == "queue_full"
        assert running.result()["choices"] and waiting.result()["choices"]
    assert server.stats["rejected"] == 1
    with pytest.raises(openai.APIStatusError) as caught:  # what the official client sees
        hold = threading.Thread(target=complete, args=(server,), kwargs=dict(
            prompt="the", max_tokens=4))
        hold.start()
        time.sleep(0.3)
        queued = threading.Thread(target=complete, args=(server,), kwargs=dict(
            prompt="the", max_tokens=4, temperature=0.3))
        queued.start()
        time.sleep(0.3)
        try:
            client(server).completions.create(model="tiny", prompt="the", max_tokens=4)
        finally:
            hold.join()
            queued.join()
    assert caught.value.status_code == 503


def _send_and_leave(server, body, read_first):
    """Send a request on a raw socket, read a little (or nothing), and close it."""
    url = urllib.parse.urlparse(server.url)
    data = json.dumps(body).encode()
    with socket.create_connection((url.hostname, url.port), timeout=60) as sock:
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: "
                     b"application/json\r\nContent-Length: " + str(len(data)).encode() +
                     b"\r\n\r\n" + data)
        if read_first:
            received = b""
            while b"data: {" not in received:
                received += sock.recv(4096)
        else:  # leave while the text is being made, after the server's first look
            before, deadline = server.stats["tokens"], time.time() + 60
            while server.stats["tokens"] < before + 8:
                assert time.time() < deadline, "the server made no text for the request"
                time.sleep(0.01)
            time.sleep(0.6)


@pytest.mark.parametrize("stream", [True, False])
def test_a_client_that_leaves_frees_its_slot(own_endless_sess, stream):
    server = gpt2.serve(own_endless_sess, port=0, background=True, max_tokens=2000)
    try:
        _leave_and_check(server, stream)
    finally:
        server.stop()


def _leave_and_check(server, stream):
    # Warm first: once the loop is compiled, text events come faster than the server's
    # half-second look at the client, which must still see it leave.
    assert complete(server, prompt="the", max_tokens=3)["usage"]["completion_tokens"] == 3
    _send_and_leave(server, {"prompt": "the", "max_tokens": 2000, "stream": stream},
                    read_first=stream)
    deadline = time.time() + 60  # generous: the server looks every half second
    while (server.stats["cancelled"] < 1 or server.worker.running) and time.time() < deadline:
        time.sleep(0.05)
    assert server.stats["cancelled"] == 1 and server.worker.running == 0
    assert server.stats["tokens"] < 2000  # it stopped generating for the client that left
    assert complete(server, prompt="the", max_tokens=3)["usage"]["completion_tokens"] == 3


def test_stopping_the_server_ends_what_is_running(endless_sess):
    server = gpt2.serve(endless_sess, port=0, background=True, max_tokens=2000)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        running = pool.submit(call, server, "POST", "/v1/completions",
                              {"prompt": "the", "max_tokens": 2000})
        while not server.worker.running:
            time.sleep(0.05)
        start = time.time()
        server.stop()
        assert time.time() - start < 20 and not server.running
        try:
            status, _, answer = running.result(timeout=30)
        except (ConnectionError, http.client.HTTPException):
            pass  # the connection closed: also an answer
        else:
            assert status == 503 and "stopped" in answer["error"]["message"]
    assert server.stats["tokens"] < 2000
    with pytest.raises(OSError):  # the port is free and nobody answers
        socket.create_connection(urllib.parse.urlparse(server.url)[1].split(":"), timeout=5)


# ---------------------------------------------------------------------------
# Bad requests: OpenAI's error object, naming the field, never a 500

@pytest.mark.parametrize("body,param,fragment", [
    (b"{not json", None, "not valid JSON"),
    (b"[1, 2]", None, "must be a JSON object"),
    ({"prompt": "a", "colour": "red"}, "colour", "Unrecognized request argument"),
    ({"prompt": "a", "max_tokens": "3"}, "max_tokens", "must be an integer"),
    ({"prompt": "a", "max_tokens": 0}, "max_tokens", "between 1 and"),
    ({"prompt": "a", "max_tokens": 10 ** 6}, "max_tokens", "between 1 and 512"),
    ({"prompt": "a", "max_tokens": True}, "max_tokens", "must be an integer"),
    ({"prompt": "a", "temperature": -1}, "temperature", "at least 0.0"),
    ({"prompt": "a", "temperature": "hot"}, "temperature", "must be a number"),
    ({"prompt": "a", "top_p": 1.5}, "top_p", "at most 1.0"),
    ({"prompt": "a", "top_k": -2}, "top_k", "between 0 and"),
    ({"prompt": "a", "repetition_penalty": 0}, "repetition_penalty", "above 0.0"),
    ({"prompt": "a", "n": 0}, "n", "between 1 and"),
    ({"prompt": ["a"] * 5, "n": 8}, "n", "at most 32 per request"),
    ({"prompt": "a", "stop": ["a", "b", "c", "d", "e"]}, "stop", "up to 4"),
    ({"prompt": "a", "stop": [""]}, "stop", "non-empty string"),
    ({"prompt": "a", "stream": "yes"}, "stream", "true or false"),
    ({"prompt": "a", "seed": 1.5}, "seed", "must be an integer"),
    ({"prompt": 3}, "prompt", "a string or a list of strings"),
    ({"prompt": []}, "prompt", "must not be an empty list"),
    ({"prompt": ["a", None]}, "prompt", "a string or a list of strings"),
    ({"prompt": "the " * 200}, "prompt", "at most 64"),
    ({"prompt": "a", "logprobs": 5}, "logprobs", "not supported"),
    ({"prompt": "a", "stream_options": {"x": 1}}, "stream_options", "include_usage"),
])
def test_bad_requests_get_400_naming_the_field(server, body, param, fragment):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    status, headers, answer = call(server, "POST", "/v1/completions", raw=raw)
    assert status == 400, answer
    assert headers["content-type"] == "application/json"
    assert answer["error"]["param"] == param
    assert answer["error"]["type"] == "invalid_request_error"
    assert fragment in answer["error"]["message"], answer


def test_other_mistakes_get_error_objects(start):
    server = start(max_body_bytes=1000)
    status, _, answer = call(server, "POST", "/v1/completions", {"prompt": "a" * 2000})
    assert status == 413 and "1000" in answer["error"]["message"]
    status, _, answer = call(server, "POST", "/v1/completions", {"model": "gpt-4",
                                                                 "prompt": "a"})
    assert status == 404 and answer["error"]["code"] == "model_not_found"
    assert "'tiny'" in answer["error"]["message"]
    status, _, answer = call(server, "GET", "/v1/completions")
    assert status == 405 and "error" in answer
    for path in ("/../../etc/passwd", "/static/playground.html", "/v1/files/hparams.json"):
        status, _, answer = call(server, "GET", path)
        assert status == 404 and "error" in answer  # no route serves a file a request names
    status, _, answer = call(server, "POST", "/v1/next_token_probabilities", {"prompt": 1})
    assert status == 400 and answer["error"]["param"] == "prompt"
    with pytest.raises(openai.BadRequestError) as caught:
        client(server).completions.create(model="tiny", prompt="a", max_tokens=-1)
    assert caught.value.body["param"] == "max_tokens"


def test_settings_out_of_range_are_refused(sess):
    with pytest.raises(serving.ServeError, match="max_batch must be a whole number"):
        gpt2.serve(sess, port=0, max_batch=0, background=True)
    with pytest.raises(serving.ServeError, match="batch_wait"):
        gpt2.serve(sess, port=0, batch_wait=-1, background=True)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(gpt2.Gpt2Error, match="Choose another port"):
            gpt2.serve(sess, port=taken.getsockname()[1], background=True)


# ---------------------------------------------------------------------------
# Security

def test_api_key_is_required_on_every_route_but_health(start):
    server = start(api_key="s3cret")
    good = {"Authorization": "Bearer s3cret"}
    body = {"prompt": "the", "max_tokens": 2}
    assert call(server, "GET", "/health")[0] == 200
    assert call(server, "GET", "/")[0] == 200  # the page holds no data: it asks for the key
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"},
                    {"Authorization": "Basic s3cret"}):
        for method, path in (("GET", "/v1/models"), ("POST", "/v1/completions"),
                             ("POST", "/v1/next_token_probabilities")):
            status, _, answer = call(server, method, path, body, headers=headers)
            assert status == 401, (headers, path)
            assert answer["error"]["code"] == "invalid_api_key"
    assert call(server, "GET", "/v1/models", headers=good)[0] == 200
    assert call(server, "POST", "/v1/completions", body, headers=good)[0] == 200
    answer = client(server, api_key="s3cret").completions.create(model="tiny", prompt="the",
                                                                  max_tokens=2)
    assert answer.usage.completion_tokens == 2
    with pytest.raises(openai.AuthenticationError):
        client(server, api_key="wrong").completions.create(model="tiny", prompt="the")


def test_api_key_from_the_environment(start, monkeypatch):
    monkeypatch.setenv(serving.API_KEY_ENV, "from-env")
    server = start()
    assert call(server, "GET", "/v1/models")[0] == 401
    assert call(server, "GET", "/v1/models", headers={"Authorization": "Bearer from-env"})[0] \
        == 200


def test_network_warning():
    assert serving.network_warning("127.0.0.1", None) is None
    assert serving.network_warning("localhost", None) is None
    assert serving.network_warning("::1", None) is None
    warning = serving.network_warning("0.0.0.0", None)
    assert "reachable from the network" in warning and "--api_key" in warning
    assert "has the API key" in serving.network_warning("192.168.1.5", "k")


def test_local_server_prints_its_address_and_no_warning(start, capsys):
    server = start()
    out = capsys.readouterr().out
    assert f"Serving tiny at {server.url}" in out and "Warning" not in out
    assert server.url.startswith("http://127.0.0.1:")


# ---------------------------------------------------------------------------
# The playground page

def test_playground_is_served_from_the_package_with_nothing_from_elsewhere(server):
    status, headers, page = call(server, "GET", "/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert "<textarea" in page and 'src="/playground.js"' in page
    for slider in ("temperature", "top_k", "top_p", "length"):
        assert f'id="{slider}" type="range"' in page
    status, headers, script = call(server, "GET", "/playground.js")
    assert status == 200 and "javascript" in headers["content-type"]
    assert "/v1/completions" in script and "/v1/next_token_probabilities" in script
    for text in (page, script):  # works offline: no CDN, no other site
        assert "http://" not in text and "https://" not in text and "//cdn" not in text


def _browser():
    """Headless Chromium driven by chromedriver (Debian's chromium and chromium-driver)."""
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not binary or not driver_path:
        pytest.skip("Chromium is not installed (apt-get install chromium chromium-driver; "
                    ".ci/run installs them)")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--no-proxy-server", "--window-size=1280,860"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(driver_path), options=options)


def test_playground_in_a_real_browser(start):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    server = start()
    driver = _browser()
    try:
        driver.get(server.url + "/")
        wait = WebDriverWait(driver, 120)
        wait.until(lambda d: d.find_element(By.ID, "status").text == "ready")
        assert "model tiny" in driver.find_element(By.ID, "model").text
        assert driver.find_element(By.ID, "top_k-value").text == "40"
        text = driver.find_element(By.ID, "text")
        text.clear()
        text.send_keys("the hat")
        driver.execute_script("document.getElementById('length').value = 40;"
                              "document.getElementById('length').dispatchEvent("
                              "new Event('input'))")
        driver.find_element(By.ID, "generate").click()
        wait.until(lambda d: d.find_element(By.ID, "status").text.startswith("done"))
        value = text.get_property("value")
        assert value.startswith("the hat") and len(value) > len("the hat")
        assert "pieces" not in driver.find_element(By.ID, "status").text
        # "why this token?": the probabilities at the cursor (the end of the text)
        end = driver.execute_script("return document.getElementById('text').value.length")
        wait.until(lambda d: d.find_element(By.ID, "probs").get_attribute("data-at") == str(end))
        assert len(driver.find_elements(By.CSS_SELECTOR, "#probs li")) == 12
        assert driver.find_element(By.ID, "context").text.startswith("after \u201c")
        assert driver.find_elements(By.CSS_SELECTOR, "#probs li .bar")
        os.makedirs(ARTIFACTS, exist_ok=True)
        shot = os.path.join(ARTIFACTS, "playground.png")
        assert driver.save_screenshot(shot) and os.path.getsize(shot) > 10_000
        assert server.stats["requests"] >= 1
        logs = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not logs, logs
    finally:
        driver.quit()


# ---------------------------------------------------------------------------
# The command line, the optional extra, the public name

@pytest.mark.slow
def test_command_line_serves_until_ctrl_c(model_dir, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != serving.API_KEY_ENV}
    env.update(PYTHONUNBUFFERED="1", PYTHONPATH=helpers.REPO)  # this checkout's package
    proc = subprocess.Popen(
        [sys.executable, "-m", "gpt2_simple_plus", "serve", "--model_name", "tiny",
         "--model_dir", os.path.dirname(model_dir), "--port", "0", "--max_tokens", "8",
         "--api-key", "k"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    try:
        line = ""
        while "Serving" not in line:
            line = proc.stdout.readline()
            assert line or proc.poll() is None, proc.stderr.read()
        url = line.split(" at ")[1].split(" ")[0]
        assert url.startswith("http://127.0.0.1:") and "Ctrl-C stops it" in line

        class Server:
            pass
        here = Server()
        here.url = url
        assert call(here, "GET", "/v1/models")[0] == 401
        status, _, answer = call(here, "POST", "/v1/completions", {"prompt": "the",
                                                                   "max_tokens": 9},
                                 headers={"Authorization": "Bearer k"})
        assert status == 400 and "between 1 and 8" in answer["error"]["message"]
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert "Stopping the server." in out and "Traceback" not in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_without_the_extra_the_message_says_what_to_install(tmp_path):
    code = ("import sys; sys.modules['uvicorn'] = None\n"
            "from gpt2_simple_plus import cli\n"
            "sys.exit(cli.main(['serve']))")
    env = {"PYTHONPATH": helpers.REPO}  # this checkout's package
    result = helpers.run_python(code, cwd=tmp_path, timeout=120, env=env)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ")
    assert 'pip install "gpt2_simple_plus[serve]"' in result.stderr
    assert 'pip install -e ".[serve]"' in result.stderr
    code = ("import sys; sys.modules['starlette'] = None\n"
            "import gpt2_simple_plus as gpt2\n"
            "try:\n    gpt2.serve()\n"
            "except gpt2.Gpt2Error as err:\n    print(type(err).__name__, err)")
    result = helpers.run_python(code, cwd=tmp_path, timeout=120, env=env)
    assert result.stdout.startswith("ServeError serve needs Starlette and uvicorn"), result


def test_command_line_mistakes_are_one_line(tmp_path):
    code = ("import sys\nfrom gpt2_simple_plus import cli\n"
            "sys.exit(cli.main(['serve', '--run_name', 'nope', '--port', '0']))")
    result = helpers.run_python(code, cwd=tmp_path, timeout=120, env={"PYTHONPATH": helpers.REPO})
    assert result.returncode == 2, result.stderr
    last = result.stderr.strip().splitlines()[-1]  # (after TensorFlow's own start-up notes)
    assert last.startswith("error: No run named 'nope'") and "Traceback" not in result.stderr
    code = ("import sys\nfrom gpt2_simple_plus import cli\n"
            "sys.exit(cli.main(['serve', '--port', '70000']))")
    result = helpers.run_python(code, cwd=tmp_path, timeout=120, env={"PYTHONPATH": helpers.REPO})
    assert result.returncode == 2 and "expected a port number" in result.stderr


def test_serve_is_the_function_even_after_its_module_is_imported():
    import gpt2_simple_plus.serving  # noqa: F401 - the module's name differs from the function's

    assert gpt2.serve is serving.serve and callable(gpt2.serve)
    assert "serve" in gpt2.__all__


def test_doctests():
    result = doctest.testmod(serving, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
