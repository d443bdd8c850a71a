//! SQL functions over array columns (an area detector's `calib` or `image`, any raw array):
//! ROI sums and counts, thresholds, projections, centres of mass, evaluated per event.
//!
//! Array columns are flat in C order (what Arrow and polars hold); their shape travels beside
//! them ([`Shapes`], from the Arrow field's `shape` metadata) and the functions find it by the
//! column's name. A function over a 3-D `(segments, rows, cols)` array works on segment 0, or
//! on the segment named by the extra first argument of `roi_*(x, seg, r0, r1, c0, c1)`.
//!
//! | function | per event |
//! |---|---|
//! | `roi_sum(x, r0, r1, c0, c1)`, `roi_mean`, `roi_max` | sum / mean / max of rows `r0 ≤ r < r1`, cols `c0 ≤ c < c1` |
//! | `roi_count(x, r0, r1, c0, c1, thr)` | elements of the ROI `> thr` |
//! | `threshold(x, lo[, hi])` | the array with elements outside `[lo, hi]` set to 0 |
//! | `count_above(x, thr)`, `sum_above(x, thr)` | elements `> thr`, and their sum |
//! | `projection(x, axis[, r0, r1, c0, c1])` | numpy's `x.sum(axis)` of the 2-D array (or its ROI): 1-D |
//! | `center_of_mass(x)` | `[row, col]` weighted by the values (NaN when they sum to 0) |
//! | `radial_q(x, cx, cy, dist_mm, energy_kev, qmin, qmax, nbins[, pol[, solid_angle]])` | `radial` in q = 4π sin(θ)/λ (Å⁻¹): the bins' size from the geometry, 2θ = atan(distance in the detector plane / dist_mm), λ = 12.3984 / energy_kev Å; `pol` (fraction polarized along the image's columns) divides each pixel by P(1 − sin²2θ cos²φ) + (1 − P)(1 − sin²2θ sin²φ), `solid_angle = 1` by cos³2θ |
//! | `photons(x, adu_per_photon)` | photons in the event: each element rounds to `floor(v/adu + 0.5)` photons, negatives count 0, NaN none |
//! | `droplets(x, thr[, join_thr])` | droplets: 4-connected groups of elements `> join_thr` (default `thr`) holding one `> thr`, per segment |
//! | `mask(x, 'file.npy')` | the array with the elements where the mask is 0 set to 0 (psana's `calib * mask`); the mask has the array's shape |
//! | `radial(x, cx, cy, rmin, rmax, nbins)` | the mean of each ring of an image: bin (r, c) at `sqrt((c−cx)² + (r−cy)²)` pixels is in ring `floor((radius − rmin)/(rmax − rmin)·nbins)` for `rmin ≤ radius < rmax`; gaps and masked pixels ([`Coverage`]) are left out; an empty ring is NaN |
//!
//! Sums run in f64 in C order (numpy's pairwise summation may differ in the last bits; the tests
//! compare with a tolerance of a few ulps where numpy would sum pairwise).

use std::collections::BTreeMap;
use std::sync::Arc;

use polars::prelude::*;
use polars::sql::FunctionRegistry;

/// Column name → shape (C order) of the array each row holds.
pub type Shapes = BTreeMap<String, Vec<usize>>;

/// Image column name → what the geometry says of its bins: which hold a good pixel (not a gap
/// between segments, not masked), what `radial` averages over, and their size (for q).
/// Images without an entry count every bin and have no pixel size.
pub type Coverage = BTreeMap<String, ImageBins>;

#[derive(Clone, Debug)]
pub struct ImageBins {
    pub good: Arc<Vec<bool>>,
    /// Bin size in µm (the geometry's pixel scale).
    pub pixel_um: f64,
}

/// The shapes of the fixed-size array fields of an Arrow schema (their `shape` metadata).
pub fn shapes_of(schema: &arrow_schema::Schema) -> Shapes {
    schema
        .fields()
        .iter()
        .filter_map(|f| {
            let shape = f.metadata().get("shape")?;
            let dims: Option<Vec<usize>> = shape.split(',').map(|d| d.trim().parse().ok()).collect();
            Some((f.name().clone(), dims?))
        })
        .collect()
}

/// The function names [`ArrayFunctions`] serves.
pub const FUNCTIONS: [&str; 14] = [
    "roi_sum",
    "roi_mean",
    "roi_max",
    "roi_count",
    "threshold",
    "count_above",
    "sum_above",
    "projection",
    "center_of_mass",
    "radial",
    "photons",
    "droplets",
    "mask",
    "radial_q",
];

