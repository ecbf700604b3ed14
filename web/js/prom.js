// prom.js: the Prometheus text exposition format (version 0.0.4), read in
// the browser. parse(text) → Map name → [{labels, value}], with the
// # TYPE of each family in .types. Handles escaped label values (\\ \" \n),
// +Inf/-Inf/NaN, and timestamps after the value (ignored).

export function parse(text) {
  const out = new Map();
  out.types = new Map();
  for (const line of text.split('\n')) {
    if (!line || line[0] === '#') {
      const m = /^# TYPE (\S+) (\S+)/.exec(line);
      if (m) out.types.set(m[1], m[2]);
      continue;
    }
    const s = sample(line);
    if (!s) continue;
    if (!out.has(s.name)) out.set(s.name, []);
    out.get(s.name).push({ labels: s.labels, value: s.value });
  }
  return out;
}

function sample(line) {
  let i = 0;
  while (i < line.length && line[i] !== '{' && line[i] !== ' ') i++;
  const name = line.slice(0, i);
  const labels = {};
  if (line[i] === '{') {
    i++;
    while (i < line.length && line[i] !== '}') {
      let j = line.indexOf('=', i);
      if (j < 0) return null;
      const key = line.slice(i, j).trim();
      j++;
      if (line[j] !== '"') return null;
      j++;
      let val = '';
      while (j < line.length && line[j] !== '"') {
        if (line[j] === '\\' && j + 1 < line.length) {
          const c = line[j + 1];
          val += c === 'n' ? '\n' : c;
          j += 2;
        } else {
          val += line[j++];
        }
      }
      labels[key] = val;
      i = j + 1;
      if (line[i] === ',') i++;
    }
    i++;
  }
  const rest = line.slice(i).trim().split(/\s+/);
  const v = rest[0];
  const value = v === '+Inf' ? Infinity : v === '-Inf' ? -Infinity : Number(v);
  if (!name || rest[0] === undefined) return null;
  return { name, labels, value };
}

// Sum of a family's samples whose labels pass keep(labels), grouped by key(labels).
export function sumBy(metrics, name, key, keep = () => true) {
  const out = new Map();
  for (const s of metrics.get(name) || []) {
    if (!keep(s.labels)) continue;
    const k = key(s.labels);
    out.set(k, (out.get(k) || 0) + s.value);
  }
  return out;
}

// A quantile from cumulative histogram buckets [{le, count}] (counts are
// deltas over an interval, or totals), by linear interpolation inside the
// bucket, as Prometheus' histogram_quantile does.
export function quantile(q, buckets) {
  const bs = [...buckets].sort((a, b) => a.le - b.le);
  if (!bs.length) return NaN;
  const total = bs[bs.length - 1].count;
  if (!(total > 0)) return NaN;
  const rank = q * total;
  let prevLe = 0;
  let prevCount = 0;
  for (const b of bs) {
    if (b.count >= rank) {
      if (b.le === Infinity) return prevLe;
      const inBucket = b.count - prevCount;
      return inBucket > 0 ? prevLe + (b.le - prevLe) * ((rank - prevCount) / inBucket) : b.le;
    }
    prevLe = b.le;
    prevCount = b.count;
  }
  return prevLe;
}
