// ibmonitor "Information Plane" tab: an ES module that TensorBoard loads inside
// an iframe whose base URL is the plugin's route prefix (data/plugin/ibmonitor/),
// so every fetch below is relative to the plugin. plotly.js comes from the
// plugin's own route (the installed plotly package): nothing from a CDN.

const REFRESH_MS = 15000;
const PLOTLY_URL = './static/plotly.min.js';
const CONFIG = {displaylogo: false, responsive: true};
// The name of the probe set given as inputs/labels (ibmonitor.schema.DEFAULT_PROBE).
const DEFAULT_PROBE = 'default';
// The panels of ibmonitor.schema.PANELS, in order: /scalars sends every scalar
// of the run under one of these keys (ibmonitor.schema.scalar_panel decides),
// the same panels as the plotly dashboard and the custom-scalars layout.
// A panel without data stays hidden.
const PANELS = [
  {key: 'Loss', id: 'loss', title: 'Loss and generalization gap', yTitle: 'loss'},
  {key: 'Accuracy', id: 'accuracy', title: 'Accuracy and generalization gap',
    yTitle: 'accuracy'},
  {key: 'Sharpness', id: 'sharpness', title: 'Sharpness', yTitle: 'value'},
  {key: 'Norms', id: 'norms', title: 'Norms', yTitle: 'norm'},
  {key: 'Saturation', id: 'saturation', title: 'Saturated units (tanh, sigmoid)',
    yTitle: 'fraction'},
  {key: 'Geometry', id: 'geometry',
    title: 'Geometry: separation, flattening, linear probe, filter pairing',
    yTitle: 'value'},
  {key: 'Other', id: 'other', title: 'Other scalars', yTitle: 'value'},
];

const state = {
  runs: [],
  run: null,
  estimator: null,
  probe: null,
  live: true,
  planeKey: null,
  scalarsKey: null,
  timer: null,
};

export async function render() {
  document.title = 'Information Plane';
  document.head.appendChild(el('style', {}, CSS));
  const ui = buildUi();
  document.body.appendChild(ui.root);
  try {
    await loadPlotly();
  } catch (error) {
    ui.status.textContent = 'Could not load plotly.js from the plugin: ' + error;
    return;
  }
  await refresh(ui, true);
  state.timer = setInterval(() => {
    if (state.live && document.visibilityState !== 'hidden') refresh(ui, false);
  }, REFRESH_MS);
}

// ------------------------------------------------------------------ data flow
async function refresh(ui, force) {
  try {
    const runs = await getJson('./runs');
    const namesChanged =
      runs.map((r) => r.run).join('\n') !== state.runs.map((r) => r.run).join('\n');
    state.runs = runs;
    if (!runs.length) {
      ui.empty.hidden = false;
      ui.main.hidden = true;
      ui.status.textContent = 'Waiting for data…';
      markReady();
      return;
    }
    ui.empty.hidden = true;
    ui.main.hidden = false;
    if (namesChanged || force) fillRuns(ui);
    fillChoices(ui);
    await draw(ui, force);
    ui.status.textContent = 'Updated ' + new Date().toLocaleTimeString();
  } catch (error) {
    ui.status.textContent = 'Could not refresh: ' + error.message;
  }
}

async function draw(ui, force) {
  const run = currentRun();
  if (!run) return;
  const planeKey = [run.run, state.estimator, state.probe, run.max_step,
    run.max_wall_time, run.layers.length].join('|');
  if (force || planeKey !== state.planeKey) {
    const query = new URLSearchParams({run: run.run});
    if (state.estimator) query.set('estimator', state.estimator);
    if (state.probe) query.set('probe', state.probe);
    const info = await getJson('./information?' + query);
    drawPlane(ui.plane, info, run);
    state.planeKey = planeKey;
  }
  const scalars = await getJson('./scalars?' + new URLSearchParams({run: run.run}));
  const scalarsKey = run.run + '|' + JSON.stringify(scalars.panels);
  if (force || scalarsKey !== state.scalarsKey) {
    // Show every panel that has data before drawing, so that each plot is
    // laid out at its final width.
    for (const panel of PANELS) {
      const tags = scalars.panels[panel.key] || {};
      ui.panels[panel.key].hidden = Object.keys(tags).length === 0;
    }
    for (const panel of PANELS) {
      drawPanel(ui.panels[panel.key], panel, scalars.panels[panel.key] || {}, run);
    }
    state.scalarsKey = scalarsKey;
  }
  await drawExplanations(ui, run);
  markReady();
}