/// The array functions for one set of column shapes, as a polars SQL function registry.
pub struct ArrayFunctions {
    shapes: Arc<Shapes>,
    coverage: Arc<Coverage>,
}

impl ArrayFunctions {
    pub fn new(shapes: Arc<Shapes>) -> Self {
        ArrayFunctions { shapes, coverage: Arc::default() }
    }

    pub fn with_coverage(mut self, coverage: Arc<Coverage>) -> Self {
        self.coverage = coverage;
        self
    }
}

impl FunctionRegistry for ArrayFunctions {
    fn register(&mut self, name: &str, _fun: UserDefinedFunction) -> PolarsResult<()> {
        polars_bail!(InvalidOperation: "cannot register {name}: beamtime's array functions are fixed")
    }

    fn get_udf(&self, name: &str) -> PolarsResult<Option<UserDefinedFunction>> {
        let lower = name.to_ascii_lowercase();
        let Some(f) = Function::from_name(&lower) else { return Ok(crate::event_functions::udf(&lower)) };
        let (shapes, coverage) = (self.shapes.clone(), self.coverage.clone());
        let call = move |s: &mut [Column]| -> PolarsResult<Column> { f.call(s, &shapes, &coverage) };
        let output = move |_: &Schema, fields: &[Field]| -> PolarsResult<Field> { f.output(fields) };
        Ok(Some(UserDefinedFunction::new(lower.into(), BaseColumnUdf::new(call, output))))
    }

