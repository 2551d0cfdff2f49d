// AtlasWidget front end: draws one icon per grid cell on a 2D canvas; zoom, pan, hover, select.
//
// View mapping (CSS pixels, relative to the canvas's top-left corner): cell (row, col) covers
//   x = offsetX + col * scale,  y = offsetY + row * scale,  scale wide and high.
// The root element publishes it as data-view="scale,offsetX,offsetY" so a test can click a cell.
// All text is set with textContent; nothing here parses HTML.

const PAD = 8; // CSS px between the grid and the canvas edge at the home view
const SELECT_COLOR = "#ff7a00";
const HOVER_COLOR = "#ffffff";
const EDGE_COLOR = "rgba(20, 20, 20, 0.85)";
const CLICK_SLOP = 4; // CSS px a pointer may move and still count as a click

function render({ model, el: host }) {
  // ---- DOM -------------------------------------------------------------------------------
  const root = el("div", "aw-atlas", host);
  // keys pressed on the atlas (Escape) are ours, not JupyterLab's notebook shortcuts
  root.dataset.lmSuppressShortcuts = "true";
  const bar = el("div", "aw-atlas-bar", root);
  const title = el("span", "aw-atlas-title", bar);
  const status = el("span", "aw-atlas-status", bar);
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
  const help = el("div", "aw-atlas-help", root);
  help.textContent =
    "Scroll to zoom · drag to pan · click a cell to select · shift-click or shift-drag to add · Esc clears";
  help.title = "Esc clears the selection while the pointer is over the atlas";
  const ctx = canvas.getContext("2d");

  // ---- state -----------------------------------------------------------------------------
  let cells = null; // {ids, ij, count, share, names, n, index: Map id -> k}
  let selected = new Set();
  let sprite = null; // HTMLImageElement, decoded
  let spriteUrl = null;
  let spriteToken = 0;
  let view = { scale: 1, ox: PAD, oy: PAD };
  let hover = -1; // position k of the hovered cell
  let drag = null; // {mode: "pan" | "box", x0, y0, x, y, ox, oy, moved, additive}
  let frame = 0;

  function cssSize() {
    return model.get("size");
  }

  function loadCells() {
    const n = model.get("grid_size");
    const ids = readArray(model.get("cell_ids"), "u32");
    const ij = readArray(model.get("cell_ij"), "u32");
    const count = readArray(model.get("cell_count"), "u32");
    const share = readArray(model.get("cell_share"), "f32");
    const names = model.get("cell_class") || [];
    const index = new Map();
    for (let k = 0; k < ids.length; k++) index.set(ids[k], k);
    cells = { ids, ij, count, share, names, n, index };
    root.dataset.nCells = String(ids.length);
    root.dataset.gridSize = String(n);
    const positions = model.get("n_positions");
    const parts = [];
    if (model.get("layer")) parts.push(model.get("layer"));
    parts.push(`${n}×${n} grid`);
    parts.push(`${ids.length.toLocaleString("en-US")} cells`);
    parts.push(`${positions.toLocaleString("en-US")} positions`);
    title.textContent = parts.join(" · ");
    canvas.setAttribute("aria-label", `Activation atlas: ${title.textContent}`);
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
    status.textContent = selected.size
      ? `${selected.size} selected`
      : "";
    clearButton.disabled = selected.size === 0;
  }

  async function loadSprite() {
    const token = ++spriteToken;
    const bytes = model.get("sprite");
    if (!bytes || bytes.byteLength === 0) {
      sprite = null;
      return;
    }
    const url = URL.createObjectURL(new Blob([toBlobPart(bytes)], { type: "image/png" }));
    const img = new Image();
    img.src = url;
    try {
      await img.decode();
    } catch (err) {
      URL.revokeObjectURL(url);
      console.error("atlaswidgets: the icon sprite sheet did not decode", err);
      return;
    }
    if (token !== spriteToken) {
      URL.revokeObjectURL(url); // a newer sheet arrived while this one decoded
      return;
    }
    if (spriteUrl) URL.revokeObjectURL(spriteUrl);
    spriteUrl = url;
    sprite = img;
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

    ctx.imageSmoothingEnabled = true;
    ctx.imageSmoothingQuality = "high";
    for (let k = 0; k < ids.length; k++) {
      const x = view.ox + ij[2 * k + 1] * s;
      const y = view.oy + ij[2 * k] * s;
      if (x > size || y > size || x + s < 0 || y + s < 0) continue; // off screen
      if (sprite) {
        const sx = (k % cols) * icon;
        const sy = Math.floor(k / cols) * icon;
        ctx.drawImage(sprite, sx, sy, icon, icon, x + gap / 2, y + gap / 2, s - gap, s - gap);
      } else {
        ctx.fillStyle = "rgba(128, 128, 128, 0.35)"; // placeholder until the icons decode
        ctx.fillRect(x + gap / 2, y + gap / 2, s - gap, s - gap);
      }
    }

    // outlines on top of every icon, so a neighbour never covers them
    const line = Math.max(1.5, Math.min(3, s * 0.08));
    for (let k = 0; k < ids.length; k++) {
      if (!selected.has(ids[k])) continue;
      outline(k, SELECT_COLOR, line);
    }
    if (hover >= 0) outline(hover, HOVER_COLOR, Math.max(1.5, line - 0.5));

    if (drag && drag.mode === "box" && drag.moved) {
      const x = Math.min(drag.x0, drag.x);
      const y = Math.min(drag.y0, drag.y);
      const w = Math.abs(drag.x - drag.x0);
      const h = Math.abs(drag.y - drag.y0);
      ctx.fillStyle = "rgba(255, 122, 0, 0.12)";
      ctx.fillRect(x, y, w, h);
      ctx.setLineDash([5, 4]);
      ctx.strokeStyle = SELECT_COLOR;
      ctx.lineWidth = 1.5;
      ctx.strokeRect(x, y, w, h);
      ctx.setLineDash([]);
    }
  }

  function outline(k, color, width) {
    const s = view.scale;
    const x = view.ox + cells.ij[2 * k + 1] * s;
    const y = view.oy + cells.ij[2 * k] * s;
    // a dark edge under the coloured line keeps it visible on light and dark icons alike
    ctx.lineWidth = width + 2;
    ctx.strokeStyle = EDGE_COLOR;
    ctx.strokeRect(x + width / 2, y + width / 2, s - width, s - width);
    ctx.lineWidth = width;
    ctx.strokeStyle = color;
    ctx.strokeRect(x + width / 2, y + width / 2, s - width, s - width);
  }

  // ---- interaction -----------------------------------------------------------------------
  function pointer(event) {
    const r = canvas.getBoundingClientRect();
    // the canvas may be scaled by CSS transforms (notebook zoom); map to its CSS pixel space
    const sx = r.width ? cssSize() / r.width : 1;
    const sy = r.height ? cssSize() / r.height : 1;
    return { x: (event.clientX - r.left) * sx, y: (event.clientY - r.top) * sy };
  }

  function cellAt(x, y) {
    if (!cells) return -1;
    const col = Math.floor((x - view.ox) / view.scale);
    const row = Math.floor((y - view.oy) / view.scale);
    if (row < 0 || col < 0 || row >= cells.n || col >= cells.n) return -1;
    const k = cells.index.get(row * cells.n + col);
    return k === undefined ? -1 : k;
  }

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
    tipClass.textContent = `${name}: ${Math.round(share * 100)}% of positions`;
    tipCount.textContent = `${count.toLocaleString("en-US")} position${count === 1 ? "" : "s"}`;
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

  function onPointerDown(event) {
    if (event.button !== 0 || !cells) return;
    canvas.focus({ preventScroll: true });
    const p = pointer(event);
    drag = {
      mode: event.shiftKey ? "box" : "pan",
      additive: event.shiftKey || event.ctrlKey || event.metaKey,
      x0: p.x, y0: p.y, x: p.x, y: p.y, ox: view.ox, oy: view.oy, moved: false,
    };
    canvas.setPointerCapture(event.pointerId);
    event.preventDefault();
  }

  function onPointerMove(event) {
    const p = pointer(event);
    if (drag) {
      drag.x = p.x;
      drag.y = p.y;
      if (Math.hypot(p.x - drag.x0, p.y - drag.y0) > CLICK_SLOP) drag.moved = true;
      if (drag.mode === "pan" && drag.moved) {
        view.ox = drag.ox + (p.x - drag.x0);
        view.oy = drag.oy + (p.y - drag.y0);
        publishView();
        canvas.classList.add("aw-panning");
      }
      showTooltip(-1);
      hover = -1;
      requestDraw();
      return;
    }
    const k = cellAt(p.x, p.y);
    if (k !== hover) {
      hover = k;
      requestDraw();
    }
    showTooltip(k, p.x, p.y);
  }

  function onPointerUp(event) {
    if (!drag) return;
    const d = drag;
    drag = null;
    canvas.classList.remove("aw-panning");
    if (canvas.hasPointerCapture(event.pointerId)) canvas.releasePointerCapture(event.pointerId);
    if (!d.moved) {
      const k = cellAt(d.x0, d.y0);
      if (k < 0) {
        if (!d.additive) setSelection([]);
      } else if (d.additive) {
        const next = new Set(selected);
        const id = cells.ids[k];
        if (next.has(id)) next.delete(id);
        else next.add(id);
        setSelection([...next]);
      } else {
        setSelection([cells.ids[k]]);
      }
    } else if (d.mode === "box") {
      const x0 = Math.min(d.x0, d.x), x1 = Math.max(d.x0, d.x);
      const y0 = Math.min(d.y0, d.y), y1 = Math.max(d.y0, d.y);
      const picked = new Set(selected); // a box adds to the selection
      for (let k = 0; k < cells.ids.length; k++) {
        const cx = view.ox + (cells.ij[2 * k + 1] + 0.5) * view.scale;
        const cy = view.oy + (cells.ij[2 * k] + 0.5) * view.scale;
        if (cx >= x0 && cx <= x1 && cy >= y0 && cy <= y1) picked.add(cells.ids[k]);
      }
      setSelection([...picked]);
    }
    requestDraw();
  }

  function onPointerLeave() {
    if (drag) return;
    // Escape should clear the atlas only while the person points at it; elsewhere in JupyterLab
    // it means "command mode", and a click on a cell's prompt does not take focus from us
    if (document.activeElement === canvas) canvas.blur();
    hover = -1;
    showTooltip(-1);
    requestDraw();
  }

  function onWheel(event) {
    if (!cells) return;
    event.preventDefault();
    const p = pointer(event);
    const home = homeView().scale;
    const maxScale = cssSize() * 0.8; // one cell may fill most of the canvas
    const factor = Math.exp(-event.deltaY * (event.deltaMode === 1 ? 0.05 : 0.0015));
    const scale = Math.min(maxScale, Math.max(home * 0.5, view.scale * factor));
    const f = scale / view.scale;
    // zoom about the cursor: the point under it stays put
    view.ox = p.x - (p.x - view.ox) * f;
    view.oy = p.y - (p.y - view.oy) * f;
    view.scale = scale;
    publishView();
    const k = cellAt(p.x, p.y);
    hover = k;
    showTooltip(k, p.x, p.y);
    requestDraw();
  }

  function onKeyDown(event) {
    if (event.key === "Escape") {
      setSelection([]);
      event.stopPropagation(); // keep JupyterLab from leaving edit mode on our Escape
    }
  }

  function resetView() {
    view = homeView();
    publishView();
    requestDraw();
  }

  // ---- wiring ----------------------------------------------------------------------------
  const onCells = () => {
    loadCells();
    resetView();
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
  const cellTraits = ["grid_size", "cell_ids", "cell_ij", "cell_count", "cell_share", "cell_class"];
  for (const t of cellTraits) model.on(`change:${t}`, onCells);
  model.on("change:selected", onSelected);
  model.on("change:sprite", onSprite);
  model.on("change:size", onSize);
  canvas.addEventListener("pointerdown", onPointerDown);
  canvas.addEventListener("pointermove", onPointerMove);
  canvas.addEventListener("pointerup", onPointerUp);
  canvas.addEventListener("pointercancel", onPointerUp);
  canvas.addEventListener("pointerleave", onPointerLeave);
  canvas.addEventListener("wheel", onWheel, { passive: false });
  canvas.addEventListener("keydown", onKeyDown);
  window.addEventListener("resize", requestDraw); // browser zoom changes devicePixelRatio
  resetButton.addEventListener("click", resetView);
  clearButton.addEventListener("click", () => setSelection([]));

  loadCells();
  loadSelection();
  resetView();
  loadSprite();

  return () => {
    for (const t of cellTraits) model.off(`change:${t}`, onCells);
    model.off("change:selected", onSelected);
    model.off("change:sprite", onSprite);
    model.off("change:size", onSize);
    window.removeEventListener("resize", requestDraw);
    if (frame) cancelAnimationFrame(frame);
    if (spriteUrl) URL.revokeObjectURL(spriteUrl);
    spriteToken++;
  };
}

export default { render };
