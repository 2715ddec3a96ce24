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
.filters{display:flex;flex-wrap:wrap;gap:6px 10px;align-items:center;margin:.4em 0 .8em;font-size:.9em}
.filters[hidden]{display:none}
.filters label{color:var(--muted)}
.filters input,.filters select,.filters button{font:inherit;padding:2px 6px}
.filters output{color:var(--muted)}
:focus-visible{outline:3px solid var(--accent);outline-offset:1px}
input.pick{margin:0 6px 0 0;vertical-align:middle}
.plot svg{max-height:420px}
path.pc-line{stroke-width:1.2;stroke-opacity:.75;cursor:pointer}
path.pc-line.off{stroke-opacity:.05}
path.pc-line.picked{stroke-width:3.5;stroke-opacity:1}
text.pc-axis{font-size:13px;font-weight:600;fill:var(--fg)}
text.pc-tick{font-size:11px;fill:var(--muted);paint-order:stroke;stroke:#fff;stroke-width:3px}
.legend{list-style:none;padding:0;margin:.3em 0;display:flex;flex-wrap:wrap;gap:4px 16px;font-size:.85em}
.swatch{display:inline-block;width:1.6em;height:.6em;margin-right:5px;vertical-align:middle;border-radius:2px}
footer{margin-top:2em;font-size:.8em;color:var(--muted)}
@media (max-width:600px){body{font-size:14px}main{padding:8px}.grid{grid-template-columns:1fr}}
@media print{
  body{font-size:10pt}main{max-width:none;padding:0}
  section,figure,tr{break-inside:avoid}
  table.sortable th{position:static}table.sortable th::after{content:""!important}
  .scroll{overflow:visible}
}
"""