    fn contains(&self, name: &str) -> bool {
        Function::from_name(&name.to_ascii_lowercase()).is_some() || crate::event_functions::is_event_function(name)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Function {
    RoiSum,
    RoiMean,
    RoiMax,
    RoiCount,
    Threshold,
    CountAbove,
    SumAbove,
    Projection,
    CenterOfMass,
    Radial,
    Photons,
    Droplets,
    Mask,
    RadialQ,
}

impl Function {
    fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "roi_sum" => Function::RoiSum,
            "roi_mean" => Function::RoiMean,
            "roi_max" => Function::RoiMax,
            "roi_count" => Function::RoiCount,
            "threshold" => Function::Threshold,
            "count_above" => Function::CountAbove,
            "sum_above" => Function::SumAbove,
            "projection" => Function::Projection,
            "center_of_mass" => Function::CenterOfMass,
            "radial" => Function::Radial,
            "photons" => Function::Photons,
            "droplets" => Function::Droplets,
            "mask" => Function::Mask,
            "radial_q" => Function::RadialQ,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        FUNCTIONS[self as usize]
    }

    /// The output field (the input array's name is kept: nested calls find its shape).
    fn output(self, fields: &[Field]) -> PolarsResult<Field> {
        let Some(x) = fields.first() else { polars_bail!(InvalidOperation: "{}() needs an array argument", self.name()) };
        let dtype = match self {
            Function::RoiCount | Function::CountAbove | Function::Photons | Function::Droplets => {
                DataType::UInt64
            }
            Function::Threshold | Function::Mask => match x.dtype() {
                DataType::Array(inner, w) if **inner == DataType::Float32 => {
                    DataType::Array(inner.clone(), *w)
                }
                DataType::Array(_, w) => DataType::Array(Box::new(DataType::Float64), *w),
                other => other.clone(),
            },
            // Their lengths depend on the arguments: variable-length lists.
            Function::Projection
            | Function::CenterOfMass
            | Function::Radial
            | Function::RadialQ => DataType::List(Box::new(DataType::Float64)),
            _ => DataType::Float64,
        };
        Ok(Field::new(x.name().clone(), dtype))
    }

    fn call(self, s: &mut [Column], shapes: &Shapes, coverage: &Coverage) -> PolarsResult<Column> {
        let name = self.name();
        let x = s.first().ok_or_else(|| polars_err!(InvalidOperation: "{name}() needs an array argument"))?;
        let arrays = Arrays::of(name, x)?;
        let shape = shapes
            .get(x.name().as_str())
            .cloned()
            .unwrap_or_else(|| vec![arrays.width]);
        if shape.iter().product::<usize>() != arrays.width {
            polars_bail!(InvalidOperation: "{name}(): `{}` holds {} values per event, its shape {:?} says {}", x.name(), arrays.width, shape, shape.iter().product::<usize>());
        }
        if self == Function::Mask {
            let [_, file] = &*s else {
                polars_bail!(InvalidOperation: "mask(x, 'file.npy'): got {} arguments", s.len())
            };
            let good = crate::masks::load(&string_arg(name, 2, file)?, &shape)?;
            return arrays.map_indexed(x.name().clone(), |i, v| if good[i] { v } else { 0.0 });
        }
        let args: Vec<f64> = s[1..]
            .iter()
            .enumerate()
            .map(|(i, c)| scalar_arg(name, i + 2, c))
            .collect::<PolarsResult<_>>()?;
        let out_name = x.name().clone();
        let n = arrays.len;
        Ok(match self {
            Function::RoiSum | Function::RoiMean | Function::RoiMax | Function::RoiCount => {
                let roi = Roi::from_args(name, &shape, &args, self == Function::RoiCount)?;
                let thr = if self == Function::RoiCount { args[args.len() - 1] } else { 0.0 };
                let values: Vec<Option<f64>> = (0..n)
                    .map(|row| {
                        let v = arrays.row(row)?;
                        let mut acc = Acc::default();
                        roi.for_each(|i| acc.add(v.get(i)));
                        Some(match self {
                            Function::RoiSum => acc.sum,
                            Function::RoiMean => acc.sum / acc.n as f64,
                            Function::RoiMax => acc.max,
                            _ => {
                                let mut count = 0u64;
                                roi.for_each(|i| count += (v.get(i) > thr) as u64);
                                count as f64
                            }
                        })
                    })
                    .collect();
                if self == Function::RoiCount {
                    UInt64Chunked::from_iter_options(out_name, values.into_iter().map(|v| v.map(|x| x as u64))).into_column()
                } else {
                    Float64Chunked::from_iter_options(out_name, values.into_iter()).into_column()
                }
            }
            Function::CountAbove | Function::SumAbove => {
                let [thr] = args[..] else { polars_bail!(InvalidOperation: "{name}(x, thr): one threshold, got {} arguments", args.len() + 1) };
                let per_row = |row: usize| -> Option<(u64, f64)> {
                    let v = arrays.row(row)?;
                    let (mut count, mut sum) = (0u64, 0f64);
                    for i in 0..arrays.width {
                        let x = v.get(i);
                        if x > thr {
                            count += 1;
                            sum += x;
                        }
                    }
                    Some((count, sum))
                };
                if self == Function::CountAbove {
                    UInt64Chunked::from_iter_options(out_name, (0..n).map(|r| per_row(r).map(|p| p.0))).into_column()
                } else {
                    Float64Chunked::from_iter_options(out_name, (0..n).map(|r| per_row(r).map(|p| p.1))).into_column()
                }
            }
            Function::Threshold => {
                let (lo, hi) = match args[..] {
                    [lo] => (lo, f64::INFINITY),
                    [lo, hi] => (lo, hi),
                    _ => polars_bail!(InvalidOperation: "threshold(x, lo[, hi]): got {} arguments", args.len() + 1),
                };
                arrays.map_values(out_name, |v| if v >= lo && v <= hi { v } else { 0.0 })?
            }
            Function::Projection => {
                let (axis, rest) = args.split_first().ok_or_else(|| polars_err!(InvalidOperation: "projection(x, axis[, r0, r1, c0, c1]): the axis is missing"))?;
                let plane = plane_of(name, &shape)?;
                let roi = if rest.is_empty() { Roi::whole(plane) } else { Roi::from_args(name, &[plane.0, plane.1], rest, false)? };
                let axis = match *axis {
                    a if a == 0.0 => 0,
                    a if a == 1.0 => 1,
                    a => polars_bail!(InvalidOperation: "projection(x, axis): axis {a} of a 2-D array must be 0 (sum over rows) or 1 (sum over columns)"),
                };
                let len = if axis == 0 { roi.c1 - roi.c0 } else { roi.r1 - roi.r0 };
                let rows: Vec<Option<Series>> = (0..n)
                    .map(|row| {
                        let v = arrays.row(row)?;
                        let mut out = vec![0f64; len];
                        roi.for_each_rc(|r, c, i| out[if axis == 0 { c - roi.c0 } else { r - roi.r0 }] += v.get(i));
                        Some(Series::new(PlSmallStr::EMPTY, out))
                    })
                    .collect();
                ListChunked::from_iter(rows).with_name(out_name).into_column()
            }
            Function::CenterOfMass => {
                let plane = plane_of(name, &shape)?;
                let roi = Roi::whole(plane);
                let rows: Vec<Option<Series>> = (0..n)
                    .map(|row| {
                        let v = arrays.row(row)?;
                        let (mut w, mut wr, mut wc) = (0f64, 0f64, 0f64);
                        roi.for_each_rc(|r, c, i| {
                            let x = v.get(i);
                            w += x;
                            wr += x * r as f64;
                            wc += x * c as f64;
                        });
                        let com = if w == 0.0 { vec![f64::NAN, f64::NAN] } else { vec![wr / w, wc / w] };
                        Some(Series::new(PlSmallStr::EMPTY, com))
                    })
                    .collect();
                ListChunked::from_iter(rows).with_name(out_name).into_column()
            }
            Function::Radial | Function::RadialQ => {
                let [rows, cols] = shape[..] else {
                    polars_bail!(InvalidOperation: "{name}(): needs an image (2-D); `{}` has shape {shape:?} (use <det>.raw.image)", x.name())
                };
                let bins = coverage.get(x.name().as_str());
                if bins.is_some_and(|b| b.good.len() != rows * cols) {
                    polars_bail!(InvalidOperation: "{name}(): the coverage of `{}` does not match its {rows}×{cols} shape", x.name());
                }
                let pixel_um = bins.map(|b| b.pixel_um);
                let good = bins.map(|b| b.good.clone());
                let key = RingKey {
                    q: self == Function::RadialQ,
                    args: args.iter().map(|a| a.to_bits()).collect(),
                    shape: (rows, cols),
                    pixel_um: pixel_um.map(f64::to_bits),
                    good: good.clone(),
                };
                let rings = ring_map(key, || {
                    let rings = if self == Function::Radial {
                        Rings::radial(&args, rows, cols)?
                    } else {
                        let pixel_um = pixel_um.filter(|p| *p > 0.0).ok_or_else(|| {
                            polars_err!(InvalidOperation: "radial_q(): `{}` has no pixel size: q needs an image drawn from a detector's geometry (<det>.raw.image)", x.name())
                        })?;
                        Rings::in_q(&args, rows, cols, pixel_um)?
                    };
                    // Gaps and masked pixels belong to no ring.
                    let members: Vec<(u32, u32)> = rings.ring.iter().enumerate().filter(|&(i, &k)| k != u32::MAX && good.as_ref().is_none_or(|g| g[i])).map(|(i, &k)| (i as u32, k)).collect();
                    let mut counts = vec![0u64; rings.nbins];
                    members.iter().for_each(|&(_, k)| counts[k as usize] += 1);
                    Ok(Rings { members, counts, ..rings })
                })?;
                let nbins = rings.nbins;
                let members = &rings.members;
                let rows_out: Vec<Option<Series>> = (0..n)
                    .map(|row| {
                        let v = arrays.row(row)?;
                        let mut sum = vec![0f64; nbins];
                        // One loop per value type and weighting, pixels in ascending order.
                        match (v, &rings.weight) {
                            (Row::F32(x), None) => members.iter().for_each(|&(i, k)| sum[k as usize] += x[i as usize] as f64),
                            (Row::F64(x), None) => members.iter().for_each(|&(i, k)| sum[k as usize] += x[i as usize]),
                            (Row::F32(x), Some(w)) => members.iter().for_each(|&(i, k)| sum[k as usize] += x[i as usize] as f64 * w[i as usize]),
                            (Row::F64(x), Some(w)) => members.iter().for_each(|&(i, k)| sum[k as usize] += x[i as usize] * w[i as usize]),
                        }
                        let mean: Vec<f64> = sum.iter().zip(&rings.counts).map(|(s, &n)| if n == 0 { f64::NAN } else { s / n as f64 }).collect();
                        Some(Series::new(PlSmallStr::EMPTY, mean))
                    })
                    .collect();
                ListChunked::from_iter(rows_out).with_name(out_name).into_column()
            }
            Function::Photons => {
                let [adu] = args[..] else {
                    polars_bail!(InvalidOperation: "photons(x, adu_per_photon): got {} arguments", args.len() + 1)
                };
                if !(adu > 0.0 && adu.is_finite()) {
                    polars_bail!(InvalidOperation: "photons(): adu_per_photon = {adu} must be a positive number");
                }
                let inv = 1.0 / adu;
                let count = |row: usize| -> Option<u64> {
                    let v = arrays.row(row)?;
                    let mut n = 0u64;
                    for i in 0..arrays.width {
                        // Rounded photons; NaN and negatives (noise below zero) count none.
                        let k = (v.get(i) * inv + 0.5).floor();
                        if k > 0.0 {
                            n += k as u64;
                        }
                    }
                    Some(n)
                };
                UInt64Chunked::from_iter_options(out_name, (0..n).map(count)).into_column()
            }
            Function::Droplets => {
                let (seed, join) = match args[..] {
                    [thr] => (thr, thr),
                    [thr, join] if join <= thr => (thr, join),
                    [thr, join] => {
                        polars_bail!(InvalidOperation: "droplets(x, thr, join_thr): join_thr = {join} must not exceed thr = {thr}")
                    }
                    _ => {
                        polars_bail!(InvalidOperation: "droplets(x, thr[, join_thr]): got {} arguments", args.len() + 1)
                    }
                };
                let (rows, cols) = plane_of(name, &shape)?;
                let mut finder = crate::droplets::Finder::new(rows, cols);
                let count = |row: usize| -> Option<u64> {
                    let v = arrays.row(row)?;
                    Some(
                        (0..arrays.width / (rows * cols))
                            .map(|seg| finder.count(|i| v.get(seg * rows * cols + i), seed, join))
                            .sum(),
                    )
                };
                UInt64Chunked::from_iter_options(out_name, (0..n).map(count)).into_column()
            }
            Function::Mask => unreachable!("handled before the numeric arguments"),
        })
    }
}

fn string_arg(name: &str, position: usize, c: &Column) -> PolarsResult<String> {
    let v = c
        .get(0)
        .map_err(|_| polars_err!(InvalidOperation: "{name}(): argument {position} is empty"))?;
    match v {
        AnyValue::String(s) => Ok(s.to_string()),
        AnyValue::StringOwned(s) => Ok(s.to_string()),
        other => {
            polars_bail!(InvalidOperation: "{name}(): argument {position} must be a file name in quotes ('mask.npy'), got {other}")
        }
    }
}

/// Which ring each image bin falls in (`u32::MAX`: none), and a per-bin factor (corrections).
struct Rings {
    ring: Vec<u32>,
    /// (bin, ring) of the bins in a ring (good ones only), in bin order; pixels per ring.
    members: Vec<(u32, u32)>,
    counts: Vec<u64>,
    nbins: usize,
    weight: Option<Vec<f64>>,
}

/// What a ring map depends on. The coverage is compared by address (a new geometry, mask or
/// detector comes as a new `Arc`), and kept alive by the key so that no other takes it.
#[derive(Clone)]
struct RingKey {
    q: bool,
    args: Vec<u64>,
    shape: (usize, usize),
    pixel_um: Option<u64>,
    good: Option<Arc<Vec<bool>>>,
}

impl PartialEq for RingKey {
    fn eq(&self, o: &Self) -> bool {
        let same_good = match (&self.good, &o.good) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        same_good && (self.q, &self.args, self.shape, self.pixel_um) == (o.q, &o.args, o.shape, o.pixel_um)
    }
}

/// The ring maps of the last few calls: a map is a pass over every pixel with a square root,
/// as costly as the profile itself, and the same for every batch of a run.
fn ring_map(key: RingKey, make: impl FnOnce() -> PolarsResult<Rings>) -> PolarsResult<Arc<Rings>> {
    static MAPS: std::sync::Mutex<Vec<(RingKey, Arc<Rings>)>> = std::sync::Mutex::new(Vec::new());
    if let Some((_, r)) = MAPS.lock().unwrap_or_else(|p| p.into_inner()).iter().find(|(k, _)| *k == key) {
        return Ok(r.clone());
    }
    let rings = Arc::new(make()?);
    let mut maps = MAPS.lock().unwrap_or_else(|p| p.into_inner());
    if maps.len() >= 8 {
        maps.remove(0);
    }
    maps.push((key, rings.clone()));
    Ok(rings)
}

/// hc in keV·Å (CODATA 2018): λ = HC / E.
const HC_KEV_ANGSTROM: f64 = 12.398_419_843_320_026;

fn check_bins(name: &str, lo: f64, hi: f64, nbins: f64) -> PolarsResult<usize> {
    if !(nbins >= 1.0 && nbins.fract() == 0.0 && nbins <= 1.0e6) || !(lo >= 0.0 && hi > lo) {
        polars_bail!(InvalidOperation: "{name}(): nbins = {nbins} must be a whole number ≥ 1 and 0 ≤ the lower edge < the upper edge (got {lo}, {hi})");
    }
    Ok(nbins as usize)
}

/// The ring of value `v` in `[lo, hi)` split into `nbins`: the formula as written (a value
/// rounding onto the outer edge is in no ring).
fn ring_of(v: f64, lo: f64, hi: f64, nbins: usize) -> u32 {
    let k = ((v - lo) / (hi - lo) * nbins as f64).floor();
    if v >= lo && v < hi && k < nbins as f64 {
        k as u32
    } else {
        u32::MAX
    }
}

impl Rings {
    /// `radial(x, cx, cy, rmin, rmax, nbins)`: radius in pixels.
    fn radial(args: &[f64], rows: usize, cols: usize) -> PolarsResult<Self> {
        let [cx, cy, rmin, rmax, nbins] = args[..] else {
            polars_bail!(InvalidOperation: "radial(x, cx, cy, rmin, rmax, nbins): got {} arguments", args.len() + 1)
        };
        let nbins = check_bins("radial", rmin, rmax, nbins)?;
        let ring = (0..rows * cols)
            .map(|i| {
                let (r, c) = ((i / cols) as f64, (i % cols) as f64);
                ring_of(
                    ((c - cx) * (c - cx) + (r - cy) * (r - cy)).sqrt(),
                    rmin,
                    rmax,
                    nbins,
                )
            })
            .collect();
        Ok(Rings { ring, members: Vec::new(), counts: Vec::new(), nbins, weight: None })
    }

