// AtlasWidget front end: one icon per grid cell on a 2D canvas; zoom, pan, hover, click and lasso
// selection. ComparisonWidget (mode "compare") and DiffWidget (mode "diff") add a score per cell,
// drawn as a coloured frame with a legend (atlas_scored.js); the pointer and keyboard input is
// atlas_input.js.
//
// View mapping (CSS pixels, relative to the canvas's top-left corner): cell (row, col) covers
//   x = offsetX + col * scale,  y = offsetY + row * scale,  scale wide and high.
// The root element publishes it as data-view="scale,offsetX,offsetY" so a test can click a cell.
//
// Zoom levels: level k bins the same layout into n * 2^k cells per side, so the grid's extent on
// screen (n * scale) and the offsets stay put when the level changes: the same region of the plane
// stays under the pointer. Zooming in past ZOOM_IN (the grid drawn that many times its home size
// per level) asks Python for the next level through the `level` trait; zooming out past ZOOM_OUT
// asks for the previous one. Python answers with the level's cells and sprite, and `cells_level`.
// A text atlas (`text_cells`) has no sprite: each cell is its most frequent token in a short
// context, drawn with fillText (text_cells.js).
// All text is set with textContent; nothing here parses HTML.

import { readArray } from "./array.js";
import { atlasInput } from "./atlas_input.js";
import { SELECT_COLOR, scoredMode } from "./atlas_scored.js";
import { decodeSprite, el } from "./dom.js";
import { drawTextCell, readTextCells } from "./text_cells.js";

const PAD = 8; // CSS px between the grid and the canvas edge at the home view
// cells marked from Python (`highlighted`: where the viewer's channel is strongest), dashed
const HIGHLIGHT_COLOR = "#00b8d9";
const HOVER_COLOR = "#ffffff";
const EDGE_COLOR = "rgba(20, 20, 20, 0.85)";
// log2 of the zoom (grid extent over its home extent) at which the next level is asked for, and
// below which the previous one is: the gap keeps a zoom near one threshold from flipping levels
const ZOOM_IN = 0.7;
const ZOOM_OUT = -0.5;

