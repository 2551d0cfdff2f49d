// ExamplePanel front end: a header and a grid of example pictures cut from one sprite sheet.
// Python sends a whole page of examples in one message; the page swaps it in once the sheet has
// decoded, so the header and the pictures always belong to the same selection.
// On a text atlas (`kind` "text") an example is its token context with a heat strip instead of a
// picture; its tokens are data (a vocabulary may hold "<img src=x onerror=...>") and, like all
// text here, are set with textContent; nothing here parses HTML.

import { readArray } from "./array.js";
import { decodeSprite, el, spriteTile } from "./dom.js";
import { heatColor, heatScale } from "./text_cells.js";

function formatValue(v) {
  const a = Math.abs(v);
  if (a !== 0 && (a >= 1e4 || a < 1e-2)) return v.toExponential(2);
  return v.toFixed(a >= 100 ? 0 : 2);
}

function render({ model, el: host }) {
  const root = el("div", "aw-examples", host);
  const header = el("div", "aw-examples-header", root);
  const headerMain = el("span", "aw-examples-count", header);
  const headerNote = el("span", "aw-examples-note", header);
  const gridEl = el("div", "aw-examples-grid", root);
  let token = 0;
  let currentUrl = null;

  function snapshot() {
    const n = model.get("n_examples");
    return {
      cells: [...(model.get("shown_cells") || [])],
      positions: model.get("n_positions"),
      n,
      labels: model.get("labels") || [],
      values: readArray(model.get("values")).data,
      samples: readArray(model.get("sample_ids")).data,
      rows: readArray(model.get("rows")).data,
      yx: readArray(model.get("yx")).data, // (n, 2): y, x; -1 for "mean" rows
      cols: Math.max(1, model.get("sprite_cols")),
      thumb: model.get("thumb_size"),
      sprite: model.get("sprite"),
      kind: model.get("kind"),
      tokens: model.get("context_tokens") || [],
      offsets: readArray(model.get("context_offsets")).data, // n + 1: example i's tokens
      marked: readArray(model.get("context_marked")).data, // n: its own token within them
      tokenValues: readArray(model.get("context_values")).data, // NaN: no value
    };
  }

  async function update() {
    const my = ++token;
    const s = snapshot();
    const decoded = await decodeSprite(s.n > 0 ? s.sprite : null, "the example sprite sheet");
    if (decoded === null) return;
    const { img, url } = decoded;
    if (my !== token) {
      if (url) URL.revokeObjectURL(url); // a newer page of examples arrived meanwhile
      return;
    }
    show(s, img ? decoded : null);
    if (currentUrl) URL.revokeObjectURL(currentUrl);
    currentUrl = url;
  }

  function show(s, sheet) {
    header.dataset.cells = s.cells.join(",");
    root.dataset.nExamples = String(s.n);
    root.dataset.kind = s.kind;
    const text = s.kind === "text";
    if (s.cells.length === 0) {
      headerMain.textContent = "Click a cell in the atlas";
      headerNote.textContent = "its top dataset examples appear here";
      root.classList.add("aw-empty");
    } else {
      const c = s.cells.length;
      headerMain.textContent =
        `${c} cell${c === 1 ? "" : "s"} · ${s.positions.toLocaleString("en-US")} position${s.positions === 1 ? "" : "s"}`;
      headerNote.textContent = text
        ? `top ${s.n} example${s.n === 1 ? "" : "s"} · colour: activation along the selection`
        : `top ${s.n} example${s.n === 1 ? "" : "s"} · outline: what the position sees`;
      root.classList.remove("aw-empty");
    }
    if (text) {
      gridEl.replaceChildren(...textItems(s));
      gridEl.style.gridTemplateColumns = "";
      gridEl.classList.add("aw-examples-text");
      return;
    }
    gridEl.classList.remove("aw-examples-text");
    const items = [];
    for (let i = 0; i < s.n; i++) {
      const fig = el("figure", "aw-example");
      fig.dataset.sampleId = String(s.samples[i]);
      fig.dataset.row = String(s.rows[i]);
      fig.dataset.rank = String(i);
      const y = s.yx[2 * i];
      const x = s.yx[2 * i + 1];
      const where = y < 0 ? "whole image" : `position (${y}, ${x})`;
      fig.title = `sample ${s.samples[i]} · row ${s.rows[i]} · ${where}`;
      spriteTile("aw-example-img", sheet, i, s.cols, s.thumb, fig);
      const cap = el("figcaption", "aw-example-caption", fig);
      const label = el("span", "aw-example-label", cap);
      label.textContent = s.labels[i] ?? "?";
      const value = el("span", "aw-example-value", cap);
      value.textContent = formatValue(s.values[i]);
      value.title = "dot product with the selection's mean activation";
      items.push(fig);
    }
    gridEl.replaceChildren(...items);
    gridEl.style.gridTemplateColumns = `repeat(auto-fill, ${s.thumb}px)`;
  }

  // text examples: each its token context, one span per token coloured by its value
  function textItems(s) {
    const scale = heatScale(s.tokenValues); // one scale for the page: strips compare
    const items = [];
    for (let i = 0; i < s.n; i++) {
      const fig = el("figure", "aw-example aw-example-text");
      fig.dataset.sampleId = String(s.samples[i]);
      fig.dataset.row = String(s.rows[i]);
      fig.dataset.rank = String(i);
      const t = s.yx[2 * i + 1];
      fig.title = `sample ${s.samples[i]} · row ${s.rows[i]} · token ${t}`;
      const strip = el("div", "aw-tokens", fig);
      const lo = s.offsets[i];
      const hi = s.offsets[i + 1];
      for (let j = lo; j < hi; j++) {
        const span = el("span", "aw-token", strip);
        span.textContent = s.tokens[j] ?? "";
        const v = s.tokenValues[j];
        const known = Number.isFinite(v);
        span.dataset.value = known ? String(v) : "";
        span.style.backgroundColor = heatColor(v, scale);
        span.title = known ? formatValue(v) : "no value: the capture kept no row for this token";
        if (j - lo === s.marked[i]) span.classList.add("aw-token-marked");
      }
      const cap = el("figcaption", "aw-example-caption", fig);
      const label = el("span", "aw-example-label", cap);
      label.textContent = `sample ${s.samples[i]} · token ${t}`;
      const value = el("span", "aw-example-value", cap);
      value.textContent = formatValue(s.values[i]);
      value.title = "dot product with the selection's mean activation";
      items.push(fig);
    }
    return items;
  }

  const traits = [
    "shown_cells", "n_positions", "n_examples", "sprite", "sprite_cols", "labels", "values",
    "sample_ids", "rows", "yx", "thumb_size", "kind", "context_tokens", "context_offsets",
    "context_marked", "context_values",
  ];
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
  for (const t of traits) model.on(`change:${t}`, onChange);
  update();

  return () => {
    for (const t of traits) model.off(`change:${t}`, onChange);
    token++;
    if (currentUrl) URL.revokeObjectURL(currentUrl);
  };
}

export default { render };
