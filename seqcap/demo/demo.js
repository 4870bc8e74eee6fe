// The demo page of `seqcap serve` (seqcap/server_demo.py): it asks GET /models what is loaded, shows
// a panel per task (translate, image: caption and answer, language model) and calls the JSON API as
// any client does. The attention comes from the API: a (target x source) table of weights for a
// translation, a (word x grid cell) one for an attention captioner, drawn over the image.
"use strict";

const state = {
  token: sessionStorage.getItem("seqcap-token") || "",
  models: {},
  image: null, // the chosen image file (a File)
  caption: null, // the last caption response entry, with its attention
  shown: 0, // counts the images chosen: an answer about an image no longer shown is dropped
};

const $ = (id) => document.getElementById(id);

function say(text, isError = false) {
  const status = $("status");
  status.textContent = text;
  status.classList.toggle("error", isError);
}

// fetch with the token; the API's {"detail": ...} becomes the thrown error's message
async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (state.token) headers.Authorization = `Bearer ${state.token}`;
  const response = await fetch(path, Object.assign({}, options, { headers }));
  let body = null;
  try {
    body = await response.json();
  } catch (e) {
    body = { detail: `${response.status} ${response.statusText}` };
  }
  if (!response.ok) {
    const error = new Error(typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail));
    error.status = response.status;
    throw error;
  }
  return body;
}

function postJSON(path, payload) {
  return api(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(payload),
  });
}

function fillSelect(select, names) {
  select.replaceChildren(...names.map((name) => new Option(name, name)));
}

function namesOf(task) {
  return Object.keys(state.models).filter((name) => state.models[name].task === task);
}

async function loadModels() {
  try {
    const listing = await api("/models");
    state.models = listing.models;
  } catch (error) {
    if (error.status === 401) {
      $("token-form").hidden = false;
      $("models-line").textContent = "Give the server's token to see its models.";
      say(state.token ? "That token was refused." : "", Boolean(state.token));
      return;
    }
    say(`Cannot list the models: ${error.message}`, true);
    return;
  }
  $("token-form").hidden = true;
  const names = Object.keys(state.models);
  $("models-line").textContent = names.length
    ? "Loaded: " + names.map((n) => `${n} (${state.models[n].task})`).join(", ")
    : "No model is loaded.";
  const translators = namesOf("translation");
  const captioners = namesOf("captioning");
  const answerers = namesOf("vqa");
  const lms = namesOf("lm");
  fillSelect($("translate-model"), translators);
  fillSelect($("caption-model"), captioners);
  fillSelect($("answer-model"), answerers);
  fillSelect($("generate-model"), lms);
  $("translate-panel").hidden = translators.length === 0;
  $("caption-part").hidden = captioners.length === 0;
  $("answer-part").hidden = answerers.length === 0;
  const multimodal = translators.some((name) => state.models[name].multimodal);
  $("image-panel").hidden = captioners.length + answerers.length === 0 && !multimodal;
  $("generate-panel").hidden = lms.length === 0;
  showImageNote();
  say("");
}

function showImageNote() {
  const model = state.models[$("translate-model").value];
  $("translate-image-note").hidden = !(model && model.multimodal);
}

// ---- translation -------------------------------------------------------------------------------

function fileAsBase64(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).split(",", 2)[1]);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

async function translate() {
  const sentence = $("translate-input").value.trim();
  const name = $("translate-model").value;
  if (!sentence) {
    say("Type a sentence first.", true);
    return;
  }
  const payload = { sentences: [sentence], beam_size: Number($("translate-beam").value), attention: true };
  if (state.models[name].multimodal) {
    if (!state.image) {
      say(`${name} is a multimodal translator: choose an image in the image panel first.`, true);
      return;
    }
    payload.images = [await fileAsBase64(state.image)];
  }
  say(`Translating with ${name}…`);
  try {
    const result = await postJSON(`/translate/${encodeURIComponent(name)}`, payload);
    const best = result.translations[0][0];
    $("translate-output").textContent = best.text;
    drawHeatmap($("translate-attention"), best.attention, best.source_tokens, best.tokens);
    say("");
  } catch (error) {
    say(`Translation failed: ${error.message}`, true);
  }
}

