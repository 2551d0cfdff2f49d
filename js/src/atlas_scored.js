// Scored-cell modes of the atlas page: every cell carries a value that colours a frame around its
// icon, a legend under the canvas says what the two ends of the scale mean, and the tooltip adds
// the cell's score. atlas.js imports scoredMode() and asks it for the mode its widget's `mode`
// trait names:
//   "compare" (ComparisonWidget): a diverging scale in [-1, 1], b's class on the left, a's on the
//     right, each in its own class's colour, a menu of the pairs the cache can show and a swap button;
//   "diff" (DiffWidget): a sequential scale in [0, 1], grey where model a has what b has, purple
//     where b's activation has no counterpart in a;
// and null for a plain atlas. All text is set with textContent; nothing here parses HTML.
//
// A mode is an object with: name and label (data-mode, aria-label), selectColor and lassoFill,
// cellTraits (traits that change with the cells) and labelTraits (traits loadLabels() reads),
// loadCells(cells, titleParts) (reads the scores into `cells`, publishes data-cell-values),
// frameColor(k), drawUnder(ctx, view, n) (drawn before the icons) and tooltip(k).

import { readArray } from "./array.js";
import { el } from "./dom.js";

// the plain atlas's selection outline, which diff mode keeps (atlas.js draws it)
export const SELECT_COLOR = "#ff7a00";

// Diverging scale, b's colour (-1) through light grey (0) to a's colour (+1). Each class brings its
// own colour (Python's `side_colors`, by class, not by side), so a class looks the same in every
// comparison; blue and orange when none is sent (after ColorBrewer's PuOr / RdBu ends).
const GREY = [236, 236, 236];
const DEFAULT_SIDES = [[33, 102, 172], [230, 97, 1]];
// Sequential scale for novelty, light grey (0, shared) to deep purple (1, only in b), after
// ColorBrewer's Purples: it reads as "more" in grey scale too, and stays clear of the orange
// selection outline.
const SEQUENTIAL = [[236, 236, 236], [158, 154, 200], [84, 39, 143]];
// in comparison mode orange already means "toward a", so the selection is drawn in magenta
const COMPARE_SELECT_COLOR = "#e0007a";

function mixColor(from, to, f) {
  const c = from.map((x, i) => Math.round(x + (to[i] - x) * f));
  return `rgb(${c[0]}, ${c[1]}, ${c[2]})`;
}

function divergingColor(v, sides = DEFAULT_SIDES) {
  const t = Math.max(-1, Math.min(1, Number.isFinite(v) ? v : 0));
  return t < 0 ? mixColor(GREY, sides[0], -t) : mixColor(GREY, sides[1], t);
}

function sequentialColor(v) {
  const t = Math.max(0, Math.min(1, Number.isFinite(v) ? v : 0));
  return t < 0.5
    ? mixColor(SEQUENTIAL[0], SEQUENTIAL[1], 2 * t)
    : mixColor(SEQUENTIAL[1], SEQUENTIAL[2], 2 * t - 1);
}

function signed(v, digits) {
  return `${v > 0 ? "+" : v < 0 ? "−" : ""}${Math.abs(v).toFixed(digits)}`;
}

// parts: {root, bar, before (the bar's element the mode's controls go before), tooltip,
// help (the legend goes before it), status, loadSelection}
export function scoredMode(model, parts) {
  const kind = model.get("mode");
  if (kind === "compare") return compareMode(model, parts);
  if (kind === "diff") return diffMode(model, parts);
  return null;
}

// the legend: a name on each side of a colour bar with three ticks
function buildLegend(parts, gradient, extraClass) {
  const legend = el("div", "aw-atlas-legend");
  if (extraClass) legend.classList.add(extraClass);
  parts.root.insertBefore(legend, parts.help);
  const left = el("span", "aw-legend-left", legend);
  const scale = el("span", "aw-legend-scale", legend);
  el("span", "aw-legend-bar", scale).style.background = `linear-gradient(to right, ${gradient})`;
  const ticks = el("span", "aw-legend-ticks", scale);
  const tickEls = [0, 1, 2].map(() => el("span", "aw-legend-tick", ticks));
  const right = el("span", "aw-legend-right", legend);
  return { left, right, ticks: tickEls };
}

