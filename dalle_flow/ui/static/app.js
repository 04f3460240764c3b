// DALL·E Flow web UI: generate → choose → refine → upscale → download, history, segment.
// It is an ordinary client of the server: every request is a POST to the gateway's /post, as curl or jina.Client
// would send it. Parameter fields, defaults and ranges come from the server's /parameters endpoint (each executor
// declares its own), and the server validates every value: its error messages are shown where they belong.
"use strict";

const POST_URL = new URL("../post", document.baseURI).href;
const PARAMETERS_ENDPOINT = "/parameters";
const TIMINGS_KEY = "dalle-flow-ui/timings";
const TIMINGS_KEPT = 20; // per endpoint: enough for a stable estimate, short enough to follow a changed server

// Display names only; every number comes from the server.
const EXECUTOR_LABELS = {dalle: "DALL·E Mega", diffusion: "GLID-3 XL", upscaler: "SwinIR", clipseg: "CLIPSeg",
                         store: "Store"};
const GENERATOR_LABELS = {"DALLE-mega": "DALL·E Mega", "GLID3-XL": "GLID-3 XL"};
const PARAM_LABELS = {num_images: "Images", seed: "Seed", cond_scale: "Condition scale", top_k: "Top-k",
                      top_p: "Top-p", temperature: "Temperature", steps: "Steps", guidance_scale: "Guidance scale",
                      skip_rate: "Skip rate", tile: "Tile", tile_overlap: "Tile overlap",
                      thresholding_type: "Thresholding", binary_thresh_strength: "Binary threshold",
                      adaptive_thresh_block_size: "Adaptive block size", adaptive_thresh_c: "Adaptive C",
                      invert: "Invert the mask"};
// Which declared parameters each form shows outside "Advanced"; `slider` ones get a range input; `hidden` ones are
// accepted by the endpoint but mean nothing for what the form sends (skip_rate on `/` applies to an image only).
const FORM_LAYOUT = {
  "generate-form": {basic: ["num_images", "seed"], hidden: ["skip_rate"]},
  "refine-form": {basic: ["skip_rate", "num_images"], slider: {skip_rate: ["0 improvise", "1 stay close"]}},
  "upscale-form": {basic: []},
  "segment-form": {basic: []},
};
// Tags that say how an image came to be but are no parameter to reproduce it with.
const BOOKKEEPING_TAGS = new Set(["text", "generator", "seed", "request_time", "created_time", "stored",
                                  "stored_time", "upscaled", "width", "height", "image_index", "num_images"]);

const state = {
  declarations: {}, // endpoint -> [{executor, params}]
  chosen: null,     // the Document chosen for refine / upscale / segment
  historyOffset: 0,
  historyLimit: null,
};

const $ = (selector, root = document) => root.querySelector(selector);
const $$ = (selector, root = document) => Array.from(root.querySelectorAll(selector));

class ServerError extends Error {}

// ---------------------------------------------------------------- the server's API

/** POST one request to /post; resolves to the response Documents, rejects with the server's own message. */
async function post(endpoint, data, parameters, signal) {
  let response;
  try {
    response = await fetch(POST_URL, {
      method: "POST",
      headers: {"Content-Type": "application/json"},
      body: JSON.stringify({data, execEndpoint: endpoint, parameters: parameters || {}}),
      signal,
    });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ServerError(`The server cannot be reached (${error.message}).`);
  }
  let body = null;
  try {
    body = await response.json();
  } catch (error) {
    throw new ServerError(`The server answered ${response.status} ${response.statusText} without a readable body.`);
  }
  const status = body && body.header && body.header.status;
  const failed = status && status.code !== undefined && status.code !== 0 && status.code !== "SUCCESS";
  if (!response.ok || failed) throw new ServerError(serverMessage(body, response));
  return body.data || [];
}

/** The server's words: the exception message an executor raised, else Jina's description, else the HTTP status. */
function serverMessage(body, response) {
  const status = body && body.header && body.header.status;
  const args = status && status.exception && status.exception.args;
  if (Array.isArray(args) && args.length && typeof args[0] === "string") return args.join(" ");
  if (status && status.description) return status.description;
  if (body && body.detail) return typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
  return `The server answered ${response.status} ${response.statusText}.`;
}

// ---------------------------------------------------------------- parameter fields from the declarations

function label(name) {
  return PARAM_LABELS[name] || name.replace(/_/g, " ").replace(/^./, (c) => c.toUpperCase());
}

