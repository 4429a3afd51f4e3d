// The page that tries every served model, through the server's public REST API only.
// Each model's panel is chosen from its signatures (inputs and outputs by name and kind),
// never from its name: a model that serves the same signatures gets the same panel.
"use strict";

const enc = encodeURIComponent;

// ---------------------------------------------------------------- the REST API

async function call(method, path, body) {
  const init = { method, headers: {} };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  const response = await fetch(path, init);
  const text = await response.text();
  let doc = null;
  try {
    doc = text ? JSON.parse(text) : null;
  } catch (_) {
    doc = null;
  }
  if (!response.ok) {
    const message = doc && typeof doc.error === "string" ? doc.error : text;
    throw new Error(`${response.status}: ${message || response.statusText}`);
  }
  return doc;
}

// Signature maps by model, as the metadata call gave them.
const SIGNATURES = new Map();

const api = {
  index: () => call("POST", "/v2/repository/index", { ready: true }),
  config: (model) => call("GET", `/v2/models/${enc(model)}/config`),
  signatures: async (model) => {
    const doc = await call("GET", `/v1/models/${enc(model)}/metadata`);
    const signatures = doc.metadata.signature_def.signature_def;
    SIGNATURES.set(model, signatures);
    return signatures;
  },
  // The outputs by name (TF Serving answers a one-output signature with the bare tensor).
  predict: async (model, signature, inputs) => {
    const doc = await call("POST", `/v1/models/${enc(model)}:predict`, {
      signature_name: signature,
      inputs,
    });
    if (doc.outputs !== null && typeof doc.outputs === "object" && !Array.isArray(doc.outputs)) {
      return doc.outputs;
    }
    const names = Object.keys(SIGNATURES.get(model)[signature].outputs);
    return { [names[0]]: doc.outputs };
  },
};

// ---------------------------------------------------------------- small DOM helpers

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key === "style") {
      // through the CSSOM: the page's Content-Security-Policy refuses style attributes
      for (const [prop, v] of Object.entries(value)) node.style.setProperty(prop, v);
    } else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function labelled(text, control) {
  return el("label", {}, text, control);
}

function fileBase64(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).split(",", 2)[1] || "");
    reader.onerror = () => reject(new Error(`could not read ${file.name}`));
    reader.readAsDataURL(file);
  });
}

function loadImage(url) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error("the browser cannot show this file as an image"));
    img.src = url;
  });
}

function hue(text) {
  let h = 0;
  for (const c of text) h = (h * 31 + c.codePointAt(0)) % 360;
  return h;
}

function words(tokens) {
  const out = [];
  for (const t of tokens) {
    if (t === "</s>" || t === "") break;
    out.push(t);
  }
  return out;
}

// A form whose submit runs `run` (an async function rendering into `answer`); its errors,
// the server's included, are shown as text.
function panelForm(controls, buttonText, run) {
  const error = el("p", { class: "error", role: "alert" });
  const answer = el("div", { class: "answer", "aria-live": "polite" });
  const button = el("button", { type: "submit", text: buttonText });
  const form = el("form", {}, ...controls, button);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    button.disabled = true;
    try {
      answer.replaceChildren();
      await run(answer);
    } catch (err) {
      error.textContent = err.message;
    } finally {
      button.disabled = false;
    }
  });
  return { form, error, answer, button };
}

// An image chooser that is also a drop zone; `onImage(file)` runs for a chosen or dropped file.
function imageChooser(onImage) {
  const input = el("input", { type: "file", accept: "image/*", class: "image-input" });
  const zone = el("label", { class: "drop" }, "Drop an image here, or choose one", input);
  input.addEventListener("change", () => input.files[0] && onImage(input.files[0]));
  zone.addEventListener("dragover", (e) => {
    e.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    const file = e.dataTransfer.files[0];
    if (file) onImage(file);
  });
  return zone;
}