// rows: the translation's tokens; columns: the source tokens; a cell's shade is its weight
function drawHeatmap(container, attention, sourceTokens, targetTokens) {
  container.replaceChildren();
  if (!attention) return;
  const table = document.createElement("table");
  const head = table.createTHead().insertRow();
  head.appendChild(document.createElement("th"));
  for (const word of sourceTokens) {
    const th = document.createElement("th");
    th.scope = "col";
    th.textContent = word;
    head.appendChild(th);
  }
  const body = table.createTBody();
  attention.forEach((weights, i) => {
    const row = body.insertRow();
    const th = document.createElement("th");
    th.scope = "row";
    th.textContent = targetTokens[i] ?? "";
    row.appendChild(th);
    weights.forEach((weight) => {
      const cell = row.insertCell();
      cell.dataset.weight = String(weight);
      cell.title = weight.toFixed(3);
      cell.style.backgroundColor = `rgba(37, 99, 235, ${weight})`;
      cell.classList.toggle("strong", weight > 0.5);
    });
  });
  const legend = document.createElement("p");
  legend.className = "note";
  legend.textContent = "Attention: each translated word (row) over the source words (columns).";
  container.append(table, legend);
}

// ---- image: caption and question ---------------------------------------------------------------

function useImage(file) {
  if (!file) return;
  if (!file.type.startsWith("image/")) {
    say(`${file.name} is not an image (${file.type || "unknown type"}).`, true);
    return;
  }
  state.image = file;
  state.caption = null;
  state.shown += 1; // answers about the previous image are dropped
  const preview = $("image-preview");
  if (preview.src) URL.revokeObjectURL(preview.src);
  preview.onload = () => {
    sizeOverlay();
    if (!$("caption-part").hidden) caption();
  };
  preview.onerror = () => say(`${file.name} cannot be shown as an image by this browser.`, true);
  $("figure").hidden = false;
  $("caption-output").replaceChildren();
  $("answer-output").replaceChildren();
  clearOverlay();
  preview.src = URL.createObjectURL(file);
}

function sizeOverlay() {
  const preview = $("image-preview");
  const overlay = $("image-overlay");
  overlay.width = preview.clientWidth;
  overlay.height = preview.clientHeight;
}

function clearOverlay() {
  const overlay = $("image-overlay");
  overlay.getContext("2d").clearRect(0, 0, overlay.width, overlay.height);
  delete overlay.dataset.word;
}

// The captioner squashes the image to a square and attends over a side x side grid of it: cell k is
// row floor(k / side), column k % side, stretched back over the image as shown.
function drawOverlay(weights, wordIndex) {
  const overlay = $("image-overlay");
  sizeOverlay();
  const context = overlay.getContext("2d");
  context.clearRect(0, 0, overlay.width, overlay.height);
  const side = Math.round(Math.sqrt(weights.length));
  const most = Math.max(...weights) || 1;
  const w = overlay.width / side;
  const h = overlay.height / side;
  weights.forEach((weight, k) => {
    context.fillStyle = `rgba(250, 204, 21, ${(0.75 * weight) / most})`;
    context.fillRect((k % side) * w, Math.floor(k / side) * h, w, h);
  });
  overlay.dataset.word = String(wordIndex);
  overlay.dataset.side = String(side);
  for (const span of $("caption-output").querySelectorAll(".word")) {
    span.classList.toggle("selected", Number(span.dataset.index) === wordIndex);
  }
}

