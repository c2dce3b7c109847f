// SPDX-License-Identifier: MIT
// A small line chart as inline SVG, built with DOM calls (no markup strings).

const NS = 'http://www.w3.org/2000/svg';

function svg(tag, attrs) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  return el;
}

// points: [{t: ms, v: number}]; returns an <svg> with a title for screen readers
export function lineChart(points, label, unit) {
  const W = 320, H = 100, P = 6;
  const root = svg('svg', { viewBox: `0 0 ${W} ${H}`, class: 'chart', role: 'img' });
  const title = svg('title', {});
  const last = points.length ? points[points.length - 1].v : null;
  title.textContent = points.length
    ? `${label}: ${points.length} reports, last ${last} ${unit}`
    : `${label}: no reports yet`;
  root.append(title);
  root.append(svg('line', { x1: P, y1: H - P, x2: W - P, y2: H - P, class: 'axis' }));
  if (points.length < 2) {
    const t = svg('text', { x: P + 4, y: H / 2 });
    t.textContent = points.length ? `${last} ${unit}` : 'no reports yet';
    root.append(t);
    return root;
  }
  const t0 = points[0].t, t1 = points[points.length - 1].t || t0 + 1;
  const vmax = Math.max(...points.map((p) => p.v), 1e-9);
  const x = (t) => P + ((t - t0) / Math.max(t1 - t0, 1)) * (W - 2 * P);
  const y = (v) => H - P - (v / vmax) * (H - 2 * P);
  const pts = points.map((p) => `${x(p.t).toFixed(1)},${y(p.v).toFixed(1)}`).join(' ');
  root.append(svg('polyline', { points: pts, class: 'line' }));
  const top = svg('text', { x: P + 2, y: P + 8 });
  top.textContent = `${vmax} ${unit}`;
  root.append(top);
  return root;
}
