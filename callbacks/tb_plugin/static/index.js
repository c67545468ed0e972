// convscope's unit browser: TensorBoard loads this ES module in its plugin iframe and calls render().
// Plain JavaScript, no build step. Data comes from the plugin's routes (relative to the page's <base>,
// /data/plugin/convscope/). Every view is described by the URL hash (run, layer, view, unit, sort, epoch, class,
// page), so a link to it can be shared and reloaded.

const PAGE = 256; // units per page of the grid (one sprite chunk when unsorted)
const THUMB = 64; // px of a grid thumbnail
const POLL_MS = 30000; // how often the page looks for new epochs of runs being written
const SORTS = {
  unit: "unit number",
  selectivity: "selectivity",
  importance: "importance",
  change: "change since previous drawing",
  dead_fraction: "dead fraction",
  preferred_class: "preferred class",
  mean: "mean response",
};
const DEAD = 0.99; // dead fraction from which a unit counts as dead (the plugin's life line uses the same)
const DEAD_IN_PLACE = ["unit", "dead_fraction"]; // sorts that keep dead units where their value puts them
const STYLE = `
  body { font: 13px/1.4 Roboto, "Helvetica Neue", Arial, sans-serif; color: #212121; margin: 0; background: #fafafa; }
  #cs { padding: 12px 16px; }
  .bar { display: flex; flex-wrap: wrap; gap: 10px 18px; align-items: center; margin-bottom: 10px; }
  .bar label { color: #555; } select, button, input { font: inherit; }
  h2 { font-size: 16px; margin: 4px 0 8px; font-weight: 500; }
  .hint { color: #666; } .err { color: #b71c1c; background: #ffebee; padding: 8px 12px; border-radius: 4px; }
  .empty { max-width: 760px; background: #fff; border: 1px solid #ddd; border-radius: 4px; padding: 16px 20px; }
  .grid { display: flex; flex-wrap: wrap; gap: 6px; }
  .cell { width: ${THUMB + 8}px; text-align: center; cursor: pointer; font-size: 11px; background: #fff;
          border: 1px solid #ddd; border-radius: 3px; padding: 3px 0 2px; }
  .cell:hover { border-color: #ff7043; } .cell.dead { background: #eceff1; opacity: .6; }
  .img { outline: 1px solid #ccc; }
  .thumb[data-kind=top], .col .img[data-kind=top] { outline: 2px dashed #ffb74d; outline-offset: -2px; }
  .thumb.none, .img.none { display: flex; align-items: center; justify-content: center; background: #cfd8dc; color: #546e7a;
    font-size: 9px; text-align: center; background-image: none; }
  .dead .val::after { content: " · dead"; color: #b71c1c; }
  .thumb { width: ${THUMB}px; height: ${THUMB}px; margin: 0 auto; background-repeat: no-repeat;
           image-rendering: pixelated; background-color: #000; }
  .num { font-weight: 500; } .val { color: #555; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
  .life { font-size: 14px; background: #fff3e0; border-left: 4px solid #ff9800; padding: 6px 10px; margin: 6px 0 10px; }
  .panels { display: flex; flex-wrap: wrap; gap: 12px; align-items: flex-start; }
  .panel { background: #fff; border: 1px solid #ddd; border-radius: 4px; padding: 8px 10px; }
  .panel h3 { font-size: 13px; margin: 0 0 6px; font-weight: 500; } .panel h3 .ep { color: #777; font-weight: 400; }
  .missing { color: #888; font-style: italic; max-width: 220px; }
  .patches { display: grid; grid-template-columns: repeat(3, 92px); gap: 4px; }
  .patch { font-size: 11px; text-align: center; white-space: nowrap; min-width: 0; } .patch .img { margin: 0 auto; }
  .patch > div { overflow: hidden; text-overflow: ellipsis; } /* a long caption never runs into the next column */
  .patch .box { white-space: normal; } .patch .box span { white-space: nowrap; } /* a wide box: y, then x below */
  .big { width: 144px; height: 144px; }
  .img { background-repeat: no-repeat; image-rendering: pixelated; background-color: #000; }
  table.nums td { padding: 1px 8px 1px 0; } table.nums td:first-child { color: #555; }
  .history { display: flex; gap: 4px; overflow-x: auto; padding-bottom: 4px; margin-bottom: 10px; }
  .col { text-align: center; font-size: 11px; border: 2px solid transparent; border-radius: 3px; padding: 2px;
         cursor: pointer; background: #fff; min-width: 58px; }
  .col.on { border-color: #ff7043; } .col .img { width: 48px; height: 48px; margin: 0 auto; }
  a { color: #e65100; } input[type=range] { width: 260px; vertical-align: middle; }
  .pager button { margin: 0 2px; }
  #new-data { background: #fff3e0; border: 1px solid #ff9800; border-radius: 3px; }
`;

