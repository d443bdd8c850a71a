//! Constant readers on files written here: NDArrIO text with psana's header, `.npy` bytes written
//! by hand (and by numpy when the project venv has it), calib-dir layouts, `cdb get` exports,
//! and every kind of bad input giving its typed error.

use std::path::{Path, PathBuf};
use std::process::Command;

use detector::constants::{cdb, ndarrio, npy, CalibType, DetectorConstants, DetectorKind, DetectorSpec, Elements};
use detector::{ConstantError, ReadError};

fn write(path: &Path, bytes: impl AsRef<[u8]>) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// NDArrIO text the way psana's `save_txt` lays it out, values formatted by `fmt`.
fn psana_text(shape: &[usize], dtype: &str, values: &[f64], fmt: impl Fn(f64) -> String) -> String {
    let shape_text = if shape.len() == 1 {
        format!("({},)", shape[0])
    } else {
        format!("({})", shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(","))
    };
    let mut s = String::from("# TITLE       pedestals of a test detector\n# EXPERIMENT  tst00000\n");
    s += "\n# HOST        psanagpu101\n# WORK_DIR    /tmp\n# FILE_NAME   x.data\n# DATE_TIME   2026-12-07T06:49:36\n# UID         tester\n";
    s += &format!("# SHAPE       {shape_text}\n# DATATYPE    {dtype}\n");
    s += &format!("\n# DTYPE       {dtype}\n# NDIM        {}\n", shape.len());
    for (i, d) in shape.iter().enumerate() {
        s += &format!("# DIM:{i}       {d}\n");
    }
    s += "\n";
    let last = *shape.last().unwrap();
    for row in values.chunks(last) {
        s += &row.iter().map(|&v| fmt(v)).collect::<Vec<_>>().join(" ");
        s += "\n";
    }
    s
}

#[test]
fn ndarrio_reads_psana_header_and_rows() {
    let dir = tempfile::tempdir().unwrap();
    let values: Vec<f64> = (0..2 * 3 * 4).map(|i| i as f64 * 1.5 - 7.0).collect();
    let path = dir.path().join("a.data");
    write(&path, psana_text(&[2, 3, 4], "float32", &values, |v| format!("{v:.1}")));
    let a = ndarrio::read_text(&path).unwrap();
    assert_eq!(a.shape, vec![2, 3, 4]);
    assert_eq!(a.data, Elements::F32(values.iter().map(|&v| v as f32).collect()));

    // 1-D: psana writes one line.
    let path = dir.path().join("cm.data");
    write(&path, psana_text(&[4], "float64", &[7.0, 1.0, 100.0, 10.0], |v| format!("{v}")));
    let a = ndarrio::read_text(&path).unwrap();
    assert_eq!(a.shape, vec![4]);
    assert_eq!(a.data, Elements::F64(vec![7.0, 1.0, 100.0, 10.0]));

    // Status as psana's dark processing writes it: %d of uint64.
    let path = dir.path().join("st.data");
    write(&path, psana_text(&[2, 2], "uint64", &[0.0, 64.0, 1.0, 0.0], |v| format!("{v}")));
    assert_eq!(ndarrio::read_text(&path).unwrap().data, Elements::U64(vec![0, 64, 1, 0]));
}

#[test]
fn ndarrio_metadata_precedence() {
    let dir = tempfile::tempdir().unwrap();
    // SHAPE beats DIM:n, DATATYPE beats DTYPE.
    let path = dir.path().join("p.data");
    write(
        &path,
        "# SHAPE       (2,3)\n# DATATYPE    uint16\n\n# DTYPE       float64\n# NDIM        2\n# DIM:0       3\n# DIM:1       2\n\n1 2 3\n4 5 6\n",
    );
    let a = ndarrio::read_text(&path).unwrap();
    assert_eq!((a.shape.clone(), a.data.clone()), (vec![2, 3], Elements::U16(vec![1, 2, 3, 4, 5, 6])));
    // Only DIM lines and DTYPE (LCLS-I style): those are used; truncation toward zero like astype.
    write(&path, "# DTYPE       int32\n# DIM:0       1\n# DIM:1       2\n# DIM:2       2\n1.9 -1.9\n3 4\n");
    let a = ndarrio::read_text(&path).unwrap();
    assert_eq!((a.shape.clone(), a.data.clone()), (vec![1, 2, 2], Elements::I32(vec![1, -1, 3, 4])));
    // No metadata at all: the table as read, float32; comments with other spacing are ignored.
    write(&path, "#no-space comment\n#  SHAPE (9,9)\n\n1 2\n3 4\n5 6\n");
    let a = ndarrio::read_text(&path).unwrap();
    assert_eq!((a.shape.clone(), a.data.clone()), (vec![3, 2], Elements::F32(vec![1., 2., 3., 4., 5., 6.])));
    write(&path, "1 2 3\n");
    assert_eq!(ndarrio::read_text(&path).unwrap().shape, vec![3]);
}

