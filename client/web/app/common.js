// Helpers shared by the sender (send.js) and item (receive.js) pages.

import qrcode from './vendor/qrcode.mjs';

const SVG_NS = 'http://www.w3.org/2000/svg';

/**
 * Formats a byte count with a binary unit, as the rendezvous does:
 * "512 B", "1.5 KiB".
 * @param {number} n
 * @returns {string}
 */
export function formatBytes(n) {
  if (n < 1024) return `${n} B`;
  let f = n / 1024;
  let unit = 0;
  while (f >= 1023.95 && unit < 5) {
    f /= 1024;
    unit++;
  }
  return `${f.toFixed(1)} ${'KMGTPE'[unit]}iB`;
}

/**
 * Copies text to the clipboard and reports on button, falling back to a
 * selection copy where the Clipboard API is not allowed.
 * @param {string} text
 * @param {HTMLButtonElement} button its label says "Copied" for a moment
 */
export async function copyText(text, button) {
  let ok = true;
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    const ta = document.createElement('textarea');
    ta.value = text;
    ta.setAttribute('readonly', '');
    ta.className = 'offscreen';
    document.body.append(ta);
    ta.select();
    ok = document.execCommand('copy');
    ta.remove();
  }
  const label = button.dataset.label ?? button.textContent;
  button.dataset.label = label;
  button.textContent = ok ? 'Copied' : 'Copy failed: select and copy by hand';
  setTimeout(() => { button.textContent = label; }, 1500);
}

/**
 * Draws text as a QR code (error correction M) into an SVG element inside
 * container, replacing what was there.
 * @param {HTMLElement} container
 * @param {string} text
 */
export function renderQR(container, text) {
  const qr = qrcode(0, 'M');
  qr.addData(text);
  qr.make();
  const n = qr.getModuleCount();
  const quiet = 4; // modules of white border, as the QR specification asks
  let d = '';
  for (let r = 0; r < n; r++) {
    for (let c = 0; c < n; c++) {
      if (qr.isDark(r, c)) d += `M${c + quiet},${r + quiet}h1v1h-1z`;
    }
  }
  const svg = document.createElementNS(SVG_NS, 'svg');
  svg.setAttribute('viewBox', `0 0 ${n + 2 * quiet} ${n + 2 * quiet}`);
  svg.setAttribute('shape-rendering', 'crispEdges');
  svg.setAttribute('role', 'img');
  const bg = document.createElementNS(SVG_NS, 'rect');
  bg.setAttribute('width', '100%');
  bg.setAttribute('height', '100%');
  bg.setAttribute('fill', '#fff');
  const path = document.createElementNS(SVG_NS, 'path');
  path.setAttribute('d', d);
  path.setAttribute('fill', '#111');
  svg.append(bg, path);
  container.replaceChildren(svg);
}

/**
 * Shows an error message in element el (role="alert"), or hides it when
 * message is empty.
 * @param {HTMLElement} el
 * @param {string} message
 */
export function showError(el, message) {
  el.textContent = message;
  el.hidden = !message;
}