let runsInfo = null;
let state = {};
let root = null;

export async function render() {
  const style = document.createElement("style");
  style.textContent = STYLE;
  document.head.appendChild(style);
  root = document.createElement("div");
  root.id = "cs";
  document.body.appendChild(root);
  window.addEventListener("hashchange", () => {
    state = readHash();
    show();
  });
  state = readHash();
  await loadRuns();
  show();
  setInterval(checkForNewData, POLL_MS);
}

// A run still being written: look for new runs and epochs now and then, and offer them (never re-render by itself,
// which would move what the user is looking at).
async function checkForNewData() {
  try {
    const now = await getJSON("runs");
    if (JSON.stringify(now.runs) !== JSON.stringify(runsInfo.runs) && !document.getElementById("new-data")) {
      const bar = root.querySelector(".bar");
      if (bar) bar.append(el("button", { id: "new-data", onclick: reload, text: "new epochs written: show them" }));
    }
  } catch (e) {
    // TensorBoard restarting: try again next time
  }
}

function readHash() {
  const p = new URLSearchParams(location.hash.replace(/^#/, ""));
  const o = {};
  for (const [k, v] of p) o[k] = v;
  return o;
}

function hashOf(s) {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(s)) if (v !== undefined && v !== null && v !== "") p.set(k, v);
  return "#" + p.toString();
}

function go(changes) {
  const next = { ...state, ...changes };
  const h = hashOf(next);
  if (h === location.hash) {
    state = next;
    show();
  } else location.hash = h;
}

async function getJSON(url) {
  const r = await fetch(url);
  let body;
  try {
    body = await r.json();
  } catch (e) {
    throw new Error(`${url}: answer is not JSON (HTTP ${r.status})`);
  }
  if (!r.ok) throw new Error(body.error || `HTTP ${r.status}`);
  return body;
}

async function loadRuns() {
  runsInfo = await getJSON("runs");
}

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "style") e.style.cssText = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k === "text") e.textContent = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}

function spriteURL(run, layer, epoch, kind, chunk) {
  const p = new URLSearchParams({ run, layer, epoch, kind, chunk });
  return "sprite?" + p.toString();
}

// A div showing cell `col` of unit `u`'s row in a sprite, scaled to `size` px (CSS background-position).
// Null when the sprite does not hold unit u (actmax may be drawn for the first units only).
function spriteCell(info, units, run, layer, epoch, kind, u, col, size, cls = "img") {
  const held = Math.min(units, info.units ?? units);
  if (u >= held) return null;
  const chunk = Math.floor(u / 256);
  const rows = Math.min(256, held - 256 * chunk);
  const s = size / info.cell;
  const url = spriteURL(run, layer, epoch, kind, chunk);
  const d = el("div", { class: cls });
  d.style.width = d.style.height = size + "px";
  d.style.backgroundImage = `url("${url}")`;
  d.style.backgroundSize = `${info.cell * info.cells * s}px ${info.cell * rows * s}px`;
  d.style.backgroundPosition = `-${col * info.cell * s}px -${(u % 256) * info.cell * s}px`;
  d.dataset.src = url;
  d.dataset.kind = kind;
  d.dataset.epoch = epoch;
  d.dataset.unit = u;
  return d;
}

// A unit's thumbnail at one epoch: its actmax image where drawn for it, else its strongest top patch; a unit that
// fired on no fixed-set image (``silent``: ``neverFired``) has no top patch (its first is only the tie order).
function thumbOf(sprites, units, epoch, u, size, cls = "img", silent = false) {
  const a = sprites.actmax && spriteCell(sprites.actmax, units, state.run, state.layer, epoch, "actmax", u, 0, size, cls);
  if (a) return a;
  if (silent) {
    const none = el("div", { class: cls + " none", "data-kind": "none", title: "fired on no fixed-set image: no top patch" });
    none.style.width = none.style.height = `${size}px`;
    none.append(el("span", { text: "never fired" }));
    return none;
  }
  const t = sprites.top && spriteCell(sprites.top, units, state.run, state.layer, epoch, "top", u, 0, size, cls);
  return t || el("div", { class: cls });
}

