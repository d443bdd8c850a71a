//! `--epix10ka N`, `--epixm320`, `--archon ROWS`, `--cam-calib`: each detector read back
//! through `xtc` in psana's layout (names, detTypes, alg versions, shapes, config records), its
//! constants read from the calib dir by the detector crate with psana's shapes, and its frames
//! checked against the spec's rules (epix10ka gain modes, §3.2) and the truth file.

mod common;

use std::collections::BTreeMap;

use detector::{CalibType, Calibrator, DetectorConstants, DetectorKind, DetectorSpec, Epix10kaConfig};
use sim::area::{
    epix10ka_mode, ARCHON_BANKS, ARCHON_BANK_COLS, ARCHON_COLS, ARCHON_REAL_COLS, ASIC_COLS, ASIC_ROWS, EPIXM_ASIC, EPIX_COLS, EPIX_MODES,
    EPIX_PANEL, EPIX_ROWS,
};
use sim::{write_run, SimConfig, Truth};
use xtc::{DataType, RunReader, Source, TransitionId, Value};

/// One Names as read back: (det, detType, alg, version, segment, [(field, dtype, rank)]).
type NamesSeen = (String, String, String, u32, u32, Vec<(String, DataType, u32)>);

/// One L1Accept's arrays: `<det>/<segment>/<field>` → (dims, u16 values).
type Arrays = BTreeMap<String, (Vec<u32>, Vec<u16>)>;

/// What a stream holds: its Names, its config records, and per L1Accept (timestamp, arrays).
struct StreamSeen {
    names: Vec<NamesSeen>,
    configs: Vec<xtc::ConfigRecord>,
    frames: Vec<(u64, Arrays)>,
}

fn read_stream(source: &str, stream: u32) -> StreamSeen {
    let mut reader = RunReader::open(&Source::parse(source).unwrap()).unwrap();
    let i = (0..reader.stream_count()).find(|&i| reader.stream_info(i).stream == stream).expect("the stream");
    let mut seen = StreamSeen { names: Vec::new(), configs: Vec::new(), frames: Vec::new() };
    while let Some(built) = reader.next().unwrap() {
        if built.service == TransitionId::Configure {
            let state = reader.stream_state(i);
            seen.names = state
                .lookup()
                .sorted()
                .iter()
                .filter(|n| !matches!(n.det_name.as_str(), "runinfo" | "chunkinfo" | "smdinfo"))
                .map(|n| (n.det_name.clone(), n.det_type.clone(), n.alg_name.clone(), n.alg_version, n.segment, n.fields.iter().map(|f| (f.name.clone(), f.dtype, f.rank)).collect()))
                .collect();
            seen.configs = state.configs().to_vec();
        }
        if built.service != TransitionId::L1Accept {
            continue;
        }
        let Some((_, dg)) = reader.members().find(|(m, _)| *m == i) else { continue };
        let mut fields = BTreeMap::new();
        reader
            .stream_state(i)
            .for_each_shapes_data(&dg, |names, sd| {
                sd.for_each_field(names, |_, name, v| {
                    if let Value::Array(a) = v {
                        assert_eq!(a.dtype, DataType::U16, "{}", name.name);
                        let values = a.bytes.chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]])).collect();
                        fields.insert(format!("{}/{}/{}", names.det_name, names.segment, name.name), (a.dims().to_vec(), values));
                    }
                })
            })
            .unwrap();
        seen.frames.push((built.timestamp, fields));
    }
    seen
}

fn field_list(fields: &[(&str, DataType, u32)]) -> Vec<(String, DataType, u32)> {
    fields.iter().map(|&(n, t, r)| (n.to_string(), t, r)).collect()
}

fn run_all(tmp: &std::path::Path, epix_panels: u32) -> (SimConfig, Truth) {
    let mut cfg = SimConfig::new(tmp);
    (cfg.events, cfg.steps, cfg.seed, cfg.jungfrau_every) = (12, 2, 5, 3);
    (cfg.epix10ka, cfg.epixm320, cfg.archon) = (epix_panels, true, 4);
    (cfg.image, cfg.cam_calib) = (Some((24, 16)), true);
    let truth = write_run(&cfg).unwrap();
    (cfg, truth)
}