// An image panel: choosing a file runs `run(file, answer)`, errors shown as text.
function imagePanel(run) {
  const error = el("p", { class: "error", role: "alert" });
  const answer = el("div", { class: "answer", "aria-live": "polite" });
  const chooser = imageChooser(async (file) => {
    error.textContent = "";
    answer.replaceChildren();
    answer.setAttribute("aria-busy", "true");
    try {
      await run(file, answer);
    } catch (err) {
      error.textContent = err.message;
    } finally {
      answer.removeAttribute("aria-busy");
    }
  });
  return [chooser, error, answer];
}

// ---------------------------------------------------------------- panels, one per task

function classificationPanel(model, signature) {
  return imagePanel(async (file, answer) => {
    const b64 = await fileBase64(file);
    const out = await api.predict(model, signature, { image_bytes: [{ b64 }] });
    const url = URL.createObjectURL(file);
    const bars = el("div", { class: "bars", role: "list", "aria-label": "Top labels" });
    out.classes[0].forEach((label, i) => {
      const p = out.probabilities[0][i];
      const pct = `${(100 * p).toFixed(1)}%`;
      bars.append(
        el("span", { class: "label", role: "listitem", text: label }),
        el("div", { class: "bar", style: { width: `${Math.max(1, 100 * p)}%` }, "aria-hidden": "true" }),
        el("span", { class: "pct", text: pct }),
      );
    });
    answer.append(el("img", { class: "photo", src: url, alt: "the chosen image" }), bars);
  });
}

// The photo at `width`, darkened where `weights` (h x w, row-major) are low.
function attentionCanvas(img, weights, h, w, width) {
  const height = Math.round((width * img.naturalHeight) / img.naturalWidth);
  const canvas = el("canvas", { width, height });
  const ctx = canvas.getContext("2d");
  ctx.drawImage(img, 0, 0, width, height);
  if (weights) {
    const grid = document.createElement("canvas");
    grid.width = w;
    grid.height = h;
    const pixels = grid.getContext("2d").createImageData(w, h);
    const peak = Math.max(...weights) || 1;
    weights.forEach((a, i) => {
      pixels.data[4 * i + 3] = Math.round(200 * (1 - a / peak)); // black, opaque where unattended
    });
    grid.getContext("2d").putImageData(pixels, 0, 0);
    ctx.imageSmoothingEnabled = true;
    ctx.drawImage(grid, 0, 0, width, height);
  }
  return canvas;
}

function captioningPanel(model, signature) {
  return imagePanel(async (file, answer) => {
    const b64 = await fileBase64(file);
    const out = await api.predict(model, signature, {
      image_bytes: [{ b64 }],
      beam_size: 0, // the export's default beam
      max_length: 0,
    });
    const img = await loadImage(URL.createObjectURL(file));
    const attention = out.attention[0];
    const h = attention.length ? attention[0].length : 0;
    const w = h ? attention[0][0].length : 0;
    const plain = attentionCanvas(img, null, h, w, 112);
    plain.classList.add("plain");
    plain.setAttribute("aria-label", "the photo");
    const figures = words(out.tokens[0]).map((word, t) => {
      const canvas = attentionCanvas(img, attention[t].flat(), h, w, 112);
      canvas.setAttribute("aria-label", `where the model looked for "${word}"`);
      return el("figure", {}, canvas, el("figcaption", { text: word }));
    });
    answer.append(
      el("p", { class: "caption-text", text: out.caption[0] }),
      plain,
      el("p", { class: "hint", text: "Where the model looked for each word (bright: attended):" }),
      el("div", { class: "words" }, ...figures),
    );
  });
}