function formatNumber(value) {
  return Number.isInteger(value) ? String(value) : String(Number(value.toPrecision(6)));
}

function shown(value) {
  if (value === null || value === undefined) return "none";
  return typeof value === "number" ? formatNumber(value) : String(value);
}

/** One field per parameter name; a name several executors declare (num_images and seed on `/`) is one field
 *  whose value goes to all of them, with each executor's range and default stated. */
function mergeDeclarations(groups) {
  const byName = new Map();
  for (const {executor, params} of groups) {
    for (const param of params) {
      if (!byName.has(param.name)) byName.set(param.name, {name: param.name, kind: param.kind, owners: []});
      byName.get(param.name).owners.push({executor, param});
    }
  }
  return Array.from(byName.values());
}

/** The server's description of the accepted values and the default; per executor where they differ. */
function fieldNote(field) {
  const note = (p) => `${p.description}; ` +
    (p.optional && p.default === null ? "empty: the server draws one and returns it" : `default ${shown(p.default)}`);
  const notes = field.owners.map(({param}) => note(param));
  if (new Set(notes).size === 1) return notes[0];
  return field.owners.map(({executor}, i) => `${EXECUTOR_LABELS[executor] || executor}: ${notes[i]}`).join(" · ");
}

function placeholderFor(field) {
  const defaults = field.owners.map(({executor, param}) => {
    if (param.optional && param.default === null) return "random";
    const value = shown(param.default);
    return field.owners.length > 1 ? `${EXECUTOR_LABELS[executor] || executor} ${value}` : value;
  });
  return Array.from(new Set(defaults)).join(" · ");
}

function createField(field, layout) {
  const param = field.owners[0].param;
  const wrapper = document.createElement("label");
  wrapper.className = field.owners.length > 1 ? "field shared" : "field";
  wrapper.dataset.param = field.name;
  const title = document.createElement("span");
  title.className = "label";
  title.textContent = label(field.name);
  wrapper.append(title);

  let control;
  const sliderEnds = layout.slider && layout.slider[field.name];
  if (sliderEnds && param.low !== null && param.high !== null) {
    wrapper.classList.add("slider");
    control = document.createElement("input");
    control.type = "range";
    control.min = param.low;
    control.max = param.high;
    control.step = param.kind === "int" ? 1 : (param.high - param.low) / 100;
    control.value = param.default;
    control.dataset.alwaysSend = "true";
    const value = document.createElement("output");
    value.textContent = formatNumber(Number(control.value));
    control.addEventListener("input", () => { value.textContent = formatNumber(Number(control.value)); });
    title.append(": ", value);
    wrapper.append(control);
    const ends = document.createElement("span");
    ends.className = "range-ends";
    for (const text of sliderEnds) {
      const end = document.createElement("span");
      end.textContent = text;
      ends.append(end);
    }
    wrapper.append(ends);
  } else if (param.kind === "choice") {
    control = document.createElement("select");
    for (const choice of param.choices) {
      const option = new Option(choice, choice, choice === param.default, choice === param.default);
      control.append(option);
    }
  } else if (param.kind === "bool") {
    wrapper.classList.add("checkbox");
    control = document.createElement("input");
    control.type = "checkbox";
    control.checked = Boolean(param.default);
  } else {
    control = document.createElement("input");
    control.type = "text"; // not type=number: what the user typed reaches the server, which says what is wrong
    control.inputMode = param.kind === "int" ? "numeric" : "decimal";
    control.autocomplete = "off";
    control.placeholder = placeholderFor(field);
  }
  control.name = field.name;
  control.dataset.kind = param.kind;
  if (param.kind === "choice" || param.kind === "bool") control.dataset.default = JSON.stringify(param.default);
  wrapper.append(control);
  const note = document.createElement("small");
  note.textContent = fieldNote(field);
  wrapper.append(note);
  const error = document.createElement("span");
  error.className = "field-error";
  error.setAttribute("aria-live", "polite");
  wrapper.append(error);
  return wrapper;
}