#[test]
fn ndarrio_bad_input_is_a_typed_error_with_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.data");
    let cases: &[(&str, usize, &str)] = &[
        ("# SHAPE       (2,3)\n1 2 3\n4 5\n", 3, "row 2 has 2 values"),
        ("# SHAPE       (2,3)\n1 2 3\n", 1, "needs 6 values"),
        ("# SHAPE       (2,3)\n1 2 x3\n4 5 6\n", 2, "'x3' is not a number"),
        ("# SHAPE       (2,3\n1 2 3\n", 1, "not a tuple"),
        ("# DATATYPE    complex64\n1 2 3\n", 1, "not a supported numpy dtype"),
        ("# only a header\n\n", 2, "no data rows"),
    ];
    for &(text, line, what) in cases {
        write(&path, text);
        match ndarrio::read_text(&path) {
            Err(ReadError::Text { path: p, line: l, message }) => {
                assert_eq!(p, path);
                assert_eq!(l, line, "{text:?}: {message}");
                assert!(message.contains(what), "{text:?}: {message}");
            }
            other => panic!("{text:?}: {other:?}"),
        }
    }
    match ndarrio::read_text(&dir.path().join("missing.data")) {
        Err(ReadError::Io { path: p, .. }) => assert!(p.ends_with("missing.data")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn ndarrio_writer_round_trips_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.data");
    let values: Vec<f32> = (0..24).map(|i| (i as f32).sqrt() * 1e-3 + 1234.567).collect();
    let a = detector::constants::NdArray::new(vec![2, 3, 4], Elements::F32(values));
    ndarrio::write_text(&path, &a, &["written by a test"]).unwrap();
    assert_eq!(ndarrio::read_text(&path).unwrap(), a);
}

/// A `.npy` file laid out byte by byte as numpy's format 1.0 writes it.
fn npy_bytes(descr: &str, fortran: bool, shape: &[usize], data: &[u8]) -> Vec<u8> {
    let shape_text = match shape {
        [n] => format!("({n},)"),
        _ => format!("({})", shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")),
    };
    let fortran = if fortran { "True" } else { "False" };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': {fortran}, 'shape': {shape_text}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

#[test]
fn npy_every_dtype_from_hand_written_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.npy");
    let f32s = [1.5f32, -2.25, 3.0e-7, f32::MAX, 0.0, -0.0];
    let bytes: Vec<u8> = f32s.iter().flat_map(|v| v.to_le_bytes()).collect();
    write(&p, npy_bytes("<f4", false, &[2, 3], &bytes));
    let a = npy::read_npy(&p).unwrap();
    assert_eq!(a.shape, vec![2, 3]);
    assert_eq!(a.data, Elements::F32(f32s.to_vec()));

    let f64s = [0.1f64, 1e300];
    write(&p, npy_bytes("<f8", false, &[2], &f64s.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<_>>()));
    assert_eq!(npy::read_npy(&p).unwrap().data, Elements::F64(f64s.to_vec()));

    let u16s = [0u16, 0xC000, 65535, 7];
    write(&p, npy_bytes("<u2", false, &[1, 2, 2], &u16s.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<_>>()));
    let a = npy::read_npy(&p).unwrap();
    assert_eq!((a.shape.clone(), a.data.clone()), (vec![1, 2, 2], Elements::U16(u16s.to_vec())));

    let u32s = [1u32, u32::MAX];
    write(&p, npy_bytes("<u4", false, &[2], &u32s.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<_>>()));
    assert_eq!(npy::read_npy(&p).unwrap().data, Elements::U32(u32s.to_vec()));

    let i32s = [-1i32, i32::MIN];
    write(&p, npy_bytes("<i4", false, &[2], &i32s.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<_>>()));
    assert_eq!(npy::read_npy(&p).unwrap().data, Elements::I32(i32s.to_vec()));

    write(&p, npy_bytes("|u1", false, &[3], &[0, 1, 255]));
    assert_eq!(npy::read_npy(&p).unwrap().data, Elements::U8(vec![0, 1, 255]));

    let u64s = [0u64, 1 << 63, 64];
    write(&p, npy_bytes("<u8", false, &[3], &u64s.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<_>>()));
    assert_eq!(npy::read_npy(&p).unwrap().data, Elements::U64(u64s.to_vec()));
}

#[test]
fn npy_bad_input_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.npy");
    let data: Vec<u8> = (0..6u32).flat_map(|v| (v as f32).to_le_bytes()).collect();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (npy_bytes("<f4", true, &[2, 3], &data), "Fortran order"),
        (npy_bytes("<f4", false, &[2, 3], &data[..20]), "needs 24 data bytes, the file has 20"),
        (npy_bytes("<f4", false, &[1 << 40, 1 << 40], &data), "more than 2^64"),
        (npy_bytes("<f4", false, &[1 << 40, 1 << 20], &data), "needs 4611686018427387904 data bytes"),
        (npy_bytes("<c8", false, &[3], &data), "is not one of"),
        (npy_bytes("|O", false, &[3], &data), ""),
        (b"\x93NUMPY\x01\x00\x40".to_vec(), "not a valid .npy header"),
        (b"PK\x03\x04 a zip, not an npy".to_vec(), "not a valid .npy header"),
        (Vec::new(), "not a valid .npy header"),
    ];
    for (bytes, what) in cases {
        write(&p, &bytes);
        match npy::read_npy(&p) {
            Err(ReadError::Npy { path, message, .. }) => {
                assert_eq!(path, p);
                assert!(message.contains(what), "{message}");
            }
            other => panic!("{what}: {other:?}"),
        }
    }
}