async function drawExplanations(ui, run) {
  const body = await getJson('./explanations?' + new URLSearchParams({run: run.run}));
  const tags = Object.keys(body.tags || {}).filter((t) => body.tags[t].length);
  ui.explain.hidden = tags.length === 0;
  const key = run.run + '|' + JSON.stringify(body.tags);
  if (!tags.length || key === ui.explainKey) return;
  ui.explainKey = key;
  ui.explainSteps = body.tags;
  const chosen = tags.includes(ui.explainTag.value) ? ui.explainTag.value : tags[0];
  ui.explainTag.replaceChildren(
    ...tags.map((t) => el('option', {value: t}, t.replace(/^explain\//, ''))));
  ui.explainTag.value = chosen;
  const steps = body.tags[chosen];
  ui.explainEpoch.max = String(steps.length - 1);
  ui.explainEpoch.value = String(steps.length - 1);
  ui.showExplanation();
}

function currentRun() {
  return state.runs.find((r) => r.run === state.run) || null;
}

// ---------------------------------------------------------------------- plots
// Smallest axis spans in bits (ibmonitor.plotting.MIN_PLANE_SPAN); /information
// sends them widened to the estimator's resolution as info.min_span.
const MIN_PLANE_SPAN = [1.0, 0.5];
// Label layout (pixels), as ibmonitor.plotting.place_labels: one label line,
// a label's width, and the largest cluster of coinciding ends labelled one by
// one (a larger one gets a single "N layers" label).
const LABEL_LINE_PX = 14;
const LABEL_WIDTH_PX = 110;
const MAX_STACK = 6;
const PINNED_HOVER =
  '<br><b>pinned</b>: at log2 n (every sample its own bin or kernel),' +
  '<br>set by the sample size, not the layer';

function isFiniteNumber(v) {
  return typeof v === 'number' && Number.isFinite(v);
}

// Plotly error bars from an interval [low, high] around each value (bits);
// undefined when the run has no intervals for this series.
function intervalBars(values, low, high) {
  if (!low || !high || !low.some(isFiniteNumber)) return undefined;
  const up = values.map((v, k) =>
    isFiniteNumber(v) && isFiniteNumber(high[k]) ? Math.max(high[k] - v, 0) : 0);
  const down = values.map((v, k) =>
    isFiniteNumber(v) && isFiniteNumber(low[k]) ? Math.max(v - low[k], 0) : 0);
  return {
    type: 'data', symmetric: false, array: up, arrayminus: down,
    thickness: 1, width: 2, color: 'rgba(90, 90, 90, 0.5)',
  };
}

function drawPlane(div, info, run) {
  const series = info.series || [];
  const allEpochs = series.flatMap((s) => s.epochs);
  // The plugin decides log or linear epochs as the plotly figures do.
  const scale = epochScale(allEpochs, Boolean(info.log_epochs));
  let anyPinned = false;
  const traces = series.map((s, i) => {
    const pinned = s.epochs.map((_, k) => Boolean((s.pinned || [])[k]));
    anyPinned = anyPinned || pinned.some(Boolean);
    return {
      type: 'scatter',
      mode: 'lines+markers',
      name: escapeText(s.layer),
      x: s.i_xt,
      y: s.i_ty,
      error_x: intervalBars(s.i_xt, s.i_xt_low, s.i_xt_high),
      error_y: intervalBars(s.i_ty, s.i_ty_low, s.i_ty_high),
      customdata: s.epochs,
      hovertext: pinned.map((p) => (p ? PINNED_HOVER : '')),
      cliponaxis: false,
      hovertemplate:
        '<b>' + escapeText(s.layer) + '</b><br>epoch %{customdata}' +
        '<br>I(X;T) = %{x:.3f} bits<br>I(T;Y) = %{y:.3f} bits%{hovertext}' +
        '<extra></extra>',
      line: {color: 'rgba(130, 130, 130, 0.55)', width: 1.2},
      marker: {
        size: pinned.map((p) => (p ? 10 : 8)),
        symbol: pinned.map((p) => (p ? 'circle-open' : 'circle')),
        opacity: pinned.map((p) => (p ? 0.55 : 1)),
        color: s.epochs.map(scale.value),
        colorscale: 'Viridis',
        cmin: scale.min,
        cmax: scale.max,
        showscale: i === 0,
        colorbar: i === 0 ? {
          title: {text: 'epoch'},
          tickvals: scale.tickvals,
          ticktext: scale.ticktext,
          thickness: 14,
        } : undefined,
        line: {width: pinned.map((p) => (p ? 2 : 0))},
      },
    };
  });
  const minSpan = info.min_span || MIN_PLANE_SPAN;
  const xr = axisRange(series.flatMap((s) => s.i_xt), minSpan[0]);
  const yr = axisRange(series.flatMap((s) => s.i_ty), minSpan[1]);
  const xaxis = {title: {text: info.x_title || 'I(X;T) (bits)'}, zeroline: false};
  const yaxis = {title: {text: info.y_title || 'I(T;Y) (bits)'}, zeroline: false};
  // Never stretch a spread the estimator cannot resolve over a whole axis.
  if (xr.forced) {
    const pad = 0.05 * (xr.hi - xr.lo);
    xaxis.range = [xr.lo - pad, xr.hi + 3 * pad];
    xaxis.autorange = false;
  }
  if (yr.forced) {
    const pad = 0.06 * (yr.hi - yr.lo);
    yaxis.range = [yr.lo - pad, yr.hi + pad];
    yaxis.autorange = false;
  }
  const ends = [];
  for (const s of series) {
    const last = lastFinite(s.i_xt, s.i_ty);
    if (last >= 0) ends.push({x: s.i_xt[last], y: s.i_ty[last], text: escapeText(s.layer)});
  }
  const width = Math.max(200, (div.clientWidth || 900) - 64 - 24 - 90);
  const height = Math.max(150, (div.clientHeight || 560) - 48 - 64);
  const annotations = placeLabels(ends, xr, yr, width, height);
  if (anyPinned) {
    annotations.push({
      xref: 'paper', yref: 'paper', x: 0, y: 1.0, xanchor: 'left', yanchor: 'bottom',
      showarrow: false, font: {size: 11, color: '#8a6d00'},
      text: '○ hollow, faded: pinned (set by the sample size, not the layer)',
      name: 'pinned-note',
    });
  }
  // The permutation baseline of I(T;Y): the estimator's floor at this n
  // (labels shuffled), drawn at its highest value over the shown points.
  const baselines = series.flatMap((s) => s.i_ty_baseline || []).filter(isFiniteNumber);
  const shapes = [];
  if (baselines.length) {
    const floor = Math.max(...baselines);
    shapes.push({
      type: 'line', xref: 'paper', x0: 0, x1: 1, yref: 'y', y0: floor, y1: floor,
      line: {dash: 'dash', width: 1, color: '#b03a2e'}, name: 'baseline',
    });
    annotations.push({
      xref: 'paper', yref: 'y', x: 1, y: floor, xanchor: 'right', yanchor: 'bottom',
      showarrow: false, font: {size: 11, color: '#b03a2e'},
      text: 'permutation baseline ' + floor.toFixed(3) + ' bits',
      name: 'baseline-note',
    });
  }
  // The ceiling of I(X;T) (log2 n, or H(X) of the grouped inputs), where
  // the shown points come within a bit of it.
  const ceilings = series.flatMap((s) => s.i_xt_ceiling || []).filter(isFiniteNumber);
  const xs = series.flatMap((s) => s.i_xt).filter(isFiniteNumber);
  if (ceilings.length && xs.length) {
    const ceiling = Math.min(...ceilings);
    if (Math.max(...xs) >= ceiling - 1) {
      shapes.push({
        type: 'line', yref: 'paper', y0: 0, y1: 1, xref: 'x', x0: ceiling, x1: ceiling,
        line: {dash: 'dot', width: 1, color: '#555'}, name: 'ceiling',
      });
    }
  }
  const probeText =
    state.probe && state.probe !== DEFAULT_PROBE ? ' · ' + state.probe : '';
  const layout = {
    title: {text: escapeText('Information plane · ' + (state.estimator || '') + probeText)},
    xaxis,
    yaxis,
    annotations,
    shapes,
    legend: {orientation: 'h', y: -0.18, x: 0},
    margin: {l: 64, r: 24, t: 48, b: 64},
    hovermode: 'closest',
    uirevision: [run.run, state.estimator, state.probe].join('|'),
  };
  window.Plotly.react(div, traces, layout, CONFIG);
}

// The data's range, widened around its middle to `minimum` where narrower.
function axisRange(values, minimum) {
  const finite = values.filter((v) => v !== null && Number.isFinite(v));
  if (!finite.length) return {lo: 0, hi: 1, forced: false};
  let lo = Math.min(...finite);
  let hi = Math.max(...finite);
  if (hi - lo >= minimum) {
    const pad = 0.05 * (hi - lo);
    return {lo: lo - pad, hi: hi + pad, forced: false};
  }
  const mid = (lo + hi) / 2;
  lo = mid - minimum / 2;
  hi = mid + minimum / 2;
  return {lo, hi, forced: true};
}

// Labels at the trajectory ends that never overlap (as place_labels in
// ibmonitor/plotting.py): coinciding ends are stacked one line apart with a
// leader line, or, beyond MAX_STACK, named by one "N layers" label.
function placeLabels(ends, xr, yr, width, height) {
  const sx = xr.hi > xr.lo ? width / (xr.hi - xr.lo) : 1;
  const sy = yr.hi > yr.lo ? height / (yr.hi - yr.lo) : 1;
  const px = ends.map((e) => (e.x - xr.lo) * sx);
  const py = ends.map((e) => (e.y - yr.lo) * sy);
  const parent = ends.map((_, i) => i);
  const find = (i) => {
    while (parent[i] !== i) i = parent[i] = parent[parent[i]];
    return i;
  };
  for (let i = 0; i < ends.length; i++) {
    for (let j = 0; j < i; j++) {
      if (Math.abs(px[i] - px[j]) < LABEL_WIDTH_PX / 2 &&
          Math.abs(py[i] - py[j]) < LABEL_LINE_PX) parent[find(i)] = find(j);
    }
  }
  const clusters = new Map();
  ends.forEach((_, i) => {
    const root = find(i);
    if (!clusters.has(root)) clusters.set(root, []);
    clusters.get(root).push(i);
  });
  const items = [];
  for (const members of clusters.values()) {
    members.sort((a, b) => py[b] - py[a]);
    if (members.length > MAX_STACK) {
      const names = members.map((i) => ends[i].text);
      items.push({i: members[0], want: py[members[0]],
        text: members.length + ' layers (' + names.slice(0, 2).join(', ') + ', …)',
        hover: names.slice(0, 40).join('<br>')});
      continue;
    }
    let top = members.reduce((sum, i) => sum + py[i], 0) / members.length;
    top += (members.length - 1) * LABEL_LINE_PX / 2;
    members.forEach((i, k) => items.push({i, want: top - k * LABEL_LINE_PX,
      text: ends[i].text}));
  }
  items.sort((a, b) => b.want - a.want);
  const placed = [];
  return items.map((item) => {
    let label = item.want;
    let moved = true;
    while (moved) {
      moved = false;
      for (const q of placed) {
        if (Math.abs(q.x - px[item.i]) < LABEL_WIDTH_PX &&
            Math.abs(label - q.y) < LABEL_LINE_PX) {
          label = q.y - LABEL_LINE_PX;
          moved = true;
        }
      }
    }
    placed.push({x: px[item.i], y: label});
    const shift = label - py[item.i];
    const note = {x: ends[item.i].x, y: ends[item.i].y, text: item.text,
      xanchor: 'left', yanchor: 'middle', font: {size: 11, color: '#333'}};
    if (Math.abs(shift) < 3) {
      Object.assign(note, {showarrow: false, xshift: 7, yshift: shift});
    } else {
      Object.assign(note, {showarrow: true, arrowhead: 0, arrowwidth: 0.6,
        arrowcolor: 'rgba(90, 90, 90, 0.7)', ax: 18, ay: -shift});
    }
    if (item.hover) note.hovertext = item.hover;
    return note;
  });
}

function drawPanel(box, panel, tags, run) {
  const names = Object.keys(tags);
  if (!names.length) return;
  const traces = names.map((tag) => ({
    type: 'scatter',
    mode: 'lines+markers',
    name: escapeText(tag),
    x: tags[tag].epochs,
    y: tags[tag].values,
    marker: {size: 5},
    hovertemplate: escapeText(tag) + '<br>epoch %{x}<br>%{y:.4g}<extra></extra>',
  }));
  const layout = {
    title: {text: panel.title, font: {size: 14}},
    xaxis: {title: {text: 'epoch'}},
    yaxis: {
      title: {text: panel.yTitle},
      rangemode: panel.key === 'Saturation' ? 'tozero' : 'normal',
    },
    legend: {orientation: 'h', y: -0.3, x: 0, font: {size: 10}},
    margin: {l: 56, r: 16, t: 40, b: 40},
    uirevision: run.run,
  };
  window.Plotly.react(box.querySelector('.ibm-plot'), traces, layout, CONFIG);
}

// Colour epochs on a log scale when the plugin says they are log-spaced (many
// early epochs, few late ones: ibmonitor.schema.epochs_look_log), linearly
// otherwise.
function epochScale(epochs, log) {
  const unique = [...new Set(epochs)].sort((a, b) => a - b);
  const max = unique.length ? unique[unique.length - 1] : 1;
  const min = unique.length ? unique[0] : 0;
  if (!log) {
    return {value: (e) => e, min, max: Math.max(max, min + 1), tickvals: undefined, ticktext: undefined};
  }
  const ticks = [];
  for (let p = 1; p <= max * 10; p *= 10) {
    for (const m of [1, 3]) {
      const t = p * m;
      if (t >= min && t <= max) ticks.push(t);
    }
  }
  if (min === 0) ticks.unshift(0);
  const f = (e) => Math.log10(e + 1);
  return {value: f, min: f(min), max: f(max), tickvals: ticks.map(f), ticktext: ticks.map(String)};
}

function lastFinite(xs, ys) {
  for (let k = xs.length - 1; k >= 0; k--) {
    if (xs[k] !== null && ys[k] !== null) return k;
  }
  return -1;
}

// ------------------------------------------------------------------ controls
function buildUi() {
  const runSelect = el('select', {id: 'ibm-run', title: 'run'});
  const estimatorSelect = el('select', {id: 'ibm-estimator', title: 'estimator'});
  const probeSelect = el('select', {id: 'ibm-probe', title: 'probe set'});
  const live = el('input', {type: 'checkbox', id: 'ibm-live'});
  live.checked = true;
  const status = el('span', {id: 'ibm-status', class: 'ibm-status'}, 'Loading…');
  const probeLabel = el('label', {}, ['Probe ', probeSelect]);
  const toolbar = el('div', {class: 'ibm-toolbar'}, [
    el('label', {}, ['Run ', runSelect]),
    el('label', {}, ['Estimator ', estimatorSelect]),
    probeLabel,
    el('label', {title: 'reload new epochs every 15 s while the run trains'},
      [live, ' Live']),
    status,
  ]);
  const plane = el('div', {id: 'ibm-plane', class: 'ibm-plane'});
  const panels = {};
  const panelRow = el('div', {class: 'ibm-panels'});
  for (const panel of PANELS) {
    const box = el('div', {class: 'ibm-panel', id: 'ibm-' + panel.id + '-box'}, [
      el('div', {id: 'ibm-' + panel.id, class: 'ibm-plot'}),
    ]);
    box.hidden = true;
    panels[panel.key] = box;
    panelRow.appendChild(box);
  }
  const empty = el('div', {class: 'ibm-empty'}, [
    el('h3', {}, 'No information-plane data yet'),
    el('p', {}, 'Train with ibmonitor.InformationMonitor(..., logdir=RUN_DIR, ' +
      'tensorboard=True) and point TensorBoard at RUN_DIR (or its parent): ' +
      'this tab updates as epochs are recorded.'),
  ]);
  empty.hidden = true;
  // Explanations over training (ibmonitor.explain.ExplainSet): one image grid
  // per tag and epoch, an epoch slider to step through them.
  const explainTag = el('select', {id: 'ibm-explain-tag', title: 'explanation'});
  const explainEpoch = el('input', {type: 'range', id: 'ibm-explain-epoch',
    min: '0', max: '0', step: '1', value: '0'});
  const explainLabel = el('span', {id: 'ibm-explain-label', class: 'ibm-status'}, '');
  const explainImg = el('img', {id: 'ibm-explain-img', class: 'ibm-explain-img',
    alt: 'explanation image'});
  const explain = el('div', {class: 'ibm-explain', id: 'ibm-explain-box'}, [
    el('div', {class: 'ibm-toolbar'}, [
      el('b', {}, 'What the network looks at '),
      el('label', {}, ['Image ', explainTag]),
      el('label', {}, ['Epoch ', explainEpoch]),
      explainLabel,
    ]),
    explainImg,
  ]);
  explain.hidden = true;
  const main = el('div', {}, [plane, panelRow, explain]);
  // Plotly's "responsive" follows the window only; follow the containers too.
  if (window.ResizeObserver) {
    const observer = new ResizeObserver((entries) => {
      for (const entry of entries) {
        const plot = entry.target;
        if (window.Plotly && plot.data && plot.offsetWidth > 0) {
          window.Plotly.Plots.resize(plot);
        }
      }
    });
    observer.observe(plane);
    for (const box of Object.values(panels)) {
      observer.observe(box.querySelector('.ibm-plot'));
    }
  }
  const root = el('div', {class: 'ibm-root'}, [toolbar, empty, main]);
  const ui = {root, runSelect, estimatorSelect, probeSelect, probeLabel, live,
    status, plane, panels, empty, main, explain, explainTag, explainEpoch,
    explainLabel, explainImg, explainSteps: {}};
  const showExplanation = () => {
    const tag = explainTag.value;
    const steps = ui.explainSteps[tag] || [];
    if (!steps.length) return;
    const k = Math.min(Number(explainEpoch.value), steps.length - 1);
    explainLabel.textContent = 'epoch ' + steps[k];
    explainImg.src = './explanation_image?' +
      new URLSearchParams({run: state.run || '', tag, step: String(steps[k])});
  };
  ui.showExplanation = showExplanation;
  explainTag.addEventListener('change', () => {
    const steps = ui.explainSteps[explainTag.value] || [];
    explainEpoch.max = String(Math.max(steps.length - 1, 0));
    explainEpoch.value = explainEpoch.max;
    showExplanation();
  });
  explainEpoch.addEventListener('input', showExplanation);

  runSelect.addEventListener('change', () => {
    state.run = runSelect.value;
    state.estimator = null;
    state.probe = null;
    fillChoices(ui);
    draw(ui, true).catch(showError(ui));
  });
  estimatorSelect.addEventListener('change', () => {
    state.estimator = estimatorSelect.value;
    draw(ui, true).catch(showError(ui));
  });
  probeSelect.addEventListener('change', () => {
    state.probe = probeSelect.value;
    draw(ui, true).catch(showError(ui));
  });
  live.addEventListener('change', () => {
    state.live = live.checked;
    if (state.live) refresh(ui, false);
  });
  return ui;
}

function fillRuns(ui) {
  const names = state.runs.map((r) => r.run);
  if (!names.includes(state.run)) state.run = names[0];
  setOptions(ui.runSelect, names, state.run);
}

function fillChoices(ui) {
  const run = currentRun();
  if (!run) return;
  if (!run.estimators.includes(state.estimator)) state.estimator = run.estimators[0];
  if (!run.probes.includes(state.probe)) {
    state.probe = run.probes.includes(DEFAULT_PROBE) ? DEFAULT_PROBE : run.probes[0];
  }
  setOptions(ui.estimatorSelect, run.estimators, state.estimator);
  setOptions(ui.probeSelect, run.probes, state.probe);
  ui.probeLabel.hidden = run.probes.length < 2;
}

function setOptions(select, values, selected) {
  const current = [...select.options].map((o) => o.value);
  if (current.join('\n') !== values.join('\n')) {
    select.replaceChildren(...values.map((v) => {
      const option = document.createElement('option');
      option.value = v;
      option.textContent = v; // text, never HTML: names come from the log directory
      return option;
    }));
  }
  select.value = selected;
}

function showError(ui) {
  return (error) => {
    ui.status.textContent = 'Error: ' + error.message;
  };
}

function markReady() {
  document.body.dataset.ibmonitorReady = 'true';
}

// ------------------------------------------------------------------- helpers
function loadPlotly() {
  if (window.Plotly) return Promise.resolve(window.Plotly);
  return new Promise((resolve, reject) => {
    const script = document.createElement('script');
    script.src = PLOTLY_URL;
    script.onload = () => resolve(window.Plotly);
    script.onerror = () => reject(new Error('failed to load ' + PLOTLY_URL));
    document.head.appendChild(script);
  });
}

async function getJson(url) {
  const response = await fetch(url, {headers: {'X-Requested-With': 'ibmonitor'}});
  if (!response.ok) throw new Error(url + ': HTTP ' + response.status);
  return response.json();
}

// Plotly renders a small subset of HTML in names and hover text; show names as text.
function escapeText(value) {
  return String(value)
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/%/g, '&#37;');
}

function el(tag, attrs, children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  if (children !== undefined && children !== null) {
    for (const child of Array.isArray(children) ? children : [children]) {
      node.append(child);
    }
  }
  return node;
}

const CSS = `
  body { margin: 0; font-family: Roboto, "Helvetica Neue", Arial, sans-serif;
         color: #212121; background: #fff; }
  .ibm-root { padding: 12px 16px; }
  .ibm-toolbar { display: flex; flex-wrap: wrap; gap: 16px; align-items: center;
                 padding-bottom: 8px; border-bottom: 1px solid #e0e0e0; font-size: 13px; }
  .ibm-toolbar select { font-size: 13px; padding: 2px 4px; max-width: 28em; }
  .ibm-status { color: #757575; margin-left: auto; font-size: 12px; }
  .ibm-plane { height: 560px; margin-top: 8px; }
  .ibm-explain { margin-top: 12px; }
  .ibm-explain-img { max-width: 100%; image-rendering: pixelated; display: block; }
  .ibm-panels { display: grid; gap: 8px;
                grid-template-columns: repeat(auto-fit, minmax(480px, 1fr)); }
  .ibm-panel { min-width: 0; }
  .ibm-panel .ibm-plot { height: 300px; }
  .ibm-empty { color: #616161; padding: 24px 0; max-width: 48em; }
  [hidden] { display: none !important; }
`;