function buildForm(form) {
  const layout = FORM_LAYOUT[form.id] || {basic: []};
  const groups = state.declarations[form.dataset.endpoint] || [];
  const basic = $("[data-basic]", form);
  const advanced = $("[data-advanced]", form);
  const fields = mergeDeclarations(groups).filter((f) => !(layout.hidden || []).includes(f.name));
  for (const field of fields.filter((f) => layout.basic.includes(f.name))) basic.append(createField(field, layout));
  for (const {executor, params} of groups) {
    const own = fields.filter((f) => !layout.basic.includes(f.name) && f.owners[0].executor === executor);
    if (!own.length) continue;
    const set = document.createElement("fieldset");
    const legend = document.createElement("legend");
    legend.textContent = EXECUTOR_LABELS[executor] || executor;
    set.append(legend);
    const row = document.createElement("div");
    row.className = "fields";
    for (const field of own) row.append(createField(field, layout));
    set.append(row);
    advanced.append(set);
  }
  const details = $("details.advanced", form);
  if (details && !advanced.children.length) details.hidden = true;
}

/** The request parameters a form's fields hold: only what the user set (the server applies its defaults). */
function formParameters(form) {
  const parameters = {};
  for (const control of $$("[data-kind]", form)) {
    let value;
    if (control.type === "checkbox") {
      if (control.checked === JSON.parse(control.dataset.default)) continue;
      value = control.checked;
    } else if (control.tagName === "SELECT") {
      if (control.value === JSON.parse(control.dataset.default)) continue;
      value = control.value;
    } else {
      const text = control.value.trim();
      if (!text && !control.dataset.alwaysSend) continue;
      // a number as a number; anything else goes as typed, and the server's message names the field and range
      value = /^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(text) ? Number(text) : text;
    }
    parameters[control.name] = value;
  }
  return parameters;
}

// ---------------------------------------------------------------- running a request: busy state, timing, errors

function readTimings() {
  try { return JSON.parse(localStorage.getItem(TIMINGS_KEY)) || {}; } catch (error) { return {}; }
}

function recordTiming(endpoint, seconds, images) {
  const timings = readTimings();
  const list = (timings[endpoint] || []).concat([{seconds, images: Math.max(images, 1)}]).slice(-TIMINGS_KEPT);
  timings[endpoint] = list;
  try { localStorage.setItem(TIMINGS_KEY, JSON.stringify(timings)); } catch (error) { /* private mode: no memory */ }
}

/** Seconds a request for `images` images should take, from earlier ones (median seconds per image); null if none. */
function estimate(endpoint, images) {
  const list = readTimings()[endpoint] || [];
  if (!list.length) return null;
  const perImage = list.map((t) => t.seconds / t.images).sort((a, b) => a - b);
  return perImage[Math.floor(perImage.length / 2)] * Math.max(images, 1);
}

function clearErrors(form) {
  for (const element of $$(".field-error, .form-error", form)) element.textContent = "";
  for (const element of $$("[aria-invalid]", form)) element.removeAttribute("aria-invalid");
}

/** Put the server's message next to the field it names (`num_images: ...`, `docs[0].text: ...`), else under the
 *  form's buttons. */
function showError(form, message) {
  const match = /^(?:docs\[\d+\](?:\.matches\[\d+\])?\.)?([A-Za-z_]+)\s*:/.exec(message);
  const field = match && $(`[data-param="${match[1]}"]`, form);
  if (field) {
    $(".field-error", field).textContent = message;
    const control = $("input, textarea, select", field);
    control.setAttribute("aria-invalid", "true");
    const details = field.closest("details");
    if (details) details.open = true;
    control.focus();
  } else {
    $(".form-error", form).textContent = message;
  }
}

/** Run `work(signal)` for a form: controls disabled against double submits, elapsed time and an estimate shown,
 *  a Cancel button, errors shown in place. `work` may resolve to a line to show instead of the time taken. */
async function runTask(form, images, work) {
  if (form.dataset.busy) return;
  form.dataset.busy = "true";
  const endpoint = form.dataset.endpoint;
  const controls = $$("input, textarea, select, button:not(.cancel)", form);
  const wasDisabled = controls.map((c) => c.disabled);
  controls.forEach((c) => { c.disabled = true; });
  const cancel = $(".cancel", form);
  const progress = $(".progress", form);
  const controller = new AbortController();
  const onCancel = () => controller.abort();
  if (cancel) { cancel.hidden = false; cancel.addEventListener("click", onCancel); }
  clearErrors(form);
  const expected = estimate(endpoint, images);
  const started = performance.now();
  const tick = () => {
    const elapsed = (performance.now() - started) / 1000;
    progress.textContent = `Working… ${elapsed.toFixed(1)} s` +
      (expected === null ? " (no estimate yet: first request of this kind)" : ` of about ${expected.toFixed(1)} s`);
  };
  tick();
  const timer = setInterval(tick, 200);
  try {
    const note = await work(controller.signal);
    const seconds = (performance.now() - started) / 1000;
    recordTiming(endpoint, seconds, images);
    progress.textContent = note || `Done in ${seconds.toFixed(1)} s.`;
  } catch (error) {
    if (error.name === "AbortError") {
      progress.textContent = "Cancelled (the server may still finish the work; its result is dropped).";
    } else {
      progress.textContent = "";
      showError(form, error.message);
    }
  } finally {
    clearInterval(timer);
    controls.forEach((c, i) => { c.disabled = wasDisabled[i]; });
    if (cancel) { cancel.hidden = true; cancel.removeEventListener("click", onCancel); }
    delete form.dataset.busy;
    refreshChoiceState();
  }
}

