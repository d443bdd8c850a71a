//! How fast the simulated Jungfrau goes: frame generation alone (into memory), the constants'
//! text files, and a whole run written to disk.
//!
//! `cargo run -p beamtime-sim --release --example jungfrau_speed -- [MODULES] [FRAMES] [DIR]`

use std::time::Instant;

use sim::jungfrau::Jungfrau;
use sim::model::{Beamline, Model};
use xtc::writer::DgramWriter;
use xtc::TransitionId;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let modules: u32 = args.get(1).map_or(1, |a| a.parse().expect("MODULES"));
    let frames: u64 = args.get(2).map_or(200, |a| a.parse().expect("FRAMES"));
    let dir = args.get(3).map_or_else(|| std::env::temp_dir().join("beamtime-jungfrau-speed"), Into::into);

    let started = Instant::now();
    let mut jf = Jungfrau::new(0, 0, 1, modules);
    println!("{modules} module(s): model and constants in memory in {:.2} s", started.elapsed().as_secs_f64());

    let mut beamline = Beamline::new(Model::from_seed(1), 1);
    let mut buf = Vec::with_capacity(modules as usize * (2 << 20));
    let started = Instant::now();
    for i in 0..frames {
        let shot = beamline.shot(i, 1000 + i, 1 << 32 | i, 1.0);
        buf.clear();
        let mut w = DgramWriter::begin(&mut buf, TransitionId::L1Accept, shot.timestamp, 1);
        jf.write_l1(&mut w, &shot);
        w.finish();
    }
    let secs = started.elapsed().as_secs_f64();
    println!("generation: {frames} frames in {secs:.2} s = {:.0} module-frames/s on one core", (frames * modules as u64) as f64 / secs);

    let started = Instant::now();
    let (files, bytes) = jf.write_constants(&dir.join("calib"), 1).expect("constants");
    println!("constants: {} files, {:.1} MB in {:.2} s", files.len(), bytes as f64 / 1e6, started.elapsed().as_secs_f64());

    let mut cfg = sim::SimConfig::new(&dir);
    (cfg.events, cfg.steps, cfg.jungfrau, cfg.jungfrau_every, cfg.overwrite) = (frames, 1, modules, 1, true);
    let started = Instant::now();
    sim::write_run(&cfg).expect("run");
    let secs = started.elapsed().as_secs_f64();
    println!("whole run to disk (constants included): {frames} events in {secs:.2} s = {:.0} module-frames/s", (frames * modules as u64) as f64 / secs);
    std::fs::remove_dir_all(&dir).ok();
}
