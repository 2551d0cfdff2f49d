// Text on the atlas canvas and in the example panel: a text atlas's cells (its most frequent token
// in a short context, drawn with fillText, which draws text and never parses HTML) and the heat
// colour of a token's value. Tokens come from data and may be anything, "<img src=x ...>"
// included: the canvas draws them as glyphs, and the panel sets them with textContent.

import { readArray } from "./array.js";

const CARD = "#fbf8f3"; // a text cell's background: light, so the dark glyphs read at any tint
const INK = "#1d1d1f";
const CONTEXT_INK = "#6b6b6b";
const FONT = 'system-ui, -apple-system, "Segoe UI", sans-serif';
const MIN_FONT = 6; // px; below this a token is cut short rather than drawn smaller

// Text-cell data of the atlas traits, or null for an image atlas.
export function readTextCells(model) {
  if (!model.get("text_cells")) return null;
  return {
    token: model.get("cell_token") || [],
    share: readArray(model.get("cell_token_share")).data,
    before: model.get("cell_before") || [],
    after: model.get("cell_after") || [],
  };
}

// `text` cut to fit `width` px in ctx's current font, with an ellipsis on the `side` it loses
// ("end" keeps the start: a token or the context after it; "start" keeps the end: the context
// before, which reads up to the token).
function fit(ctx, text, width, side = "end") {
  if (ctx.measureText(text).width <= width) return text;
  let lo = 0;
  let hi = text.length;
  while (lo < hi) { // the most characters that fit with the ellipsis
    const mid = Math.ceil((lo + hi) / 2);
    const part = side === "end" ? `${text.slice(0, mid)}…` : `…${text.slice(text.length - mid)}`;
    if (ctx.measureText(part).width <= width) lo = mid;
    else hi = mid - 1;
  }
  if (lo === 0) return "";
  return side === "end" ? `${text.slice(0, lo)}…` : `…${text.slice(text.length - lo)}`;
}

// Draw text cell k in the square (x, y, side): a card tinted by the share of the cell's members
// that are its token, the token in bold, and when the cell is big enough the context before it
// (above) and after it (below).
export function drawTextCell(ctx, text, k, x, y, side) {
  const share = text.share[k] || 0;
  ctx.fillStyle = CARD;
  ctx.fillRect(x, y, side, side);
  // purer cells (more of their members are this token) are more strongly tinted
  ctx.fillStyle = `rgba(255, 150, 40, ${(0.08 + 0.42 * share).toFixed(3)})`;
  ctx.fillRect(x, y, side, side);
  const token = text.token[k] ?? "";
  const room = side * 0.9;
  const withContext = side >= 44;
  let size = Math.min(withContext ? side * 0.26 : side * 0.42, 22);
  ctx.font = `600 ${size}px ${FONT}`;
  const w = ctx.measureText(token).width;
  if (w > room) size = Math.max(MIN_FONT, (size * room) / w);
  ctx.save();
  ctx.beginPath();
  ctx.rect(x, y, side, side);
  ctx.clip(); // nothing of a cell's text spills onto its neighbours
  ctx.textAlign = "center";
  ctx.textBaseline = "middle";
  const cx = x + side / 2;
  const cy = y + side / 2;
  if (size >= MIN_FONT - 0.01 && side >= 10) {
    ctx.font = `600 ${size}px ${FONT}`;
    ctx.fillStyle = INK;
    ctx.fillText(fit(ctx, token, room), cx, cy);
  }
  if (withContext) {
    const small = Math.max(MIN_FONT, Math.min(size * 0.7, side * 0.15, 13));
    ctx.font = `${small}px ${FONT}`;
    ctx.fillStyle = CONTEXT_INK;
    const gap = size / 2 + small * 0.8;
    const before = text.before[k] ?? "";
    const after = text.after[k] ?? "";
    if (before) ctx.fillText(fit(ctx, before, room, "start"), cx, cy - gap);
    if (after) ctx.fillText(fit(ctx, after, room, "end"), cx, cy + gap);
  }
  ctx.restore();
}

// CSS background of a token with value v on a scale where |v| = scale is the strongest: warm for
// positive, cool for negative, none (transparent) for a token without a value (NaN).
export function heatColor(v, scale) {
  if (!Number.isFinite(v) || !(scale > 0)) return "";
  const a = Math.min(1, Math.abs(v) / scale) * 0.85;
  return v >= 0 ? `rgba(255, 122, 0, ${a.toFixed(3)})` : `rgba(40, 110, 230, ${a.toFixed(3)})`;
}

// The largest |value| among the finite ones (0 when there are none): one scale for a whole page
// of heat strips, so strips can be compared.
export function heatScale(values) {
  let m = 0;
  for (const v of values) if (Number.isFinite(v) && Math.abs(v) > m) m = Math.abs(v);
  return m;
}