/** Images a request will make, for the estimate: the value asked for, else each answering executor's default. */
function requestedImages(endpoint, parameters) {
  const groups = state.declarations[endpoint] || [];
  let total = 0;
  for (const {params} of groups) {
    const count = params.find((p) => p.name === "num_images");
    if (count) total += typeof parameters.num_images === "number" ? parameters.num_images : count.default;
  }
  return total || 1;
}

// ---------------------------------------------------------------- images: cards, viewer, the choice

function promptOf(doc) {
  return doc.text || (doc.tags && doc.tags.text) || "";
}

function describe(doc) {
  const tags = doc.tags || {};
  const parts = [];
  if (tags.generator) parts.push(GENERATOR_LABELS[tags.generator] || tags.generator);
  const score = doc.scores && doc.scores.clip_score;
  if (score && score.value !== undefined && score.value !== null) parts.push(`CLIP ${score.value.toFixed(3)}`);
  if (tags.seed !== undefined && tags.seed !== null) parts.push(`seed ${formatNumber(tags.seed)}`);
  if (tags.skip_rate !== undefined) parts.push(`skip_rate ${formatNumber(tags.skip_rate)}`);
  if (tags.upscaled) parts.push(`upscaled to ${tags.width}×${tags.height}`);
  return parts.join(" · ");
}

function noticePreset(docs) {
  if (docs.some((d) => d.tags && d.tags.preset === "tiny")) $("#preset-banner").hidden = false;
}

function renderGrid(container, docs, rankLabel) {
  container.replaceChildren();
  const template = $("#card-template");
  docs.forEach((doc, index) => {
    const card = template.content.firstElementChild.cloneNode(true);
    const image = $("img", card);
    image.src = doc.uri;
    image.alt = `${rankLabel} ${index + 1}: ${promptOf(doc)}`;
    $(".rank", card).textContent = `#${index + 1}`;
    const meta = $(".meta", card);
    meta.textContent = describe(doc);
    meta.title = describe(doc);
    const thumb = $(".thumb", card);
    thumb.setAttribute("aria-label", `Enlarge ${rankLabel.toLowerCase()} ${index + 1}`);
    thumb.addEventListener("click", () => openViewer(doc, card));
    const choose = $(".choose", card);
    choose.setAttribute("aria-label", `Choose ${rankLabel.toLowerCase()} ${index + 1}`);
    choose.addEventListener("click", () => selectImage(doc, card));
    card.doc = doc;
    container.append(card);
  });
  noticePreset(docs);
}

let viewerTarget = null;

function openViewer(doc, card) {
  viewerTarget = {doc, card};
  $("#viewer-image").src = doc.uri;
  $("#viewer-image").alt = promptOf(doc);
  $("#viewer-caption").textContent = [promptOf(doc) && `“${promptOf(doc)}”`, describe(doc)].filter(Boolean).join(" — ");
  $("#viewer-choose").hidden = !card;
  $("#viewer").showModal();
}

function selectImage(doc, card) {
  state.chosen = doc;
  for (const other of $$(".card.is-chosen")) {
    other.classList.remove("is-chosen");
    $(".choose", other).textContent = "Choose";
  }
  if (card) {
    card.classList.add("is-chosen");
    $(".choose", card).textContent = "Chosen";
  }
  $("#selection").hidden = false;
  $("#chosen-image").src = doc.uri;
  $("#chosen-image").alt = `The chosen image: ${promptOf(doc)}`;
  $("#chosen-caption").textContent = [promptOf(doc) && `“${promptOf(doc)}”`, describe(doc)].filter(Boolean).join(" — ");
  refreshChoiceState();
  $("#selection").scrollIntoView({behavior: "smooth", block: "start"});
}