fn jungfrau(nseg: usize) -> (DetectorSpec, usize) {
    (DetectorSpec::new("jungfrau", DetectorKind::Jungfrau).unwrap(), nseg)
}

/// A Jungfrau constant `(3, nseg, 512, 1024)` filled with `v(i)` in NDArrIO text with SHAPE.
fn jungfrau_text(shape: &[usize], dtype: &str, v: impl Fn(usize) -> f64) -> String {
    let n: usize = shape.iter().product();
    let values: Vec<f64> = (0..n).map(v).collect();
    psana_text(shape, dtype, &values, |x| format!("{x}"))
}

#[test]
fn calib_dir_file_choice_and_loading() {
    let root = tempfile::tempdir().unwrap();
    let (spec, nseg) = jungfrau(1);
    let det = root.path().join("Jungfrau::CalibV1/jungfrau");
    let peds = |tag: f64| jungfrau_text(&[3, nseg, 512, 1024], "float32", move |i| tag + (i % 7) as f64);
    write(&det.join("pedestals/0-end.data"), peds(1000.0));
    write(&det.join("pedestals/5-end.data"), peds(2000.0));
    write(&det.join("pedestals/5-9.data"), peds(3000.0));
    write(&det.join("pedestals/HISTORY"), "file:5-9.data ...\n");
    write(&det.join("pedestals/5-9.data-2026-01-01T00:00:00"), "backup, never read");
    write(&det.join("pixel_status/0-end.data"), jungfrau_text(&[3, nseg, 512, 1024], "uint64", |i| if i == 3 { 64.0 } else { 0.0 }));
    write(&det.join("geometry/0-end.data"), "# geometry text\n");

    let at = |run| DetectorConstants::from_calib_dir(spec.clone(), root.path(), "jungfrau", run, 0).unwrap();
    let first_ped = |set: &DetectorConstants| match &set.get(CalibType::Pedestals).unwrap().array.data {
        Elements::F32(v) => v[0],
        other => panic!("{other:?}"),
    };
    assert_eq!(first_ped(&at(3)), 1000.0);
    assert_eq!(first_ped(&at(7)), 3000.0, "5-9 beats 5-end for run 7 (smallest end)");
    assert_eq!(first_ped(&at(12)), 2000.0);
    let set = at(7);
    assert_eq!(set.nseg(), Some(1));
    assert_eq!(set.get(CalibType::Pedestals).unwrap().path, det.join("pedestals/5-9.data"));
    assert_eq!(set.get(CalibType::PixelStatus).unwrap().array.shape, vec![3, 1, 512, 1024]);
    assert!(set.get(CalibType::PixelGain).is_none(), "absent ctypes stay absent (fallbacks)");
    assert_eq!(set.geometry().unwrap().0, "# geometry text\n");

    // A DetInfo source picks its group from the device type.
    let detinfo = root.path().join("Jungfrau::CalibV1/MfxEndstation.0:Jungfrau.0");
    write(&detinfo.join("pedestals/0-end.data"), peds(4000.0));
    let set = DetectorConstants::from_calib_dir(spec.clone(), root.path(), "MfxEndstation.0:Jungfrau.0", 1, 0).unwrap();
    assert_eq!(first_ped(&set), 4000.0);
}

