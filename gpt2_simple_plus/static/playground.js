// The playground: streams completions from /v1/completions and shows what the model
// expects at the cursor (/v1/next_token_probabilities). Plain JavaScript, no libraries.
"use strict";

const $ = (id) => document.getElementById(id);
const text = $("text");
let modelId = null;
let controller = null;  // aborts the running generation (the server then drops it)

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("key").value.trim();
  if (key) h["Authorization"] = "Bearer " + key;
  return h;
}

async function api(path, body) {
  const response = await fetch(path, {
    method: body ? "POST" : "GET", headers: headers(),
    body: body ? JSON.stringify(body) : undefined,
    signal: body && body.stream ? controller.signal : undefined,
  });
  if (response.status === 401) {
    $("keybox").style.display = "block";
    $("key").focus();
  }
  if (!response.ok) {
    const error = new Error(response.status + " " + response.statusText);
    try {
      const detail = (await response.json()).error;
      error.message = detail.message;
      error.code = detail.code;
    } catch (e) { /* not JSON */ }
    throw error;
  }
  return response;
}

function setStatus(message) { $("status").textContent = message; }

// A few top-k values only: the server compiles its sampling loop once per top-k value.
const TOP_K = [0, 1, 2, 3, 5, 10, 20, 40, 100];
const value = (id) => id === "top_k" ? TOP_K[Number($(id).value)] : Number($(id).value);

for (const id of ["temperature", "top_k", "top_p", "length"]) {
  const show = () => {
    const v = value(id);
    $(id + "-value").textContent =
      id === "top_k" && v === 0 ? "off" : id === "top_p" && v >= 1 ? "off" : String(v);
  };
  $(id).addEventListener("input", show);
  show();
}
$("temperature").addEventListener("change", () => showProbabilities());
$("top_k").addEventListener("change", () => showProbabilities());
$("top_p").addEventListener("change", () => showProbabilities());

async function connect() {
  try {
    const models = await (await api("/v1/models")).json();
    const model = models.data[0];
    modelId = model.id;
    $("model").textContent = "model " + model.id + ", context " + model.context_length +
      " tokens";
    $("length").max = model.max_tokens;
    setStatus("ready");
    showProbabilities();
  } catch (err) {
    setStatus(err.message);
  }
}

async function generate() {
  controller = new AbortController();
  $("generate").disabled = true;
  $("stop").disabled = false;
  text.readOnly = true;
  setStatus("generating...");
  const started = performance.now();
  let pieces = 0;
  try {
    const request = {
      model: modelId, prompt: text.value, stream: true,
      max_tokens: Number($("length").value), temperature: Number($("temperature").value),
      top_k: value("top_k"), top_p: value("top_p"),
    };
    let response = null;
    while (!response) {
      try {
        response = await api("/v1/completions", request);
      } catch (err) {
        // Longer than the model reads: send the end of the text (what the model would see).
        if (err.code !== "context_length_exceeded" || request.prompt.length < 2) throw err;
        request.prompt = request.prompt.slice(Math.floor(request.prompt.length / 4));
      }
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "", finish = null;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const line = buffer.slice(0, end).trim();
        buffer = buffer.slice(end + 2);
        if (!line.startsWith("data:")) continue;
        const data = line.slice(5).trim();
        if (data === "[DONE]") continue;
        const event = JSON.parse(data);
        if (event.error) throw new Error(event.error.message);
        for (const choice of event.choices) {
          text.value += choice.text;
          finish = choice.finish_reason || finish;
          pieces += 1;
        }
        text.scrollTop = text.scrollHeight;
        setStatus("generating... " + pieces + " pieces");
      }
    }
    const seconds = ((performance.now() - started) / 1000).toFixed(1);
    setStatus("done in " + seconds + " s" + (finish === "stop" ? " (it reached a stop)" : ""));
  } catch (err) {
    setStatus(err.name === "AbortError" ? "stopped" : "error: " + err.message);
  } finally {
    controller = null;
    text.readOnly = false;
    $("generate").disabled = false;
    $("stop").disabled = true;
    text.focus();
    text.setSelectionRange(text.value.length, text.value.length);
    showProbabilities();
  }
}

let probabilityTimer = null;
let probabilityRequest = 0;

function showProbabilities() {
  clearTimeout(probabilityTimer);
  probabilityTimer = setTimeout(fetchProbabilities, 200);
}

async function fetchProbabilities() {
  if (controller) return;  // while generating the worker is busy: ask afterwards
  const before = text.value.slice(0, text.selectionStart);
  const mine = ++probabilityRequest;
  let result;
  try {
    result = await (await api("/v1/next_token_probabilities", {
      prompt: before, top_k: 12, temperature: Number($("temperature").value),
    })).json();
  } catch (err) {
    $("context").textContent = err.message;
    return;
  }
  if (mine !== probabilityRequest) return;  // a newer question was asked meanwhile
  const tail = before.slice(-30);
  $("context").textContent = before ? "after \u201c" + (before.length > 30 ? "\u2026" : "") +
    tail + "\u201d" : "at the start of a text";
  const k = value("top_k"), p = value("top_p");
  const list = $("probs");
  list.replaceChildren();
  list.dataset.at = before.length;  // where these probabilities were asked
  let cumulative = 0;
  result.tokens.forEach((t, rank) => {
    const dropped = (k > 0 && rank >= k) || (p < 1 && cumulative >= p);
    cumulative += t.probability;
    const item = document.createElement("li");
    if (dropped) item.className = "dropped";
    const token = document.createElement("code");
    token.textContent = shown(t.token);
    const bar = document.createElement("div");
    bar.className = "bar";
    bar.style.width = (100 * t.probability).toFixed(1) + "%";
    const holder = document.createElement("div");
    holder.appendChild(bar);
    const number = document.createElement("span");
    number.className = "num";
    number.textContent = (100 * t.probability).toFixed(1) + "%";
    item.append(token, holder, number);
    item.title = "token id " + t.id;
    item.addEventListener("click", () => insertAtCursor(t.token));
    list.appendChild(item);
  });
}

// A token in quotes, with newlines, tabs and other invisible characters written out.
function shown(token) {
  const named = { "\n": "\\n", "\t": "\\t", "\r": "\\r" };
  return "\u201c" + token.replace(/[\x00-\x1f\x7f]/g, (c) => named[c] ||
    "\\x" + c.charCodeAt(0).toString(16).padStart(2, "0")) + "\u201d";
}

function insertAtCursor(piece) {
  if (controller || piece.startsWith("<id ") || /\\x[0-9a-f]{2}/.test(piece)) return;
  const at = text.selectionStart;
  text.value = text.value.slice(0, at) + piece + text.value.slice(text.selectionEnd);
  text.focus();
  text.setSelectionRange(at + piece.length, at + piece.length);
  showProbabilities();
}

$("generate").addEventListener("click", generate);
$("stop").addEventListener("click", () => controller && controller.abort());
for (const name of ["click", "keyup", "select"]) text.addEventListener(name, showProbabilities);
$("key").addEventListener("change", connect);
connect();
