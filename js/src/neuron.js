// NeuronViewer front end: a toolbar, the unit's icon, histogram and related units, then its
// dataset examples group by group, each with its activation map (or receptive-field outline).
// Python computes everything; the page draws it and asks for another unit by setting the
// `request` trait ({kind, id, ...}); Python answers with the new unit's traits, or with `error`,
// and sets `answered` to the request's id either way.
// All text is set with textContent (or drawn on a canvas); nothing here parses HTML.

import { readArray } from "./array.js";
import { decodeSprite, el, sheetOffset, spriteTile, toBlobPart } from "./dom.js";
import { tokenList, tokenStrip } from "./neuron_text.js";

const RAMP = [
  [0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164],
]; // an inferno-like ramp: dark for weak, bright for strong

function rampColor(t) {
  const x = Math.min(1, Math.max(0, t)) * (RAMP.length - 1);
  const i = Math.min(RAMP.length - 2, Math.floor(x));
  const f = x - i;
  return RAMP[i].map((c, k) => Math.round(c + (RAMP[i + 1][k] - c) * f));
}

function fmt(v) {
  const a = Math.abs(v);
  if (a !== 0 && (a >= 1e4 || a < 1e-2)) return v.toExponential(2);
  return v.toFixed(a >= 100 ? 0 : 2);
}

function isEditable(node) {
  if (!node) return false;
  const tag = node.tagName;
  return tag === "INPUT" || tag === "TEXTAREA" || tag === "SELECT" || node.isContentEditable;
}