function taggingPanel(model, signature) {
  const input = el("input", { type: "text", value: "The quick brown fox jumps over the lazy dog." });
  const { form, error, answer } = panelForm([labelled("Sentence", input)], "Tag", async (ans) => {
    const out = await api.predict(model, signature, { sentences: [input.value] });
    const n = out.lengths[0];
    const tokens = el("div", { class: "tokens", role: "list", "aria-label": "Tokens and tags" });
    for (let i = 0; i < n; i++) {
      const tag = out.tags[0][i];
      tokens.append(
        el(
          "span",
          { class: "token", role: "listitem", style: { "--hue": String(hue(tag)) }, "data-tag": tag },
          el("span", { class: "word", text: out.tokens[0][i] }),
          el("span", { class: "tag", text: tag }),
        ),
      );
    }
    ans.append(tokens);
  });
  return [form, error, answer];
}

function translationPanel(model, signature) {
  const input = el("input", { type: "text", value: "A little girl climbs the stairs." });
  const { form, error, answer } = panelForm([labelled("Sentence", input)], "Translate", async (ans) => {
    const out = await api.predict(model, signature, {
      source: [input.value],
      beam_size: 0,
      max_length: 0,
    });
    const source = words(out.source_tokens[0]);
    const target = words(out.target_tokens[0]);
    const head = el("tr", {}, el("td"), ...source.map((s) => el("th", { scope: "col", text: s })));
    const rows = target.map((t, i) =>
      el(
        "tr",
        {},
        el("th", { scope: "row", text: t }),
        ...source.map((s, j) => {
          const a = out.attention[0][i][j];
          return el("td", {
            style: { background: `rgba(31, 95, 191, ${a.toFixed(3)})` },
            title: `${t} / ${s}: ${a.toFixed(2)}`,
          });
        }),
      ),
    );
    ans.append(
      el("p", { class: "translation-text", text: out.translation[0] }),
      el(
        "table",
        { class: "alignment" },
        el("caption", { text: "Alignment: the attention of each target word over the source" }),
        el("thead", {}, head),
        el("tbody", {}, ...rows),
      ),
    );
  });
  return [form, error, answer];
}

function languageModelPanel(model, signature) {
  const prompt = el("textarea", { rows: "3", cols: "50" });
  prompt.value = "ROMEO:";
  const number = (value, step, min, max) =>
    el("input", { type: "number", value, step, min, max });
  const temperature = number("0.8", "0.1", "0.1", "2");
  const topK = number("40", "1", "0", "1000");
  const seed = number("0", "1", "0", "2147483647");
  const length = number("200", "1", "1", "1000");
  const controls = [
    labelled("Prompt", prompt),
    labelled("Temperature", temperature),
    labelled("Top-k", topK),
    labelled("Seed", seed),
    labelled("Length (characters)", length),
  ];
  const { form, error, answer } = panelForm(controls, "Generate", async (ans) => {
    const out = await api.predict(model, signature, {
      prompt: [prompt.value],
      temperature: [Number(temperature.value)],
      top_k: [Math.trunc(Number(topK.value))],
      top_p: [1.0],
      seed: [Math.trunc(Number(seed.value))],
      max_new_tokens: [Math.trunc(Number(length.value))],
      stop: [""],
    });
    ans.append(el("pre", { class: "completion", text: prompt.value + out.completion[0] }));
  });
  return [form, error, answer];
}

// ---------------------------------------------------------------- which panel a model gets

const kind = (info) => (info.dtype === "DT_STRING" ? "text" : "number");

function hasAll(sig, inputs, outputs) {
  const ins = sig.inputs || {};
  const outs = sig.outputs || {};
  return (
    Object.entries(inputs).every(([name, k]) => name in ins && kind(ins[name]) === k) &&
    outputs.every((name) => name in outs)
  );
}

// In order: the first task whose signature a model serves gives its panel.
const TASKS = [
  {
    task: "captioning",
    fits: (s) => hasAll(s, { image_bytes: "text" }, ["caption", "tokens", "attention"]),
    panel: captioningPanel,
  },
  {
    task: "image classification",
    fits: (s) => hasAll(s, { image_bytes: "text" }, ["classes", "probabilities"]),
    panel: classificationPanel,
  },
  {
    task: "tagging",
    fits: (s) => hasAll(s, { sentences: "text" }, ["tokens", "tags", "lengths"]),
    panel: taggingPanel,
  },
  {
    task: "translation",
    fits: (s) =>
      hasAll(s, { source: "text" }, ["translation", "source_tokens", "target_tokens", "attention"]),
    panel: translationPanel,
  },
  {
    task: "language model",
    fits: (s) =>
      hasAll(
        s,
        { prompt: "text", temperature: "number", top_k: "number", seed: "number", max_new_tokens: "number" },
        ["completion"],
      ),
    panel: languageModelPanel,
  },
];

