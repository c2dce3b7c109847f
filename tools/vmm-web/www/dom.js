// SPDX-License-Identifier: MIT
// Building the DOM from data: text only ever goes in through textContent
// and attributes (never innerHTML), so a name like <img onerror=...> shows
// as those characters.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k === 'text') el.textContent = String(v);
    else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (v === true) el.setAttribute(k, '');
    else el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export function clear(el) {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
}

export function fill(el, ...children) {
  clear(el);
  append(el, children);
  return el;
}

export function $(sel) {
  return document.querySelector(sel);
}

// "1 h 02 min 05 s" from milliseconds
export function left(ms) {
  if (ms <= 0) return 'ending…';
  const s = Math.floor(ms / 1000);
  const d = Math.floor(s / 86400);
  const hh = Math.floor((s % 86400) / 3600);
  const mm = Math.floor((s % 3600) / 60);
  const ss = s % 60;
  const p = (n) => String(n).padStart(2, '0');
  if (d > 0) return `${d} d ${p(hh)} h ${p(mm)} min`;
  if (hh > 0) return `${hh} h ${p(mm)} min ${p(ss)} s`;
  return `${mm} min ${p(ss)} s`;
}

export function localTime(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? String(iso) : d.toLocaleString();
}