function render({ model, el: host }) {
  const root = el("div", "aw-neuron", host);
  root.tabIndex = 0;
  // JupyterLab's command-mode keys (j, k, arrows) must not fire while the viewer has focus
  root.setAttribute("data-lm-suppress-shortcuts", "true");

  const bar = el("div", "aw-neuron-bar", root);
  const layerSelect = el("select", "aw-neuron-layer", bar);
  layerSelect.title = "Layer";
  const prev = el("button", "aw-neuron-prev", bar);
  prev.type = "button";
  prev.textContent = "‹";
  prev.title = "Previous channel (← or k)";
  // the unit shown: a channel's number, or what a direction is (the Explorer's "cell 149"); a
  // number typed here and Enter shows that channel
  const channelInput = el("input", "aw-neuron-channel", bar);
  channelInput.type = "text";
  channelInput.inputMode = "numeric";
  channelInput.title = "The unit shown; type a channel number and press Enter to show it";
  const of = el("span", "aw-neuron-of", bar);
  const next = el("button", "aw-neuron-next", bar);
  next.type = "button";
  next.textContent = "›";
  next.title = "Next channel (→ or j)";
  const searchInput = el("input", "aw-neuron-search", bar);
  searchInput.type = "search";
  searchInput.placeholder = "channel, class or object";
  searchInput.title = "A channel number, a class name (channels pushing it), or an annotated object such as noodles (channels firing on it)";
  const go = el("button", "aw-neuron-go", bar);
  go.type = "button";
  go.textContent = "Find";
  const hint = el("span", "aw-neuron-hint", bar);
  hint.textContent = "← → / j k: channels";

  const errorLine = el("div", "aw-neuron-error", root);
  errorLine.hidden = true;
  const title = el("div", "aw-neuron-title", root);

  const summary = el("div", "aw-neuron-summary", root);
  const iconBox = el("figure", "aw-neuron-iconbox", summary);
  const iconImg = el("img", "aw-neuron-icon", iconBox);
  iconImg.alt = "feature visualisation";
  const iconNote = el("figcaption", "aw-neuron-icon-note", iconBox);
  const histBox = el("div", "aw-neuron-histbox", summary);
  const hist = el("canvas", "aw-neuron-hist", histBox);
  const histNote = el("div", "aw-neuron-hist-note", histBox);
  const related = el("div", "aw-neuron-related", summary);

  const results = el("div", "aw-neuron-results", root);
  const noteRow = el("div", "aw-neuron-noterow", root);
  const note = el("span", "aw-neuron-note", noteRow);
  const toggleLabel = el("label", "aw-neuron-toggle", noteRow);
  const toggle = el("input", null, toggleLabel);
  toggle.type = "checkbox";
  toggle.checked = true;
  el("span", null, toggleLabel).textContent = "show maps";
  const groupsEl = el("div", "aw-neuron-groups", root);

  let token = 0;
  let iconToken = 0;
  let currentUrl = null;
  let iconUrl = null;
  let shown = null; // the snapshot drawn now, with its decoded sprite

  // ---- requests to Python ------------------------------------------------------------------
  // the id makes every request a change, so asking again for the same thing is asked again
  function ask(content) {
    root.dataset.pending = "1";
    const last = model.get("request") || {};
    model.set("request", { ...content, id: Math.max(last.id || 0, model.get("answered")) + 1 });
    model.save_changes();
  }
  function askChannel(c) {
    const n = model.get("n_channels");
    if (!Number.isInteger(c) || c < 0 || c >= n) {
      showError(`channel ${c} is out of range: this layer has channels 0..${n - 1}.`);
      return;
    }
    ask({ kind: "channel", channel: c });
  }
  // ← → within the kind shown: channels for a channel, the direction's own neighbours (the
  // Explorer's next atlas cell) for a direction that has them; Python refuses the others
  function step(delta) {
    const u = model.get("unit") || {};
    if (u.kind !== "channel") {
      if (u.steps) ask({ kind: "step", delta });
      else showError(`${u.short || u.label || "this direction"} has no next or previous one; type a channel number to step through channels.`);
      return;
    }
    const n = model.get("n_channels");
    const c = Math.min(n - 1, Math.max(0, model.get("channel") + delta));
    if (c !== model.get("channel")) askChannel(c);
  }
  function askTyped() {
    const text = channelInput.value.trim().replace(/^(#|channel\s*)/i, "");
    if (/^\d+$/.test(text)) askChannel(Number(text));
    else showError(`Type a channel number (0..${model.get("n_channels") - 1}) in this box; search for class names and concepts in the search box.`);
  }
  function showError(text) {
    errorLine.textContent = text;
    errorLine.hidden = !text;
  }

  // ---- drawing -----------------------------------------------------------------------------
  function snapshot() {
    const n = model.get("n_examples");
    const hw = model.get("map_hw") || [0, 0];
    return {
      version: model.get("version"),
      unit: model.get("unit") || {},
      n,
      groups: model.get("groups") || [],
      labels: model.get("labels") || [],
      values: readArray(model.get("values")).data,
      samples: readArray(model.get("sample_ids")).data,
      yx: readArray(model.get("yx")).data, // (n, 2): y, x of the strongest position
      marking: model.get("marking"),
      maps: readArray(model.get("maps")).data, // (n, gh, gw), empty without a model
      gh: hw[0],
      gw: hw[1],
      mapMax: model.get("map_max") || 1,
      boxes: readArray(model.get("boxes")).data, // (n, 4): y0, x0, y1, x1 in thumb px
      cols: Math.max(1, model.get("sprite_cols")),
      thumb: model.get("thumb_size"),
      sprite: model.get("sprite"),
      edges: readArray(model.get("hist_edges")).data,
      counts: readArray(model.get("hist_counts")).data,
      marks: readArray(model.get("hist_marks")).data,
      quantiles: model.get("hist_quantiles") || [],
      mode: model.get("mode") || "image",
      contexts: model.get("contexts") || [],
      heat: readArray(model.get("heat")), // (n, width): each context's values, NaN unknown
    };
  }

  async function update() {
    const my = ++token;
    const s = snapshot();
    const decoded = await decodeSprite(s.n > 0 ? s.sprite : null, "the neuron viewer's sprite sheet");
    if (decoded === null) return;
    const { img, url } = decoded;
    if (my !== token) {
      if (url) URL.revokeObjectURL(url); // a newer unit arrived meanwhile
      return;
    }
    shown = { ...s, sheet: img ? decoded : null };
    drawAll();
    if (currentUrl) URL.revokeObjectURL(currentUrl);
    currentUrl = url;
  }

  function drawAll() {
    const s = shown;
    const u = s.unit;
    root.dataset.unit = u.kind === "channel" ? `channel:${u.channel}` : "direction";
    root.dataset.layer = u.layer || "";
    root.dataset.nExamples = String(s.n);
    root.dataset.mode = s.mode;
    searchInput.placeholder = s.mode === "text" ? "channel # or token" : "channel, class or object";
    title.textContent = u.kind === "channel"
      ? `${u.layer} · channel ${u.channel}`
      : `${u.layer} · ${u.label}`;
    drawToolbar();
    drawHistogram(s);
    drawRelated();
    drawResults();
    note.textContent = model.get("note");
    toggleLabel.hidden = s.marking !== "heatmap";
    drawGroups(s);
    root.dataset.version = String(s.version);
    delete root.dataset.pending;
  }

  function drawToolbar() {
    const layers = model.get("layers") || [];
    const layer = model.get("layer");
    if (layerSelect.options.length !== layers.length
        || [...layerSelect.options].some((o, i) => o.value !== layers[i])) {
      layerSelect.replaceChildren(...layers.map((name) => {
        const o = document.createElement("option");
        o.value = name;
        o.textContent = name;
        return o;
      }));
    }
    layerSelect.value = layer;
    layerSelect.hidden = layers.length < 2;
    const n = model.get("n_channels");
    const u = model.get("unit") || {};
    const channel = u.kind === "channel";
    channelInput.value = channel ? String(model.get("channel")) : (u.short || u.label || "direction");
    channelInput.dataset.kind = channel ? "channel" : "direction";
    // wide enough for what it shows ("cell 149", "cells 12, 13"), never cut short
    channelInput.style.width = `${Math.max(5, channelInput.value.length + 2)}ch`;
    of.textContent = channel ? `/ ${n - 1}` : "";
    of.hidden = !channel;
    const what = channel ? "channel" : "cell";
    prev.title = `Previous ${what} (← or k)`;
    next.title = `Next ${what} (→ or j)`;
    hint.textContent = channel ? "← → / j k: channels" : u.steps ? "← → / j k: cells" : "";
    prev.disabled = channel ? model.get("channel") <= 0 : !u.steps;
    next.disabled = channel ? model.get("channel") >= n - 1 : !u.steps;
  }

  function button(cls, text, tip, onClick) {
    const b = document.createElement("button");
    b.type = "button";
    b.className = cls;
    b.textContent = text;
    if (tip) b.title = tip;
    b.addEventListener("click", onClick);
    return b;
  }

  function drawRelated() {
    const parts = [];
    const chans = model.get("related_channels") || [];
    if (chans.length) {
      const h = el("div", "aw-neuron-subtitle");
      h.textContent = "Correlated channels";
      const list = el("div", "aw-neuron-list");
      for (const r of chans) {
        const b = button("aw-neuron-related-channel", `${r.channel}`, `correlation ${fmt(r.corr)} over the cached rows`,
          () => askChannel(r.channel));
        b.dataset.channel = String(r.channel);
        const c = el("span", "aw-neuron-corr", b);
        c.textContent = ` ${fmt(r.corr)}`;
        list.appendChild(b);
      }
      parts.push(h, list);
    }
    for (const [key, label] of [["classes_up", "Pushes up"], ["classes_down", "Pushes down"]]) {
      const items = model.get(key) || [];
      if (!items.length) continue;
      const h = el("div", "aw-neuron-subtitle");
      h.textContent = label;
      const list = el("div", "aw-neuron-list");
      for (const r of items) {
        // a share of the strongest channel for that class, not the raw attribution (~1e-4)
        const pct = Math.round(Math.abs(r.share ?? 0) * 100);
        const way = key === "classes_up" ? "up" : "down";
        const b = button(`aw-neuron-class aw-neuron-${way}`, r.name,
          `mean attribution toward ${r.name}: ${r.value > 0 ? "+" : ""}${fmt(r.value)} (logit per position); ` +
          `${pct}% of the channel that pushes it ${way} most, rank ${r.rank} of ${r.of}. ` +
          "Click to rank the channels by their attribution toward this class",
          () => ask({ kind: "search", query: r.name }));
        b.dataset.class = r.name;
        b.dataset.value = String(r.value);
        const v = el("span", "aw-neuron-corr", b);
        v.textContent = ` ${pct}%`;
        list.appendChild(b);
      }
      parts.push(h, list);
    }
    const rn = el("div", "aw-neuron-related-note");
    rn.textContent = model.get("related_note");
    parts.push(rn);
    if ((model.get("mode") || "image") === "text") {
      const search = (token) => ask({ kind: "search", query: token });
      parts.push(...tokenList("Top tokens (mean activation)", model.get("top_tokens") || [], "mean", "top", search));
      const tn = el("div", "aw-neuron-related-note");
      tn.textContent = model.get("top_tokens_note");
      parts.push(tn);
      parts.push(...tokenList("Writes: promotes", model.get("writes_up") || [], "value", "up", null));
      parts.push(...tokenList("Writes: suppresses", model.get("writes_down") || [], "value", "down", null));
      const wn = el("div", "aw-neuron-related-note aw-neuron-writes-note");
      wn.textContent = model.get("writes_note");
      parts.push(wn);
    }
    related.replaceChildren(...parts);
  }

  function drawResults() {
    const items = model.get("search_results") || [];
    if (!items.length) {
      results.replaceChildren();
      results.hidden = true;
      return;
    }
    results.hidden = false;
    const h = el("span", "aw-neuron-subtitle");
    h.textContent = model.get("search_title");
    const buttons = items.map((r) => {
      const b = button("aw-neuron-result", `${r.channel}`, r.tip || `score ${fmt(r.score)}`,
        () => askChannel(r.channel));
      b.dataset.channel = String(r.channel);
      return b;
    });
    results.replaceChildren(h, ...buttons);
  }

  function drawHistogram(s) {
    const W = 300;
    const H = 120;
    const dpr = window.devicePixelRatio || 1;
    hist.width = Math.round(W * dpr);
    hist.height = Math.round(H * dpr);
    hist.style.width = `${W}px`;
    hist.style.height = `${H}px`;
    histNote.textContent = model.get("hist_note");
    const ctx = hist.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, W, H);
    const nb = s.counts.length;
    if (nb === 0 || s.edges.length !== nb + 1) return;
    const pad = { l: 12, r: 12, t: 24, b: 26 };
    const lo = s.edges[0];
    const hi = s.edges[nb];
    const span = hi - lo || 1;
    const X = (v) => pad.l + ((v - lo) / span) * (W - pad.l - pad.r);
    let top = 0;
    for (const c of s.counts) top = Math.max(top, c);
    const logTop = Math.log10(1 + top) || 1;
    const Y = (c) => H - pad.b - (Math.log10(1 + c) / logTop) * (H - pad.t - pad.b);
    ctx.fillStyle = "#4c72b0";
    for (let i = 0; i < nb; i++) {
      if (!s.counts[i]) continue;
      const x0 = X(s.edges[i]);
      const x1 = X(s.edges[i + 1]);
      ctx.fillRect(x0, Y(s.counts[i]), Math.max(1, x1 - x0 - 0.5), H - pad.b - Y(s.counts[i]));
    }
    ctx.strokeStyle = "#888";
    ctx.beginPath();
    ctx.moveTo(pad.l, H - pad.b + 0.5);
    ctx.lineTo(W - pad.r, H - pad.b + 0.5);
    ctx.stroke();
    // the shown examples' values as ticks under the axis
    ctx.strokeStyle = "#333";
    for (let i = 0; i < s.n; i++) {
      const x = Math.round(X(s.values[i])) + 0.5;
      ctx.beginPath();
      ctx.moveTo(x, H - pad.b + 2);
      ctx.lineTo(x, H - pad.b + 7);
      ctx.stroke();
    }
    ctx.font = "10px sans-serif";
    ctx.textBaseline = "top";
    ctx.setLineDash([3, 2]);
    ctx.strokeStyle = "#dd8452";
    ctx.fillStyle = "#b3541e";
    for (let i = 0; i < s.marks.length; i++) {
      const x = Math.round(X(s.marks[i])) + 0.5;
      ctx.beginPath();
      ctx.moveTo(x, pad.t);
      ctx.lineTo(x, H - pad.b);
      ctx.stroke();
      const q = s.quantiles[i];
      const label = `${+(q * 100).toFixed(1)}%`;
      ctx.textAlign = "center";
      ctx.fillText(label, x, 1 + (i % 2) * 11); // staggered: 99% and 99.9% sit close
    }
    ctx.setLineDash([]);
    ctx.fillStyle = "#555";
    ctx.textAlign = "left";
    ctx.fillText(fmt(lo), pad.l, H - pad.b + 10);
    ctx.textAlign = "right";
    ctx.fillText(fmt(hi), W - pad.r, H - pad.b + 10);
    ctx.textAlign = "center";
    ctx.fillText("samples (log) by per-sample max", W / 2, H - pad.b + 10);
  }

  // Every example's activation map in one small PNG, map i at the column and row of picture i in
  // the sprite sheet, so that one background per picture, positioned as the picture's own, lays it
  // over the picture (blocky: one square per position of the layer).
  function mapSheet(s) {
    const cells = s.gh * s.gw;
    if (!cells || s.n === 0 || s.maps.length < s.n * cells) return null;
    const rows = Math.ceil(s.n / s.cols);
    const canvas = document.createElement("canvas"); // never in the page: no layer of its own
    canvas.width = s.cols * s.gw;
    canvas.height = rows * s.gh;
    const ctx = canvas.getContext("2d");
    const data = ctx.createImageData(canvas.width, canvas.height);
    for (let i = 0; i < s.n; i++) {
      const ox = (i % s.cols) * s.gw;
      const oy = Math.floor(i / s.cols) * s.gh;
      for (let k = 0; k < cells; k++) {
        const t = s.maps[i * cells + k] / s.mapMax;
        const [r, g, b] = rampColor(t);
        const p = 4 * ((oy + Math.floor(k / s.gw)) * canvas.width + ox + (k % s.gw));
        data.data[p] = r;
        data.data[p + 1] = g;
        data.data[p + 2] = b;
        data.data[p + 3] = t > 0 ? Math.round(255 * Math.min(0.8, 0.15 + 0.65 * t)) : 0;
      }
    }
    ctx.putImageData(data, 0, 0);
    return { url: canvas.toDataURL("image/png"), width: s.cols * s.thumb, height: rows * s.thumb };
  }

  function drawBox(tile, s, i) {
    if (s.boxes.length < 4 * (i + 1)) return;
    const [y0, x0, y1, x1] = [0, 1, 2, 3].map((k) => s.boxes[4 * i + k]);
    const box = el("div", "aw-neuron-box", tile);
    box.style.left = `${x0}px`;
    box.style.top = `${y0}px`;
    box.style.width = `${Math.max(0, x1 - x0)}px`;
    box.style.height = `${Math.max(0, y1 - y0)}px`;
  }

  function drawGroups(s) {
    const maps = s.marking === "heatmap" ? mapSheet(s) : null;
    const sections = [];
    let i = 0;
    for (const g of s.groups) {
      const sec = el("section", "aw-neuron-group");
      sec.dataset.group = g.name;
      sec.dataset.count = String(g.count);
      const h = el("div", "aw-neuron-group-title", sec);
      h.textContent = `${g.title} · ${g.count} example${g.count === 1 ? "" : "s"}`;
      const grid = el("div", "aw-neuron-grid", sec);
      // at most four across, so the groups sit side by side in a wide output
      grid.style.gridTemplateColumns = s.mode === "text"
        ? "auto" // one context per line
        : `repeat(${Math.max(1, Math.min(4, g.count))}, ${s.thumb}px)`;
      if (g.count === 0) {
        const empty = el("div", "aw-neuron-empty", grid);
        empty.textContent = "no samples in this range";
      }
      for (let j = 0; j < g.count; j++, i++) {
        const fig = el("figure", "aw-neuron-example", grid);
        fig.dataset.sampleId = String(s.samples[i]);
        fig.dataset.group = g.name;
        fig.title = `sample ${s.samples[i]} · strongest at (${s.yx[2 * i]}, ${s.yx[2 * i + 1]})`;
        if (s.mode === "text") {
          const w = s.heat.shape[1] || 0;
          const row = s.heat.data.subarray(i * w, (i + 1) * w);
          tokenStrip(fig, s.contexts[i] || { tokens: [], index: -1, start: 0 }, row, s.mapMax);
          const cap = el("figcaption", "aw-neuron-caption", fig);
          el("span", "aw-neuron-label", cap).textContent = `sample ${s.samples[i]}`;
          el("span", "aw-neuron-value", cap).textContent = fmt(s.values[i]);
          continue;
        }
        const tile = spriteTile("aw-neuron-img", s.sheet, i, s.cols, s.thumb, fig);
        if (maps) {
          const heat = el("div", "aw-neuron-heat", tile);
          heat.style.backgroundImage = `url("${maps.url}")`; // a data: URL of base64, no quotes
          heat.style.backgroundSize = `${maps.width}px ${maps.height}px`;
          // the map sheet has the picture sheet's layout at the pictures' size: the same offset
          heat.style.backgroundPosition = sheetOffset(i, s.cols, s.thumb);
        }
        if (s.marking === "box") drawBox(tile, s, i);
        const cap = el("figcaption", "aw-neuron-caption", fig);
        el("span", "aw-neuron-label", cap).textContent = s.labels[i] ?? "?";
        el("span", "aw-neuron-value", cap).textContent = fmt(s.values[i]);
      }
      sections.push(sec);
    }
    groupsEl.replaceChildren(...sections);
  }

  async function updateIcon() {
    const my = ++iconToken;
    const png = model.get("icon");
    iconNote.textContent = model.get("icon_note");
    iconBox.dataset.unit = model.get("icon_unit");
    if (!png || png.byteLength === 0) {
      iconImg.hidden = true;
      iconImg.removeAttribute("src");
      return;
    }
    const url = URL.createObjectURL(new Blob([toBlobPart(png)], { type: "image/png" }));
    if (my !== iconToken) {
      URL.revokeObjectURL(url);
      return;
    }
    iconImg.src = url;
    iconImg.hidden = false;
    if (iconUrl) URL.revokeObjectURL(iconUrl);
    iconUrl = url;
  }

  // ---- events ------------------------------------------------------------------------------
  function onKeyDown(event) {
    const t = event.target;
    if (isEditable(t)) {
      if (event.key === "Enter" && t === searchInput) ask({ kind: "search", query: searchInput.value });
      if (event.key === "Enter" && t === channelInput) askTyped();
      return; // typing in our inputs stays typing
    }
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    let delta = 0;
    if (event.key === "ArrowRight" || event.key === "j") delta = 1;
    else if (event.key === "ArrowLeft" || event.key === "k") delta = -1;
    if (!delta) return;
    event.preventDefault();
    event.stopPropagation();
    step(delta);
  }
  function onPointerEnter() {
    // keys go where the pointer is, unless the person is typing somewhere else
    const active = document.activeElement;
    if (!root.contains(active) && !isEditable(active)) root.focus({ preventScroll: true });
  }
  function onPointerDown(event) {
    // a click anywhere but our inputs and buttons gives the keys to the viewer (JupyterLab's
    // own mousedown handling would otherwise keep them in the notebook)
    if (!isEditable(event.target) && event.target.tagName !== "BUTTON") root.focus({ preventScroll: true });
  }
  function onPointerLeave() {
    if (document.activeElement === root) root.blur();
  }

  root.addEventListener("keydown", onKeyDown);
  root.addEventListener("pointerenter", onPointerEnter);
  root.addEventListener("pointerdown", onPointerDown);
  root.addEventListener("pointerleave", onPointerLeave);
  prev.addEventListener("click", () => step(-1));
  next.addEventListener("click", () => step(1));
  go.addEventListener("click", () => ask({ kind: "search", query: searchInput.value }));
  layerSelect.addEventListener("change", () => ask({ kind: "layer", layer: layerSelect.value }));
  toggle.addEventListener("change", () => groupsEl.classList.toggle("aw-neuron-maps-off", !toggle.checked));

  const onError = () => showError(model.get("error"));
  // Python has handled a request: a refused one leaves nothing new to draw, so the wait ends here
  // (a shown one ends when drawAll has drawn it)
  const onAnswered = () => {
    onError();
    if (model.get("error")) delete root.dataset.pending;
  };
  // one Python message fires several change events in a row; draw once, after the last
  let queued = false;
  const onChange = () => {
    if (queued) return;
    queued = true;
    queueMicrotask(() => {
      queued = false;
      update();
    });
  };
  const traits = [
    "version", "thumb_size", "search_results", "layers",
  ];
  for (const t of traits) model.on(`change:${t}`, onChange);
  const iconTraits = ["icon", "icon_unit", "icon_note"];
  for (const t of iconTraits) model.on(`change:${t}`, updateIcon);
  model.on("change:error", onError);
  model.on("change:answered", onAnswered);
  update();
  updateIcon();
  onError();

  return () => {
    for (const t of traits) model.off(`change:${t}`, onChange);
    for (const t of iconTraits) model.off(`change:${t}`, updateIcon);
    model.off("change:error", onError);
    model.off("change:answered", onAnswered);
    token++;
    iconToken++;
    if (currentUrl) URL.revokeObjectURL(currentUrl);
    if (iconUrl) URL.revokeObjectURL(iconUrl);
  };
}

export default { render };