    /// `radial_q(x, cx, cy, dist_mm, energy_kev, qmin, qmax, nbins[, pol[, solid_angle]])`.
    fn in_q(args: &[f64], rows: usize, cols: usize, pixel_um: f64) -> PolarsResult<Self> {
        let name = "radial_q";
        let (&[cx, cy, dist_mm, kev, qmin, qmax, nbins], rest) = (args.split_at_checked(7).map(|(a, b)| (a.try_into().unwrap(), b))).ok_or_else(|| {
            polars_err!(InvalidOperation: "radial_q(x, cx, cy, dist_mm, energy_kev, qmin, qmax, nbins[, pol[, solid_angle]]): got {} arguments", args.len() + 1)
        })?;
        let (pol, solid) = match rest {
            [] => (None, false),
            [p] => (Some(*p), false),
            [p, s] => (Some(*p), *s != 0.0),
            _ => {
                polars_bail!(InvalidOperation: "radial_q(): at most 10 arguments, got {}", args.len() + 1)
            }
        };
        if !(dist_mm > 0.0 && kev > 0.0) {
            polars_bail!(InvalidOperation: "radial_q(): dist_mm = {dist_mm} and energy_kev = {kev} must be positive");
        }
        if pol.is_some_and(|p| !(0.0..=1.0).contains(&p)) {
            polars_bail!(InvalidOperation: "radial_q(): argument 9, the polarization fraction {}, must be in [0, 1]", pol.unwrap());
        }
        let nbins = check_bins(name, qmin, qmax, nbins)?;
        let (pixel_mm, lambda) = (pixel_um * 1e-3, HC_KEV_ANGSTROM / kev);
        let mut ring = Vec::with_capacity(rows * cols);
        let mut weight = (pol.is_some() || solid).then(|| Vec::with_capacity(rows * cols));
        for i in 0..rows * cols {
            let (dy, dx) = (
                ((i / cols) as f64 - cy) * pixel_mm,
                ((i % cols) as f64 - cx) * pixel_mm,
            );
            let radius = (dx * dx + dy * dy).sqrt();
            let two_theta = radius.atan2(dist_mm);
            let q = 4.0 * std::f64::consts::PI * (two_theta / 2.0).sin() / lambda;
            ring.push(ring_of(q, qmin, qmax, nbins));
            if let Some(w) = weight.as_mut() {
                let mut f = 1.0;
                if let Some(p) = pol {
                    let s2 = two_theta.sin().powi(2);
                    let phi = dy.atan2(dx);
                    f *= p * (1.0 - s2 * phi.cos().powi(2))
                        + (1.0 - p) * (1.0 - s2 * phi.sin().powi(2));
                }
                if solid {
                    f *= two_theta.cos().powi(3);
                }
                w.push(1.0 / f);
            }
        }
        Ok(Rings { ring, members: Vec::new(), counts: Vec::new(), nbins, weight })
    }
}

/// The 2-D plane the functions see: the array itself, or segment 0 of a 3-D one.
fn plane_of(name: &str, shape: &[usize]) -> PolarsResult<(usize, usize)> {
    match shape {
        [r, c] => Ok((*r, *c)),
        [_, r, c] => Ok((*r, *c)),
        other => polars_bail!(InvalidOperation: "{name}(): needs a 2-D array (an image) or a 3-D one (segments, rows, cols); this one has shape {other:?}"),
    }
}

fn scalar_arg(name: &str, position: usize, c: &Column) -> PolarsResult<f64> {
    let v = c.get(0).map_err(|_| polars_err!(InvalidOperation: "{name}(): argument {position} is empty"))?;
    v.extract::<f64>().ok_or_else(|| polars_err!(InvalidOperation: "{name}(): argument {position} must be a number, got {v}"))
}

/// A rectangle of one segment, as flat indices into the array.
#[derive(Clone, Copy, Debug)]
struct Roi {
    offset: usize,
    cols: usize,
    r0: usize,
    r1: usize,
    c0: usize,
    c1: usize,
}

impl Roi {
    fn whole((rows, cols): (usize, usize)) -> Self {
        Roi { offset: 0, cols, r0: 0, r1: rows, c0: 0, c1: cols }
    }

