// The page: send the text to the server, and (switch on) run the same bundle in this browser with
// transformers.js on WebAssembly, from files this server serves; show both answers and latencies.
const $ = (id) => document.getElementById(id);
const info = await (await fetch("/info")).json();
const generation = info.task === "text-generation";
const embedding = info.task === "feature-extraction";
const tagging = info.task === "token-classification";
const reading = info.task === "question-answering";
const DTYPES = { "model.onnx": "fp32", "model_fp16.onnx": "fp16", "model_quantized.onnx": "q8", "model_q4.onnx": "q4" };
const dtype = DTYPES[info.manifest.model.file.split("/").pop()] || "fp32";
$("model").textContent = `${info.task} · ${info.model} (${info.manifest.model.precision}) · ` +
  `${info.manifest.isa.tuned_for ? "tuned for " + info.manifest.isa.tuned_for : "float"}`;
$("text").placeholder = generation ? "Type the start of a text"
  : embedding ? "One sentence per line: the first is compared with the others"
  : tagging ? "Type a sentence: its named entities are marked"
  : reading ? "First line: a question. The lines after it: the text that answers it" : "Type a sentence to classify";
if (!info.browser) {
  $("in-browser").disabled = true;
  $("browser-note").hidden = false;
  $("browser-note").textContent = info.browser_note || "In-browser mode needs transformers.js on the server (npm ci in web/).";
}

function bars(target, scores) {
  target.replaceChildren();
  scores.forEach((s, i) => {
    const row = document.createElement("div");
    row.className = "bar" + (i === 0 ? " top" : "");
    row.dataset.label = s.label;
    row.innerHTML = `<span class="name"></span><span class="track"><span class="fill"></span></span><span class="pct"></span>`;
    row.querySelector(".name").textContent = s.label;
    row.querySelector(".fill").style.width = `${Math.max(0, 100 * s.score).toFixed(1)}%`;
    row.querySelector(".pct").textContent = `${(100 * s.score).toFixed(1)}%`;
    target.append(row);
  });
}

function fail(target, message) {
  target.innerHTML = "";
  const p = document.createElement("p");
  p.className = "error";
  p.textContent = message;
  target.append(p);
}

// an embedding bundle: every line's vector, then the first line's cosine to each of the others
function lines(text) {
  return text.split("\n").map((l) => l.trim()).filter(Boolean);
}

function similarities(sentences, vectors) {
  const unit = vectors.map((v) => { const n = Math.hypot(...v) || 1; return v.map((x) => x / n); });
  return sentences.slice(1).map((s, i) => ({
    label: s, score: unit[0].reduce((sum, x, k) => sum + x * unit[i + 1][k], 0),
  })).sort((a, b) => b.score - a.score);
}

// a tagger: the entities as "words (type)" lines, from the server's spans or from transformers.js's tokens
function entityList(target, entities) {
  target.replaceChildren();
  if (!entities.length) {
    const p = document.createElement("p");
    p.className = "note";
    p.textContent = "no entities";
    target.append(p);
  }
  for (const e of entities) {
    const row = document.createElement("div");
    row.className = "entity";
    row.dataset.entity = `${e.word} (${e.type})`;
    row.innerHTML = `<mark></mark> <span class="name"></span> <span class="pct"></span>`;
    row.querySelector("mark").textContent = e.word;
    row.querySelector(".name").textContent = e.type;
    row.querySelector(".pct").textContent = `${(100 * e.score).toFixed(1)}%`;
    target.append(row);
  }
}

// transformers.js lists every token with its tag (no offsets): a word is tagged by its first subword, and
// B-/I- words join into one entity, as edgenlp's runtime reads them
function tokensToEntities(tokens) {
  const words = [];
  for (const t of tokens) {
    if (t.word.startsWith("##") && words.length) words[words.length - 1].word += t.word.slice(2);
    else words.push({ word: t.word, tag: t.entity, score: t.score });
  }
  const entities = [];
  let open = null;
  for (const w of words) {
    const [prefix, type] = w.tag === "O" ? ["O", ""] : w.tag.includes("-") ? [w.tag.slice(0, 1), w.tag.slice(2)] : ["I", w.tag];
    if (prefix === "I" && open && open.type === type) {
      open.word += " " + w.word;
      open.scores.push(w.score);
      continue;
    }
    open = prefix === "O" ? null : { word: w.word, type, scores: [w.score] };
    if (open) entities.push(open);
  }
  return entities.map((e) => ({ word: e.word, type: e.type, score: e.scores.reduce((a, b) => a + b) / e.scores.length }));
}

// a reader: the first line is the question, the rest the context
function questionOf(text) {
  const [question, ...rest] = text.split("\n");
  return { question: question.trim(), context: rest.join("\n").trim() };
}

function answerView(target, answer, score) {
  target.replaceChildren();
  const p = document.createElement("p");
  p.className = "answer-span";
  p.dataset.answer = answer;
  p.innerHTML = `<mark></mark> <span class="pct"></span>`;
  p.querySelector("mark").textContent = answer || "(no answer)";
  p.querySelector(".pct").textContent = `${(100 * score).toFixed(1)}%`;
  target.append(p);
}