// A unit that fired on no fixed-set image: every top response (``values``, largest first) is 0 or below, so its
// "top patches" are only the tie order, not what excites it. The one rule of the grid, the history and the unit view.
const neverFired = (values) => values.length > 0 && values.every((v) => !(v > 0));

function fmt(v, digits = 3) {
  if (v === null || v === undefined) return "–";
  if (typeof v !== "number") return String(v);
  return Math.abs(v) >= 100 ? v.toFixed(0) : v.toPrecision(digits);
}

function runEntry(run) {
  return runsInfo.runs.find((r) => r.run === run);
}

function layerEntry(run, layer) {
  const r = runEntry(run);
  return r && r.layers.find((l) => l.layer === layer);
}

async function show() {
  root.replaceChildren();
  if (!runsInfo.runs.length || runsInfo.runs.every((r) => !r.layers.length)) return showEmpty();
  if (!runEntry(state.run)) state.run = runsInfo.runs.find((r) => r.layers.length).run;
  const r = runEntry(state.run);
  if (!layerEntry(state.run, state.layer)) state.layer = r.layers.length ? r.layers[0].layer : undefined;
  root.append(header());
  if (!r.layers.length) {
    root.append(el("div", { class: "empty", text: `Run ${state.run} has convscope_units/ but no complete epoch yet (still being written?). Press reload in a moment.` }));
    return;
  }
  const body = el("div", {}, el("div", { class: "hint", text: "loading…" }));
  root.append(body);
  try {
    if (state.view === "unit") await showUnit(body);
    else await showLayer(body);
  } catch (e) {
    body.replaceChildren(el("div", { class: "err", text: "Cannot show this view: " + e.message }));
  }
}

function showEmpty() {
  const without = runsInfo.without_data || [];
  root.append(
    el(
      "div",
      { class: "empty", id: "empty" },
      el("h2", { text: "No convscope unit data in this logdir" }),
      el("p", {
        text:
          "The unit browser shows every unit of the browsed layers at every drawn epoch. Its data is written by " +
          "convscope's UnitsCallback into <run>/convscope_units/ beside the event file; no run here has it yet.",
      }),
      el("p", {
        text: without.length
          ? `Runs found without it (${without.length}): ${without.slice(0, 12).join(", ")}${without.length > 12 ? ", …" : ""}.`
          : "No TensorBoard run was found in the logdir either.",
      }),
      el("p", { text: "Train with the units callback on (python train.py fit --config configs/lenet5.yaml, or make demo), then press reload." }),
      el("button", { onclick: reload, text: "reload" }),
    ),
  );
}

async function reload() {
  await loadRuns();
  show();
}

function header() {
  const runSel = el("select", { id: "run", onchange: (e) => go({ run: e.target.value, epoch: "", page: "" }) });
  for (const r of runsInfo.runs) runSel.append(el("option", { value: r.run, text: r.run + (r.layers.length ? "" : " (no data yet)") }));
  runSel.value = state.run;
  const layerSel = el("select", { id: "layer", onchange: (e) => go({ layer: e.target.value, view: "layer", unit: "", epoch: "", page: "" }) });
  for (const l of runEntry(state.run).layers)
    layerSel.append(el("option", { value: l.layer, text: `${l.layer} (${l.of && l.of > l.units ? `${l.units} of ${l.of}` : l.units} ${l.kind === "fc" ? "features" : "channels"})` }));
  layerSel.value = state.layer;
  const share = el("a", { href: location.href.split("#")[0] + hashOf(state), target: "_blank", id: "share", text: "link to this view" });
  return el(
    "div",
    { class: "bar" },
    el("label", {}, "Run ", runSel),
    el("label", {}, "Layer ", layerSel),
    el("button", { onclick: reload, title: "read the run folders again (a run being written gains epochs)", text: "↻ reload" }),
    share,
  );
}

