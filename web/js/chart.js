// chart.js: a sparkline in SVG, small enough for a table cell. The numbers
// it draws are also given in words (aria-label and a <title>), so the
// chart is never the only way to read them: by default as live readings
// ("now, peak … over the last N readings"); `text` replaces that sentence
// for a series that is not one (the analytics' revenue per day).
const NS = 'http://www.w3.org/2000/svg';

export function sparkline(values, { width = 140, height = 32, label = '', unit = '', color = '#1f4e8c', text: said = '' } = {}) {
  const svg = document.createElementNS(NS, 'svg');
  svg.setAttribute('viewBox', `0 0 ${width} ${height}`);
  svg.setAttribute('width', width);
  svg.setAttribute('height', height);
  svg.setAttribute('class', 'spark');
  svg.setAttribute('role', 'img');
  const finite = values.filter((v) => Number.isFinite(v));
  const last = finite.length ? finite[finite.length - 1] : NaN;
  const max = Math.max(...finite, 0);
  const text = said || `${label}: ${Number.isFinite(last) ? fmt(last) + unit : 'no data'} now, peak ${fmt(max)}${unit} over the last ${values.length} readings`;
  svg.setAttribute('aria-label', text);
  const title = document.createElementNS(NS, 'title');
  title.textContent = text;
  svg.appendChild(title);
  const base = document.createElementNS(NS, 'line');
  base.setAttribute('x1', 0); base.setAttribute('x2', width);
  base.setAttribute('y1', height - 1); base.setAttribute('y2', height - 1);
  base.setAttribute('stroke', '#c8ccd2');
  svg.appendChild(base);
  if (values.length > 1) {
    const step = width / (values.length - 1);
    const top = max > 0 ? max : 1;
    const pts = values.map((v, i) => `${(i * step).toFixed(1)},${(height - 2 - ((Number.isFinite(v) ? v : 0) / top) * (height - 4)).toFixed(1)}`);
    const area = document.createElementNS(NS, 'polygon');
    area.setAttribute('points', `0,${height - 1} ${pts.join(' ')} ${width},${height - 1}`);
    area.setAttribute('fill', color);
    area.setAttribute('fill-opacity', '0.12');
    svg.appendChild(area);
    const line = document.createElementNS(NS, 'polyline');
    line.setAttribute('points', pts.join(' '));
    line.setAttribute('fill', 'none');
    line.setAttribute('stroke', color);
    line.setAttribute('stroke-width', '1.5');
    svg.appendChild(line);
  }
  return svg;
}

export function fmt(v) {
  if (!Number.isFinite(v)) return '—';
  if (v === 0) return '0';
  if (Math.abs(v) >= 100) return v.toFixed(0);
  if (Math.abs(v) >= 10) return v.toFixed(1);
  return v.toFixed(2);
}