    /// `[seg,] r0, r1, c0, c1[, thr]` against `shape`.
    fn from_args(name: &str, shape: &[usize], args: &[f64], threshold: bool) -> PolarsResult<Self> {
        let args = if threshold {
            args.split_last().map(|(_, a)| a).ok_or_else(|| polars_err!(InvalidOperation: "{name}(x, r0, r1, c0, c1, thr): the threshold is missing"))?
        } else {
            args
        };
        let (rows, cols) = plane_of(name, shape)?;
        let (seg, rect) = match (shape.len(), args.len()) {
            (_, 4) => (0.0, args),
            (3, 5) => (args[0], &args[1..]),
            (2, 5) => polars_bail!(InvalidOperation: "{name}(): a segment was given but the array is 2-D (shape {shape:?})"),
            (_, k) => polars_bail!(InvalidOperation: "{name}(x, [seg,] r0, r1, c0, c1{}): got {k} bounds", if threshold { ", thr" } else { "" }),
        };
        let whole = |v: f64, what: &str| -> PolarsResult<usize> {
            if v.fract() != 0.0 || v < 0.0 {
                polars_bail!(InvalidOperation: "{name}(): {what} = {v} must be a whole number ≥ 0");
            }
            Ok(v as usize)
        };
        let seg = whole(seg, "seg")?;
        let nseg = if shape.len() == 3 { shape[0] } else { 1 };
        if seg >= nseg {
            polars_bail!(InvalidOperation: "{name}(): segment {seg} is outside the array's {nseg} segments (shape {shape:?})");
        }
        let (r0, r1, c0, c1) = (whole(rect[0], "r0")?, whole(rect[1], "r1")?, whole(rect[2], "c0")?, whole(rect[3], "c1")?);
        if !(r0 < r1 && r1 <= rows && c0 < c1 && c1 <= cols) {
            polars_bail!(InvalidOperation: "{name}(): the ROI rows {r0}..{r1}, cols {c0}..{c1} is empty or outside the {rows}×{cols} array");
        }
        Ok(Roi { offset: seg * rows * cols, cols, r0, r1, c0, c1 })
    }