function epochSlider(epochs, current, onchange) {
  const i = Math.max(0, epochs.indexOf(current));
  const out = el("span", { class: "ep", id: "epoch-label", text: `epoch ${current}` });
  const input = el("input", { type: "range", id: "epoch", min: 0, max: epochs.length - 1, step: 1, value: i });
  input.addEventListener("input", () => (out.textContent = `epoch ${epochs[+input.value]}`));
  input.addEventListener("change", () => onchange(epochs[+input.value]));
  return el("label", {}, "Epoch ", input, " ", out, el("span", { class: "hint", text: ` (drawn: ${epochs.join(", ")})` }));
}

// Dead: fires on under 1% of the fixed set (greyed in the grid; last in the sorts by a measured statistic).
function isDead(stats, u) {
  const f = stats.dead_fraction[u];
  return f !== null && f !== undefined && f >= DEAD;
}

function className(classes, c) {
  return c === null || c === undefined ? "–" : classes && classes[c] !== undefined ? classes[c] : `class ${c}`;
}

// ---- layer view: every unit of a layer as a grid --------------------------------------------------------------
async function showLayer(body) {
  const q = new URLSearchParams({ run: state.run, layer: state.layer });
  if (state.epoch) q.set("epoch", state.epoch);
  const g = await getJSON("grid?" + q.toString());
  const { meta, stats, sprites } = g;
  const classes = meta.classes || [];
  const sort = SORTS[state.sort] ? state.sort : "unit";
  const desc = state.dir ? state.dir === "desc" : sort !== "unit";
  const cls = state.cls === undefined || state.cls === "" ? null : +state.cls;
  let order = [...Array(meta.units).keys()];
  if (cls !== null) order = order.filter((u) => stats.preferred_class[u] === cls);
  const v = sort === "unit" ? null : stats[sort];
  const key = (u) => (sort === "unit" ? u : !v || v[u] === null || v[u] === undefined ? -Infinity : v[u]);
  // dead units (a unit firing on one image has selectivity ~1) after every live one, in either direction
  const deadLast = !DEAD_IN_PLACE.includes(sort);
  const rank = (u) => (deadLast && isDead(stats, u) ? 1 : 0);
  order.sort((a, b) => rank(a) - rank(b) || (desc ? key(b) - key(a) : key(a) - key(b)) || a - b);
  const pages = Math.max(1, Math.ceil(order.length / PAGE));
  const page = Math.min(pages - 1, Math.max(0, +(state.page || 0)));

  const sortSel = el("select", { id: "sort", onchange: (e) => go({ sort: e.target.value, page: "" }) });
  for (const [k, v] of Object.entries(SORTS)) {
    const missing = k !== "unit" && !stats[k];
    sortSel.append(el("option", { value: k, text: v + (missing ? " (not measured at this epoch)" : "") }));
  }
  sortSel.value = sort;
  const dirSel = el("select", { id: "dir", onchange: (e) => go({ dir: e.target.value }) });
  dirSel.append(el("option", { value: "desc", text: "largest first" }), el("option", { value: "asc", text: "smallest first" }));
  dirSel.value = desc ? "desc" : "asc";
  const clsSel = el("select", { id: "class", onchange: (e) => go({ cls: e.target.value, page: "" }) });
  clsSel.append(el("option", { value: "", text: "all classes" }));
  (meta.class_index || classes.map((_, i) => i)).forEach((c) => {
    const n = stats.preferred_class.filter((p) => p === c).length;
    clsSel.append(el("option", { value: c, text: `prefer ${className(classes, c)} (${n})` }));
  });
  clsSel.value = cls === null ? "" : String(cls);

  const am = sprites.actmax;
  const thumbNote = am
    ? `Thumbnails: each unit's actmax image at epoch ${g.epoch}` +
      (am.units < meta.units ? ` (drawn for units 0–${am.units - 1}; the others show their strongest top patch, dashed).` : ".")
    : `Thumbnails (dashed): each unit's strongest top patch at epoch ${g.epoch} (actmax not drawn at this epoch` +
      (meta.actmax_epochs && meta.actmax_epochs.length ? `; drawn at ${meta.actmax_epochs.join(", ")}).` : ").");

  const controls = el(
    "div",
    { class: "bar" },
    epochSlider(g.epochs, g.epoch, (e) => go({ epoch: e })),
    el("label", {}, "Sort by ", sortSel, " ", dirSel),
    el("label", {}, "Filter ", clsSel),
  );
  const partial = meta.of && meta.of > meta.units ? ` (browsed: ${meta.units} of the layer's ${meta.of})` : "";
  const title = el("h2", { text: `${state.layer}: ${order.length} of ${meta.units} units${partial} · epoch ${g.epoch}` });
  const grid = el("div", { class: "grid", id: "grid" });
  for (const u of order.slice(page * PAGE, (page + 1) * PAGE)) {
    const dead = isDead(stats, u);
    const thumb = thumbOf(sprites, meta.units, g.epoch, u, THUMB, "thumb", neverFired(g.top_value ? [g.top_value[u]] : []));
    const shown = sort === "unit" || sort === "preferred_class" ? className(classes, stats.preferred_class[u]) : fmt(stats[sort] && stats[sort][u]);
    const tip =
      `unit ${u}\nprefers ${className(classes, stats.preferred_class[u])}\nselectivity ${fmt(stats.selectivity[u])}` +
      `\ndead fraction ${fmt(stats.dead_fraction[u])}\nimportance ${fmt(stats.importance && stats.importance[u])}` +
      `\nchange ${fmt(stats.change && stats.change[u])}\nmean ${fmt(stats.mean && stats.mean[u])}`;
    grid.append(
      el(
        "div",
        { class: "cell" + (dead ? " dead" : ""), title: tip, "data-unit": u, onclick: () => go({ view: "unit", unit: u }) },
        thumb,
        el("div", { class: "num", text: `#${u}` }),
        el("div", { class: "val", text: shown }),
      ),
    );
  }
  const pager = el("div", { class: "bar pager" });
  if (pages > 1) {
    pager.append(el("span", { class: "hint", text: `page ${page + 1} of ${pages} (${PAGE} units a page)` }));
    for (let p = 0; p < pages; p++) {
      const b = el("button", { text: String(p + 1), onclick: () => go({ page: p }) });
      if (p === page) b.disabled = true;
      pager.append(b);
    }
  }
  const legend = el("div", {
    class: "hint",
    id: "legend",
    text: `${thumbNote} Under each: the unit number and its ${sort === "unit" ? "preferred class" : SORTS[sort]}. ` +
      "Greyed: dead (fires on <1% of the fixed set)" +
      (deadLast ? "; dead units last, after every live unit, in either direction" : "") +
      "; \"never fired\": no fixed-set image excites it, so it has no top patch. Hover for all numbers; click a unit to see its life over training.",
  });
  body.replaceChildren(controls, title, legend, pager, grid);
}