function refreshChoiceState() {
  for (const form of $$("form.needs-choice")) {
    form.classList.toggle("no-choice", !state.chosen);
    if (!form.dataset.busy) $("button[type=submit]", form).disabled = !state.chosen;
  }
  const upscaleButton = $("#upscale-form button[type=submit]");
  const alreadyUpscaled = Boolean(state.chosen && state.chosen.tags && state.chosen.tags.upscaled);
  if (!$("#upscale-form").dataset.busy) upscaleButton.disabled = !state.chosen || alreadyUpscaled;
  upscaleButton.title = alreadyUpscaled ? "This image is already upscaled" : "";
}

/** The chosen image as a request Document: inline image, prompt and its tags (which say how it was made). */
function chosenDocument() {
  const doc = state.chosen;
  return {uri: doc.uri, text: promptOf(doc), tags: doc.tags || {}};
}

// ---------------------------------------------------------------- the steps

async function generate(event) {
  event.preventDefault();
  const form = event.currentTarget;
  const text = form.elements.text.value;
  if (!text.trim()) {
    // the server answers a Document without text as a health probe (jina's profiling()), unchanged: say it here
    clearErrors(form);
    showError(form, "text: the prompt is empty; type what the image should show");
    return;
  }
  const parameters = formParameters(form);
  await runTask(form, requestedImages("/", parameters), async (signal) => {
    const docs = await post("/", [{text}], parameters, signal);
    const matches = (docs[0] && docs[0].matches) || [];
    renderGrid($("#candidates"), matches, "Candidate");
  });
}

async function refine(event) {
  event.preventDefault();
  const form = event.currentTarget;
  const parameters = formParameters(form);
  const source = chosenDocument();
  await runTask(form, requestedImages("/diffuse", parameters), async (signal) => {
    // the prompt travels in .text; the tags stay behind (GLID-3 tags its refinements itself)
    const docs = await post("/diffuse", [{uri: source.uri, text: source.text}], parameters, signal);
    renderGrid($("#refinements"), (docs[0] && docs[0].matches) || [], "Refinement");
  });
}

function reproduction(doc) {
  const tags = doc.tags || {};
  const parameters = {};
  for (const [name, value] of Object.entries(tags)) {
    if (!BOOKKEEPING_TAGS.has(name) && !["upscaler", "preset", "tile", "tile_overlap"].includes(name)) {
      parameters[name] = value;
    }
  }
  const info = {prompt: promptOf(doc), generator: tags.generator, seed: tags.seed, parameters};
  if (tags.upscaler) info.upscaler = tags.upscaler;
  if (tags.tile) Object.assign(info, {tile: tags.tile, tile_overlap: tags.tile_overlap});
  if (tags.preset) info.preset = tags.preset;
  return JSON.stringify(info, null, 2);
}

function fileName(doc) {
  const tags = doc.tags || {};
  const words = promptOf(doc).toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-|-$/g, "").slice(0, 40);
  return ["dalle-flow", words || "image", tags.seed !== undefined ? `seed${tags.seed}` : ""]
    .filter(Boolean).join("-") + ".png";
}

async function upscale(event) {
  event.preventDefault();
  const form = event.currentTarget;
  const parameters = formParameters(form);
  const source = chosenDocument();
  await runTask(form, 1, async (signal) => {
    const docs = await post("/upscale", [source], parameters, signal);
    const result = docs[0];
    $("#upscaled").hidden = false;
    $("#upscaled-image").src = result.uri;
    $("#upscaled-link").href = result.uri;
    $("#upscaled-caption").textContent = describe(result);
    const download = $("#download");
    download.href = result.uri;
    download.download = fileName(result);
    $("#repro").textContent = reproduction(result);
    $("#copy-status").textContent = "";
    noticePreset([result]);
    selectImage(result, null); // the upscaled image is now the one to segment (or refine again)
    $("#upscaled").scrollIntoView({behavior: "smooth", block: "nearest"});
  });
}

async function copyReproduction() {
  const text = $("#repro").textContent;
  const status = $("#copy-status");
  try {
    await navigator.clipboard.writeText(text);
    status.textContent = "Copied.";
  } catch (error) {
    // no clipboard API outside secure contexts (plain http to another host): select it for Ctrl+C instead
    const range = document.createRange();
    range.selectNodeContents($("#repro"));
    const selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
    status.textContent = "Selected: press Ctrl+C (or ⌘C) to copy.";
  }
}

