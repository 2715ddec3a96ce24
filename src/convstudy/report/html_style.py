"""The report page's inline CSS (phone-friendly, printable) and its one script (sorting table columns)."""

CSS = """
:root{--fg:#1b1f24;--muted:#5b6470;--line:#d8dde3;--bg:#fff;--accent:#0072B2;--warn:#D55E00}
*{box-sizing:border-box}
body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Liberation Sans",sans-serif;color:var(--fg);background:var(--bg)}
main{max-width:1180px;margin:0 auto;padding:12px 16px 40px}
h1{font-size:1.6em;margin:.4em 0 .2em;overflow-wrap:anywhere}
h2{font-size:1.25em;margin:1.6em 0 .5em;border-bottom:2px solid var(--line);padding-bottom:.2em}
h3{font-size:1em;margin:.8em 0 .3em}
.desc{font-size:1.05em;color:var(--muted);overflow-wrap:anywhere;white-space:pre-wrap}
.note{border-left:4px solid var(--accent);background:#eef5fb;padding:.5em .8em;margin:.8em 0}
.note.warn{border-color:var(--warn);background:#fdf0e8}
.facts{display:grid;grid-template-columns:repeat(auto-fit,minmax(280px,1fr));gap:0 24px}
dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 12px;margin:0;font-size:.9em}
dt{color:var(--muted)}dd{margin:0;overflow-wrap:anywhere}
.scroll{overflow-x:auto;max-width:100%;margin:0}
table{border-collapse:collapse;font-size:.88em}
th,td{padding:4px 8px;border-bottom:1px solid var(--line);text-align:right;white-space:nowrap}
td.text,td.name,th:first-child,th:nth-child(2){text-align:left}
td.text{white-space:normal;min-width:20em;max-width:34em}
table.sortable th{cursor:pointer;user-select:none;background:#f4f6f8;position:sticky;top:0}
table.sortable th[aria-sort=ascending]::after{content:" ▲"}
table.sortable th[aria-sort=descending]::after{content:" ▼"}
tr.best td{font-weight:600}
td.bad{color:var(--warn);font-weight:600}
.small,figcaption{font-size:.85em;color:var(--muted)}
figure{margin:.5em 0}
svg.fig{width:100%;height:auto;display:block}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(340px,1fr));gap:14px}
.card{border:1px solid var(--line);border-radius:6px;padding:6px;margin:0}
.pair{display:flex;flex-wrap:wrap;gap:24px;align-items:flex-start}
table.cm td{min-width:2.6em;text-align:center}
table.cm td.ink{color:#fff}
table.cm caption,table.perclass caption{caption-side:top;text-align:left;font-size:.9em;color:var(--muted);padding-bottom:4px}
td.barcell{width:120px}
.bar{display:block;height:.8em;background:var(--accent);border-radius:2px}
.mistakes{display:grid;grid-template-columns:repeat(auto-fill,minmax(84px,1fr));gap:8px}
.mistake{margin:0;text-align:center}
.mistake img{width:64px;height:64px;image-rendering:pixelated;border:1px solid var(--line)}
.mistake figcaption{font-size:.75em;line-height:1.25}
footer{margin-top:2em;font-size:.8em;color:var(--muted)}
@media (max-width:600px){body{font-size:14px}main{padding:8px}.grid{grid-template-columns:1fr}}
@media print{
  body{font-size:10pt}main{max-width:none;padding:0}
  section,figure,tr{break-inside:avoid}
  table.sortable th{position:static}table.sortable th::after{content:""!important}
  .scroll{overflow:visible}
}
"""

# Sorts a table by the clicked column: numeric on data-v when every cell has one, else by text.
SORT_JS = """
document.querySelectorAll('table.sortable').forEach(function (table) {
  var heads = table.tHead.rows[0].cells;
  Array.prototype.forEach.call(heads, function (th, col) {
    function sort() {
      var asc = th.getAttribute('aria-sort') !== 'ascending';
      Array.prototype.forEach.call(heads, function (h) { h.removeAttribute('aria-sort'); });
      th.setAttribute('aria-sort', asc ? 'ascending' : 'descending');
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      var key = function (row) {
        var cell = row.cells[col];
        var v = cell.getAttribute('data-v');
        var n = v === null ? NaN : parseFloat(v);
        return isNaN(n) ? cell.textContent.trim().toLowerCase() : n;
      };
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        if (typeof x !== typeof y) { return typeof x === 'number' ? -1 : 1; }
        return (x < y ? -1 : x > y ? 1 : 0) * (asc ? 1 : -1);
      });
      rows.forEach(function (row) { body.appendChild(row); });
    }
    th.addEventListener('click', sort);
    th.addEventListener('keydown', function (e) { if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); sort(); } });
  });
});
"""