    fn for_each(&self, mut f: impl FnMut(usize)) {
        self.for_each_rc(|_, _, i| f(i));
    }

    fn for_each_rc(&self, mut f: impl FnMut(usize, usize, usize)) {
        for r in self.r0..self.r1 {
            let base = self.offset + r * self.cols;
            for c in self.c0..self.c1 {
                f(r, c, base + c);
            }
        }
    }
}

#[derive(Clone, Copy)]
struct Acc {
    sum: f64,
    max: f64,
    n: u64,
}

impl Default for Acc {
    fn default() -> Self {
        Acc { sum: 0.0, max: f64::NEG_INFINITY, n: 0 }
    }
}

impl Acc {
    fn add(&mut self, v: f64) {
        self.sum += v;
        // NaN propagates, as numpy's max.
        self.max = if v.is_nan() || self.max.is_nan() { f64::NAN } else { self.max.max(v) };
        self.n += 1;
    }
}

/// An array column's rows.
pub(crate) struct Arrays {
    pub(crate) len: usize,
    pub(crate) width: usize,
    valid: Vec<bool>,
    values: Values,
}

/// The flat values, borrowed from the column where they are contiguous floats without nulls
/// (an area detector's frames are megabytes: no copy per call).
enum Values {
    F32(Float32Chunked),
    F64(Float64Chunked),
    /// Integers (raw ADUs) and anything with nulls, as f64 (nulls as NaN).
    Other(Vec<f64>),
}

/// One row's values.
pub(crate) enum Row<'a> {
    F32(&'a [f32]),
    F64(&'a [f64]),
}

impl Row<'_> {
    #[inline]
    pub(crate) fn get(&self, i: usize) -> f64 {
        match self {
            Row::F32(v) => v[i] as f64,
            Row::F64(v) => v[i],
        }
    }
}

impl Arrays {
    pub(crate) fn of(name: &str, x: &Column) -> PolarsResult<Self> {
        let mut s = x.as_materialized_series().rechunk();
        // `%%sql` sees fixed-size arrays as lists: back to arrays, each row as long as the first.
        if let DataType::List(inner) = s.dtype() {
            let ca = s.list()?;
            let width = (0..ca.len()).find_map(|i| ca.get_as_series(i)).map(|r| r.len()).unwrap_or(0);
            s = s.cast(&DataType::Array(inner.clone(), width)).map_err(|_| {
                polars_err!(InvalidOperation: "{name}(): the rows of `{}` differ in length: not an array column of one shape", x.name())
            })?;
        }
        let valid: Vec<bool> = s.is_not_null().iter().map(|v| v.unwrap_or(false)).collect();
        let (width, inner) = match s.dtype() {
            DataType::Array(_, width) => (*width, s.array()?.get_inner()),
            other => polars_bail!(InvalidOperation: "{name}(): `{}` is {other}, not an array column (an image, a calib frame, a waveform)", x.name()),
        };
        let inner = inner.rechunk();
        let contiguous = inner.null_count() == 0;
        let values = match inner.dtype() {
            DataType::Float32 if contiguous => Values::F32(inner.f32()?.clone()),
            DataType::Float64 if contiguous => Values::F64(inner.f64()?.clone()),
            d if d.is_primitive_numeric() => Values::Other(inner.cast(&DataType::Float64)?.f64()?.iter().map(|v| v.unwrap_or(f64::NAN)).collect()),
            other => polars_bail!(InvalidOperation: "{name}(): `{}` holds {other} values, not numbers", x.name()),
        };
        Ok(Arrays { len: s.len(), width, valid, values })
    }