#[test]
fn calib_dir_errors_name_file_detector_and_shape() {
    let root = tempfile::tempdir().unwrap();
    let (spec, _) = jungfrau(1);
    let det = root.path().join("Jungfrau::CalibV1/jungfrau");
    write(&det.join("pedestals/10-20.data"), jungfrau_text(&[3, 1, 512, 1024], "float32", |_| 1.0));

    // No file for this run.
    let e = DetectorConstants::from_calib_dir(spec.clone(), root.path(), "jungfrau", 5, 0).unwrap_err();
    assert!(matches!(&e, ConstantError::NoFileForRun { run: 5, ctype: CalibType::Pedestals, .. }), "{e}");
    assert!(e.to_string().contains("jungfrau") && e.to_string().contains("pedestals"), "{e}");

    // No folder for the detector at all.
    let e = DetectorConstants::from_calib_dir(spec.clone(), root.path(), "jungfrau2", 5, 0).unwrap_err();
    assert!(e.to_string().contains("Jungfrau::CalibV1/jungfrau2"), "{e}");

    // Wrong shape: the error names the file, the detector and psana's shape.
    write(&det.join("pixel_gain/0-end.data"), jungfrau_text(&[3, 1, 512, 1000], "float32", |_| 1.0));
    let e = DetectorConstants::from_calib_dir(spec.clone(), root.path(), "jungfrau", 15, 0).unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, ConstantError::Shape { ctype: CalibType::PixelGain, .. }), "{text}");
    assert!(text.contains("pixel_gain/0-end.data") && text.contains("(3, 1, 512, 1024)") && text.contains("jungfrau"), "{text}");

    // Unreadable: truncated text.
    write(&det.join("pixel_gain/0-end.data"), "# SHAPE       (3,1,512,1024)\n1 2 3\n");
    let e = DetectorConstants::from_calib_dir(spec.clone(), root.path(), "jungfrau", 15, 0).unwrap_err();
    match &e {
        ConstantError::Unreadable { ctype: CalibType::PixelGain, source, .. } => {
            assert!(matches!(**source, ReadError::Text { line: 1, .. }), "{e}")
        }
        other => panic!("{other}"),
    }

    // Another segment count than the pedestals.
    write(&det.join("pixel_gain/0-end.data"), jungfrau_text(&[3, 2, 512, 1024], "float32", |_| 1.0));
    let e = DetectorConstants::from_calib_dir(spec.clone(), root.path(), "jungfrau", 15, 0).unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, ConstantError::Shape { .. }) && text.contains("(3, 2, 512, 1024), expected (3, 1, 512, 1024)"), "{text}");
}

#[test]
fn shapeless_lcls1_text_is_reshaped_to_psana_shape() {
    let root = tempfile::tempdir().unwrap();
    let spec = DetectorSpec::new("epixquad", DetectorKind::Epix10ka).unwrap();
    let det = root.path().join("Epix10kaQuad::CalibV1/epixquad");
    // 7 gain ranges × 4 panels × 352 rows of 384 values, no header at all.
    let mut text = String::new();
    for row in 0..7 * 4 * 352 {
        text += &vec![format!("{}", row % 100); 384].join(" ");
        text.push('\n');
    }
    write(&det.join("pedestals/0-end.data"), &text);
    let set = DetectorConstants::from_calib_dir(spec, root.path(), "epixquad", 109, 3).unwrap();
    assert_eq!(set.get(CalibType::Pedestals).unwrap().array.shape, vec![7, 4, 352, 384]);
    assert_eq!(set.nseg(), Some(4));
}

