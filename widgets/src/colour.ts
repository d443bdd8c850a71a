// Colour scales shared by the heatmap and the image: the viridis lookup table, robust ranges
// (percentiles of a bounded subsample) and number labels.

// viridis at 9 stops, interpolated into a 256-entry lookup table (RGBA bytes).
const STOPS = [
  [68, 1, 84], [71, 44, 122], [59, 81, 139], [44, 113, 142], [33, 144, 141],
  [39, 173, 129], [92, 200, 99], [170, 220, 50], [253, 231, 37],
];
export const LUT = (() => {
  const lut = new Uint8ClampedArray(256 * 4);
  for (let i = 0; i < 256; i++) {
    const f = (i / 255) * (STOPS.length - 1);
    const k = Math.min(STOPS.length - 2, Math.floor(f));
    const t = f - k;
    for (let c = 0; c < 3; c++) lut[i * 4 + c] = STOPS[k][c] + (STOPS[k + 1][c] - STOPS[k][c]) * t;
    lut[i * 4 + 3] = 255;
  }
  return lut;
})();
/** The LUT as one 32-bit word per colour, in the platform's byte order (for ImageData words). */
export const LUT32 = new Uint32Array(LUT.buffer);

/** `rgb(…)` of LUT entry k. */
export function lutCss(k: number): string {
  return `rgb(${LUT[k * 4]},${LUT[k * 4 + 1]},${LUT[k * 4 + 2]})`;
}

/** Samples at most this many values for a percentile range. */
export const MAX_SAMPLES = 65536;

/**
 * The [pLo, pHi] percentiles of the finite values of `d` (only those > 0 when `positive`), on
 * an evenly strided subsample of at most `buf.length` values (odd stride: no aliasing with
 * power-of-two row lengths). Order statistics k = floor(p·(m−1)) of the m samples. Null when no
 * value qualifies.
 */
export function percentileRange(
  d: ArrayLike<number>, n: number, pLo: number, pHi: number, positive: boolean, buf: Float64Array,
): [number, number] | null {
  let stride = Math.max(1, Math.ceil(n / buf.length));
  if (stride > 1) stride |= 1;
  let m = 0;
  for (let i = 0; i < n && m < buf.length; i += stride) {
    const v = d[i];
    if (v - v === 0 && (!positive || v > 0)) buf[m++] = v; // finite (NaN and ±Inf fail v − v === 0)
  }
  if (m === 0) return null;
  const kl = Math.floor(pLo * (m - 1)), kh = Math.floor(pHi * (m - 1));
  select(buf, 0, m - 1, kl);
  const lo = buf[kl];
  select(buf, kl, m - 1, kh);
  return [lo, buf[kh]];
}

/** Partially orders a[l..r] so that a[k] is the value sorted order puts there (Hoare's select). */
function select(a: Float64Array, l: number, r: number, k: number): void {
  while (r > l) {
    const p = a[(l + r) >> 1];
    let i = l, j = r;
    while (i <= j) {
      while (a[i] < p) i++;
      while (a[j] > p) j--;
      if (i <= j) {
        const t = a[i];
        a[i] = a[j];
        a[j] = t;
        i++;
        j--;
      }
    }
    if (k <= j) r = j;
    else if (k >= i) l = i;
    else return;
  }
}

/** A short label for a number (4 significant digits, exponent when large or small). */
export function short(v: number): string {
  if (!Number.isFinite(v)) return String(v);
  const a = Math.abs(v);
  if (a !== 0 && (a >= 1e5 || a < 1e-3)) return v.toExponential(2);
  return String(Number(v.toPrecision(4)));
}