// ---- unit view: one unit over training ------------------------------------------------------------------------
async function showUnit(body) {
  const q = new URLSearchParams({ run: state.run, layer: state.layer, unit: state.unit });
  const d = await getJSON("unit?" + q.toString());
  const epochs = d.history.map((h) => h.epoch);
  let epoch = state.epoch === undefined || state.epoch === "" ? epochs[epochs.length - 1] : +state.epoch;
  if (!epochs.includes(epoch)) epoch = epochs.filter((e) => e <= epoch).pop() ?? epochs[0];
  const h = d.history[epochs.indexOf(epoch)];
  const classes = d.classes || [];
  const u = d.unit;

  const back = el("a", { href: hashOf({ ...state, view: "layer", unit: "" }), text: `← all ${d.units} units of ${d.layer}` });
  const prev = el("button", { text: "‹ previous unit", onclick: () => go({ unit: u - 1 }) });
  const next = el("button", { text: "next unit ›", onclick: () => go({ unit: u + 1 }) });
  prev.disabled = u <= 0;
  next.disabled = u >= d.units - 1;
  const others = runsInfo.runs.filter((r) => r.run !== state.run && r.layers.some((l) => l.layer === state.layer && l.units > u));
  const other = el("span", { id: "other-runs" });
  if (others.length) {
    other.append("Same unit in: ");
    others.slice(0, 8).forEach((r, i) => other.append(i ? ", " : "", el("a", { href: hashOf({ ...state, run: r.run }), text: r.run })));
  } else other.append(el("span", { class: "hint", text: "no other run has this layer" }));

  const title = el("h2", { text: `${d.layer} · unit ${u} (${d.kind === "fc" ? "feature" : "channel"} ${u} of ${d.units})` });
  const life = el("div", { class: "life", id: "life", text: lifeText(d.life, classes, epochs) });

  const history = el("div", { class: "history", id: "history" });
  for (const row of d.history) {
    const thumb = thumbOf(row.sprites, d.units, row.epoch, u, 48, "img", neverFired((row.top || []).map((t) => t.value)));
    const what = { actmax: "actmax", none: "fired on no image, no top patch" }[thumb.dataset.kind] || "top patch (no actmax drawn)";
    history.append(
      el(
        "div",
        { class: "col" + (row.epoch === epoch ? " on" : ""), onclick: () => go({ epoch: row.epoch }), title: `epoch ${row.epoch}: ${what}` },
        el("div", { text: `ep ${row.epoch}` }),
        thumb,
        el("div", { text: className(classes, row.preferred_class) }),
        el("div", { text: `SI ${fmt(row.selectivity, 2)}` }),
      ),
    );
  }

  const panels = el("div", { class: "panels", id: "panels" });
  const ep = (e) => el("span", { class: "ep", text: `· epoch ${e}` });
  const missing = (what) => el("div", { class: "missing", text: `${what} not drawn at epoch ${epoch}.` });
  const panel = (name, id, ...content) => el("div", { class: "panel", id }, el("h3", {}, name + " ", ep(epoch)), ...content);
  const note = (text) => el("div", { class: "hint", style: "max-width: 200px; margin-top: 4px", text });

  if (d.history.some((r) => r.sprites.filters)) {
    const f = h.sprites.filters;
    panels.append(panel("Filter", "p-filter", (f && spriteCell(f, d.units, state.run, state.layer, epoch, "filters", u, 0, 144, "img big")) || missing("The filter"),
        f && f.scale ? note(f.scale) : null));
  }
  const am = h.sprites.actmax;
  const drawnAm = d.history.filter((r) => r.sprites.actmax && u < r.sprites.actmax.units).map((r) => r.epoch);
  const amCell = am && spriteCell(am, d.units, state.run, state.layer, epoch, "actmax", u, 0, 144, "img big");
  let amText;
  if (am && !amCell) amText = `Actmax at epoch ${epoch} was drawn for units 0–${am.units - 1} only.`;
  else amText = `Actmax not drawn at epoch ${epoch}` + (drawnAm.length ? `; drawn at epochs ${drawnAm.join(", ")}.` : "; never drawn for this unit.");
  panels.append(
    panel(
      "Actmax (the input that excites it most)",
      "p-actmax",
      amCell || el("div", { class: "missing", text: amText }),
      am && am.scale ? note(am.scale) : null,
    ),
  );
  const top = h.sprites.top;
  const tops = h.top || [];
  const silent = neverFired(tops.map((t) => t.value));
  const grid = el("div", { class: "patches" });
  tops.forEach((t, i) => {
    const box = t.box ? `y ${t.box[0]}:${t.box[2]} x ${t.box[1]}:${t.box[3]}` : "whole image";
    const boxLine = t.box // y and x may go on two lines where the numbers are long (a 224 px image)
      ? el("div", { class: "hint box" }, el("span", { text: `y ${t.box[0]}:${t.box[2]}` }), " ", el("span", { text: `x ${t.box[1]}:${t.box[3]}` }))
      : el("div", { class: "hint", text: box });
    grid.append(
      el(
        "div",
        { class: "patch", title: `fixed-set image ${t.sample}, true class ${className(classes, t.label)}, response ${fmt(t.value)}, receptive field ${box}` },
        top ? spriteCell(top, d.units, state.run, state.layer, epoch, "top", u, i, 64) : el("div", { class: "img" }),
        el("div", { text: className(classes, t.label) }),
        el("div", { class: "hint", text: `response ${fmt(t.value)}` }),
        boxLine,
      ),
    );
  });
  if (top && top.scale) grid.title = top.scale;
  const silentText = `This unit did not fire on any fixed-set image at epoch ${epoch} (largest response ${fmt(tops[0] && tops[0].value)}): no top patches.`;
  panels.append(
    silent
      ? panel("Top patches", "p-top", el("div", { class: "missing", id: "no-top", text: silentText }))
      : panel(`Top ${tops.length} patches (true class, response, box in input px)`, "p-top", top ? grid : missing("Top patches")),
  );
  panels.append(panel("Mean response per class", "p-classes", h.class_means ? classChart(h.class_means, h.class_index, classes, h.preferred_class) : missing("Class means")));
  const imp = h.importance;
  const nums = el(
    "table",
    { class: "nums" },
    row("selectivity index", fmt(h.selectivity), "(largest class mean − mean of the others) / their sum, 0..1"),
    row("preferred class", className(classes, h.preferred_class)),
    row("importance", imp === null || imp === undefined ? `not measured at epoch ${epoch}` : fmt(imp), "accuracy drop when ablated"),
    row("dead fraction", fmt(h.dead_fraction), "share of fixed-set images where it never fires"),
    row("change", h.change === null || h.change === undefined ? (epoch === epochs[0] ? "first drawing" : `not measured at epoch ${epoch}`) : fmt(h.change), "since the previous drawn epoch"),
    row("mean response", fmt(h.mean)),
  );
  panels.append(panel("Numbers", "p-numbers", nums, note("Hover a row for its definition. Importance: the accuracy drop when the unit is ablated (where the importance callback measured it).")));

  body.replaceChildren(
    el("div", { class: "bar" }, back, prev, next, other),
    title,
    life,
    el("div", { class: "bar" }, epochSlider(epochs, epoch, (e) => go({ epoch: e }))),
    el("div", { class: "hint", text: "History: one column per drawn epoch (its actmax image where drawn, else its strongest top patch, dashed); click one or move the slider." }),
    history,
    panels,
  );
}