#[test]
fn a_quad_epixm320_archon_and_camera_read_back_in_psanas_layout_and_calibrate() {
    let tmp = tempfile::tempdir().unwrap();
    let (cfg, truth) = run_all(tmp.path(), 4);
    // Streams: s000, s001 (+ cam), then one each for the epix10ka, the epixM320 and the Archon,
    // a frame every 3rd event.
    let streams: Vec<_> = truth.streams.iter().map(|s| (s.stream, s.l1, s.l1_every)).collect();
    assert_eq!(streams, [(0, 12, 1), (1, 12, 1), (2, 4, 3), (3, 4, 3), (4, 4, 3)]);
    common::assert_matches_truth(&common::read_run(&truth.source, |_| {}), &truth);
    let calib = tmp.path().join("calib");

    // ---- epix10ka quad: psana's test_epix_calib.xtc2 layout.
    let et = truth.epix10ka.as_ref().expect("epix10ka truth");
    assert_eq!((et.det_name.as_str(), et.stream, et.segments, et.calib_group.as_str()), ("epixquad", 2, 4, "Epix10kaQuad::CalibV1"));
    let seen = read_stream(&truth.source, 2);
    let mut want = Vec::new();
    for s in 0..4 {
        want.push(("epixquad".into(), "epix10ka".into(), "config".into(), 0x020000, s, field_list(&[("asicPixelConfig", DataType::U8, 3), ("trbit", DataType::U8, 1)])));
        want.push(("epixquad".into(), "epix10ka".into(), "raw".into(), 0x020001, s, field_list(&[("raw", DataType::U16, 2), ("aux", DataType::U16, 2)])));
    }
    let mut names = seen.names.clone();
    names.sort_by(|a, b| (a.4, &a.2).cmp(&(b.4, &b.2)));
    assert_eq!(names, want);
    // Config records: asicPixelConfig (4, 176, 192) u8 and trbit (4,) u8 per segment, as the truth says.
    let mut configs: Vec<(u32, Epix10kaConfig)> = Vec::new();
    let mut cbits = vec![0u8; 4 * EPIX_PANEL];
    for rec in seen.configs.iter().filter(|c| c.det_name == "epixquad") {
        let pca = rec.field("asicPixelConfig").unwrap();
        let trbit = rec.field("trbit").unwrap();
        assert_eq!((pca.dims.as_slice(), pca.dtype, trbit.dims.as_slice(), trbit.dtype), (&[4, 176, 192][..], DataType::U8, &[4][..], DataType::U8));
        let (pca, trbit) = (pca.as_u8().unwrap(), trbit.as_u8().unwrap());
        for a in 0..4 {
            let asic = &et.asics[(rec.segment * 4 + a) as usize];
            assert_eq!(trbit[a as usize], asic.trbit);
            let values = &pca[a as usize * ASIC_ROWS * ASIC_COLS..(a as usize + 1) * ASIC_ROWS * ASIC_COLS];
            // The family's config, but the 16×16 map of 8 (FL) in the ASIC's own corner.
            assert_eq!(values.iter().filter(|&&v| v == 8).count(), if asic.asic_pixel_config == 8 { ASIC_ROWS * ASIC_COLS } else { 256 });
            assert_eq!(values[0], 8);
            assert_eq!(values[16 * ASIC_COLS + 16], asic.asic_pixel_config);
        }
        // Spec §3.2's assembly, written out here: ASICs 2 | 1 rotated by 180° on top, 3 | 0 below.
        let seg = rec.segment as usize;
        for (a, (r0, c0, flip)) in [(0, (176, 192, false)), (1, (0, 192, true)), (2, (0, 0, true)), (3, (176, 0, false))] {
            for r in 0..ASIC_ROWS {
                for c in 0..ASIC_COLS {
                    let (pr, pc) = if flip { (r0 + ASIC_ROWS - 1 - r, c0 + ASIC_COLS - 1 - c) } else { (r0 + r, c0 + c) };
                    cbits[seg * EPIX_PANEL + pr * EPIX_COLS + pc] = (pca[(a * ASIC_ROWS + r) * ASIC_COLS + c] & 12) | (trbit[a] << 4);
                }
            }
        }
        configs.push((rec.segment, Epix10kaConfig::from_fields(DetectorKind::Epix10ka, |n| rec.field(n)?.to_i64()).unwrap()));
    }
    assert_eq!(configs.len(), 4);
    // Constants (7, 4, 352, 384), found by the detector crate where a quad's belong.
    let spec = DetectorSpec::new("epixquad", DetectorKind::Epix10ka).unwrap();
    let constants = DetectorConstants::from_calib_dir(spec, &calib, "epixquad", cfg.run, 3).unwrap();
    for ctype in [CalibType::Pedestals, CalibType::PixelGain, CalibType::PixelStatus, CalibType::PixelRms] {
        let c = constants.get(ctype).unwrap_or_else(|| panic!("{ctype:?}"));
        assert_eq!(c.array.shape, [7, 4, EPIX_ROWS, EPIX_COLS], "{ctype:?}");
        assert!(c.path.ends_with(format!("Epix10kaQuad::CalibV1/epixquad/{}/{}-end.data", ctype.name(), cfg.run)), "{}", c.path.display());
    }
    let (peds, gains) = (constants.get(CalibType::Pedestals).unwrap().array.to_f64(), constants.get(CalibType::PixelGain).unwrap().array.to_f64());
    let status = constants.get(CalibType::PixelStatus).unwrap().array.to_u64();
    let calibrator = Calibrator::new(&constants, &configs).unwrap();
    assert_eq!(seen.frames.len(), 4);
    let mut modes = [0u64; 7];
    for ((ts, fields), ft) in seen.frames.iter().zip(&et.frames) {
        assert_eq!(*ts, ft.timestamp);
        let mut raw = Vec::new();
        for s in 0..4 {
            let (dims, values) = &fields[&format!("epixquad/{s}/raw")];
            assert_eq!(dims, &[352, 384]);
            assert_eq!(fields[&format!("epixquad/{s}/aux")].0, [4, 384]);
            raw.extend_from_slice(values);
        }
        let mut out = vec![0f32; raw.len()];
        calibrator.calibrate(&[0, 1, 2, 3], &raw, &mut out).unwrap();
        let mut frame_modes = [0u64; 7];
        for (p, &word) in raw.iter().enumerate() {
            assert_eq!(word & 0x8000, 0);
            let c = cbits[p] | ((word & 0x4000) >> 9) as u8;
            let m = epix10ka_mode(c).expect("every pixel has a mode");
            frame_modes[m] += 1;
            let at = m * 4 * EPIX_PANEL + p;
            let good = (0..7).all(|g| status[g * 4 * EPIX_PANEL + p] == 0);
            let want = if good { ((word & 0x3fff) as f64 - peds[at]) / gains[at] } else { 0.0 };
            assert!((out[p] as f64 - want).abs() <= 1e-4 * want.abs().max(1.0), "pixel {p}: {} vs {want}", out[p]);
        }
        assert_eq!(frame_modes, ft.mode_pixels, "event {}", ft.index);
        modes.iter_mut().zip(frame_modes).for_each(|(a, b)| *a += b);
    }
    // Every gain mode occurs: the fixed ones in the dark, the auto ones' low ranges on bright pixels.
    assert!(modes.iter().all(|&n| n > 0), "{:?}", EPIX_MODES.iter().zip(modes).collect::<Vec<_>>());
    assert!(modes[5] + modes[6] < 10_000, "switching only on spots: {modes:?}");

    // ---- epixM320: one segment of 4 ASICs.
    let mt = truth.epixm320.as_ref().unwrap();
    assert_eq!((mt.det_name.as_str(), mt.stream), ("epixm", 3));
    let seen = read_stream(&truth.source, 3);
    assert_eq!(seen.names, [("epixm".into(), "epixm320".into(), "raw".into(), 0x000100, 0, field_list(&[("raw", DataType::U16, 3)]))]);
    let spec = DetectorSpec::new("epixm", DetectorKind::Epixm320).unwrap();
    let constants = DetectorConstants::from_calib_dir(spec, &calib, "epixm", cfg.run, 0).unwrap();
    assert_eq!(constants.get(CalibType::Pedestals).unwrap().array.shape, [3, 4, 192, 384]);
    assert_eq!(constants.get(CalibType::PixelStatus).unwrap().array.shape, [4, 192, 384]);
    let peds = constants.get(CalibType::Pedestals).unwrap().array.to_f64();
    let status = constants.get(CalibType::PixelStatus).unwrap().array.to_u64();
    let calibrator = Calibrator::new(&constants, &[]).unwrap();
    let mut switched = 0;
    for ((ts, fields), ft) in seen.frames.iter().zip(&mt.frames) {
        assert_eq!(*ts, ft.timestamp);
        let (dims, raw) = &fields["epixm/0/raw"];
        assert_eq!(dims, &[4, 192, 384]);
        let mut out = vec![0f32; raw.len()];
        calibrator.calibrate(&[0, 1, 2, 3], raw, &mut out).unwrap();
        let (mut sum, mut n_switched) = (0.0, 0);
        for (p, &word) in raw.iter().enumerate() {
            let set = usize::from(word & 0x8000 != 0);
            n_switched += set as u64;
            let want = if status[p] == 0 { (word & 0x7fff) as f64 - peds[set * 4 * EPIXM_ASIC + p] } else { 0.0 };
            assert_eq!(out[p] as f64, want, "pixel {p}");
            sum += want;
        }
        assert_eq!(n_switched, ft.switched_pixels);
        switched += n_switched;
        // Noise ≈ 5 ADU on ~3·10⁵ pixels: σ of the sum ≈ 2700 ADU.
        assert!((sum - ft.signal_adu).abs() < 15_000.0, "event {}: {sum} vs {}", ft.index, ft.signal_adu);
    }
    assert!(switched > 0, "bright pixels switch to the low range");

    // ---- Archon: (4, 4800), common offsets per row and bank.
    let at = truth.archon.as_ref().unwrap();
    assert_eq!((at.stream, at.rows), (4, 4));
    let seen = read_stream(&truth.source, 4);
    assert_eq!(seen.names, [("archon".into(), "archon".into(), "raw".into(), 0x010000, 0, field_list(&[("value", DataType::U16, 2)]))]);
    let spec = DetectorSpec::with_panel("archon", DetectorKind::Archon, (4, ARCHON_COLS));
    let constants = DetectorConstants::from_calib_dir(spec, &calib, "archon", cfg.run, 0).unwrap();
    assert_eq!(constants.get(CalibType::Pedestals).unwrap().array.shape, [4, 4800]);
    let peds = constants.get(CalibType::Pedestals).unwrap().array.to_f64();
    let calibrator = Calibrator::new(&constants, &[]).unwrap();
    for ((ts, fields), ft) in seen.frames.iter().zip(&at.frames) {
        assert_eq!(*ts, ft.timestamp);
        let (dims, raw) = &fields["archon/0/value"];
        assert_eq!(dims, &[4, 4800]);
        let mut out = vec![0f32; raw.len()];
        calibrator.calibrate(&[0], raw, &mut out).unwrap();
        let mut real_sum = 0.0;
        for row in 0..4 {
            for bank in 0..ARCHON_BANKS {
                let cols = row * ARCHON_COLS + bank * ARCHON_BANK_COLS;
                // The fakes' median of raw − ped is the bank's offset (noise 4 ADU, 36 columns).
                let mut fake: Vec<f64> = (cols + ARCHON_REAL_COLS..cols + ARCHON_BANK_COLS).map(|i| raw[i] as f64 - peds[i]).collect();
                fake.sort_by(f64::total_cmp);
                let median = (fake[17] + fake[18]) / 2.0;
                assert!((median - ft.offsets_adu[row * ARCHON_BANKS + bank]).abs() < 5.0, "row {row} bank {bank}");
                for i in cols..cols + ARCHON_BANK_COLS {
                    let want = (raw[i] as f64 - peds[i] - median) * 3.65;
                    assert!((out[i] as f64 - want).abs() < 1e-3 * want.abs().max(1.0), "{i}: {} vs {want}", out[i]);
                }
                real_sum += out[cols..cols + ARCHON_REAL_COLS].iter().map(|&v| v as f64).sum::<f64>();
            }
        }
        // Offsets gone: the real pixels sum to the signal (× 3.65 eV/ADU) within 5σ of the
        // noise: 4 ADU per pixel (σ 520 over 16896) and each median's error, 4·√(π/72) ADU on
        // its 264 columns (σ 1760 over 64 bank-rows); offsets left in would be off by ~5·10⁴.
        assert!((real_sum / 3.65 - ft.signal_adu).abs() < 10_000.0, "event {}: {} vs {}", ft.index, real_sum / 3.65, ft.signal_adu);
    }
    assert!(at.frames.iter().any(|f| f.signal_adu > 2e4), "lines stand out");

    // ---- Camera: Camera::CalibV1/cam, (rows, cols).
    let ct = truth.cam.as_ref().unwrap();
    assert_eq!((ct.stream, ct.width, ct.height, ct.frames.len()), (1, 24, 16, 12));
    let spec = DetectorSpec::with_panel("cam", DetectorKind::Camera, (16, 24));
    let constants = DetectorConstants::from_calib_dir(spec, &calib, "cam", cfg.run, 0).unwrap();
    for ctype in [CalibType::Pedestals, CalibType::PixelGain] {
        let c = constants.get(ctype).unwrap();
        assert_eq!(c.array.shape, [16, 24]);
        assert!(c.path.ends_with(format!("Camera::CalibV1/cam/{}/{}-end.data", ctype.name(), cfg.run)));
    }
    let (peds, gains) = (constants.get(CalibType::Pedestals).unwrap().array.to_f64(), constants.get(CalibType::PixelGain).unwrap().array.to_f64());
    let calibrator = Calibrator::new(&constants, &[]).unwrap();
    let seen = read_stream(&truth.source, 1);
    assert!(seen.names.iter().any(|n| (n.0.as_str(), n.1.as_str(), n.5.clone()) == ("cam", "opal", field_list(&[("image", DataType::U16, 2)]))));
    assert_eq!(seen.frames.len(), 12);
    for ((ts, fields), ft) in seen.frames.iter().zip(&ct.frames) {
        assert_eq!(*ts, ft.timestamp);
        let (dims, raw) = &fields["cam/0/image"];
        assert_eq!(dims, &[16, 24]);
        let mut out = vec![0f32; raw.len()];
        calibrator.calibrate(&[0], raw, &mut out).unwrap();
        let mut sum = 0.0;
        for (p, &v) in raw.iter().enumerate() {
            let want = (v as f64 - peds[p]) / gains[p];
            assert!((out[p] as f64 - want).abs() < 1e-4 * want.abs().max(1.0));
            sum += out[p] as f64;
        }
        // Read noise 3 ADU on 384 pixels, plus rounding: σ ≈ 60.
        assert!((sum - ft.signal).abs() < 300.0, "event {}: {sum} vs {}", ft.index, ft.signal);
    }
}

