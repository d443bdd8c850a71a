//! `--jungfrau N`: the simulated Jungfrau read back through `xtc` (psana's layout, segments,
//! gain switching) and calibrated with its constants read from the calib dir by the detector
//! crate, against the truth file.

mod common;

use std::collections::BTreeMap;

use detector::{CalibType, Calibrator, DetectorConstants, DetectorKind, DetectorSpec};
use sim::jungfrau::{ADU_MASK, COLS, PANEL, ROWS, STATUS_DEAD, STATUS_HOT};
use sim::{write_run, SimConfig};
use xtc::{RunReader, Source, TransitionId, Value};

/// One recorded frame: timestamp and the raw array of each segment.
type Frames = Vec<(u64, BTreeMap<u32, Vec<u16>>)>;

/// Reads every Jungfrau frame of the run and checks the Names of its stream.
fn read_frames(source: &str, stream: u32, modules: u32) -> Frames {
    let mut reader = RunReader::open(&Source::parse(source).unwrap()).unwrap();
    let i = (0..reader.stream_count()).find(|&i| reader.stream_info(i).stream == stream).expect("the Jungfrau's stream");
    let mut frames = Frames::new();
    let mut names_checked = false;
    while let Some(built) = reader.next().unwrap() {
        if !names_checked && reader.stream_state(i).configures() == 1 {
            names_checked = true;
            let names = reader.stream_state(i).lookup().sorted();
            for alg in ["raw", "config"] {
                let of_alg: Vec<_> = names.iter().filter(|n| n.det_name == "jungfrau" && n.alg_name == alg).collect();
                assert_eq!(of_alg.iter().map(|n| n.segment).collect::<Vec<_>>(), (0..modules).collect::<Vec<_>>(), "{alg}: one Names per segment");
                for n in of_alg {
                    assert_eq!((n.det_type.as_str(), n.alg_version), ("jungfrau", 0x000200), "as psana's test_jungfrau05M_calib.xtc2");
                }
            }
            let raw = names.iter().find(|n| n.det_name == "jungfrau" && n.alg_name == "raw").unwrap();
            let fields: Vec<(&str, xtc::DataType, u32)> = raw.fields.iter().map(|f| (f.name.as_str(), f.dtype, f.rank)).collect();
            use xtc::DataType::*;
            assert_eq!(
                fields,
                [("raw", U16, 3), ("frame_cnt", U64, 0), ("timestamp", U64, 0), ("hotPixelThresh", U16, 0), ("numHotPixels", U32, 0), ("maxHotPixels", U32, 0)]
            );
            let config = names.iter().find(|n| n.det_name == "jungfrau" && n.alg_name == "config").unwrap();
            assert_eq!(config.fields.len(), 29);
            assert!(config.fields.iter().any(|f| f.name == "user.gainMode:gainModeEnum"));
        }
        if built.service != TransitionId::L1Accept {
            continue;
        }
        let Some((_, dg)) = reader.members().find(|(m, _)| *m == i) else { continue };
        let mut segments = BTreeMap::new();
        reader
            .stream_state(i)
            .for_each_shapes_data(&dg, |names, sd| {
                sd.for_each_field(names, |_, name, v| {
                    if let ("jungfrau", "raw", Value::Array(a)) = (names.det_name.as_str(), name.name.as_str(), v) {
                        assert_eq!(a.dims(), [1, ROWS as u32, COLS as u32]);
                        let raw: Vec<u16> = a.bytes.chunks_exact(2).map(|b| u16::from_le_bytes([b[0], b[1]])).collect();
                        segments.insert(names.segment, raw);
                    }
                })
            })
            .unwrap();
        frames.push((built.timestamp, segments));
    }
    frames
}