#[test]
fn cdb_exports_prefer_npy() {
    let dir = tempfile::tempdir().unwrap();
    let spec = DetectorSpec::with_panel("opal", DetectorKind::Camera, (2, 3));
    let ped_data: Vec<u8> = [1.0f32, 2., 3., 4., 5., 6.].iter().flat_map(|v| v.to_le_bytes()).collect();
    write(&dir.path().join("clb-tst00-opal-r0012-pedestals.npy"), npy_bytes("<f4", false, &[2, 3], &ped_data));
    write(&dir.path().join("clb-tst00-opal-r0012-pedestals.data"), "# SHAPE       (2,3)\n9 9 9\n9 9 9\n");
    write(&dir.path().join("clb-tst00-opal-r0012-pedestals.meta"), "  experiment: tst00\n         run: 12\n");
    write(&dir.path().join("clb-tst00-opal-r0012-pixel_gain.data"), "# SHAPE       (2,3)\n1 1 1\n2 2 2\n");
    let files = cdb::scan_exports(dir.path(), Some("opal")).unwrap();
    assert_eq!(files.len(), 2);
    assert!(files[&CalibType::Pedestals].ends_with("clb-tst00-opal-r0012-pedestals.npy"));
    let set = DetectorConstants::from_files(spec, files.iter().map(|(c, p)| (*c, p.as_path()))).unwrap();
    assert_eq!(set.get(CalibType::Pedestals).unwrap().array.data, Elements::F32(vec![1., 2., 3., 4., 5., 6.]));
    let meta = cdb::read_meta(&dir.path().join("clb-tst00-opal-r0012-pedestals.meta")).unwrap();
    assert_eq!(meta["run"], "12");

    // Two runs' exports of one ctype: the caller must choose.
    write(&dir.path().join("clb-tst00-opal-r0013-pedestals.npy"), npy_bytes("<f4", false, &[2, 3], &ped_data));
    assert!(cdb::scan_exports(dir.path(), None).unwrap_err().to_string().contains("--calib pedestals=FILE"));
}

/// numpy from the project venv, when it is there.
fn numpy_python() -> Option<PathBuf> {
    let py = dirs_home()?.join(".cache/beamtime/venv/bin/python");
    let ok = Command::new(&py).args(["-c", "import numpy"]).status().ok()?.success();
    ok.then_some(py)
}

fn dirs_home() -> Option<PathBuf> {
    std::env::var_os("HOME").map(PathBuf::from)
}

#[test]
fn numpy_written_files_read_back() {
    let Some(py) = numpy_python() else {
        eprintln!("skipped: no ~/.cache/beamtime/venv/bin/python with numpy");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // np.save for every dtype, and a Fortran-ordered one; NDArrIO text as psana's save_txt
    // writes it (np.savetxt of the 2-D view under the header), %.3f like `cdb get`.
    let script = r#"
import sys, numpy as np
d = sys.argv[1]
rng = np.random.default_rng(5)
for name, dt in [('f4', np.float32), ('f8', np.float64), ('u2', np.uint16), ('u4', np.uint32),
                 ('i4', np.int32), ('u1', np.uint8), ('u8', np.uint64)]:
    a = (rng.random((3, 2, 4, 5)) * 200).astype(dt)
    np.save(f'{d}/{name}.npy', a)
    a.tofile(f'{d}/{name}.raw')
np.save(f'{d}/fortran.npy', np.asfortranarray(np.ones((3, 4), dtype=np.float32)))
a = (rng.random((3, 1, 4, 6)) * 1000).astype(np.float32)
hdr = ['# HOST        h', '# SHAPE       %s' % str(a.shape).replace(' ', ''), '# DATATYPE    float32',
       '\n# DTYPE       float32', '# NDIM        4'] + ['# DIM:%d       %d' % (i, s) for i, s in enumerate(a.shape)] + ['']
np.savetxt(f'{d}/ped.data', a.reshape(-1, a.shape[-1]), '%.3f', delimiter=' ', newline='\n', header='\n'.join(hdr), comments='')
np.loadtxt(f'{d}/ped.data', dtype=np.float32).tofile(f'{d}/ped.raw')
"#;
    let status = Command::new(&py).args(["-c", script, dir.path().to_str().unwrap()]).status().unwrap();
    assert!(status.success());
    for (name, size) in [("f4", 4), ("f8", 8), ("u2", 2), ("u4", 4), ("i4", 4), ("u1", 1), ("u8", 8)] {
        let a = npy::read_npy(&dir.path().join(format!("{name}.npy"))).unwrap();
        assert_eq!(a.shape, vec![3, 2, 4, 5], "{name}");
        let raw = std::fs::read(dir.path().join(format!("{name}.raw"))).unwrap();
        let ours: Vec<u8> = match &a.data {
            Elements::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Elements::F64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Elements::U16(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Elements::U32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Elements::I32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Elements::U8(v) => v.clone(),
            Elements::U64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            other => panic!("{other:?}"),
        };
        assert_eq!(ours.len(), raw.len() / size * size);
        assert_eq!(ours, raw, "{name}");
    }
    assert!(matches!(npy::read_npy(&dir.path().join("fortran.npy")), Err(ReadError::Npy { .. })));
    let a = ndarrio::read_text(&dir.path().join("ped.data")).unwrap();
    assert_eq!(a.shape, vec![3, 1, 4, 6]);
    let raw: Vec<f32> = std::fs::read(dir.path().join("ped.raw"))
        .unwrap()
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(a.data, Elements::F32(raw), "same values as numpy's loadtxt");
}