function compareMode(model, parts) {
  const { root, bar, status } = parts;
  // a menu of the pairs the cache can show, and a swap of the two sides
  const pairSelect = el("select", "aw-atlas-pair");
  pairSelect.title = "Compare another pair of classes";
  pairSelect.hidden = true;
  bar.insertBefore(pairSelect, parts.before);
  const swapButton = el("button", "aw-atlas-swap");
  swapButton.type = "button";
  swapButton.textContent = "Swap sides";
  swapButton.hidden = true;
  bar.insertBefore(swapButton, parts.before);
  const tipDiff = el("div", "aw-atlas-tooltip-diff", parts.tooltip);
  const tipAttr = el("div", "aw-atlas-tooltip-attr", parts.tooltip);
  // b's name, the colour bar with 0 in the middle, a's name
  const legend = buildLegend(
    parts, `${divergingColor(-1)}, ${divergingColor(0)}, ${divergingColor(1)}`, "");
  ["−1", "0", "+1"].forEach((t, i) => { legend.ticks[i].textContent = t; });
  const legendBar = legend.left.parentElement.querySelector(".aw-legend-bar");
  let cells = null;
  let sides = DEFAULT_SIDES;

  function askPair(next) {
    // Python recomputes the comparison and answers with new traits (or the old pair if it refuses)
    pairSelect.disabled = true;
    swapButton.disabled = true;
    status.dataset.switching = "1";
    status.textContent = "Switching…";
    model.set("pair", next);
    model.save_changes();
  }

  pairSelect.addEventListener("change", () => {
    const next = (model.get("pairs") || [])[Number(pairSelect.value)];
    if (next) askPair([...next]);
  });
  swapButton.addEventListener("click", () => {
    const [a, b] = model.get("pair") || [];
    if (a !== undefined && b !== undefined) askPair([b, a]);
  });

  return {
    name: "compare",
    label: "Class-comparison atlas",
    selectColor: COMPARE_SELECT_COLOR,
    lassoFill: "rgba(224, 0, 122, 0.12)",
    cellTraits: ["cell_value", "cell_diff", "cell_attr_a", "cell_attr_b"],
    labelTraits: ["pair", "pairs", "left_label", "right_label", "side_colors"],

    loadCells(next, titleParts) {
      cells = next;
      cells.value = readArray(model.get("cell_value")).data;
      cells.diff = readArray(model.get("cell_diff")).data;
      cells.attrA = readArray(model.get("cell_attr_a")).data;
      cells.attrB = readArray(model.get("cell_attr_b")).data;
      root.dataset.cellValues = Array.from(cells.value, (v) => v.toFixed(3)).join(",");
      titleParts.push(`${model.get("right_label")} vs ${model.get("left_label")}`);
    },

    loadLabels() {
      const left = model.get("left_label");
      const right = model.get("right_label");
      legend.left.textContent = left;
      legend.right.textContent = right;
      const sent = model.get("side_colors") || [];
      sides = sent.length === 2 ? sent : DEFAULT_SIDES;
      legend.left.style.color = `rgb(${sides[0].join(", ")})`;
      legend.right.style.color = `rgb(${sides[1].join(", ")})`;
      legendBar.style.background = `linear-gradient(to right, ${divergingColor(-1, sides)}, ` +
        `${divergingColor(0, sides)}, ${divergingColor(1, sides)})`;
      root.dataset.sideColors = sides.map((c) => c.join(",")).join(" ");
      legend.left.title = `Left: cells whose positions push the model toward ${left}`;
      legend.right.title = `Right: cells whose positions push the model toward ${right}`;
      const [a, b] = model.get("pair") || [];
      root.dataset.pair = `${a ?? ""}\t${b ?? ""}`;
      const pairs = model.get("pairs") || [];
      pairSelect.replaceChildren();
      let current = -1;
      pairs.forEach(([pa, pb], i) => {
        const option = el("option", "", pairSelect);
        option.value = String(i);
        option.textContent = `${pb} ← → ${pa}`; // read left to right, as on the canvas
        if (pa === a && pb === b) current = i;
      });
      pairSelect.value = String(current);
      pairSelect.hidden = pairs.length < 2;
      swapButton.hidden = pairs.length === 0; // no cache on the Python side: it cannot recompute
      pairSelect.disabled = false;
      swapButton.disabled = false;
      if (status.dataset.switching) {
        delete status.dataset.switching;
        parts.loadSelection();
      }
    },

    frameColor(k) {
      return divergingColor(cells.value[k], sides);
    },

    drawUnder(ctx, view, n) {
      // x = 0, where the two classes balance: the grid's columns always cover [-1, 1]
      ctx.strokeStyle = "rgba(128, 128, 128, 0.6)";
      ctx.lineWidth = 1;
      ctx.setLineDash([4, 4]);
      ctx.beginPath();
      ctx.moveTo(view.ox + (n / 2) * view.scale, view.oy);
      ctx.lineTo(view.ox + (n / 2) * view.scale, view.oy + n * view.scale);
      ctx.stroke();
      ctx.setLineDash([]);
    },

    tooltip(k) {
      const a = model.get("right_label");
      const b = model.get("left_label");
      tipDiff.textContent =
        `mean ${a} − ${b}: ${signed(cells.diff[k], 3)} (${signed(cells.value[k], 2)} of scale)`;
      const both = cells.attrA.length === cells.ids.length && cells.attrB.length === cells.ids.length;
      tipAttr.hidden = !both;
      tipAttr.textContent = both
        ? `toward ${a}: ${signed(cells.attrA[k], 3)} · toward ${b}: ${signed(cells.attrB[k], 3)}`
        : "";
    },
  };
}