async function onServer(text) {
  const out = $("server-answer");
  const t0 = performance.now();
  if (embedding) {
    const sentences = lines(text);
    if (sentences.length < 2) return fail(out, "type at least two lines: the first is compared with the others");
    const response = await fetch("/embed", { method: "POST", headers: { "content-type": "application/json" },
                                             body: JSON.stringify({ inputs: sentences }) });
    const body = await response.json();
    if (!response.ok) return fail(out, body.error);
    bars(out, similarities(sentences, body));
    $("server-latency").textContent = `${(performance.now() - t0).toFixed(1)} ms round trip · ` +
      `${Number(response.headers.get("x-compute-time")).toFixed(1)} ms on the server`;
    return;
  }
  if (reading) {
    const asked = questionOf(text);
    if (!asked.question || !asked.context) return fail(out, "type a question on the first line and the text below it");
    const response = await fetch("/predict", { method: "POST", headers: { "content-type": "application/json" },
                                               body: JSON.stringify({ inputs: asked }) });
    const body = await response.json();
    if (!response.ok) return fail(out, body.error);
    answerView(out, body.answer, body.score);
    $("server-latency").textContent = `${(performance.now() - t0).toFixed(1)} ms round trip · ` +
      `${Number(response.headers.get("x-compute-time")).toFixed(1)} ms on the server`;
    return;
  }
  if (tagging) {
    const response = await fetch("/predict", { method: "POST", headers: { "content-type": "application/json" },
                                               body: JSON.stringify({ inputs: text }) });
    const body = await response.json();
    if (!response.ok) return fail(out, body.error);
    entityList(out, body.map((e) => ({ word: e.word, type: e.entity_group, score: e.score })));
    $("server-latency").textContent = `${(performance.now() - t0).toFixed(1)} ms round trip · ` +
      `${Number(response.headers.get("x-compute-time")).toFixed(1)} ms on the server`;
    return;
  }
  if (!generation) {
    const response = await fetch("/predict", { method: "POST", headers: { "content-type": "application/json" },
                                               body: JSON.stringify({ inputs: text }) });
    const body = await response.json();
    if (!response.ok) return fail(out, body.error);
    bars(out, body);
    $("server-latency").textContent = `${(performance.now() - t0).toFixed(1)} ms round trip · ` +
      `${Number(response.headers.get("x-compute-time")).toFixed(1)} ms on the server`;
    return;
  }
  out.replaceChildren();
  const para = document.createElement("p");
  para.className = "continuation";
  out.append(para);
  const response = await fetch("/generate_stream", { method: "POST", headers: { "content-type": "application/json" },
                                                     body: JSON.stringify({ inputs: text, parameters: { max_new_tokens: 48 } }) });
  if (!response.ok) return fail(out, (await response.json()).error);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "", first = null;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const event = JSON.parse(buffer.slice(0, cut).replace(/^data: /, ""));
      buffer = buffer.slice(cut + 2);
      if (event.token) { first ??= performance.now(); para.textContent += event.token.text; }
    }
  }
  $("server-latency").textContent = `first token ${(first - t0).toFixed(0)} ms · all ${(performance.now() - t0).toFixed(0)} ms`;
}

let browserModel = null;
async function inBrowser(text) {
  const out = $("browser-answer");
  $("browser-column").hidden = false;
  try {
    if (!browserModel) {
      out.textContent = "loading the model into the browser…";
      const { pipeline, env } = await import("/web/transformers/transformers.min.js");
      env.allowRemoteModels = false;
      env.allowLocalModels = true;
      env.localModelPath = "/models/";
      env.backends.onnx.wasm.wasmPaths = "/web/transformers/";
      env.backends.onnx.wasm.numThreads = 1;
      browserModel = await pipeline(info.task, "bundle", { dtype, device: "wasm" });
    }
    const t0 = performance.now();
    if (embedding) {
      const sentences = lines(text);
      const options = (info.manifest.transformers_js || {}).options || { pooling: "mean", normalize: true };
      const vectors = [];
      for (const s of sentences) vectors.push(Array.from((await browserModel(s, options)).data));
      bars(out, similarities(sentences, vectors));
    } else if (reading) {
      const asked = questionOf(text);
      const found = await browserModel(asked.question, asked.context);
      answerView(out, found.answer, found.score);
    } else if (tagging) {
      entityList(out, tokensToEntities(await browserModel(text, { ignore_labels: [] })));
    } else if (generation) {
      const [result] = await browserModel(text, { max_new_tokens: 48, do_sample: false, return_full_text: false });
      out.replaceChildren();
      const para = document.createElement("p");
      para.className = "continuation";
      para.textContent = result.generated_text;
      out.append(para);
    } else {
      bars(out, await browserModel(text, { top_k: null }));
    }
    $("browser-latency").textContent = `${(performance.now() - t0).toFixed(1)} ms in this browser`;
  } catch (error) {
    fail(out, `in-browser run failed: ${error.message || error}`);
  }
}

$("run").addEventListener("click", async () => {
  const text = $("text").value;
  const jobs = [onServer(text).catch((e) => fail($("server-answer"), String(e)))];
  if ($("in-browser").checked) jobs.push(inBrowser(text));
  await Promise.all(jobs);
  document.body.dataset.done = String(Number(document.body.dataset.done || 0) + 1);
});
$("in-browser").addEventListener("change", () => { $("browser-column").hidden = !$("in-browser").checked; });