function row(name, value, hint) {
  return el("tr", { title: hint || "" }, el("td", { text: name }), el("td", { text: value }));
}

function lifeText(life, classes, epochs) {
  if (!life || !life.epochs) return "No drawing yet.";
  const parts = [];
  if (life.epochs === 1) parts.push(`Drawn once (epoch ${epochs[0]}): its history starts here.`);
  parts.push(life.settled === null ? "Preferred class unknown" : `Prefers ${className(classes, life.preferred_class)} since epoch ${life.settled}`);
  parts.push(life.selective === null ? `not selective at the last drawing (SI < ${life.thresholds.selective})` : `selective (SI ≥ ${life.thresholds.selective}) since epoch ${life.selective}`);
  parts.push(life.died === null ? "alive" : `dead (fires on < ${Math.round((1 - life.thresholds.dead) * 100)}% of images) since epoch ${life.died}`);
  return "Life: " + parts.join(" · ") + ".";
}

const MAX_BARS = 20; // above this many classes, the chart shows the classes with the largest means

function classChart(values, index, classes, preferred) {
  if (values.length <= MAX_BARS) return barChart(values, index, classes, preferred);
  const order = values.map((v, i) => i).sort((a, b) => values[b] - values[a]).slice(0, MAX_BARS);
  const ids = order.map((i) => (index ? index[i] : i));
  return el(
    "div",
    {},
    barChart(order.map((i) => values[i]), ids, classes, preferred),
    el("div", { class: "hint", text: `The ${MAX_BARS} of ${values.length} classes with the largest mean response.` }),
  );
}

