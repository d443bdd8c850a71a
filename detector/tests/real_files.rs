//! psana's own detector test files (spec §7): the `xtc` crate finds the raw arrays and config
//! values, their facts are checked, and a frame is calibrated with constants generated here in
//! the right shapes, against a scalar oracle written from the spec (their real constants are
//! only in SLAC's database).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use detector::constants::{CalibType, DetectorConstants, DetectorKind, DetectorSpec, Elements, NdArray};
use detector::{Calibrator, Epix10kaConfig};
use xtc::file::DgramReader;
use xtc::{StreamState, TransitionId, Value};

fn sample(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/xtc2/detector").join(name)
}

/// An array field copied out of a datagram.
#[derive(Clone, Debug)]
struct Field {
    dims: Vec<u32>,
    bytes: Vec<u8>,
}

impl Field {
    fn u16s(&self) -> Vec<u16> {
        self.bytes.chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]])).collect()
    }
}

/// What one detector has in a file: config fields and, per L1Accept, raw per segment.
#[derive(Default)]
struct Detector {
    det_type: String,
    raw_version: u32,
    config: BTreeMap<u32, BTreeMap<String, Field>>,
    events: Vec<BTreeMap<u32, Field>>,
}

fn read_detector(path: &Path, det_name: &str) -> Detector {
    let mut reader = DgramReader::open(path).unwrap();
    let mut state = StreamState::new();
    let mut det = Detector::default();
    while let Some((_, dg)) = reader.next_dgram().unwrap() {
        let configure = state.observe(&dg).unwrap();
        if !configure && dg.service() != TransitionId::L1Accept {
            continue;
        }
        let mut frame = BTreeMap::new();
        state
            .for_each_shapes_data(&dg, |names, sd| {
                if names.det_name != det_name {
                    return Ok(());
                }
                sd.for_each_field(names, |_, name, value| {
                    let Value::Array(a) = value else { return };
                    let field = Field { dims: a.dims().to_vec(), bytes: a.bytes.to_vec() };
                    match (configure, names.alg_name.as_str(), name.name.as_str()) {
                        (true, "config", _) => {
                            det.config.entry(names.segment).or_default().insert(name.name.clone(), field);
                        }
                        (false, "raw", "raw") => {
                            det.det_type = names.det_type.clone();
                            det.raw_version = names.alg_version;
                            frame.insert(names.segment, field);
                        }
                        _ => {}
                    }
                })
            })
            .unwrap();
        if !configure {
            det.events.push(frame);
        }
    }
    det
}

struct Rng(u64);
impl Rng {
    fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        lo + (hi - lo) * (self.0 >> 40) as f32 / (1u64 << 24) as f32
    }
}

#[test]
fn jungfrau05m_real_frames_calibrate_like_the_spec() {
    let det = read_detector(&sample("test_jungfrau05M_calib.xtc2"), "jungfrau");
    assert_eq!(det.det_type, "jungfrau");
    assert_eq!(det.raw_version, 0x000200, "raw 0.2.0");
    assert_eq!(det.events.len(), 2);
    let mut codes = [0usize; 4];
    for frame in &det.events {
        assert_eq!(frame.keys().copied().collect::<Vec<_>>(), vec![0], "one segment, number 0");
        assert_eq!(frame[&0].dims, vec![1, 512, 1024]);
        for w in frame[&0].u16s() {
            codes[(w >> 14) as usize] += 1;
        }
    }
    assert_eq!(codes, [1047357, 307, 0, 912], "gain codes 00/01/10/11 over both events (spec §3.1)");

    // Constants (3, 1, 512, 1024) around the frame's own level, so gain 0 pixels land near 0.
    let raw = det.events[0][&0].u16s();
    let mut rng = Rng(7);
    let n = 3 * 512 * 1024;
    let peds: Vec<f32> = (0..n).map(|i| if i < 512 * 1024 { (raw[i] & 0x3fff) as f32 + rng.uniform(-30.0, 30.0) } else { rng.uniform(1000.0, 16000.0) }).collect();
    let gain: Vec<f32> = (0..n).map(|i| [41.0, 1.6, 0.12][i / (512 * 1024)] * rng.uniform(0.9, 1.1)).collect();
    let offset: Vec<f32> = (0..n).map(|_| rng.uniform(-5.0, 5.0)).collect();
    let status: Vec<u64> = (0..n).map(|i| if i % 4099 == 0 { 2 } else { 0 }).collect();
    let shape = vec![3, 1, 512, 1024];
    let mut set = DetectorConstants::new(DetectorSpec::new("jungfrau", DetectorKind::Jungfrau).unwrap());
    let origin = PathBuf::from("generated");
    set.insert(CalibType::Pedestals, NdArray::new(shape.clone(), Elements::F32(peds.clone())), origin.clone()).unwrap();
    set.insert(CalibType::PixelGain, NdArray::new(shape.clone(), Elements::F32(gain.clone())), origin.clone()).unwrap();
    set.insert(CalibType::PixelOffset, NdArray::new(shape.clone(), Elements::F32(offset.clone())), origin.clone()).unwrap();
    set.insert(CalibType::PixelStatus, NdArray::new(shape, Elements::U64(status.clone())), origin).unwrap();
    let cal = Calibrator::new(&set, &[]).unwrap();
    let mut out = vec![0f32; raw.len()];
    cal.calibrate(&[0], &raw, &mut out).unwrap();

    let panel = 512 * 1024;
    for (p, (&w, &o)) in raw.iter().zip(&out).enumerate() {
        let g = match w >> 14 {
            0 => 0,
            1 => 1,
            3 => 2,
            _ => unreachable!("no bad switch in this file"),
        };
        let good = (0..3).all(|r| status[r * panel + p] == 0);
        let po: f32 = peds[g * panel + p] + offset[g * panel + p];
        let gm: f32 = (1.0 / gain[g * panel + p]) * if good { 1.0 } else { 0.0 };
        let expected = ((w & 0x3fff) as f32 - po) * gm;
        assert_eq!(o.to_bits(), expected.to_bits(), "pixel {p}: raw {w:#06x}");
    }
}

