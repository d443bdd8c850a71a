//! psana2's calibration cache pickle (spec §2.5), written here by Python with psana's layout and
//! numpy arrays (pickle protocols 2, 4 and 5), read back and checked against numpy's raw bytes.
//! Skipped with a message when the project venv has no numpy.

use std::path::{Path, PathBuf};
use std::process::Command;

use detector::constants::cache::CalibCache;
use detector::constants::{CalibType, DetectorKind, DetectorSpec, Elements};
use detector::ConstantError;

fn numpy_python() -> Option<PathBuf> {
    let py = PathBuf::from(std::env::var_os("HOME")?).join(".cache/beamtime/venv/bin/python");
    Command::new(&py).args(["-c", "import numpy"]).status().ok()?.success().then_some(py)
}

const WRITER: &str = r#"
import sys, pickle, numpy as np
d, protocol = sys.argv[1], int(sys.argv[2])
rng = np.random.default_rng(3)
peds = (rng.random((3, 1, 512, 1024)) * 4000).astype(np.float32)
gain = (rng.random((3, 1, 512, 1024)) * 40).astype(np.float32)
status = (rng.random((3, 1, 512, 1024)) < 0.01).astype(np.uint64) * 64
epeds = (rng.random((7, 4, 352, 384)) * 3000).astype(np.float64)
cm = np.array([7, 1, 100, 10], dtype=np.float64)
doc = lambda ctype, run: {'experiment': 'mfx101332224', 'run': run, 'run_end': 'end', 'detector': 'jungfrau_000003',
                         'ctype': ctype, 'data_type': 'ndarray', 'time_sec': 1700000000}
cache = {
    'det_info': {'jungfrau': 'jungfrau_8000000020000-230920-20004002c', 'epixquad': 'epix10ka_a_b_c_d', 'timing': 'x'},
    'calib_const': {
        'jungfrau': {'pedestals': (peds, doc('pedestals', 7)), 'pixel_gain': (gain, doc('pixel_gain', 7)),
                     'pixel_status': (status, doc('pixel_status', 7)), 'common_mode': (cm, doc('common_mode', 1)),
                     'pixel_max': (np.zeros((3, 1, 512, 1024), np.uint16), doc('pixel_max', 7)),
                     'geometry': ('# geometry\nIP 0 JFCAMERA 0 0 0 0 0 0 0 0 0 0\n', doc('geometry', 0))},
        'epixquad': {'pedestals': (epeds, doc('pedestals', 109))},
    },
}
with open(f'{d}/calibconst.pkl', 'wb') as f:
    pickle.dump(cache, f, protocol=protocol)
peds.tofile(f'{d}/peds.raw'); gain.tofile(f'{d}/gain.raw'); status.tofile(f'{d}/status.raw'); epeds.tofile(f'{d}/epeds.raw')
with open(f'{d}/fortran.pkl', 'wb') as f:
    pickle.dump({'det_info': {}, 'calib_const': {'jungfrau': {'pedestals': (np.asfortranarray(peds[0, 0]), {})}}}, f, protocol=protocol)
"#;

fn bytes_f32(path: &Path) -> Vec<f32> {
    std::fs::read(path).unwrap().chunks(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
}

#[test]
fn psana_cache_pickle_round_trips_every_protocol() {
    let Some(py) = numpy_python() else {
        eprintln!("skipped: no ~/.cache/beamtime/venv/bin/python with numpy");
        return;
    };
    for protocol in [2, 4, 5] {
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new(&py).args(["-c", WRITER, dir.path().to_str().unwrap(), &protocol.to_string()]).status().unwrap();
        assert!(ok.success());
        let cache = CalibCache::read(&dir.path().join("calibconst.pkl")).unwrap();
        assert!(cache.serves(&[("jungfrau", "jungfrau_8000000020000-230920-20004002c")]), "a superset serves (psana ≥ 4.1.13)");
        assert!(!cache.serves(&[("jungfrau", "jungfrau_other")]));
        assert!(!cache.serves(&[("jungfrau", "jungfrau_8000000020000-230920-20004002c"), ("epix100", "x")]));

        let jf = DetectorSpec::new("jungfrau", DetectorKind::Jungfrau).unwrap();
        let set = cache.detector_constants(jf.clone(), "jungfrau").unwrap();
        assert_eq!(set.nseg(), Some(1));
        let get = |c| set.get(c).unwrap().array.clone();
        assert_eq!(get(CalibType::Pedestals).data, Elements::F32(bytes_f32(&dir.path().join("peds.raw"))), "protocol {protocol}");
        assert_eq!(get(CalibType::PixelGain).data, Elements::F32(bytes_f32(&dir.path().join("gain.raw"))));
        let status: Vec<u64> = std::fs::read(dir.path().join("status.raw")).unwrap().chunks(8).map(|c| u64::from_le_bytes(c.try_into().unwrap())).collect();
        assert_eq!(get(CalibType::PixelStatus).data, Elements::U64(status));
        assert_eq!(get(CalibType::CommonMode).data, Elements::F64(vec![7.0, 1.0, 100.0, 10.0]));
        assert!(set.geometry().unwrap().0.starts_with("# geometry"));

        let ep = DetectorSpec::new("epixquad", DetectorKind::Epix10ka).unwrap();
        let set = cache.detector_constants(ep.clone(), "epixquad").unwrap();
        assert_eq!(set.get(CalibType::Pedestals).unwrap().array.shape, vec![7, 4, 352, 384]);
        let epeds: Vec<f64> = std::fs::read(dir.path().join("epeds.raw")).unwrap().chunks(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect();
        assert_eq!(set.get(CalibType::Pedestals).unwrap().array.data, Elements::F64(epeds));

        // A detector the cache lacks, a shape the detector cannot have, a Fortran array.
        let e = cache.detector_constants(jf.clone(), "jungfrau2").err().unwrap().to_string();
        assert!(e.contains("no constants for detector 'jungfrau2'") && e.contains("epixquad"), "{e}");
        assert!(matches!(cache.detector_constants(ep, "jungfrau"), Err(ConstantError::Shape { .. })));
        let e = CalibCache::read(&dir.path().join("fortran.pkl")).err().unwrap().to_string();
        assert!(e.contains("Fortran"), "{e}");

        // Truncated anywhere: an error naming the file, never a panic.
        let bytes = std::fs::read(dir.path().join("calibconst.pkl")).unwrap();
        for cut in [0, 1, 2, 20, 200, bytes.len() / 2, bytes.len() - 1] {
            let p = dir.path().join("cut.pkl");
            std::fs::write(&p, &bytes[..cut]).unwrap();
            match CalibCache::read(&p) {
                Err(ConstantError::Cache { path, .. }) => assert_eq!(path, p),
                Err(other) => panic!("{other}"),
                Ok(_) => panic!("a pickle cut at {cut} of {} read", bytes.len()),
            }
        }
    }
}