    pub(crate) fn row(&self, row: usize) -> Option<Row<'_>> {
        if !self.valid[row] {
            return None;
        }
        let range = row * self.width..(row + 1) * self.width;
        Some(match &self.values {
            Values::F32(ca) => Row::F32(&ca.cont_slice().expect("one chunk without nulls")[range]),
            Values::F64(ca) => Row::F64(&ca.cont_slice().expect("one chunk without nulls")[range]),
            Values::Other(v) => Row::F64(&v[range]),
        })
    }

    /// The arrays with `f` applied to every value, in the input's value type.
    fn map_values(&self, name: PlSmallStr, f: impl Fn(f64) -> f64) -> PolarsResult<Column> {
        self.map_indexed(name, |_, v| f(v))
    }

    /// The arrays with `f(index within the array, value)` applied to every value.
    fn map_indexed(&self, name: PlSmallStr, f: impl Fn(usize, f64) -> f64) -> PolarsResult<Column> {
        let w = self.width.max(1);
        let flat: Series = match &self.values {
            Values::F32(ca) => Series::new(
                PlSmallStr::EMPTY,
                ca.cont_slice()?
                    .iter()
                    .enumerate()
                    .map(|(i, &x)| f(i % w, x as f64) as f32)
                    .collect::<Vec<f32>>(),
            ),
            Values::F64(ca) => Series::new(
                PlSmallStr::EMPTY,
                ca.cont_slice()?
                    .iter()
                    .enumerate()
                    .map(|(i, &x)| f(i % w, x))
                    .collect::<Vec<f64>>(),
            ),
            Values::Other(v) => Series::new(
                PlSmallStr::EMPTY,
                v.iter()
                    .enumerate()
                    .map(|(i, &x)| f(i % w, x))
                    .collect::<Vec<f64>>(),
            ),
        };
        let mut out = flat.reshape_array(&[ReshapeDimension::Infer, ReshapeDimension::new_dimension(self.width as u64)])?;
        if self.valid.iter().any(|v| !v) {
            let mask = BooleanChunked::from_slice(PlSmallStr::EMPTY, &self.valid);
            out = out.zip_with(&mask, &Series::full_null(PlSmallStr::EMPTY, self.len, out.dtype()))?;
        }
        Ok(out.with_name(name).into_column())
    }
}