#[test]
fn one_panel_and_a_2m_are_named_and_grouped_as_psanas() {
    use sim::area::{epix10ka_group, epix10ka_name};
    assert_eq!((epix10ka_name(1), epix10ka_group(1)), ("epix10ka", "Epix10ka::CalibV1"));
    assert_eq!((epix10ka_name(16), epix10ka_group(16)), ("epix10k2M", "Epix10ka2M::CalibV1"));
    let mut cfg = SimConfig::new("/nonexistent");
    cfg.epix10ka = 17;
    assert!(cfg.validate().unwrap_err().to_string().contains("2M"));
    (cfg.epix10ka, cfg.cam_calib) = (0, true);
    assert!(cfg.validate().unwrap_err().to_string().contains("--image"));
}

/// A run without the new detectors has the streams and truth it always had.
#[test]
fn runs_without_them_are_unchanged() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = SimConfig::new(tmp.path());
    (cfg.events, cfg.steps, cfg.image) = (5, 1, Some((8, 4)));
    let truth = write_run(&cfg).unwrap();
    assert_eq!(truth.streams.len(), 2);
    assert!(truth.epix10ka.is_none() && truth.epixm320.is_none() && truth.archon.is_none() && truth.cam.is_none());
    assert!(!tmp.path().join("calib").exists(), "no constants");
    let json = std::fs::read_to_string(cfg.truth_path()).unwrap();
    for key in ["epix10ka", "epixm320", "archon", "cam_calib", "\"cam\": {"] {
        assert!(!json.contains(key), "{key} in the truth of a run without it");
    }
}
