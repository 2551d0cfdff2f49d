// Pointer and keyboard input of the atlas page (atlas.js): drag to pan, scroll to zoom about the
// pointer, hover for the tooltip, click to select, shift/ctrl-click to toggle, shift-drag to lasso,
// Escape to clear. atlas.js imports atlasInput() and hands it its state and drawing functions.

const CLICK_SLOP = 4; // CSS px a pointer may move and still count as a click

// Even-odd ray casting: is (x, y) inside the polygon [{x, y}, ...]?
function insidePolygon(x, y, poly) {
  let inside = false;
  for (let i = 0, j = poly.length - 1; i < poly.length; j = i++) {
    const a = poly[i], b = poly[j];
    if ((a.y > y) !== (b.y > y) && x < ((b.x - a.x) * (y - a.y)) / (b.y - a.y) + a.x) {
      inside = !inside;
    }
  }
  return inside;
}

// Listen to the canvas. state: render's live state (cells, view, selected; hover and drag can be
// set); api: the render functions the input drives.
export function atlasInput(state, api) {
  const { canvas, cssSize, homeView, publishView, requestDraw, showTooltip, setSelection,
    maybeChangeLevel } = api;

  function pointer(event) {
    const r = canvas.getBoundingClientRect();
    // the canvas may be scaled by CSS transforms (notebook zoom); map to its CSS pixel space
    const sx = r.width ? cssSize() / r.width : 1;
    const sy = r.height ? cssSize() / r.height : 1;
    return { x: (event.clientX - r.left) * sx, y: (event.clientY - r.top) * sy };
  }

  function cellAt(x, y) {
    const { cells, view } = state;
    if (!cells) return -1;
    const col = Math.floor((x - view.ox) / view.scale);
    const row = Math.floor((y - view.oy) / view.scale);
    if (row < 0 || col < 0 || row >= cells.n || col >= cells.n) return -1;
    const k = cells.index.get(row * cells.n + col);
    return k === undefined ? -1 : k;
  }

  function onPointerDown(event) {
    if (event.button !== 0 || !state.cells) return;
    canvas.focus({ preventScroll: true });
    const p = pointer(event);
    state.drag = {
      mode: event.shiftKey ? "lasso" : "pan",
      additive: event.shiftKey || event.ctrlKey || event.metaKey,
      x0: p.x, y0: p.y, x: p.x, y: p.y, ox: state.view.ox, oy: state.view.oy, moved: false,
      path: [p],
    };
    canvas.setPointerCapture(event.pointerId);
    event.preventDefault();
  }

  function onPointerMove(event) {
    const drag = state.drag;
    const p = pointer(event);
    if (drag) {
      drag.x = p.x;
      drag.y = p.y;
      if (Math.hypot(p.x - drag.x0, p.y - drag.y0) > CLICK_SLOP) drag.moved = true;
      if (drag.mode === "lasso") {
        const last = drag.path[drag.path.length - 1];
        if (Math.hypot(p.x - last.x, p.y - last.y) >= 2) drag.path.push(p); // skip jitter
      }
      if (drag.mode === "pan" && drag.moved) {
        state.view.ox = drag.ox + (p.x - drag.x0);
        state.view.oy = drag.oy + (p.y - drag.y0);
        publishView();
        canvas.classList.add("aw-panning");
      }
      showTooltip(-1);
      state.hover = -1;
      requestDraw();
      return;
    }
    const k = cellAt(p.x, p.y);
    if (k !== state.hover) {
      state.hover = k;
      requestDraw();
    }
    showTooltip(k, p.x, p.y);
  }

  function onPointerUp(event) {
    const { cells, view, selected } = state;
    const d = state.drag;
    if (!d) return;
    state.drag = null;
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
    } else if (d.mode === "lasso") {
      const path = [...d.path, { x: d.x, y: d.y }]; // closed back to the start
      const picked = new Set(selected); // a lasso adds to the selection
      for (let k = 0; k < cells.ids.length; k++) {
        const cx = view.ox + (cells.ij[2 * k + 1] + 0.5) * view.scale;
        const cy = view.oy + (cells.ij[2 * k] + 0.5) * view.scale;
        if (insidePolygon(cx, cy, path)) picked.add(cells.ids[k]);
      }
      setSelection([...picked]);
    }
    requestDraw();
  }

  function onPointerLeave() {
    if (state.drag) return;
    // Escape should clear the atlas only while the person points at it; elsewhere in JupyterLab
    // it means "command mode", and a click on a cell's prompt does not take focus from us
    if (document.activeElement === canvas) canvas.blur();
    state.hover = -1;
    showTooltip(-1);
    requestDraw();
  }

  function onWheel(event) {
    const view = state.view;
    if (!state.cells) return;
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
    state.hover = k;
    showTooltip(k, p.x, p.y);
    requestDraw();
    maybeChangeLevel();
  }

  function onKeyDown(event) {
    if (event.key === "Escape") {
      setSelection([]);
      event.stopPropagation(); // keep JupyterLab from leaving edit mode on our Escape
    }
  }

  canvas.addEventListener("pointerdown", onPointerDown);
  canvas.addEventListener("pointermove", onPointerMove);
  canvas.addEventListener("pointerup", onPointerUp);
  canvas.addEventListener("pointercancel", onPointerUp);
  canvas.addEventListener("pointerleave", onPointerLeave);
  canvas.addEventListener("wheel", onWheel, { passive: false });
  canvas.addEventListener("keydown", onKeyDown);
}