function render({ model, el: host }) {
  // ---- DOM -------------------------------------------------------------------------------
  const root = el("div", "aw-atlas", host);
  // keys pressed on the atlas (Escape) are ours, not JupyterLab's notebook shortcuts
  root.dataset.lmSuppressShortcuts = "true";
  const bar = el("div", "aw-atlas-bar", root);
  const title = el("span", "aw-atlas-title", bar);
  const status = el("span", "aw-atlas-status", bar);
  // feature-vis icons render in the background (Python's fv_state): their progress and a Cancel
  const fvProgress = el("progress", "aw-atlas-progress", bar);
  fvProgress.max = 1;
  fvProgress.hidden = true;
  const cancelButton = el("button", "aw-atlas-cancel", bar);
  cancelButton.type = "button";
  cancelButton.textContent = "Cancel";
  cancelButton.title = "Stop rendering feature-vis icons and keep the dataset examples";
  cancelButton.hidden = true;
  const iconsButton = el("button", "aw-atlas-icons", bar);
  iconsButton.type = "button";
  iconsButton.hidden = true;
  const clearButton = el("button", "aw-atlas-clear", bar);
  clearButton.type = "button";
  clearButton.textContent = "Clear";
  clearButton.title = "Clear the selection (Esc)";
  const resetButton = el("button", "aw-atlas-reset", bar);
  resetButton.type = "button";
  resetButton.textContent = "Reset view";
  const stage = el("div", "aw-atlas-stage", root);
  const canvas = el("canvas", "aw-atlas-canvas", stage);
  canvas.tabIndex = 0;
  canvas.setAttribute("role", "img");
  const tooltip = el("div", "aw-atlas-tooltip", stage);
  tooltip.hidden = true;
  const tipTitle = el("div", "aw-atlas-tooltip-title", tooltip);
  const tipClass = el("div", "aw-atlas-tooltip-class", tooltip);
  const tipCount = el("div", "aw-atlas-tooltip-count", tooltip);
  const tipContext = el("div", "aw-atlas-tooltip-context", tooltip); // a text cell's token in context
  tipContext.hidden = true;
  const help = el("div", "aw-atlas-help", root);
  help.textContent =
    "Scroll to zoom · drag to pan · click a cell to select · shift-click to add or remove · " +
    "shift-drag to lasso · Esc clears";
  help.title = "Esc clears the selection while the pointer is over the atlas";
  const ctx = canvas.getContext("2d");
  // the scored-cell mode (comparison or diff: frames, legend, tooltip lines), null for a plain atlas
  const mode = scoredMode(
    model, { root, bar, before: iconsButton, tooltip, help, status, loadSelection });
  root.dataset.mode = mode ? mode.name : "atlas";

  // ---- state -----------------------------------------------------------------------------
  let cells = null; // {ids, ij, count, share, names, n, index: Map id -> k, and the mode's scores}
  let selected = new Set();
  let highlighted = new Set();
  let sprite = null; // HTMLImageElement, decoded
  let spriteUrl = null;
  let spriteToken = 0;
  let view = { scale: 1, ox: PAD, oy: PAD };
  let hover = -1; // position k of the hovered cell
  let drag = null; // {mode: "pan" | "lasso", x0, y0, x, y, ox, oy, moved, additive, path}
  let frame = 0;
  let shownLevel = null; // level of the cells drawn (cells_level when they arrived)
  let busy = ""; // "level" or "icons" while the page waits for Python's answer
  let cellsQueued = false;

  function cssSize() {
    return model.get("size");
  }

  function loadCells() {
    const n = model.get("grid_size");
    const ids = readArray(model.get("cell_ids")).data;
    const ij = readArray(model.get("cell_ij")).data; // (n_cells, 2): row, col
    const count = readArray(model.get("cell_count")).data;
    const share = readArray(model.get("cell_share")).data;
    const names = model.get("cell_class") || [];
    const index = new Map();
    for (let k = 0; k < ids.length; k++) index.set(ids[k], k);
    const text = readTextCells(model); // null for an image atlas
    cells = { ids, ij, count, share, names, n, index, text };
    root.dataset.cellsKind = text ? "text" : "images";
    if (text) root.dataset.ready = "1"; // nothing to decode: the cells are drawn as text
    root.dataset.nCells = String(ids.length);
    root.dataset.gridSize = String(n);
    const positions = model.get("n_positions");
    const parts = [];
    if (model.get("layer")) parts.push(model.get("layer"));
    if (mode) mode.loadCells(cells, parts);
    const level = model.get("cells_level");
    root.dataset.level = String(level);
    if (model.get("n_levels") > 1) parts.push(`level ${level}`);
    parts.push(`${n}×${n} grid`);
    parts.push(`${ids.length.toLocaleString("en-US")} cells`);
    parts.push(`${positions.toLocaleString("en-US")} positions`);
    title.textContent = parts.join(" · ");
    title.title = title.textContent; // the bar may cut it short
    canvas.setAttribute(
      "aria-label", `${mode ? mode.label : "Activation atlas"}: ${title.textContent}`);
  }

  function setBusy(what) {
    busy = what;
    if (what) root.dataset.busy = what;
    else delete root.dataset.busy;
    loadSelection();
  }

  function rendering() {
    return model.get("fv_state") === "rendering";
  }

  // the background render's state: progress and Cancel while it runs; the page stays usable
  function loadFv() {
    const state = model.get("fv_state") || "";
    if (state) root.dataset.fv = state;
    else delete root.dataset.fv;
    fvProgress.hidden = !rendering();
    cancelButton.hidden = !rendering();
    fvProgress.value = model.get("fv_progress");
    // Python has taken the toggle's request: zoom, select and click on while icons render
    if (busy === "icons" && rendering()) setBusy("");
    else loadSelection();
    loadIconsButton();
  }

  function cancelIcons() {
    cancelButton.hidden = true;
    model.set("icons", "examples");
    model.save_changes();
  }

  function loadIconsButton() {
    const fv = model.get("sprite_icons") === "feature-vis";
    iconsButton.hidden = !model.get("can_feature_vis") || rendering();
    iconsButton.textContent = fv ? "Show examples" : "Show feature vis";
    iconsButton.title = fv
      ? "Draw each cell's most typical dataset example"
      : "Draw a feature visualisation of each cell's mean activation";
    iconsButton.setAttribute("aria-pressed", fv ? "true" : "false");
    iconsButton.disabled = busy !== "";
  }

  function askIcons() {
    if (busy) return;
    const next = model.get("sprite_icons") === "feature-vis" ? "examples" : "feature-vis";
    setBusy("icons");
    loadIconsButton();
    model.set("icons", next);
    model.save_changes();
  }

  // the icons Python sends, or its refusal (it sets `icons` back to what the sprite holds)
  function onIconsAnswer() {
    if (busy === "icons" && (model.get("icons") === model.get("sprite_icons") || rendering())) {
      setBusy("");
    }
    loadIconsButton();
  }

  // log2 of how far the grid is zoomed in from its home view (0 at home, 1 at twice the size)
  function zoomLog2() {
    if (!cells) return 0;
    return Math.log2((view.scale * cells.n) / (cssSize() - 2 * PAD));
  }

  function askLevel(next) {
    if (busy || !cells || next === shownLevel) return;
    setBusy("level");
    loadIconsButton();
    model.set("level", next);
    model.save_changes();
  }

  // after a zoom: is another level due? Only the person's zoom asks, so a level Python set stays
  function maybeChangeLevel() {
    if (busy || shownLevel === null) return;
    const z = zoomLog2();
    const last = model.get("n_levels") - 1;
    if (z >= shownLevel + ZOOM_IN && shownLevel < last) askLevel(shownLevel + 1);
    else if (z < shownLevel + ZOOM_OUT && shownLevel > 0) askLevel(shownLevel - 1);
  }

  // Python refused a level (it sets `level` back to the one shown)
  function onLevelAnswer() {
    if (busy === "level" && model.get("level") === model.get("cells_level")) {
      setBusy("");
      loadIconsButton();
    }
  }

  function homeView() {
    const n = cells ? cells.n : 1;
    const scale = (cssSize() - 2 * PAD) / n;
    return { scale, ox: PAD, oy: PAD };
  }

  function publishView() {
    root.dataset.view = [view.scale, view.ox, view.oy].map((v) => v.toFixed(3)).join(",");
  }

  function loadSelection() {
    selected = new Set((model.get("selected") || []).map(Number));
    root.dataset.selected = [...selected].sort((a, b) => a - b).join(",");
    highlighted = new Set((model.get("highlighted") || []).map(Number));
    root.dataset.highlighted = [...highlighted].sort((a, b) => a - b).join(",");
    if (status.dataset.switching) return; // keep "Switching…" until the new pair arrives
    const fvState = model.get("fv_state");
    status.textContent = busy === "icons"
      ? "Rendering icons…"
      : busy === "level"
        ? "Loading level…"
        : [fvState === "rendering"
          ? `Rendering icons… ${Math.floor(100 * model.get("fv_progress"))}%`
          : fvState === "failed" ? `Feature vis failed: ${model.get("fv_message")}` : "",
        selected.size ? `${selected.size} selected` : "",
        highlighted.size ? `${highlighted.size} highlighted` : ""].filter(Boolean).join(" · ");
    status.title = status.textContent; // the bar may cut it short
    clearButton.disabled = selected.size === 0;
  }

  async function loadSprite() {
    const token = ++spriteToken;
    delete root.dataset.ready; // the icons on screen are about to be replaced
    const bytes = model.get("sprite");
    if (!bytes || bytes.byteLength === 0) {
      sprite = null;
      if (model.get("text_cells")) { // a text atlas: its cells are text, ready as they arrive
        root.dataset.icons = model.get("sprite_icons");
        root.dataset.ready = "1";
        requestDraw();
      }
      return;
    }
    const decoded = await decodeSprite(bytes, "the icon sprite sheet");
    if (decoded === null) return;
    const { img, url } = decoded;
    if (token !== spriteToken) {
      if (url) URL.revokeObjectURL(url); // a newer sheet arrived while this one decoded
      return;
    }
    if (spriteUrl) URL.revokeObjectURL(spriteUrl);
    spriteUrl = url;
    sprite = img;
    root.dataset.icons = model.get("sprite_icons");
    loadIconsButton();
    root.dataset.ready = "1";
    requestDraw();
  }

  // ---- drawing ---------------------------------------------------------------------------
  function requestDraw() {
    if (!frame) frame = requestAnimationFrame(draw);
  }

  function draw() {
    frame = 0;
    const size = cssSize();
    const dpr = window.devicePixelRatio || 1;
    const px = Math.round(size * dpr);
    if (canvas.width !== px || canvas.height !== px) {
      canvas.width = px;
      canvas.height = px;
    }
    canvas.style.width = `${size}px`;
    canvas.style.height = `${size}px`;
    stage.style.width = `${size}px`;
    stage.style.height = `${size}px`;
    // the widget is exactly as wide as its canvas (plus the stage's border): a longer status or
    // title must not widen it, or JupyterLab reflows the outputs beside it and the grid jumps
    root.style.width = `${size + 2}px`;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, size, size);
    if (!cells) return;
    const { ids, ij, n } = cells;
    const s = view.scale;
    const gap = s >= 14 ? Math.min(2, s * 0.04) : 0;
    const icon = model.get("icon_size");
    const cols = Math.max(1, model.get("sprite_cols"));

    // the grid's footprint, so empty regions read as "no data" rather than as page background
    ctx.fillStyle = "rgba(128, 128, 128, 0.07)";
    ctx.fillRect(view.ox, view.oy, n * s, n * s);

    if (mode) mode.drawUnder(ctx, view, n);

    ctx.imageSmoothingEnabled = true;
    ctx.imageSmoothingQuality = "high";
    // with scores the icon sits inside a frame of its cell's colour, so both stay readable
    const border = mode ? Math.max(2, Math.min(8, s * 0.12)) : 0;
    for (let k = 0; k < ids.length; k++) {
      const x = view.ox + ij[2 * k + 1] * s;
      const y = view.oy + ij[2 * k] * s;
      if (x > size || y > size || x + s < 0 || y + s < 0) continue; // off screen
      if (mode) {
        ctx.fillStyle = mode.frameColor(k);
        ctx.fillRect(x + gap / 2, y + gap / 2, s - gap, s - gap);
      }
      const inset = gap / 2 + border;
      const side = s - 2 * inset;
      if (side <= 0) continue;
      if (cells.text) {
        drawTextCell(ctx, cells.text, k, x + inset, y + inset, side);
      } else if (sprite) {
        const sx = (k % cols) * icon;
        const sy = Math.floor(k / cols) * icon;
        ctx.drawImage(sprite, sx, sy, icon, icon, x + inset, y + inset, side, side);
      } else {
        ctx.fillStyle = "rgba(128, 128, 128, 0.35)"; // placeholder until the icons decode
        ctx.fillRect(x + inset, y + inset, side, side);
      }
    }

    // outlines on top of every icon, so a neighbour never covers them
    const line = Math.max(1.5, Math.min(3, s * 0.08));
    const selectColor = mode ? mode.selectColor : SELECT_COLOR;
    for (let k = 0; k < ids.length; k++) {
      if (highlighted.has(ids[k]) && !selected.has(ids[k])) outline(k, HIGHLIGHT_COLOR, line, [4, 3]);
    }
    for (let k = 0; k < ids.length; k++) {
      if (!selected.has(ids[k])) continue;
      outline(k, selectColor, line);
    }
    if (hover >= 0) outline(hover, HOVER_COLOR, Math.max(1.5, line - 0.5));

    if (drag && drag.mode === "lasso" && drag.moved && drag.path.length > 1) {
      ctx.beginPath();
      ctx.moveTo(drag.path[0].x, drag.path[0].y);
      for (const p of drag.path) ctx.lineTo(p.x, p.y);
      ctx.closePath();
      ctx.fillStyle = mode ? mode.lassoFill : "rgba(255, 122, 0, 0.12)";
      ctx.fill();
      ctx.setLineDash([5, 4]);
      ctx.strokeStyle = selectColor;
      ctx.lineWidth = 1.5;
      ctx.stroke();
      ctx.setLineDash([]);
    }
  }

  function outline(k, color, width, dash = []) {
    const s = view.scale;
    const x = view.ox + cells.ij[2 * k + 1] * s;
    const y = view.oy + cells.ij[2 * k] * s;
    // a dark edge under the coloured line keeps it visible on light and dark icons alike
    ctx.lineWidth = width + 2;
    ctx.strokeStyle = EDGE_COLOR;
    ctx.strokeRect(x + width / 2, y + width / 2, s - width, s - width);
    ctx.setLineDash(dash);
    ctx.lineWidth = width;
    ctx.strokeStyle = color;
    ctx.strokeRect(x + width / 2, y + width / 2, s - width, s - width);
    ctx.setLineDash([]);
  }

  // ---- interaction -----------------------------------------------------------------------
  function setSelection(ids) {
    const sorted = [...new Set(ids)].sort((a, b) => a - b);
    model.set("selected", sorted);
    model.save_changes();
    loadSelection(); // show it now; the echo from Python changes nothing
    requestDraw();
  }

  function showTooltip(k, x, y) {
    if (k < 0) {
      tooltip.hidden = true;
      delete root.dataset.hover;
      return;
    }
    const id = cells.ids[k];
    const row = cells.ij[2 * k];
    const col = cells.ij[2 * k + 1];
    const count = cells.count[k];
    const share = cells.share[k];
    const name = cells.names[k] ?? "?";
    tipTitle.textContent = `Cell ${id} · row ${row}, col ${col}`;
    const text = cells.text;
    if (text) {
      // the token as text: its quotes are ours, whatever characters the token holds
      const token = text.token[k] ?? "?";
      tipClass.textContent = `token “${token}”: ${Math.round((text.share[k] || 0) * 100)}% of positions`;
      tipContext.textContent = `${text.before[k] ?? ""} [${token}] ${text.after[k] ?? ""}`.trim();
    } else {
      tipClass.textContent = `${name}: ${Math.round(share * 100)}% of positions`;
    }
    tipContext.hidden = !text;
    tipCount.textContent = `${count.toLocaleString("en-US")} position${count === 1 ? "" : "s"}`;
    if (mode) mode.tooltip(k);
    root.dataset.hover = String(id);
    tooltip.hidden = false;
    // keep the tooltip inside the stage, on the side of the cursor with room
    const size = cssSize();
    const w = tooltip.offsetWidth;
    const h = tooltip.offsetHeight;
    const left = x + 14 + w > size ? Math.max(0, x - 14 - w) : x + 14;
    const top = y + 14 + h > size ? Math.max(0, y - 14 - h) : y + 14;
    tooltip.style.left = `${left}px`;
    tooltip.style.top = `${top}px`;
  }

  function resetView() {
    view = homeView();
    publishView();
    requestDraw();
  }

  function onResetButton() {
    resetView();
    if (shownLevel > 0) askLevel(0); // home is the whole atlas at its coarsest
  }

  // ---- wiring ----------------------------------------------------------------------------
  // One message from Python changes several cell traits; redraw once, after all of them.
  const onCells = () => {
    if (cellsQueued) return;
    cellsQueued = true;
    queueMicrotask(() => {
      cellsQueued = false;
      const before = cells ? cells.n : 0;
      loadCells();
      const level = model.get("cells_level");
      if (before && shownLevel !== null && level !== shownLevel) {
        // a zoom level: same layout, finer or coarser grid, same extent on screen
        view.scale *= before / cells.n;
        publishView();
        hover = -1;
        showTooltip(-1);
        requestDraw();
      } else {
        resetView();
      }
      shownLevel = level;
      if (busy === "level") setBusy("");
      loadIconsButton();
    });
  };
  const onSelected = () => {
    loadSelection();
    requestDraw();
  };
  const onSprite = () => {
    loadSprite();
  };
  const onSize = () => {
    resetView();
  };
  const cellTraits = [
    "grid_size", "cell_ids", "cell_ij", "cell_count", "cell_share", "cell_class", "cells_level",
    "text_cells", "cell_token", "cell_token_share", "cell_before", "cell_after"];
  if (mode) cellTraits.push(...mode.cellTraits);
  const labelTraits = mode ? mode.labelTraits : [];
  const loadLabels = () => mode && mode.loadLabels();
  for (const t of cellTraits) model.on(`change:${t}`, onCells);
  for (const t of labelTraits) model.on(`change:${t}`, loadLabels);
  model.on("change:selected", onSelected);
  model.on("change:highlighted", onSelected);
  model.on("change:sprite", onSprite);
  model.on("change:size", onSize);
  model.on("change:sprite_icons", onIconsAnswer);
  model.on("change:icons", onIconsAnswer);
  model.on("change:can_feature_vis", loadIconsButton);
  model.on("change:level", onLevelAnswer);
  for (const t of ["fv_state", "fv_progress", "fv_message"]) model.on(`change:${t}`, loadFv);
  // the pointer and keyboard input (atlas_input.js) reads and sets this state through `state`
  const state = {
    get cells() { return cells; },
    get view() { return view; },
    get selected() { return selected; },
    get hover() { return hover; },
    set hover(k) { hover = k; },
    get drag() { return drag; },
    set drag(d) { drag = d; },
  };
  atlasInput(state, {
    canvas, cssSize, homeView, publishView, requestDraw, showTooltip, setSelection, maybeChangeLevel,
  });
  window.addEventListener("resize", requestDraw); // browser zoom changes devicePixelRatio
  resetButton.addEventListener("click", onResetButton);
  iconsButton.addEventListener("click", askIcons);
  cancelButton.addEventListener("click", cancelIcons);
  clearButton.addEventListener("click", () => setSelection([]));

  loadCells();
  shownLevel = model.get("cells_level");
  loadLabels();
  loadSelection();
  resetView();
  loadIconsButton();
  loadFv();
  loadSprite();

  return () => {
    for (const t of cellTraits) model.off(`change:${t}`, onCells);
    for (const t of labelTraits) model.off(`change:${t}`, loadLabels);
    model.off("change:selected", onSelected);
    model.off("change:highlighted", onSelected);
    model.off("change:sprite", onSprite);
    model.off("change:size", onSize);
    model.off("change:sprite_icons", onIconsAnswer);
    model.off("change:icons", onIconsAnswer);
    model.off("change:can_feature_vis", loadIconsButton);
    model.off("change:level", onLevelAnswer);
    for (const t of ["fv_state", "fv_progress", "fv_message"]) model.off(`change:${t}`, loadFv);
    window.removeEventListener("resize", requestDraw);
    if (frame) cancelAnimationFrame(frame);
    if (spriteUrl) URL.revokeObjectURL(spriteUrl);
    spriteToken++;
  };
}

export default { render };