function barChart(values, index, classes, preferred) {
  const W = 300, rowH = 14, n = values.length, H = n * rowH + 4, L = 96;
  const max = Math.max(...values.map((v) => Math.abs(v)), 1e-12);
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("width", W);
  svg.setAttribute("height", H);
  svg.setAttribute("id", "class-bars");
  values.forEach((v, i) => {
    const c = index ? index[i] : i;
    const y = 2 + i * rowH;
    const t = document.createElementNS(ns, "text");
    t.setAttribute("x", L - 4);
    t.setAttribute("y", y + 10);
    t.setAttribute("text-anchor", "end");
    t.setAttribute("font-size", "10");
    t.textContent = className(classes, c).slice(0, 16);
    const r = document.createElementNS(ns, "rect");
    const w = (Math.abs(v) / max) * (W - L - 46);
    r.setAttribute("x", L);
    r.setAttribute("y", y + 1);
    r.setAttribute("width", Math.max(0.5, w));
    r.setAttribute("height", rowH - 3);
    r.setAttribute("fill", c === preferred ? "#ff7043" : v < 0 ? "#90a4ae" : "#5c6bc0");
    const l = document.createElementNS(ns, "text");
    l.setAttribute("x", L + w + 3);
    l.setAttribute("y", y + 10);
    l.setAttribute("font-size", "10");
    l.textContent = fmt(v, 2);
    svg.append(t, r, l);
  });
  return svg;
}