async function segment(event) {
  event.preventDefault();
  const form = event.currentTarget;
  const parameters = formParameters(form);
  const source = chosenDocument();
  const what = form.elements.text.value;
  await runTask(form, 1, async (signal) => {
    const docs = await post("/segment", [{uri: source.uri, text: what}], parameters, signal);
    const result = docs[0];
    $("#segmented").hidden = false;
    $("#segmented-image").src = result.uri;
    $("#segmented-caption").textContent = `“${what}” cut out of the chosen image: transparent where it is` +
      (result.tags && result.tags.invert ? " not" : "") + " (checkerboard shows through).";
    const download = $("#download-segmented");
    download.href = result.uri;
    download.download = fileName({...source, text: `${source.text} ${what} segmented`});
  });
}

async function loadHistory(event, step = 0) {
  if (event) event.preventDefault();
  const form = $("#history-form");
  const limit = state.historyLimit;
  const offset = Math.max(0, state.historyOffset + step * limit);
  await runTask(form, 1, async (signal) => {
    const docs = await post("/history", [], {offset, limit}, signal);
    state.historyOffset = offset;
    renderGrid($("#stored"), docs, "Stored image");
    $("[data-page='-1']", form).dataset.enabled = offset > 0 ? "true" : "";
    $("[data-page='1']", form).dataset.enabled = docs.length === limit ? "true" : "";
    return docs.length ? `Images ${offset + 1}–${offset + docs.length}, newest first.`
                       : "Nothing stored yet: upscale an image to keep it.";
  });
  for (const button of $$("[data-page]", form)) button.disabled = !button.dataset.enabled;
}

// ---------------------------------------------------------------- start

function insertControls() {
  for (const slot of $$("[data-controls]")) {
    const controls = $("#controls-template").content.cloneNode(true);
    $("button[type=submit]", controls).textContent = slot.dataset.controls;
    slot.replaceWith(controls);
  }
}

async function start() {
  insertControls();
  $("#viewer-choose").addEventListener("click", () => {
    if (viewerTarget) selectImage(viewerTarget.doc, viewerTarget.card);
    $("#viewer").close();
  });
  $("[data-open-chosen]").addEventListener("click", () => state.chosen && openViewer(state.chosen, null));
  $("#copy-repro").addEventListener("click", copyReproduction);
  $("#generate-form").addEventListener("submit", generate);
  $("#refine-form").addEventListener("submit", refine);
  $("#upscale-form").addEventListener("submit", upscale);
  $("#segment-form").addEventListener("submit", segment);
  $("#history-form").addEventListener("submit", (event) => loadHistory(event));
  for (const button of $$("#history-form [data-page]")) {
    button.addEventListener("click", () => loadHistory(null, Number(button.dataset.page)));
  }
  $("#generate-form textarea").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      $("#generate-form").requestSubmit();
    }
  });
  refreshChoiceState();

  let declarations;
  try {
    declarations = await post(PARAMETERS_ENDPOINT, [], {});
  } catch (error) {
    const banner = $("#startup-error");
    banner.textContent = `Could not read the server's parameters from ${PARAMETERS_ENDPOINT}: ${error.message}`;
    banner.hidden = false;
    return;
  }
  for (const doc of declarations) {
    const executor = doc.tags.executor;
    for (const [endpoint, params] of Object.entries(doc.tags.endpoints || {})) {
      (state.declarations[endpoint] = state.declarations[endpoint] || []).push({executor, params});
    }
  }
  for (const list of Object.values(state.declarations)) list.sort((a, b) => flowOrder(a.executor) - flowOrder(b.executor));
  for (const form of $$("form.task")) if (FORM_LAYOUT[form.id]) buildForm(form);
  // a step whose executor this Flow does not run (toggled off) is not offered
  $("#refine").hidden = !state.declarations["/diffuse"];
  $("#segment").hidden = !state.declarations["/segment"];
  const history = (state.declarations["/history"] || [])[0];
  const limit = history && history.params.find((p) => p.name === "limit");
  $("#history").hidden = !limit;
  if (limit) state.historyLimit = limit.default; // one page is the server's default page
  for (const link of $$(".top nav a")) link.hidden = Boolean($(link.getAttribute("href")).hidden);
  document.body.dataset.ready = "true";
}

function flowOrder(executor) {
  const order = ["dalle", "diffusion", "upscaler", "store", "clipseg"];
  return order.includes(executor) ? order.indexOf(executor) : order.length;
}

document.addEventListener("DOMContentLoaded", start);