function choosePanel(signatures) {
  const names = Object.keys(signatures).sort((a, b) =>
    a === "serving_default" ? -1 : b === "serving_default" ? 1 : a.localeCompare(b),
  );
  for (const task of TASKS) {
    const name = names.find((n) => task.fits(signatures[n]));
    if (name) return { task: task.task, signature: name, panel: task.panel };
  }
  return null;
}

// ---------------------------------------------------------------- the card and the page

const CARD_FIELDS = [
  ["artifact", "Artifact"],
  ["metric", "Metric"],
  ["dataset", "Data"],
  ["licence", "Licence"],
  ["parameters", "Parameters"],
  ["size", "Size"],
  ["weights_dtype", "Weights"],
];

function cardValue(key, value) {
  if (key === "size") return `${(Number(value) / 1e6).toFixed(1)} MB`;
  if (key === "parameters") return Number(value).toLocaleString("en");
  return value;
}

async function modelSection(name, version) {
  const id = `model-${name.replace(/[^A-Za-z0-9_-]/g, "_")}`;
  const heading = el("h2", { id: `${id}-title`, text: name });
  const section = el("section", { class: "model", id, "aria-labelledby": heading.id }, heading);
  const card = el("dl", { class: "card" });
  const facts = [["Version", version]];
  try {
    const config = await api.config(name);
    const params = config.parameters || {};
    for (const [key, label] of CARD_FIELDS) {
      if (params[key]) facts.push([label, cardValue(key, params[key].string_value)]);
    }
    if (params.restricted && params.restricted.string_value === "true") {
      facts.push(["Use", "restricted by its data's licence"]);
    }
    if (facts.length === 1) facts.push(["Card", "none (not installed from the catalogue)"]);
  } catch (err) {
    facts.push(["Card", `unavailable: ${err.message}`]);
  }
  for (const [label, value] of facts) card.append(el("dt", { text: label }), el("dd", { text: value }));
  const task = el("p", { class: "task" });
  section.append(task, card);
  try {
    const chosen = choosePanel(await api.signatures(name));
    if (chosen === null) {
      task.textContent = "No panel fits this model's signatures; call it over REST or gRPC.";
    } else {
      task.textContent = `${chosen.task} (signature "${chosen.signature}")`;
      section.dataset.task = chosen.task;
      section.append(el("div", { class: "panel" }, ...chosen.panel(name, chosen.signature)));
    }
  } catch (err) {
    task.append(el("span", { class: "error", role: "alert", text: err.message }));
  }
  return section;
}

async function main() {
  const status = document.getElementById("page-status");
  const list = document.getElementById("model-list");
  const main = document.getElementById("models");
  try {
    const index = await api.index();
    const newest = new Map();
    for (const entry of index) {
      if (!newest.has(entry.name) || Number(entry.version) > Number(newest.get(entry.name))) {
        newest.set(entry.name, entry.version);
      }
    }
    const names = [...newest.keys()].sort();
    const sections = await Promise.all(names.map((n) => modelSection(n, newest.get(n))));
    sections.forEach((section, i) => {
      list.append(el("li", {}, el("a", { href: `#${section.id}`, text: names[i] })));
      main.append(section);
    });
    status.textContent = names.length
      ? `${names.length} models ready.`
      : "No model is ready yet; reload the page in a moment.";
  } catch (err) {
    status.textContent = `The server's model list failed: ${err.message}`;
    status.classList.add("error");
  }
  document.body.dataset.ready = "true";
}

main();