#[test]
fn two_modules_read_back_in_psanas_layout_and_calibrate_to_the_truth() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = SimConfig::new(tmp.path());
    (cfg.events, cfg.steps, cfg.seed) = (40, 2, 11);
    (cfg.jungfrau, cfg.jungfrau_every) = (2, 3);
    let truth = write_run(&cfg).unwrap();
    let jt = truth.jungfrau.as_ref().expect("the truth has the Jungfrau");

    // Its own stream after the two others, a frame every 3rd event.
    assert_eq!(truth.streams.iter().map(|s| (s.stream, s.l1, s.l1_every)).collect::<Vec<_>>(), [(0, 40, 1), (1, 40, 1), (2, 14, 3)]);
    assert_eq!((jt.stream, jt.modules, jt.frames.len()), (2, 2, 14));
    assert_eq!(jt.frames.iter().filter(|f| !f.laser_on).map(|f| f.index).collect::<Vec<_>>(), [3, 15, 27, 39]);
    common::assert_matches_truth(&common::read_run(&truth.source, |_| {}), &truth);

    let frames = read_frames(&truth.source, 2, 2);
    assert_eq!(frames.len(), 14);

    // The constants, read by the detector crate from psana's calib-dir layout.
    let calib = tmp.path().join("calib");
    assert_eq!(jt.calib_dir, calib);
    let spec = DetectorSpec::new("jungfrau", DetectorKind::Jungfrau).unwrap();
    let constants = DetectorConstants::from_calib_dir(spec, &calib, "jungfrau", cfg.run, 1).unwrap();
    for ctype in [CalibType::Pedestals, CalibType::PixelGain, CalibType::PixelOffset, CalibType::PixelStatus, CalibType::PixelRms] {
        let c = constants.get(ctype).unwrap_or_else(|| panic!("{ctype:?} deployed"));
        assert_eq!(c.array.shape, [3, 2, ROWS, COLS], "{ctype:?}");
        assert!(c.path.ends_with(format!("Jungfrau::CalibV1/jungfrau/{}/{}-end.data", ctype.name(), cfg.run)), "{}", c.path.display());
    }
    let f32s = |t| constants.get(t).unwrap().array.to_f64();
    let (peds, gains, rms) = (f32s(CalibType::Pedestals), f32s(CalibType::PixelGain), f32s(CalibType::PixelRms));
    let status = constants.get(CalibType::PixelStatus).unwrap().array.to_u64();
    let calibrator = Calibrator::new(&constants, &[]).unwrap();
    // psana ANDs the status of the three ranges; the simulator flags all three alike.
    let good: Vec<bool> = (0..2 * PANEL).map(|p| (0..3).all(|g| status[g * 2 * PANEL + p] == 0)).collect();
    let bad = good.iter().filter(|g| !**g).count() as u64;
    assert_eq!(bad, jt.hot_pixels + jt.dead_pixels);
    assert!(jt.hot_pixels > 100 && jt.dead_pixels > 50, "{} hot, {} dead", jt.hot_pixels, jt.dead_pixels);

    let mut codes = [0u64; 4];
    let mut switched_near_spots = 0u64;
    for ((ts, segments), ft) in frames.iter().zip(&jt.frames) {
        assert_eq!(*ts, ft.timestamp);
        let raw: Vec<u16> = segments.values().flatten().copied().collect();
        let mut calibrated = vec![0f32; raw.len()];
        calibrator.calibrate(&[0, 1], &raw, &mut calibrated).unwrap();
        let (mut sum, mut variance) = (0.0f64, 0.0f64);
        let (mut g1, mut g2) = (0u64, 0u64);
        for (p, &word) in raw.iter().enumerate() {
            let code = (word >> 14) as usize;
            codes[code] += 1;
            let (module, pixel) = (p / PANEL, p % PANEL);
            if code != 0 {
                let near = jt.geometry.spots.iter().any(|s| {
                    let (row, col) = ((pixel / COLS) as f64, (pixel % COLS) as f64);
                    s.module as usize == module && (row - s.row).abs() <= 6.0 && (col - s.col).abs() <= 6.0
                });
                switched_near_spots += u64::from(near);
            }
            let s = status[p];
            if s == STATUS_DEAD {
                assert_eq!(word, 0, "a dead pixel reads 0");
            }
            if !good[p] {
                assert!(s == STATUS_HOT || s == STATUS_DEAD);
                assert_eq!(calibrated[p], 0.0, "masked");
                continue;
            }
            let g = [0, 1, 3].iter().position(|&c| c == code).expect("no bad-switch code 10");
            g1 += u64::from(g == 1);
            g2 += u64::from(g == 2);
            let at = g * 2 * PANEL + p;
            // The spec's formula in f64, beside the detector crate's f32.
            let want = ((word & ADU_MASK) as f64 - peds[at]) / gains[at];
            assert!((calibrated[p] as f64 - want).abs() <= 1e-3 * want.abs().max(1.0), "pixel {p}: {} vs {want}", calibrated[p]);
            sum += calibrated[p] as f64;
            variance += (rms[at] * rms[at] + 1.0 / 12.0) / (gains[at] * gains[at]);
        }
        assert_eq!((g1, g2), (ft.pixels_g1, ft.pixels_g2), "event {}", ft.index);
        assert_eq!(ft.clipped_pixels, 0);
        let sigma = variance.sqrt();
        assert!((sum - ft.energy_kev).abs() < 5.0 * sigma, "event {}: calibrated {sum} keV, truth {} keV, σ {sigma}", ft.index, ft.energy_kev);
        assert!(ft.energy_kev > 20.0 * sigma || ft.i0 < 0.1, "event {}: the signal stands out of the noise", ft.index);
        assert_eq!(ft.energy_kev, ft.ring_kev + ft.bragg_kev);
    }
    // Every gain range shows up, on bright pixels only (the Bragg spots); no bad switch.
    assert!(codes[1] > 0 && codes[3] > 0 && codes[2] == 0, "gain codes {codes:?}");
    assert_eq!(switched_near_spots, codes[1] + codes[3]);

    // The ring's intensity per step follows the pump-probe response.
    assert_eq!(jt.steps.len(), 2);
    for s in &jt.steps {
        assert!(s.ring_kev_per_i0_laser_on >= s.ring_kev_per_i0_laser_off);
        let on = s.ring_kev_laser_on / s.i0_laser_on;
        assert!((on / s.ring_kev_per_i0_laser_on - 1.0).abs() < 0.05, "step {}: {on} vs {}", s.step, s.ring_kev_per_i0_laser_on);
        let off = s.ring_kev_laser_off / s.i0_laser_off;
        assert!((off / s.ring_kev_per_i0_laser_off - 1.0).abs() < 0.1, "step {}: {off} vs {}", s.step, s.ring_kev_per_i0_laser_off);
    }
    assert_eq!(jt.steps.iter().map(|s| (s.frames, s.laser_on_frames)).collect::<Vec<_>>(), [(7, 5), (7, 5)]);
}

