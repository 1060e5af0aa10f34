// gradvis explore: the page. Plain JavaScript, no build step, no network but this server.
"use strict";

const TOKEN = new URLSearchParams(location.search).get("token");
const S = { model: null, methods: {}, image: null, imageName: "", imageNotes: [], target: null, top: [] };
const $ = (id) => document.getElementById(id);
const FINISHED = ["done", "failed", "cancelled", "error"];
// the server's colour maps (server.py keeps the same stops)
const HEAT = [[0, 0, 4], [40, 11, 84], [101, 21, 110], [159, 42, 99], [212, 72, 66],
              [245, 125, 21], [250, 193, 39], [252, 255, 164]];
const RED = [178, 24, 43], BLUE = [33, 102, 172], WHITE = [247, 247, 247];
const MODE_NAMES = { heat: "heat map", overlay: "overlay on the photo", masked: "masked photo",
                     signed: "signed map, red positive and blue negative" };

function url(path) {          // img and link addresses carry the token too
  if (!TOKEN) return path;
  return path + (path.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(TOKEN);
}

async function api(path, opts = {}) {
  opts.headers = Object.assign(TOKEN ? { "X-Gradvis-Token": TOKEN } : {}, opts.headers || {});
  let r;
  try {
    r = await fetch(path, opts);
  } catch (e) {
    return { status: 0, body: { error: "the server cannot be reached (" + e.message + ")" } };
  }
  let body = null;
  if ((r.headers.get("content-type") || "").includes("json")) body = await r.json();
  return { status: r.status, ok: r.ok, body: body || { error: r.status + " " + r.statusText } };
}

const sleep = (ms) => new Promise((res) => setTimeout(res, ms));

function showError(msg) { $("error").textContent = msg || ""; }

function fmt(v) {
  if (v === 0) return "0";
  const a = Math.abs(v);
  return (a >= 1e-3 && a < 1e4) ? v.toPrecision(3) : v.toExponential(2);
}

function className(i) {
  const c = S.model.classes[i];
  return c ? c.name : "class " + i;
}

// ------------------------------------------------------------------ model
async function loadModel() {
  const r = await api("/api/model");
  if (!r.ok) { $("model-line").textContent = "Cannot load the model: " + r.body.error; return; }
  const m = S.model = r.body;
  $("model-line").textContent = `Model: ${m.name} (${m.input_size[0]}x${m.input_size[1]} input, ` +
    `${m.num_classes} classes, ${m.layers.length} layers)` + (m.path ? ` from ${m.path}` : "");
  const dl = $("class-list");
  for (const c of m.classes) {
    const o = document.createElement("option");
    o.value = `${c.name} (${c.index})`;
    dl.appendChild(o);
  }
  const sel = $("method");
  const groups = {};
  for (const meth of m.methods) {
    S.methods[meth.name] = meth;
    if (meth.output === "classes") continue;        // the predictions panel shows these
    if (!groups[meth.family]) {
      groups[meth.family] = document.createElement("optgroup");
      groups[meth.family].label = meth.family;
      sel.appendChild(groups[meth.family]);
    }
    const o = document.createElement("option");
    o.value = meth.name;
    o.textContent = meth.label + (meth.streams ? " (streams)" : "");
    groups[meth.family].appendChild(o);
  }
  buildParams();
  const imgs = await api("/api/images");
  if (imgs.ok) {
    for (const im of imgs.body) {
      const o = document.createElement("option");
      o.value = im.id;
      o.textContent = im.name;
      $("picker").appendChild(o);
    }
  }
}

function buildParams() {
  const meth = S.methods[$("method").value];
  const form = $("params");
  form.replaceChildren();
  if (!meth) return;
  $("method-help").textContent = meth.description + (meth.reference ? " (" + meth.reference + ")" : "");
  for (const p of meth.params) {
    const id = "param-" + p.name;
    const lab = document.createElement("label");
    lab.htmlFor = id;
    lab.textContent = p.label;
    let input;
    if (p.kind === "choice" || p.kind === "layer") {
      input = document.createElement("select");
      for (const c of p.choices) {
        const o = document.createElement("option");
        o.value = o.textContent = c;
        if (c === p.default) o.selected = true;
        input.appendChild(o);
      }
    } else if (p.kind === "bool") {
      input = document.createElement("input");
      input.type = "checkbox";
      input.checked = !!p.default;
    } else {
      input = document.createElement("input");
      input.type = "number";
      input.step = p.kind === "int" ? "1" : "any";
      if (p.min !== undefined) input.min = p.min;
      if (p.max !== undefined) input.max = p.max;
      input.value = p.default === null ? "" : p.default;
      if (p.optional) input.placeholder = "none";
    }
    input.id = id;
    input.dataset.testid = id;
    input.dataset.param = p.name;
    input.dataset.kind = p.kind;
    if (p.help) input.title = p.help;
    form.append(lab, input);
  }
  updateRun();
}

function readParams() {
  const out = {};
  for (const el of $("params").querySelectorAll("[data-param]")) {
    const k = el.dataset.kind;
    if (k === "bool") out[el.dataset.param] = el.checked;
    else if (k === "int" || k === "float") out[el.dataset.param] = el.value === "" ? null : Number(el.value);
    else out[el.dataset.param] = el.value;
  }
  return out;
}

function updateRun() {
  const meth = S.methods[$("method").value];
  const ready = meth && (!meth.uses_image || S.image) && (!meth.needs_target || S.target !== null);
  $("run").disabled = !ready;
}

// ------------------------------------------------------------------ image and predictions
async function useImage(id, name, notes) {
  S.image = id;
  S.imageName = name;
  S.imageNotes = notes || [];
  const img = $("input-img");
  img.src = url(`/api/images/${encodeURIComponent(id)}/input.png`);
  const [w, h] = S.model.input_size;
  img.alt = `The photo ${name} as the model sees it, ${w} by ${h} pixels`;
  $("input-caption").textContent = [name].concat(notes || []).join(" ");
  $("input-figure").hidden = false;
  await predict();
}

async function uploadFile(file) {
  showError("");
  if (!file) return;
  const r = await api("/api/images?name=" + encodeURIComponent(file.name),
                      { method: "POST", body: file, headers: { "Content-Type": "application/octet-stream" } });
  if (!r.ok) { showError(`${file.name}: refused (${r.status}): ${r.body.error}`); return; }
  await useImage(r.body.id, r.body.name, r.body.notes);
}

async function pickImage(id) {
  showError("");
  if (!id) return;
  const r = await api("/api/predict", { method: "POST", headers: { "Content-Type": "application/json" },
                                         body: JSON.stringify({ image: id, k: 5 }) });
  if (!r.ok) { showError(`refused (${r.status}): ${r.body.error}`); return; }
  await useImage(id, r.body.image.name, r.body.image.notes);
}

async function predict() {
  const r = await api("/api/predict", { method: "POST", headers: { "Content-Type": "application/json" },
                                         body: JSON.stringify({ image: S.image, k: 5 }) });
  if (!r.ok) { showError(r.body.error); return; }
  S.top = r.body.top;
  const ol = $("top5");
  ol.replaceChildren();
  for (const t of S.top) {
    const li = document.createElement("li");
    const b = document.createElement("button");
    b.type = "button";
    b.dataset.testid = "top5-item";
    b.dataset.class = t.class;
    const bar = document.createElement("span");
    bar.className = "bar";
    bar.style.width = (100 * t.prob).toFixed(1) + "%";
    const txt = document.createElement("span");
    txt.className = "txt";
    txt.textContent = `${t.name} — ${(100 * t.prob).toFixed(1)}%`;
    b.append(bar, txt);
    b.setAttribute("aria-label", `${t.name}, probability ${(100 * t.prob).toFixed(1)} percent; use as target`);
    b.addEventListener("click", () => { $("target-search").value = ""; setTarget(t.class); });
    li.appendChild(b);
    ol.appendChild(li);
  }
  $("target-search").value = "";
  if (S.top.length) setTarget(S.top[0].class);
}

function setTarget(i) {
  S.target = i;
  const c = S.model.classes[i];
  $("target-line").textContent = `Target: ${c.name}` + (c.wnid ? ` (${c.wnid}, ${i})` : ` (${i})`);
  for (const b of $("top5").querySelectorAll("button")) {
    b.setAttribute("aria-pressed", String(Number(b.dataset.class) === i));
  }
  updateRun();
}

function searchTarget(text) {
  const s = text.trim().toLowerCase();
  if (!s) return;
  let m = s.match(/\((\d+)\)\s*$/) || s.match(/^(\d+)$/);
  let i = m ? Number(m[1]) : -1;
  if (i < 0) {
    const hits = S.model.classes.filter((c) => c.name.toLowerCase().startsWith(s) ||
                                               c.full_name.toLowerCase().includes(s));
    if (hits.length) i = hits[0].index;
  }
  if (i >= 0 && i < S.model.num_classes) setTarget(i);
  else $("target-line").textContent = `No class matches “${text}”.`;
}

// ------------------------------------------------------------------ results
const cards = new Set();

async function runMethod() {
  const meth = S.methods[$("method").value];
  const body = { method: meth.name, image: S.image, params: readParams() };
  if (meth.needs_target) body.target = S.target;
  const card = newCard(meth, meth.needs_target ? S.target : null);
  const r = await api("/api/run", { method: "POST", headers: { "Content-Type": "application/json" },
                                    body: JSON.stringify(body) });
  if (!r.ok) { finishCard(card, { status: "failed", error: r.body.error }); return; }
  card.id = r.body.id;
  card.el.dataset.jobId = card.id;
  poll(card);
}

function newCard(meth, target) {
  const el = $("card-template").content.firstElementChild.cloneNode(true);
  // the image's own notes are shown beside it, not on every card
  const card = { el, meth, target, id: null, image: S.imageName, imageNotes: S.imageNotes, map: null };
  el.dataset.method = meth.name;
  el.dataset.status = "queued";
  const what = target === null ? "" : " · " + className(target);
  el.querySelector(".title").textContent = meth.label + what;
  el.setAttribute("aria-label", meth.label + what);
  el.querySelector(".cancel").addEventListener("click", () => cancelCard(card));
  el.querySelector(".remove").addEventListener("click", () => { cancelCard(card); el.remove(); cards.delete(card); });
  el.querySelector(".status").textContent = "Queued…";
  $("grid").appendChild(el);
  cards.add(card);
  return card;
}

async function cancelCard(card) {
  if (!card.id || FINISHED.includes(card.el.dataset.status)) return;
  card.el.querySelector(".status").textContent = "Cancelling…";
  await api(`/api/jobs/${card.id}`, { method: "DELETE" });
}

async function poll(card) {
  let preview = null;
  while (cards.has(card)) {
    const r = await api(`/api/jobs/${card.id}`);
    const d = r.body;
    if (r.status === 404 || r.status === 0) { finishCard(card, { status: "error", error: d.error }); return; }
    card.el.dataset.status = d.status;
    const prog = card.el.querySelector("progress");
    if (d.total) { prog.max = d.total; prog.value = d.step; }
    prog.setAttribute("aria-label", `${card.meth.label}: step ${d.step} of ${d.total || "?"}`);
    if (d.status === "running") {
      card.el.querySelector(".status").textContent = d.total ? `Step ${d.step} of ${d.total}` : "Running…";
    }
    if (d.preview && d.preview !== preview) {
      preview = d.preview;
      const img = card.el.querySelector("img.result");
      img.src = url(d.preview);
      img.alt = `${card.meth.label} in progress, step ${d.step} of ${d.total}`;
      img.hidden = false;
    }
    if (FINISHED.includes(d.status)) { finishCard(card, d); return; }
    await sleep(d.status === "queued" ? 400 : 150);
  }
}

async function finishCard(card, d) {
  const el = card.el;
  el.dataset.status = d.status;
  el.querySelector(".running").hidden = true;
  const status = el.querySelector(".status");
  const notes = el.querySelector(".notes");
  notes.replaceChildren();
  for (const n of (d.notes || []).filter((x) => !card.imageNotes.includes(x))) {
    const li = document.createElement("li");
    li.textContent = n;
    if (/^Attack failed/.test(n)) li.className = "fail";
    notes.appendChild(li);
  }
  if (d.status === "failed") { status.textContent = "Refused: " + d.error; status.setAttribute("role", "alert"); return; }
  if (d.status === "error") { status.textContent = "Server error: " + (d.error || "unknown"); return; }
  if (d.status === "cancelled") {
    status.textContent = `Cancelled at step ${d.step || 0}` + (d.total ? ` of ${d.total}` : "") + ".";
    return;
  }
  card.result = d;
  const secs = d.compute_s !== undefined ? ` in ${d.compute_s < 1 ? (1000 * d.compute_s).toFixed(0) + " ms" : d.compute_s.toFixed(1) + " s"}` : "";
  status.textContent = `Done${secs}.` + (d.success === false ? " The attack failed." : "");
  el.querySelector(".npy").href = url(d.urls.npy);
  el.querySelector(".npy").download = `${d.method}_${d.target ?? "result"}.npy`;
  el.querySelector(".downloads").hidden = false;
  el.querySelector("[data-testid=python-code]").textContent = d.python;
  el.querySelector("[data-testid=cli-command]").textContent = d.cli || "(no gradvis command gives exactly this; use the Python call)";
  el.querySelector(".code").hidden = false;
  const img = el.querySelector("img.result");
  if (d.output === "map") {
    const [w, h] = d.size;
    const [buf, input] = await Promise.all([
      fetch(url(d.urls.map)).then((r) => r.arrayBuffer()),
      loadPixels(url(d.urls.input), w, h)]);
    card.map = { data: new Float32Array(buf), w, h, input, dtype: d.dtype };
    renderMap(card);
  } else {
    img.src = url(d.urls.png);
    const [w, h] = [d.shape[3], d.shape[2]];
    img.alt = `${card.meth.label} result` + (card.target !== null ? ` for class ${className(card.target)}` : "") +
              `, ${w} by ${h} pixels` + (d.success === false ? "; the attack failed" : "");
    img.hidden = false;
    const png = el.querySelector(".png");
    png.href = url(d.urls.png);
    png.download = `${d.method}_${d.target ?? "result"}.png`;
  }
}

function loadPixels(src, w, h) {
  return new Promise((resolve, reject) => {
    const im = new Image();
    im.onload = () => {
      const cv = document.createElement("canvas");
      cv.width = w; cv.height = h;
      const ctx = cv.getContext("2d");
      ctx.drawImage(im, 0, 0, w, h);
      resolve(ctx.getImageData(0, 0, w, h).data);
    };
    im.onerror = reject;
    im.src = src;
  });
}

function heat(t) {
  const x = Math.max(0, Math.min(1, t)) * (HEAT.length - 1);
  const i = Math.min(HEAT.length - 2, Math.floor(x)), f = x - i;
  return [0, 1, 2].map((c) => HEAT[i][c] * (1 - f) + HEAT[i + 1][c] * f);
}

const mix = (a, b, t) => [0, 1, 2].map((c) => a[c] + t * (b[c] - a[c]));

function renderMap(card) {
  const { data, w, h, input, dtype } = card.map;
  const mode = $("mode").value, alpha = Number($("alpha").value);
  let lo = Infinity, hi = -Infinity, amax = 0;
  for (const v of data) { if (v < lo) lo = v; if (v > hi) hi = v; if (Math.abs(v) > amax) amax = Math.abs(v); }
  const cv = document.createElement("canvas");
  cv.width = w; cv.height = h;
  const ctx = cv.getContext("2d");
  const out = ctx.createImageData(w, h);
  for (let k = 0; k < w * h; k++) {
    const v = data[k];
    let rgb;
    if (mode === "signed") {
      const s = amax > 0 ? v / amax : 0;
      rgb = s >= 0 ? mix(WHITE, RED, s) : mix(WHITE, BLUE, -s);
    } else {
      const t = hi > lo ? (v - lo) / (hi - lo) : 0;
      const px = [input[4 * k], input[4 * k + 1], input[4 * k + 2]];
      if (mode === "heat") rgb = heat(t);
      else if (mode === "overlay") rgb = mix(px, heat(t), alpha);
      else rgb = px.map((c) => c * t);
    }
    out.data[4 * k] = rgb[0]; out.data[4 * k + 1] = rgb[1]; out.data[4 * k + 2] = rgb[2]; out.data[4 * k + 3] = 255;
  }
  ctx.putImageData(out, 0, 0);
  const png = cv.toDataURL("image/png");
  const el = card.el;
  const img = el.querySelector("img.result");
  img.src = png;
  const [a, b] = mode === "signed" ? [-amax, amax] : [lo, hi];
  img.alt = `${card.meth.label} map` + (card.target !== null ? ` of class ${className(card.target)}` : "") +
            ` for ${card.image}, shown as ${MODE_NAMES[mode]}; its colour scale runs from ${fmt(a)} to ${fmt(b)}`;
  img.hidden = false;
  const scale = el.querySelector(".scale");
  scale.querySelector(".lo").textContent = fmt(a);
  scale.querySelector(".hi").textContent = fmt(b) + (dtype ? ` (${dtype})` : "");
  const stops = mode === "signed" ? ["rgb(" + BLUE + ")", "rgb(" + WHITE + ")", "rgb(" + RED + ")"]
                                  : HEAT.map((c) => "rgb(" + c + ")");
  scale.querySelector(".bar").style.background = `linear-gradient(to right, ${stops.join(", ")})`;
  scale.hidden = false;
  const link = el.querySelector(".png");
  link.href = png;
  link.download = `${card.meth.name}_${card.target ?? "result"}_${mode}.png`;
}

function rerender() { for (const c of cards) if (c.map) renderMap(c); }

// ------------------------------------------------------------------ wiring
function init() {
  const drop = $("drop"), file = $("file");
  drop.addEventListener("click", () => file.click());
  drop.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") { e.preventDefault(); file.click(); }
  });
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    if (e.dataTransfer.files.length) uploadFile(e.dataTransfer.files[0]);
  });
  file.addEventListener("change", () => uploadFile(file.files[0]));
  $("picker").addEventListener("change", (e) => pickImage(e.target.value));
  $("target-search").addEventListener("change", (e) => searchTarget(e.target.value));
  $("target-search").addEventListener("keydown", (e) => { if (e.key === "Enter") searchTarget(e.target.value); });
  $("method").addEventListener("change", buildParams);
  $("run").addEventListener("click", runMethod);
  $("mode").addEventListener("change", rerender);
  $("alpha").addEventListener("input", rerender);
  $("clear").addEventListener("click", () => {
    for (const c of [...cards]) { cancelCard(c); c.el.remove(); cards.delete(c); }
  });
  // a closed page leaves no job running
  window.addEventListener("pagehide", () => {
    for (const c of cards) {
      if (c.id && !FINISHED.includes(c.el.dataset.status)) {
        fetch(`/api/jobs/${c.id}`, { method: "DELETE", keepalive: true,
                                     headers: TOKEN ? { "X-Gradvis-Token": TOKEN } : {} });
      }
    }
  });
  loadModel();
}

document.addEventListener("DOMContentLoaded", init);