async function caption() {
  if (!state.image) {
    say("Choose an image first.", true);
    return;
  }
  const name = $("caption-model").value;
  const withAttention = state.models[name].model_kind === "attention";
  const form = new FormData();
  form.append("images", state.image, state.image.name);
  form.append("beam_size", $("caption-beam").value);
  form.append("attention", String(withAttention));
  say(`Captioning with ${name}…`);
  const shown = state.shown;
  try {
    const result = await api(`/caption/${encodeURIComponent(name)}`, { method: "POST", body: form });
    if (shown !== state.shown) return; // another image was chosen meanwhile
    showCaption(result.captions[0]);
    say("");
  } catch (error) {
    say(`Captioning failed: ${error.message}`, true);
  }
}

function showCaption(entry) {
  state.caption = entry;
  const output = $("caption-output");
  output.replaceChildren();
  entry.tokens.forEach((word, i) => {
    const span = document.createElement("span");
    span.className = "word";
    span.dataset.index = String(i);
    span.textContent = word;
    if (entry.attention) {
      span.tabIndex = 0;
      const show = () => drawOverlay(entry.attention[i], i);
      span.addEventListener("mouseenter", show);
      span.addEventListener("focus", show);
      span.addEventListener("click", show);
    }
    output.append(span, " ");
  });
  $("caption-hint").hidden = !entry.attention;
  if (entry.attention && entry.attention.length) drawOverlay(entry.attention[0], 0);
  else clearOverlay();
}

async function answer() {
  const question = $("question-input").value.trim();
  if (!state.image || !question) {
    say("Choose an image and type a question.", true);
    return;
  }
  const name = $("answer-model").value;
  const form = new FormData();
  form.append("image", state.image, state.image.name);
  form.append("questions", question);
  form.append("top", "3");
  say(`Asking ${name}…`);
  const shown = state.shown;
  try {
    const result = await api(`/answer/${encodeURIComponent(name)}`, { method: "POST", body: form });
    if (shown !== state.shown) return;
    const list = $("answer-output");
    list.replaceChildren();
    for (const { answer: text, probability } of result.answers[0].top) {
      const item = document.createElement("li");
      const bar = document.createElement("span");
      bar.className = "bar";
      bar.style.width = `${Math.round(probability * 100)}%`;
      item.append(`${text} `, bar, ` ${(probability * 100).toFixed(1)}%`);
      item.dataset.answer = text;
      list.appendChild(item);
    }
    const unknown = result.answers[0].unknown;
    say(unknown.length ? `Words the model never saw: ${unknown.join(", ")}` : "");
  } catch (error) {
    say(`The question failed: ${error.message}`, true);
  }
}

// ---- language model ----------------------------------------------------------------------------

async function generate() {
  const name = $("generate-model").value;
  say(`Sampling from ${name}…`);
  try {
    const result = await postJSON(`/generate/${encodeURIComponent(name)}`, {
      num: 3,
      prompt: $("generate-prompt").value,
      seed: null,
    });
    $("generate-output").replaceChildren(
      ...result.texts.map((text) => Object.assign(document.createElement("li"), { textContent: text })),
    );
    say("");
  } catch (error) {
    say(`Sampling failed: ${error.message}`, true);
  }
}

// ---- wiring ------------------------------------------------------------------------------------

function wire() {
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    state.token = $("token-input").value.trim();
    sessionStorage.setItem("seqcap-token", state.token);
    loadModels();
  });
  $("translate-model").addEventListener("change", showImageNote);
  $("translate-button").addEventListener("click", translate);
  $("translate-input").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      translate();
    }
  });
  $("image-input").addEventListener("change", (event) => useImage(event.target.files[0]));
  const zone = $("drop-zone");
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    useImage(event.dataTransfer.files[0]);
  });
  $("caption-button").addEventListener("click", caption);
  $("answer-button").addEventListener("click", answer);
  $("question-input").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.isComposing) answer();
  });
  $("generate-button").addEventListener("click", generate);
  window.addEventListener("resize", () => {
    if (state.caption && state.caption.attention) {
      const word = Number($("image-overlay").dataset.word || 0);
      drawOverlay(state.caption.attention[word], word);
    }
  });
  loadModels();
}

wire();