#[test]
fn epix_quad_real_frames_calibrate_like_the_spec() {
    let det = read_detector(&sample("test_epix_calib.xtc2"), "epixquad");
    assert_eq!(det.det_type, "epix10ka");
    assert_eq!(det.raw_version, 0x020001, "raw 2.0.1");
    assert_eq!(det.events.len(), 2);
    assert_eq!(det.config.keys().copied().collect::<Vec<_>>(), vec![0, 1, 2, 3]);
    let mut configs = Vec::new();
    for (&segment, fields) in &det.config {
        let pca = &fields["asicPixelConfig"];
        let trbit = &fields["trbit"];
        assert_eq!(pca.dims, vec![4, 176, 192]);
        assert_eq!(trbit.dims, vec![4]);
        assert!(pca.bytes.iter().all(|&v| v == 8), "asicPixelConfig all 8 (spec §3.2)");
        assert_eq!(trbit.bytes, vec![0, 0, 0, 0]);
        let trbit = [trbit.bytes[0], trbit.bytes[1], trbit.bytes[2], trbit.bytes[3]];
        configs.push((segment, Epix10kaConfig::Asics { asic_pixel_config: pca.bytes.clone(), trbit }));
    }
    for frame in &det.events {
        assert_eq!(frame.keys().copied().collect::<Vec<_>>(), vec![0, 1, 2, 3]);
        for f in frame.values() {
            assert_eq!(f.dims, vec![352, 384]);
            assert!(f.u16s().iter().all(|&w| w & 0x4000 != 0 && w & 0x8000 == 0), "bit 14 set, bit 15 clear");
        }
    }

    // Constants (7, 4, 352, 384): every pixel is FL (config 8, no trbit) → range 2 is used.
    let segments: Vec<u32> = vec![0, 1, 2, 3];
    let raw: Vec<u16> = segments.iter().flat_map(|s| det.events[1][s].u16s()).collect();
    let panel = 352 * 384;
    let n = 7 * 4 * panel;
    let mut rng = Rng(9);
    let peds: Vec<f32> = (0..n).map(|_| rng.uniform(2500.0, 3500.0)).collect();
    let gain: Vec<f32> = (0..n).map(|i| [16.4, 5.466, 0.164, 16.4, 5.466, 0.164, 0.164][i / (4 * panel)] * rng.uniform(0.95, 1.05)).collect();
    let status: Vec<u64> = (0..n).map(|i| if i % 1009 == 0 { 8 } else { 0 }).collect();
    let shape = vec![7, 4, 352, 384];
    let mut set = DetectorConstants::new(DetectorSpec::new("epixquad", DetectorKind::Epix10ka).unwrap());
    let origin = PathBuf::from("generated");
    set.insert(CalibType::Pedestals, NdArray::new(shape.clone(), Elements::F32(peds.clone())), origin.clone()).unwrap();
    set.insert(CalibType::PixelGain, NdArray::new(shape.clone(), Elements::F32(gain.clone())), origin.clone()).unwrap();
    set.insert(CalibType::PixelStatus, NdArray::new(shape, Elements::U64(status.clone())), origin).unwrap();
    let cal = Calibrator::new(&set, &configs).unwrap();
    let mut out = vec![0f32; raw.len()];
    cal.calibrate(&segments, &raw, &mut out).unwrap();

    for (k, &s) in segments.iter().enumerate() {
        for p in 0..panel {
            let w = raw[k * panel + p];
            let at = |range: usize| (range * 4 + s as usize) * panel + p;
            let good = (0..5).all(|r| status[at(r)] == 0);
            let arrf: f32 = (w & 0x3fff) as f32 - peds[at(2)];
            let expected = arrf * (1.0 / gain[at(2)]) * if good { 1.0 } else { 0.0 };
            assert_eq!(out[k * panel + p].to_bits(), expected.to_bits(), "segment {s} pixel {p}");
        }
    }
}