function diffMode(model, parts) {
  const { root } = parts;
  const tipNovelty = el("div", "aw-atlas-tooltip-novelty", parts.tooltip);
  // "shared with a", the colour bar from 0 to the top cell's novelty, "only in b"
  const legend = buildLegend(
    parts, `${sequentialColor(0)}, ${sequentialColor(0.5)}, ${sequentialColor(1)}`, "aw-legend-diff");
  let cells = null;

  function names() {
    const [a, b] = model.get("names") || [];
    return [a ?? "a", b ?? "b"];
  }

  return {
    name: "diff",
    label: "Model-diff atlas",
    selectColor: SELECT_COLOR,
    lassoFill: "rgba(255, 122, 0, 0.12)",
    cellTraits: ["cell_value", "cell_novelty"],
    labelTraits: ["names", "novelty_scale"],

    loadCells(next, titleParts) {
      cells = next;
      cells.value = readArray(model.get("cell_value")).data;
      cells.novelty = readArray(model.get("cell_novelty")).data;
      root.dataset.cellValues = Array.from(cells.value, (v) => v.toFixed(3)).join(",");
      const [a, b] = names();
      titleParts.push(`${b} against ${a}`);
    },

    loadLabels() {
      const [a, b] = names();
      root.dataset.names = `${a}\t${b}`;
      legend.left.textContent = `shared with ${a}`;
      legend.right.textContent = `only in ${b}`;
      legend.left.title = `Grey: cells of ${b} whose activation ${a}'s layer explains`;
      legend.right.title = `Purple: cells of ${b} whose activation ${a}'s layer cannot explain`;
      const top = model.get("novelty_scale");
      [0, top / 2, top].forEach((v, i) => { legend.ticks[i].textContent = v.toFixed(2); });
      legend.ticks[2].title = "the mean novelty of the most novel cell";
    },

    frameColor(k) {
      return sequentialColor(cells.value[k]);
    },

    drawUnder() {},

    tooltip(k) {
      const [a] = names();
      const novelty = cells.novelty[k];
      tipNovelty.textContent =
        `mean novelty ${novelty.toFixed(3)}: ${Math.round(novelty * 100)}% not explained by ${a}`;
    },
  };
}
