// Difference Finder web page: plain JavaScript, no build step.
// Talks to GET /v1/capabilities (pipeline controls) and POST /v1/compare (results, figure).
"use strict";

const $ = (id) => document.getElementById(id);
const el = (tag, attrs = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== null && v !== undefined && v !== false) node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) node.append(c);
  return node;
};
const SVG_NS = "http://www.w3.org/2000/svg";

const state = {
  caps: null,
  reference: null,   // {kind: "file"|"url", file?, url?, src, name}
  candidates: [],    // same, plus label
  result: null,
};

// ---------------------------------------------------------------- images in

function fromFile(file) {
  return { kind: "file", file, src: URL.createObjectURL(file), name: file.name };
}

function fromUrl(url) {
  const name = url.split(/[?#]/)[0].split("/").pop() || url;
  return { kind: "url", url, src: url, name };
}

function stem(name) {
  return name.replace(/\.[^.]*$/, "") || name;
}

function uniqueLabel(base) {
  const taken = new Set(state.candidates.map((c) => c.label));
  let label = base, k = 2;
  while (taken.has(label)) label = `${base} (${k++})`;
  return label;
}

function setReference(item) {
  state.reference = item;
  const box = $("reference-preview");
  box.replaceChildren();
  if (item) box.append(el("img", { src: item.src, alt: "reference", class: "thumb" }),
    el("span", { class: "muted", text: item.name }));
}

function addCandidate(item) {
  item.label = uniqueLabel(stem(item.name));
  state.candidates.push(item);
  renderCandidateList();
}

function renderCandidateList() {
  const list = $("candidate-list");
  list.replaceChildren();
  state.candidates.forEach((c, i) => {
    const label = el("input", { type: "text", value: c.label, class: "label-input",
      "aria-label": `label of candidate ${i + 1}` });
    label.addEventListener("input", () => { c.label = label.value; renderBaseline(); });
    const remove = el("button", { type: "button", class: "remove", title: "remove",
      text: "×", onclick: () => { state.candidates.splice(i, 1); renderCandidateList(); } });
    list.append(el("li", {}, el("img", { src: c.src, alt: c.label, class: "thumb" }),
      label, remove));
  });
  renderBaseline();
}

function renderBaseline() {
  const select = $("baseline");
  const current = select.value;
  select.replaceChildren(el("option", { value: "", text: "(none)" }));
  for (const c of state.candidates) {
    select.append(el("option", { value: c.label, text: c.label }));
  }
  if (state.candidates.some((c) => c.label === current)) select.value = current;
}

function wireDrop(zoneId, onFiles) {
  const zone = $(zoneId);
  const input = $(zone.dataset.target);
  input.addEventListener("change", () => { onFiles([...input.files]); input.value = ""; });
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    const files = [...e.dataTransfer.files].filter((f) => f.type.startsWith("image/") || !f.type);
    if (files.length) onFiles(files);
    else {
      const url = e.dataTransfer.getData("text/uri-list") || e.dataTransfer.getData("text/plain");
      if (url) onFiles([], url.trim());
    }
  });
}

// ---------------------------------------------------------------- pipeline controls

const STEPS = [
  ["pre_processor", "pre_processors", "Pre-processor"],
  ["strategy", "strategies", "Strategy"],
  ["metric", "metrics", "Metric"],
  ["post_processor", "post_processors", "Post-processor"],
];
const CHOICES = {
  reduction: ["mean", "max", "none"],
  size_policy: ["error", "resize", "crop", "pad"],
};

