/* convstudy report: sortable tables, the model filters, parallel coordinates and loss curves on demand.
   Reads the JSON block #report-data. User text reaches the page only through textContent and
   setAttribute, never as markup. Colours: Okabe-Ito for models, viridis for the metric (colour-blind safe). */
(function () {
  'use strict';
  var SVG = 'http://www.w3.org/2000/svg';
  var OKABE_ITO = ['#0072B2', '#E69F00', '#009E73', '#D55E00', '#CC79A7', '#56B4E9', '#000000', '#F0E442'];
  var VIRIDIS = ['#440154', '#482878', '#3e4989', '#31688e', '#26828e', '#1f9e89', '#35b779', '#6ece58',
                 '#b5de2b', '#fde725'];
  var MAX_CURVES = 8;
  var block = document.getElementById('report-data');
  var data = block ? JSON.parse(block.textContent) : null;
  var table = document.getElementById('comparison-table');
  var each = function (list, f) { Array.prototype.forEach.call(list, f); };

  function svg(name, attrs, parent, text) {
    var e = document.createElementNS(SVG, name);
    Object.keys(attrs).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    if (text !== undefined) { e.textContent = text; }
    if (parent) { parent.appendChild(e); }
    return e;
  }
  function clear(node) { while (node.firstChild) { node.removeChild(node.firstChild); } }
  function fmt(v) { return String(parseFloat(v.toPrecision(3))); }
  function short(text) { return text.length > 18 ? text.slice(0, 17) + '…' : text; }
  function rows() { return table ? Array.prototype.slice.call(table.tBodies[0].rows) : []; }
  function modelOf(row) { return +row.getAttribute('data-i'); }
  function ticks(lo, hi, n) {  // round numbers in [lo, hi], about n of them (at most 1.5 n)
    var mag = Math.pow(10, Math.floor(Math.log10((hi - lo) / n)));
    var step = [1, 2, 5, 10].map(function (s) { return s * mag; })
      .filter(function (s) { return (hi - lo) / s <= 1.5 * n; })[0];
    var out = [];
    for (var v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) { out.push(v); }
    return out;
  }
  function viridis(t) { return VIRIDIS[Math.max(0, Math.min(VIRIDIS.length - 1, Math.round(t * (VIRIDIS.length - 1))))]; }

  // ------------------------------------------------------------ sorting: numeric on data-v, else text
  each(document.querySelectorAll('table.sortable'), function (t) {
    var heads = t.tHead.rows[0].cells;
    each(heads, function (th, col) {
      function sort() {
        var asc = th.getAttribute('aria-sort') !== 'ascending';
        each(heads, function (h) { h.removeAttribute('aria-sort'); });
        th.setAttribute('aria-sort', asc ? 'ascending' : 'descending');
        var body = t.tBodies[0];
        var key = function (row) {
          var cell = row.cells[col];
          var v = cell.getAttribute('data-v');
          var n = v === null ? NaN : parseFloat(v);
          return isNaN(n) ? cell.textContent.trim().toLowerCase() : n;
        };
        Array.prototype.slice.call(body.rows).sort(function (a, b) {
          var x = key(a), y = key(b);
          if (typeof x !== typeof y) { return typeof x === 'number' ? -1 : 1; }
          return (x < y ? -1 : x > y ? 1 : 0) * (asc ? 1 : -1);
        }).forEach(function (row) { body.appendChild(row); });
      }
      th.addEventListener('click', sort);
      th.addEventListener('keydown', function (e) {
        if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); sort(); }
      });
    });
  });
  if (!data || !table) { return; }

  // ------------------------------------------------------------ parallel coordinates
  var lines = [];
  function drawParallel() {
    var box = document.getElementById('parcoords');
    if (!box || !data.dims.length) { return; }
    var axes = data.dims.concat([{name: data.metric.name, kind: 'numeric', values: data.metric.values}]);
    var W = 960, H = 380, top = 44, bottom = 24, left = 70, right = 70;
    var plot = svg('svg', {viewBox: '0 0 ' + W + ' ' + H, 'class': 'fig'}, box);
    var step = (W - left - right) / (axes.length - 1);
    var scales = axes.map(function (a, j) {
      var s = {x: left + j * step, ticks: []};
      if (a.kind === 'categorical') {
        var n = a.levels.length;
        s.y = function (v) {
          var k = a.levels.indexOf(v);
          return k < 0 ? null : n === 1 ? (top + H - bottom) / 2 : H - bottom - (H - top - bottom) * k / (n - 1);
        };
        s.ticks = a.levels.map(function (l) { return [s.y(l), l]; });
      } else {
        var vs = a.values.filter(function (v) { return v !== null; });
        var lo = Math.min.apply(null, vs), hi = Math.max.apply(null, vs);
        if (!vs.length) { lo = 0; hi = 1; } else if (lo === hi) { lo -= 1; hi += 1; }
        s.t = function (v) { return (v - lo) / (hi - lo); };
        s.y = function (v) { return v === null ? null : H - bottom - (H - top - bottom) * s.t(v); };
        s.ticks = ticks(lo, hi, 4).map(function (v) { return [s.y(v), fmt(v)]; });
      }
      return s;
    });
    var metric = scales[scales.length - 1];
    data.models.forEach(function (m, i) {
      var d = '', pen = 'M';
      axes.forEach(function (a, j) {
        var y = scales[j].y(a.values[i]);
        if (y === null) { pen = 'M'; return; }
        d += pen + scales[j].x.toFixed(1) + ',' + y.toFixed(1);
        pen = 'L';
      });
      var v = data.metric.values[i];
      var path = svg('path', {d: d, fill: 'none', 'class': 'pc-line',
                              stroke: v === null ? '#999999' : viridis(metric.t(v))}, plot);
      svg('title', {}, path, m.name + (v === null ? ' (not finished)' : ': ' + v + ' %'));
      path.addEventListener('click', function () { pick(i, selected.indexOf(i) < 0); });
      lines[i] = path;
    });
    axes.forEach(function (a, j) {
      var x = scales[j].x;
      svg('line', {x1: x, x2: x, y1: top, y2: H - bottom, stroke: '#333333'}, plot);
      var label = svg('text', {x: x, y: top - 22, 'text-anchor': 'middle', 'class': 'pc-axis'}, plot, short(a.name));
      svg('title', {}, label, a.name);
      scales[j].ticks.forEach(function (t) {
        var tick = svg('text', {x: x - 5, y: t[0] + 4, 'text-anchor': 'end', 'class': 'pc-tick'}, plot, short(t[1]));
        svg('title', {}, tick, t[1]);
      });
    });
    updateParallel();
  }
  function updateParallel() {
    rows().forEach(function (row) {
      var path = lines[modelOf(row)];
      if (path) {
        path.setAttribute('class', 'pc-line' + (row.hidden ? ' off' : '') +
                          (selected.indexOf(modelOf(row)) >= 0 ? ' picked' : ''));
      }
    });
  }

  // ------------------------------------------------------------ filters: text, state, factor levels
  function setupFilters() {
    var form = document.getElementById('filters');
    if (!form) { return; }
    form.hidden = false;
    var text = document.getElementById('f-text'), state = document.getElementById('f-state');
    var factors = Array.prototype.slice.call(form.querySelectorAll('select[data-factor]'));
    var count = document.getElementById('f-count');
    function apply() {
      var q = text.value.trim().toLowerCase(), shown = 0;
      rows().forEach(function (row) {
        var m = data.models[modelOf(row)];
        var words = (row.cells[0].textContent + ' ' + row.cells[1].textContent + ' ' +
                     m.levels.join(' ')).toLowerCase();
        var ok = (!q || words.indexOf(q) >= 0) &&
          (!state.value || m.seeds.some(function (s) { return s.state === state.value; })) &&
          factors.every(function (sel) { return !sel.value || m.levels[+sel.getAttribute('data-factor')] === sel.value; });
        row.hidden = !ok;
        shown += ok ? 1 : 0;
      });
      count.textContent = shown + ' of ' + data.models.length + ' models shown';
      updateParallel();
    }
    form.addEventListener('input', apply);
    form.addEventListener('change', apply);
    form.addEventListener('reset', function () { setTimeout(apply, 0); });
    form.addEventListener('submit', function (e) { e.preventDefault(); });
    apply();
  }

  // ------------------------------------------------------------ loss curves of the ticked models
  var selected = [], boxes = {};
  function pick(i, on) {
    var at = selected.indexOf(i);
    if (on && at < 0) { selected.push(i); }
    if (!on && at >= 0) { selected.splice(at, 1); }
    while (selected.length > MAX_CURVES) { boxes[selected.shift()].checked = false; }
    if (boxes[i]) { boxes[i].checked = on; }
    drawCurves();
    updateParallel();
  }
  function band(m, key) {  // per epoch: mean and std (n - 1) over the seeds that reached it
    var by = {};
    m.seeds.forEach(function (s) {
      s.epoch.forEach(function (e, k) {
        var v = s[key][k];
        if (v !== null) { (by[e] = by[e] || []).push(key.indexOf('accuracy') >= 0 ? 100 * v : v); }
      });
    });
    return Object.keys(by).map(Number).sort(function (a, b) { return a - b; }).map(function (e) {
      var vs = by[e], n = vs.length;
      var mean = vs.reduce(function (a, b) { return a + b; }, 0) / n;
      var sd = n > 1 ? Math.sqrt(vs.reduce(function (a, v) { return a + (v - mean) * (v - mean); }, 0) / (n - 1)) : 0;
      return {e: e, mean: mean, lo: mean - sd, hi: mean + sd, n: n};
    });
  }
  function drawCurves() {
    var box = document.getElementById('curves-plot'), legend = document.getElementById('curves-legend');
    var metric = document.getElementById('c-metric');
    clear(box);
    clear(legend);
    var series = selected.map(function (i) { return {i: i, pts: band(data.models[i], metric.value)}; })
      .filter(function (s) { return s.pts.length; });
    if (!series.length) { return; }
    var all = [].concat.apply([], series.map(function (s) { return s.pts; }));
    var x0 = Math.min.apply(null, all.map(function (p) { return p.e; }));
    var x1 = Math.max.apply(null, all.map(function (p) { return p.e; }));
    var y0 = Math.min.apply(null, all.map(function (p) { return p.lo; }));
    var y1 = Math.max.apply(null, all.map(function (p) { return p.hi; }));
    if (x0 === x1) { x0 -= 0.5; x1 += 0.5; }
    if (y0 === y1) { y0 -= 0.5; y1 += 0.5; }
    var pad = (y1 - y0) * 0.05;
    y0 -= pad; y1 += pad;
    var W = 960, H = 360, L = 70, R = 20, T = 16, B = 44;
    var X = function (e) { return L + (W - L - R) * (e - x0) / (x1 - x0); };
    var Y = function (v) { return H - B - (H - T - B) * (v - y0) / (y1 - y0); };
    var plot = svg('svg', {viewBox: '0 0 ' + W + ' ' + H, 'class': 'fig'}, box);
    ticks(y0, y1, 5).forEach(function (v) {
      svg('line', {x1: L, x2: W - R, y1: Y(v), y2: Y(v), stroke: '#e3e6ea'}, plot);
      svg('text', {x: L - 6, y: Y(v) + 4, 'text-anchor': 'end', 'class': 'pc-tick'}, plot, fmt(v));
    });
    ticks(x0, x1, Math.min(10, x1 - x0)).filter(function (e) { return e === Math.round(e); }).forEach(function (e) {
      svg('text', {x: X(e), y: H - B + 18, 'text-anchor': 'middle', 'class': 'pc-tick'}, plot, fmt(e));
    });
    svg('rect', {x: L, y: T, width: W - L - R, height: H - T - B, fill: 'none', stroke: '#333333'}, plot);
    svg('text', {x: (L + W - R) / 2, y: H - 6, 'text-anchor': 'middle', 'class': 'pc-axis'}, plot, 'epoch');
    svg('text', {x: 14, y: (T + H - B) / 2, 'text-anchor': 'middle', 'class': 'pc-axis',
                 transform: 'rotate(-90 14 ' + (T + H - B) / 2 + ')'}, plot, metric.options[metric.selectedIndex].text);
    series.forEach(function (s, k) {
      var colour = OKABE_ITO[k % OKABE_ITO.length];
      var line = s.pts.map(function (p) { return X(p.e).toFixed(1) + ',' + Y(p.mean).toFixed(1); });
      var area = s.pts.map(function (p) { return X(p.e).toFixed(1) + ',' + Y(p.hi).toFixed(1); })
        .concat(s.pts.slice().reverse().map(function (p) { return X(p.e).toFixed(1) + ',' + Y(p.lo).toFixed(1); }));
      svg('polygon', {points: area.join(' '), fill: colour, 'fill-opacity': 0.18, stroke: 'none'}, plot);
      var path = svg('polyline', {points: line.join(' '), fill: 'none', stroke: colour, 'stroke-width': 2,
                                  'stroke-dasharray': k >= 4 ? '6 3' : 'none'}, plot);
      var name = data.models[s.i].name;
      svg('title', {}, path, name);
      var item = document.createElement('li'), swatch = document.createElement('span');
      swatch.className = 'swatch';
      swatch.style.background = colour;
      item.appendChild(swatch);
      var seeds = Math.max.apply(null, s.pts.map(function (p) { return p.n; }));
      item.appendChild(document.createTextNode(name + ' (' + seeds + (seeds === 1 ? ' seed)' : ' seeds)')));
      legend.appendChild(item);
    });
  }
  function setupCurves() {
    var controls = document.getElementById('curves-controls');
    if (!controls) { return; }
    controls.hidden = false;
    rows().forEach(function (row) {
      var i = modelOf(row), box = document.createElement('input');
      box.type = 'checkbox';
      box.className = 'pick';
      box.setAttribute('aria-label', 'draw the curves of ' + data.models[i].name);
      box.addEventListener('change', function () { pick(i, box.checked); });
      row.cells[0].insertBefore(box, row.cells[0].firstChild);
      boxes[i] = box;
    });
    document.getElementById('c-metric').addEventListener('change', drawCurves);
    document.getElementById('c-clear').addEventListener('click', function () {
      selected.slice().forEach(function (i) { pick(i, false); });
    });
    if (data.initial !== null) { pick(data.initial, true); }
  }

  drawParallel();
  setupFilters();
  setupCurves();
}());
