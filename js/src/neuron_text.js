// The NeuronViewer's text parts: an example's token context as a heat strip, and lists of tokens
// (the unit's top tokens by mean activation, the tokens it writes). Tokens come from a model's
// vocabulary, which may hold markup such as "<img src=x onerror=...>": every token is set with
// textContent, never parsed as HTML.

import { el } from "./dom.js";
import { heatColor } from "./text_cells.js";

function fmt(v) {
  const a = Math.abs(v);
  if (a !== 0 && (a >= 1e4 || a < 1e-2)) return v.toExponential(2);
  return v.toFixed(a >= 100 ? 0 : 2);
}

// One example: its tokens in a row, each coloured by its value; the example's own token marked.
// ctx: {tokens: [str], index, start}; heat: typed array of the context's values (NaN unknown).
export function tokenStrip(parent, ctx, heat, top) {
  const strip = el("div", "aw-neuron-strip", parent);
  const tokens = ctx.tokens || [];
  for (let k = 0; k < tokens.length; k++) {
    const span = el("span", "aw-neuron-tok", strip);
    span.textContent = tokens[k];
    const v = k < heat.length ? heat[k] : NaN;
    const bg = heatColor(v, top);
    if (bg) span.style.backgroundColor = bg;
    else span.classList.add("aw-neuron-tok-unknown");
    span.dataset.value = Number.isFinite(v) ? String(v) : "";
    span.title = Number.isFinite(v) ? `token ${ctx.start + k}: ${fmt(v)}` : `token ${ctx.start + k}: not known`;
    if (k === ctx.index) span.classList.add("aw-neuron-tok-mark");
  }
  return strip;
}

// A titled list of tokens with a number each: items [{token, <key>}]. `list` names it for tests
// ("top", "up", "down"); clicking a token runs onPick(token).
export function tokenList(title, items, key, list, onPick) {
  const parts = [];
  if (!items.length) return parts;
  const h = el("div", "aw-neuron-subtitle");
  h.textContent = title;
  const box = el("div", "aw-neuron-list");
  for (const r of items) {
    const b = document.createElement("button");
    b.type = "button";
    b.className = `aw-neuron-token aw-neuron-token-${list}`;
    b.dataset.list = list;
    b.dataset.token = r.token;
    b.textContent = r.token;
    b.title = onPick ? "find the channels whose top tokens include this one" : "";
    if (onPick) b.addEventListener("click", () => onPick(r.token));
    const v = el("span", "aw-neuron-corr", b);
    const value = r[key];
    v.textContent = ` ${value > 0 && list !== "top" ? "+" : ""}${fmt(value)}${r.count ? ` ×${r.count}` : ""}`;
    box.appendChild(b);
  }
  parts.push(h, box);
  return parts;
}
