"""One self-contained HTML page to browse every layer's and head's attention.

No network: the data, CSS and JavaScript are inline. The page draws the selected map on
`<canvas id="heatmap">`, marks the canvas `data-rendered="true"` with `data-cells` (cells drawn) once
drawn, and shows "query -> key: weight" for the cell under the pointer (in `#hover-info`). A link may
name the view: `page.html#layer=1&head=2&cell=3,1` (head may be `mean`).
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence

import numpy as np

_CSS = """
body { font-family: system-ui, sans-serif; margin: 16px; color: #222; }
#controls { margin-bottom: 8px; display: flex; gap: 16px; align-items: center; flex-wrap: wrap; }
#hover-info { font-family: ui-monospace, monospace; min-height: 1.4em; margin: 6px 0; }
#legend { display: flex; align-items: center; gap: 6px; font-size: 12px; }
#legend .ramp { width: 160px; height: 12px;
  background: linear-gradient(to right, #440154, #3b528b, #21918c, #5ec962, #fde725); }
#legend .masked { width: 14px; height: 12px; border: 1px solid #999;
  background: repeating-linear-gradient(45deg, #d9d9d9 0 3px, #9a9a9a 3px 4px); }
#tooltip { position: fixed; pointer-events: none; background: rgba(0,0,0,.8); color: #fff;
  padding: 2px 6px; border-radius: 3px; font: 12px ui-monospace, monospace; display: none; }
canvas { border: 1px solid #ccc; }
"""

_JS = r"""
(function () {
  const D = JSON.parse(document.getElementById("gptkit-data").textContent);
  const T = D.tokens.length, L = D.attn.length, H = D.attn[0].length;
  const layerSel = document.getElementById("layer"), headSel = document.getElementById("head");
  const canvas = document.getElementById("heatmap"), ctx = canvas.getContext("2d");
  const info = document.getElementById("hover-info"), tip = document.getElementById("tooltip");
  for (let l = 0; l < L; l++) layerSel.add(new Option("layer " + l, String(l)));
  headSel.add(new Option("mean of heads", "mean"));
  for (let h = 0; h < H; h++) headSel.add(new Option("head " + h, String(h)));
  layerSel.value = String(D.layer); headSel.value = D.head;

  // viridis, 5 stops, linearly interpolated
  const STOPS = [[68,1,84],[59,82,139],[33,145,140],[94,201,98],[253,231,37]];
  function colour(t) {
    t = Math.min(1, Math.max(0, t)) * (STOPS.length - 1);
    const i = Math.min(STOPS.length - 2, Math.floor(t)), f = t - i, a = STOPS[i], b = STOPS[i + 1];
    return "rgb(" + a.map((v, k) => Math.round(v + f * (b[k] - v))).join(",") + ")";
  }
  // Rows hold only keys 0..i (the rest are masked by the causal rule), so row i has i+1 weights.
  function matrix(l, h) {
    if (h !== "mean") return D.attn[l][Number(h)];
    return D.attn[l][0].map((row, i) => row.map((_, j) => {
      let s = 0; for (let k = 0; k < H; k++) s += D.attn[l][k][i][j]; return s / H;
    }));
  }
  const cell = Math.max(8, Math.min(36, Math.floor(640 / T)));
  ctx.font = "12px sans-serif";
  const margin = 12 + Math.max(...D.tokens.map(t => ctx.measureText(t).width));
  canvas.width = margin + T * cell + 4; canvas.height = margin + T * cell + 4;
  let M = null;

  function draw() {
    const l = Number(layerSel.value), h = headSel.value;
    M = matrix(l, h);
    let vmax = 0; M.forEach(r => r.forEach(v => { vmax = Math.max(vmax, v); }));
    vmax = vmax || 1;
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, canvas.width, canvas.height);
    let cells = 0;
    for (let i = 0; i < T; i++) for (let j = 0; j < T; j++) {
      const x = margin + j * cell, y = margin + i * cell;
      if (j <= i) { ctx.fillStyle = colour(M[i][j] / vmax); ctx.fillRect(x, y, cell, cell); }
      else {
        ctx.fillStyle = "#d9d9d9"; ctx.fillRect(x, y, cell, cell);
        ctx.strokeStyle = "#9a9a9a"; ctx.beginPath();
        ctx.moveTo(x, y + cell); ctx.lineTo(x + cell, y); ctx.stroke();
      }
      cells++;
    }
    ctx.fillStyle = "#222"; ctx.font = Math.min(12, cell) + "px sans-serif";
    ctx.textBaseline = "middle";
    for (let i = 0; i < T; i++) {
      ctx.textAlign = "right"; ctx.fillText(D.tokens[i], margin - 6, margin + (i + 0.5) * cell);
      ctx.save(); ctx.translate(margin + (i + 0.5) * cell, margin - 6); ctx.rotate(-Math.PI / 2);
      ctx.textAlign = "left"; ctx.fillText(D.tokens[i], 0, 0); ctx.restore();
    }
    document.getElementById("vmax").textContent = vmax.toFixed(3);
    canvas.dataset.layer = String(l); canvas.dataset.head = h;
    canvas.dataset.cells = String(cells); canvas.dataset.rendered = "true";
  }
  function cellAt(ev) {
    const r = canvas.getBoundingClientRect();
    const j = Math.floor((ev.clientX - r.left - margin) / cell), i = Math.floor((ev.clientY - r.top - margin) / cell);
    return (i >= 0 && i < T && j >= 0 && j < T) ? [i, j] : null;
  }
  function describe(i, j) {
    return D.tokens[i] + " (" + i + ") -> " + D.tokens[j] + " (" + j + "): " +
      (j <= i ? M[i][j].toFixed(4) : "masked (future)");
  }
  canvas.addEventListener("mousemove", ev => {
    const c = cellAt(ev);
    if (!c) { tip.style.display = "none"; return; }
    const text = describe(c[0], c[1]);
    info.textContent = text; tip.textContent = text; tip.style.display = "block";
    tip.style.left = (ev.clientX + 12) + "px"; tip.style.top = (ev.clientY + 12) + "px";
  });
  canvas.addEventListener("mouseleave", () => { tip.style.display = "none"; });
  function setHash() {
    history.replaceState(null, "", "#layer=" + layerSel.value + "&head=" + headSel.value);
  }
  layerSel.addEventListener("change", () => { draw(); setHash(); });
  headSel.addEventListener("change", () => { draw(); setHash(); });
  // A link can name the view: #layer=1&head=2 (or head=mean) and optionally &cell=QUERY,KEY.
  const want = new URLSearchParams(location.hash.slice(1));
  if (want.has("layer") && Number(want.get("layer")) < L) layerSel.value = want.get("layer");
  if (want.has("head") && [...headSel.options].some(o => o.value === want.get("head"))) headSel.value = want.get("head");
  draw();
  const cellWanted = (want.get("cell") || "").split(",").map(Number);
  if (cellWanted.length === 2 && cellWanted.every(n => Number.isInteger(n) && n >= 0 && n < T)) {
    info.textContent = describe(cellWanted[0], cellWanted[1]);
  }
})();
"""


def attention_page(
    attentions: np.ndarray,
    tokens: Sequence[str],
    *,
    title: str = "gptkit attention",
    layer: int = 0,
    head: int | str = "mean",
    decimals: int = 4,
) -> str:
    """The HTML text for (n_layer, n_head, T, T) attention probabilities over `tokens`.

    Only the lower triangle (keys a query may see) is embedded: the rest is masked by construction,
    and dropping it halves the page for long inputs. `layer`/`head` choose the map shown first.
    """
    attentions = np.asarray(attentions, dtype=np.float64)
    if attentions.ndim != 4 or attentions.shape[2] != attentions.shape[3] or attentions.shape[2] != len(tokens):
        raise ValueError(f"expected (n_layer, n_head, T, T) with T={len(tokens)}, got {attentions.shape}")
    L, H, T, _ = attentions.shape
    rounded = np.round(attentions, decimals)
    lower = [[[rounded[layer_, h, i, : i + 1].tolist() for i in range(T)] for h in range(H)] for layer_ in range(L)]
    data = {"tokens": list(tokens), "attn": lower, "layer": layer % L, "head": str(head)}
    # "</" inside a <script> block would end it early; JSON allows "\/" for "/".
    payload = json.dumps(data, ensure_ascii=False, separators=(",", ":")).replace("</", "<\\/").replace("<!--", "<\\u0021--")
    esc = html.escape(title)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{esc}</title>
<style>{_CSS}</style>
</head>
<body>
<h1 style="font-size:18px">{esc}</h1>
<p style="font-size:13px">Row = query token (attending), column = key token (attended to). Each row sums
to 1. Hatched grey cells are the causal mask: a token never sees later tokens.
{L} layers x {H} heads, {T} tokens.</p>
<div id="controls">
  <label>layer <select id="layer"></select></label>
  <label>head <select id="head"></select></label>
  <span id="legend"><span>0</span><span class="ramp"></span><span id="vmax"></span>
    <span class="masked"></span><span>masked</span></span>
</div>
<div id="hover-info">hover over a cell</div>
<canvas id="heatmap" data-rendered="false"></canvas>
<div id="tooltip"></div>
<script type="application/json" id="gptkit-data">{payload}</script>
<script>{_JS}</script>
</body>
</html>
"""