#[test]
fn jungfrau_settings_are_checked() {
    let mut cfg = SimConfig::new("/nonexistent");
    cfg.jungfrau = 9;
    assert!(cfg.validate().unwrap_err().to_string().contains("4M"));
    (cfg.jungfrau, cfg.jungfrau_every) = (1, 0);
    assert!(cfg.validate().unwrap_err().to_string().contains("jungfrau-every"));
}

/// `--shmem` with a Jungfrau: buffers sized for its events serve every frame, all segments in
/// the event-built datagram.
#[test]
fn a_served_jungfrau_event_fits_the_buffers() {
    use shmem::{Client, ClientOptions, Received, Server, ServerConfig, StopAt};
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = SimConfig::new(tmp.path());
    (cfg.events, cfg.steps, cfg.jungfrau, cfg.jungfrau_every) = (6, 1, 2, 2);
    let tag = format!("bt_test_{}_jungfrau", std::process::id());
    let mut sc = ServerConfig::new(&tag);
    sc.buffer_size = sim::cli::shmem_buffer_size(&cfg, None).unwrap();
    sc.remove_segment_on_drop = true;
    let server = Server::start(sc).unwrap();
    let t = tag.clone();
    let client = std::thread::spawn(move || {
        let opts = ClientOptions { connect_timeout: Some(std::time::Duration::from_secs(10)), stop: StopAt::EndRun, ..Default::default() };
        let mut c = Client::connect(&t, opts).unwrap();
        let mut sizes = Vec::new();
        while let Some(Received::Dgram(d)) = c.next(std::time::Duration::from_secs(30)).unwrap() {
            let bytes = d.into_bytes();
            let dg = xtc::Dgram::new(&bytes).unwrap();
            if dg.service() == TransitionId::L1Accept {
                sizes.push(bytes.len());
            }
        }
        sizes
    });
    assert!(server.wait_for_clients(1, std::time::Duration::from_secs(10)));
    let (truth, served) = sim::shmem::serve_run(&cfg, &server, |_| {}).unwrap();
    let sizes = client.join().unwrap();
    drop(server);
    assert_eq!((served.refused, served.stats.events_published), (0, 6));
    assert_eq!(truth.jungfrau.unwrap().frames.len(), 3);
    // Events 0, 2, 4 carry both modules' 1 MiB raw arrays.
    let big: Vec<bool> = sizes.iter().map(|&s| s > 2 * PANEL * 2).collect();
    assert_eq!(big, [true, false, true, false, true, false]);
    assert!(tmp.path().join("calib/Jungfrau::CalibV1/jungfrau/pedestals/1-end.data").is_file(), "constants for a live reader");
}