function paramInput(step, name, schema) {
  const id = `param-${step}-${name}`;
  const nullable = Array.isArray(schema.anyOf) && schema.anyOf.some((s) => s.type === "null");
  const type = schema.type || (schema.anyOf || []).map((s) => s.type).find((t) => t !== "null");
  let input;
  if (schema.enum) {
    input = el("select", { id });
    for (const v of schema.enum) input.append(el("option", { value: v, text: v }));
    input.value = schema.default;
  } else if (type === "boolean") {
    input = el("input", { id, type: "checkbox" });
    input.checked = Boolean(schema.default);
  } else if (type === "integer" || type === "number") {
    input = el("input", { id, type: "number", step: type === "integer" ? "1" : "any",
      min: schema.minimum ?? null, max: schema.maximum ?? null,
      placeholder: nullable ? "none" : null });
    input.value = schema.default ?? "";
  } else {
    input = el("input", { id, type: "text" });
    input.value = schema.default ?? "";
  }
  input.dataset.param = name;
  input.dataset.kind = type || "string";
  if (nullable) input.dataset.nullable = "1";
  return el("label", { class: "param", title: schema.description || "" },
    `${schema.title || name} `, input);
}

function renderParams(step, entry) {
  const box = $(`params-${step}`);
  box.replaceChildren();
  for (const [name, schema] of Object.entries(entry.parameters || {})) {
    box.append(paramInput(step, name, schema));
  }
}

function buildPipelineControls(caps) {
  const box = $("pipeline-controls");
  box.replaceChildren();
  const defaults = caps.default_config || {};
  const lpipsReady = Object.values(caps.lpips_weights || {}).some(Boolean);
  for (const [step, key, title] of STEPS) {
    const entries = caps[key] || [];
    const select = el("select", { id: `step-${step}` });
    for (const e of entries) {
      let text = e.name;
      if (e.needs_weights && !lpipsReady) text += " (no weights on the server)";
      select.append(el("option", { value: e.name, text, title: e.description || "" }));
    }
    let def = defaults[step];
    if (Array.isArray(def)) def = def[0];
    if (def && def.name) select.value = def.name;
    const params = el("div", { id: `params-${step}`, class: "params" });
    select.addEventListener("change", () => {
      renderParams(step, entries.find((e) => e.name === select.value));
    });
    box.append(el("fieldset", {}, el("legend", { text: title }), select, params));
    renderParams(step, entries.find((e) => e.name === select.value) || entries[0]);
  }
  const others = el("fieldset", {}, el("legend", { text: "Map" }));
  for (const [name, options] of Object.entries(CHOICES)) {
    const select = el("select", { id: `opt-${name}` });
    for (const v of options) select.append(el("option", { value: v, text: v }));
    if (defaults[name]) select.value = defaults[name];
    others.append(el("label", { class: "param" }, `${name.replace("_", " ")} `, select));
  }
  const cmap = el("select", { id: "opt-colormap" });
  for (const v of (caps.colormaps && caps.colormaps.sequential) || ["magma"]) {
    cmap.append(el("option", { value: v, text: v }));
  }
  if (defaults.render && defaults.render.colormap) cmap.value = defaults.render.colormap;
  others.append(el("label", { class: "param" }, "colormap ", cmap));
  box.append(others);
}

function readParam(input) {
  if (input.type === "checkbox") return input.checked;
  const raw = input.value.trim();
  if (input.dataset.kind === "integer" || input.dataset.kind === "number") {
    if (raw === "" && input.dataset.nullable) return null;
    const n = Number(raw);
    return raw !== "" && Number.isFinite(n) ? n : raw;  // let the server name a bad value
  }
  return raw;
}

function buildConfig() {
  const config = {};
  for (const [step] of STEPS) {
    const spec = { name: $(`step-${step}`).value };
    for (const input of $(`params-${step}`).querySelectorAll("[data-param]")) {
      spec[input.dataset.param] = readParam(input);
    }
    config[step] = spec;
  }
  config.reduction = $("opt-reduction").value;
  config.size_policy = $("opt-size_policy").value;
  config.render = { colormap: $("opt-colormap").value };
  return config;
}

// ---------------------------------------------------------------- requests

function readDataUrl(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

async function imageJson(item) {
  return item.kind === "url" ? { url: item.url } : { data: await readDataUrl(item.file) };
}

class ApiError extends Error {
  constructor(problem) {
    super(problem.detail || problem.title || `HTTP ${problem.status}`);
    this.problem = problem;
  }
}

async function problemOf(resp) {
  const text = await resp.text();
  try {
    const body = JSON.parse(text);
    if (body && typeof body === "object") return new ApiError({ status: resp.status, ...body });
  } catch (_) { /* not JSON */ }
  return new ApiError({ status: resp.status, title: resp.statusText || "Error",
    detail: text.slice(0, 500) || `the server answered ${resp.status}` });
}

async function postCompare(accept, query) {
  if (!state.reference) throw new ApiError({ title: "No reference", detail: "pick or link a reference image first" });
  if (!state.candidates.length) throw new ApiError({ title: "No candidates", detail: "add at least one candidate image" });
  const labels = state.candidates.map((c) => c.label);
  const baseline = $("baseline").value || null;
  const config = buildConfig();
  const headers = { Accept: accept };
  const key = $("api-key").value.trim();
  if (key) headers.Authorization = `Bearer ${key}`;
  let body;
  const anyUrl = [state.reference, ...state.candidates].some((c) => c.kind === "url");
  if (anyUrl) {
    const json = { reference: await imageJson(state.reference),
      candidates: await Promise.all(state.candidates.map(imageJson)), labels, config };
    if (baseline) json.baseline = baseline;
    body = JSON.stringify(json);
    headers["Content-Type"] = "application/json";
  } else {
    body = new FormData();
    body.append("reference", state.reference.file, state.reference.name);
    for (const c of state.candidates) body.append("candidates", c.file, c.name);
    body.append("labels", JSON.stringify(labels));
    if (baseline) body.append("baseline", baseline);
    body.append("config", JSON.stringify(config));
  }
  let resp;
  try {
    resp = await fetch(`/v1/compare${query}`, { method: "POST", headers, body });
  } catch (e) {
    throw new ApiError({ title: "Network error", detail: `could not reach the server (${e.message})` });
  }
  if (!resp.ok) throw await problemOf(resp);
  return resp;
}

function showError(err) {
  const box = $("error");
  const p = err.problem || { title: "Error", detail: String(err.message || err) };
  box.replaceChildren(el("strong", { text: `${p.title || "Error"}${p.status ? ` (${p.status})` : ""}` }),
    el("p", { class: "detail", text: p.detail || "" }));
  if (Array.isArray(p.errors) && p.errors.length) {
    const ul = el("ul");
    for (const e of p.errors) ul.append(el("li", { text: `${(e.loc || []).join(".") || e.pointer}: ${e.message}` }));
    box.append(ul);
  }
  box.hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error").replaceChildren();
}

// ---------------------------------------------------------------- results

function fmt(key, v) {
  if (v === null || v === undefined) return "∞";
  return key.endsWith("psnr") ? `${v.toFixed(2)} dB` : v.toFixed(4);
}

function renderMetrics(result) {
  const keys = [];
  for (const c of result.candidates) for (const k of Object.keys(c.metrics)) if (!keys.includes(k)) keys.push(k);
  const skipped = {};
  for (const c of result.candidates) Object.assign(skipped, c.skipped || {});
  const table = $("metrics");
  const arrows = (k) => (result.higher_is_better[k] ? " ↑" : " ↓");
  table.tHead.replaceChildren(el("tr", {}, el("th", { text: "candidate" }),
    ...keys.map((k) => el("th", { text: k + arrows(k), title: k === result.metric ? "the pipeline's metric" : "" })),
    ...Object.keys(skipped).map((k) => el("th", { class: "muted", text: k, title: skipped[k] }))));
  const best = {};
  for (const k of keys) {
    const vals = result.candidates.map((c) => c.metrics[k]).map((v) => (v === null ? Infinity : v));
    best[k] = result.higher_is_better[k] ? Math.max(...vals) : Math.min(...vals);
  }
  const rows = result.candidates.map((c) => el("tr", {}, el("th", { text: c.label }),
    ...keys.map((k) => {
      const v = c.metrics[k];
      const isBest = result.candidates.length > 1 && (v === null ? Infinity : v) === best[k];
      return el("td", { class: isBest ? "best" : "", text: k in c.metrics ? fmt(k, v) : "—" });
    }),
    ...Object.keys(skipped).map((k) => el("td", { class: "muted", text: "n/a", title: skipped[k] }))));
  table.tBodies[0].replaceChildren(...rows);
  const notes = Object.entries(skipped).map(([k, why]) => `${k}: ${why}`);
  const gains = result.improvement.map((g) =>
    `${g.label} vs ${result.baseline}: better on ${(100 * g.improved_fraction).toFixed(1)}% of pixels, worse on ${(100 * g.worsened_fraction).toFixed(1)}%`);
  $("improvement-summary").textContent = [...gains, ...notes].join(" · ");
}

function regionBoxes(shape, regions) {
  const [h, w] = shape.slice(-2);
  const svg = document.createElementNS(SVG_NS, "svg");
  svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("class", "boxes");
  regions.forEach((r, i) => {
    const rect = document.createElementNS(SVG_NS, "rect");
    for (const [k, v] of Object.entries({ x: r.x, y: r.y, width: r.width, height: r.height })) rect.setAttribute(k, v);
    rect.setAttribute("class", "region");
    rect.setAttribute("vector-effect", "non-scaling-stroke");
    const title = document.createElementNS(SVG_NS, "title");
    title.textContent = `region ${i + 1}: ${(100 * r.score).toFixed(1)}% of the difference`;
    rect.append(title);
    svg.append(rect);
  });
  return svg;
}

function candidateCard(c, item, index) {
  const [h, w] = c.map.shape.slice(-2);
  const viewer = el("div", { class: "viewer mode-map", style: `aspect-ratio: ${w} / ${h}` });
  const base = el("img", { class: "layer base", src: item.src, alt: `${c.label}` });
  const heat = el("img", { class: "layer heat", src: c.heatmap, alt: `difference map of ${c.label}` });
  const ref = el("img", { class: "layer ref", src: state.reference.src, alt: "reference" });
  const divider = el("div", { class: "divider" });
  viewer.append(base, heat, ref, divider, regionBoxes(c.map.shape, c.regions));

  const slider = el("input", { type: "range", min: 0, max: 100, value: 60, class: "slider",
    "aria-label": `opacity of ${c.label}` });
  const sliderLabel = el("span", { class: "slider-label", text: "opacity" });
  const apply = () => {
    const v = Number(slider.value);
    heat.style.opacity = viewer.classList.contains("mode-overlay") ? v / 100 : "";
    ref.style.clipPath = `inset(0 ${100 - v}% 0 0)`;
    divider.style.left = `${v}%`;
  };
  const modes = el("div", { class: "modes", role: "radiogroup" });
  for (const mode of ["map", "overlay", "swipe"]) {
    const radio = el("input", { type: "radio", name: `mode-${index}`, value: mode,
      checked: mode === "map" });
    radio.addEventListener("change", () => {
      viewer.className = `viewer mode-${mode}`;
      sliderLabel.textContent = mode === "swipe" ? "reference | candidate" : "opacity";
      slider.setAttribute("aria-label", `${mode === "swipe" ? "swipe" : "opacity"} of ${c.label}`);
      slider.disabled = mode === "map";
      apply();
    });
    modes.append(el("label", {}, radio, ` ${mode}`));
  }
  slider.disabled = true;
  slider.addEventListener("input", apply);
  const boxes = el("input", { type: "checkbox", checked: true, class: "toggle-boxes" });
  boxes.addEventListener("change", () => viewer.classList.toggle("no-boxes", !boxes.checked));
  apply();
  // the server's plain statement: "no significant difference found", "2 significant regions"
  const summary = c.summary || `${c.regions.length} region(s)`;
  return el("figure", { class: c.regions.length ? "card" : "card no-difference", "data-label": c.label },
    el("figcaption", {}, el("strong", { text: c.label }),
      el("span", { class: "muted summary", text: ` ${summary}` })),
    viewer,
    el("div", { class: "controls" }, modes, el("label", {}, sliderLabel, " ", slider),
      el("label", {}, boxes, " region boxes")));
}

function improvementCard(g) {
  const [h, w] = g.map.shape.slice(-2);
  return el("figure", { class: "card", "data-label": g.label },
    el("figcaption", {}, el("strong", { text: g.label }),
      el("span", { class: "muted", text: ` better ${(100 * g.improved_fraction).toFixed(1)}%, worse ${(100 * g.worsened_fraction).toFixed(1)}%` })),
    el("div", { class: "viewer", style: `aspect-ratio: ${w} / ${h}` },
      el("img", { class: "layer heat", src: g.heatmap, alt: `improvement map of ${g.label}` })));
}

function renderResult(result, items) {
  state.result = result;
  renderMetrics(result);
  $("colorbar").src = result.colorbar || "";
  $("cards").replaceChildren(...result.candidates.map((c, i) => candidateCard(c, items[i], i)));
  const hasGain = result.improvement.length > 0;
  $("improvement-block").hidden = !hasGain;
  $("improvement-colorbar").src = result.improvement_colorbar || "";
  $("improvement-cards").replaceChildren(...result.improvement.map(improvementCard));
  $("results").hidden = false;
}

// ---------------------------------------------------------------- actions

async function runCompare() {
  clearError();
  const button = $("compare");
  button.disabled = true;
  $("status").textContent = "Comparing…";
  const items = [...state.candidates];
  try {
    const resp = await postCompare("application/json", "?heatmaps=true");
    const result = await resp.json();
    renderResult(result, items);
    $("status").textContent = `Done in ${Math.round(result.timing_ms.total)} ms`;
  } catch (err) {
    $("status").textContent = "";
    showError(err);
  } finally {
    button.disabled = false;
  }
}

async function downloadFigure() {
  clearError();
  const format = $("figure-format").value;
  const types = { png: "image/png", svg: "image/svg+xml", pdf: "application/pdf" };
  const query = `?dpi=${encodeURIComponent($("figure-dpi").value)}&insets=${encodeURIComponent($("figure-insets").value)}`;
  $("status").textContent = "Drawing the figure…";
  try {
    const resp = await postCompare(types[format], query);
    const blob = await resp.blob();
    const a = el("a", { href: URL.createObjectURL(blob), download: `comparison.${format}` });
    document.body.append(a);
    a.click();
    a.remove();
    $("status").textContent = "Figure downloaded";
  } catch (err) {
    $("status").textContent = "";
    showError(err);
  }
}

async function loadCapabilities() {
  try {
    const headers = {};
    const key = $("api-key").value.trim();
    if (key) headers.Authorization = `Bearer ${key}`;
    const resp = await fetch("/v1/capabilities", { headers });
    if (!resp.ok) throw await problemOf(resp);
    state.caps = await resp.json();
    buildPipelineControls(state.caps);
  } catch (err) {
    $("pipeline-controls").replaceChildren(el("p", { class: "muted", text: "Pipeline controls unavailable." }));
    showError(err);
  }
}

function init() {
  wireDrop("reference-drop", (files, url) => {
    if (files.length) { setReference(fromFile(files[0])); $("reference-url").value = ""; }
    else if (url) { $("reference-url").value = url; setReference(fromUrl(url)); }
  });
  wireDrop("candidates-drop", (files, url) => {
    for (const f of files) addCandidate(fromFile(f));
    if (url) addCandidate(fromUrl(url));
  });
  $("reference-url").addEventListener("change", (e) => {
    const url = e.target.value.trim();
    setReference(url ? fromUrl(url) : null);
  });
  const addUrl = () => {
    const url = $("candidate-url").value.trim();
    if (url) { addCandidate(fromUrl(url)); $("candidate-url").value = ""; }
  };
  $("add-url").addEventListener("click", addUrl);
  $("candidate-url").addEventListener("keydown", (e) => { if (e.key === "Enter") addUrl(); });
  $("compare").addEventListener("click", runCompare);
  $("download-figure").addEventListener("click", downloadFigure);
  $("api-key").addEventListener("change", () => { if (!state.caps) loadCapabilities(); });
  loadCapabilities();
}

document.addEventListener("DOMContentLoaded", init);
