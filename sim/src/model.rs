//! The physics behind the numbers: a pump-probe delay scan at a hard x-ray hutch.
//!
//! Each shot has a SASE pulse energy (gas detector `gmd`), an intensity monitor reading
//! (`ipm2`, four diodes around a foil), an optical laser that fires on a fixed pattern
//! (`lasr`), and a sample diode (`diode`) whose signal rises with an error-function step at
//! time zero `t0` of the pump-probe delay set by the scan:
//!
//! ```text
//! laser on:  signal = I0 · (baseline + amplitude · ½(1 + erf((delay − t0) / (√2 σ)))) + noise
//! laser off: signal = I0 · baseline + noise                 with I0 = ipm2.raw.sum
//! ```
//!
//! A small fraction of shots has the x-rays dropped (BYKIK): no pulse energy, so `gmd` and
//! `ipm2` read noise only. Every random draw comes from ChaCha8 streams of the run's seed, one
//! stream per detector family, so adding streams or a camera does not change the other values.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Gamma, StandardNormal};
use serde::{Deserialize, Serialize};

/// ChaCha8 stream numbers: one independent sequence per detector family.
pub(crate) mod rng_stream {
    pub const MODEL: u64 = 0;
    pub const BEAM: u64 = 1;
    pub const DIODE: u64 = 2;
    pub const EPICS: u64 = 3;
    pub const HSD: u64 = 4;
    pub const CAM: u64 = 5;
    pub const JUNGFRAU: u64 = 6;
    pub const EPIX10KA: u64 = 7;
    pub const EPIXM320: u64 = 8;
    pub const ARCHON: u64 = 9;
    /// The camera's per-pixel constants (`--cam-calib`); its frames keep `CAM`.
    pub const CAM_CALIB: u64 = 10;
    /// Plus the segment number.
    pub const FIM: u64 = 0x100;
}

/// A reproducible random sequence for `seed` and a detector family.
pub(crate) fn rng(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut r = ChaCha8Rng::seed_from_u64(seed);
    r.set_stream(stream);
    r
}

/// A standard normal draw.
pub(crate) fn gauss(rng: &mut ChaCha8Rng) -> f64 {
    StandardNormal.sample(rng)
}

/// The parameters of the simulated experiment; written to the truth file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Model {
    /// Time zero of the pump-probe step, ps (drawn from the seed in [-0.5, 1.0]).
    pub t0_ps: f64,
    /// Width (rms) of the step's rise, ps (drawn from the seed in [0.15, 0.40]).
    pub sigma_ps: f64,
    /// Pumped change of the diode signal per unit I0.
    pub amplitude: f64,
    /// Unpumped diode signal per unit I0.
    pub baseline: f64,
    /// Additive Gaussian noise (rms) of the diode signal.
    pub noise: f64,
    /// The scan: step `i` of `n` sets the delay `start + (stop − start) · i / (n − 1)`.
    pub delay_start_ps: f64,
    pub delay_stop_ps: f64,
    /// Every `laser_off_every`-th event (event index ≡ −1 mod this) has the laser off.
    pub laser_off_every: u64,
    /// Probability that a shot has its x-rays dropped.
    pub xray_drop_fraction: f64,
    /// Mean SASE pulse energy, mJ; energies follow a Gamma law with this shape (rms/mean = 1/√shape).
    pub gmd_mean_mj: f64,
    pub gmd_gamma_shape: f64,
    /// Noise (rms) of the gas detector reading, mJ.
    pub gmd_noise_mj: f64,
    /// ipm2 sum per mJ at the monitor, and its relative noise.
    pub ipm2_per_mj: f64,
    pub ipm2_rel_noise: f64,
    /// Electronic noise (rms) of each ipm2 channel.
    pub ipm2_channel_noise: f64,
    /// Beam pointing jitter (rms) at the monitors, mm.
    pub pointing_mm: f64,
}

impl Model {
    pub fn from_seed(seed: u64) -> Self {
        let mut r = rng(seed, rng_stream::MODEL);
        // Rounded to 1 fs so the truth file reads well.
        let t0_ps = ((-0.5 + 1.5 * r.random::<f64>()) * 1000.0).round() / 1000.0;
        let sigma_ps = ((0.15 + 0.25 * r.random::<f64>()) * 1000.0).round() / 1000.0;
        Model {
            t0_ps,
            sigma_ps,
            amplitude: 0.02,
            baseline: 0.05,
            noise: 0.003,
            delay_start_ps: -2.0,
            delay_stop_ps: 3.0,
            laser_off_every: 4,
            xray_drop_fraction: 0.01,
            gmd_mean_mj: 0.8,
            gmd_gamma_shape: 30.0,
            gmd_noise_mj: 0.005,
            ipm2_per_mj: 2.5,
            ipm2_rel_noise: 0.03,
            ipm2_channel_noise: 0.002,
            pointing_mm: 0.05,
        }
    }

    /// The pump-probe delay of step `step` of `steps`.
    pub fn delay_ps(&self, step: u32, steps: u32) -> f64 {
        if steps <= 1 {
            return self.delay_start_ps;
        }
        self.delay_start_ps + (self.delay_stop_ps - self.delay_start_ps) * step as f64 / (steps - 1) as f64
    }

    /// The fraction of the pumped change reached at `delay_ps`: ½(1 + erf((delay − t0)/(√2 σ))).
    pub fn response(&self, delay_ps: f64) -> f64 {
        0.5 * (1.0 + erf((delay_ps - self.t0_ps) / (std::f64::consts::SQRT_2 * self.sigma_ps)))
    }

    pub fn laser_on(&self, event_index: u64) -> bool {
        self.laser_off_every == 0 || event_index % self.laser_off_every != self.laser_off_every - 1
    }
}

/// The error function (Abramowitz & Stegun 7.1.26, absolute error ≤ 1.5e-7: plenty for a
/// model; the truth file sums the values actually written).
pub fn erf(x: f64) -> f64 {
    let t = 1.0 / (1.0 + 0.327_591_1 * x.abs());
    let poly = t * (0.254_829_592 + t * (-0.284_496_736 + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let y = 1.0 - poly * (-x * x).exp();
    if x < 0.0 { -y } else { y }
}

/// The intensity monitor: four diodes (left, up, right, down) around a foil.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Ipm {
    pub channels: [f64; 4],
    /// `channels[0] + channels[1] + channels[2] + channels[3]`, summed in that order.
    pub sum: f64,
    pub xpos_mm: f64,
    pub ypos_mm: f64,
}

/// Half-width of the ipm position response, mm: (left − right)/(left + right) · this.
const IPM_POS_SCALE_MM: f64 = 0.5;

impl Ipm {
    fn measure(intensity: f64, x_mm: f64, y_mm: f64, noise: f64, rng: &mut ChaCha8Rng) -> Ipm {
        let q = intensity / 4.0;
        let mut c = [
            q * (1.0 + x_mm / IPM_POS_SCALE_MM),
            q * (1.0 + y_mm / IPM_POS_SCALE_MM),
            q * (1.0 - x_mm / IPM_POS_SCALE_MM),
            q * (1.0 - y_mm / IPM_POS_SCALE_MM),
        ];
        for v in &mut c {
            *v += noise * gauss(rng);
        }
        let ratio = |a: f64, b: f64| if a + b > 0.0 { IPM_POS_SCALE_MM * (a - b) / (a + b) } else { 0.0 };
        Ipm { channels: c, sum: c[0] + c[1] + c[2] + c[3], xpos_mm: ratio(c[0], c[2]), ypos_mm: ratio(c[1], c[3]) }
    }
}

/// Everything about one shot that detectors in any stream may record.
#[derive(Clone, Copy, Debug)]
pub struct Shot {
    /// The event's index in the run (0-based, over all steps).
    pub index: u64,
    pub pulse_id: u64,
    pub timestamp: u64,
    pub delay_ps: f64,
    pub xray_on: bool,
    pub laser_on: bool,
    /// True pulse energy (0 when dropped), mJ.
    pub pulse_mj: f64,
    /// The gas detector's reading and its rms estimate.
    pub gmd_mj: f32,
    pub gmd_rms: f32,
    /// True beam position at the monitors, mm.
    pub x_mm: f64,
    pub y_mm: f64,
    pub ipm2: Ipm,
    pub diode: f64,
    /// Electron bunch charge (pC) and final energy (MeV), for the timing record.
    pub charge_pc: f64,
    pub energy_mev: f64,
}

/// Draws the shots of a run in event order.
pub struct Beamline {
    model: Model,
    beam: ChaCha8Rng,
    diode: ChaCha8Rng,
    sase: Gamma<f64>,
}

impl Beamline {
    pub fn new(model: Model, seed: u64) -> Self {
        let sase = Gamma::new(model.gmd_gamma_shape, model.gmd_mean_mj / model.gmd_gamma_shape)
            .expect("the model's Gamma parameters are positive");
        Beamline { model, beam: rng(seed, rng_stream::BEAM), diode: rng(seed, rng_stream::DIODE), sase }
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    pub fn shot(&mut self, index: u64, pulse_id: u64, timestamp: u64, delay_ps: f64) -> Shot {
        let m = &self.model;
        let r = &mut self.beam;
        let xray_on = r.random::<f64>() >= m.xray_drop_fraction;
        let pulse_mj = if xray_on { self.sase.sample(r) } else { 0.0 };
        let gmd_mj = pulse_mj + m.gmd_noise_mj * gauss(r);
        let gmd_rms = (0.003 + 0.01 * pulse_mj) * (1.0 + 0.1 * gauss(r));
        let x_mm = m.pointing_mm * gauss(r);
        let y_mm = m.pointing_mm * gauss(r);
        let intensity = m.ipm2_per_mj * pulse_mj * (1.0 + m.ipm2_rel_noise * gauss(r));
        let ipm2 = Ipm::measure(intensity, x_mm, y_mm, m.ipm2_channel_noise, r);
        let charge_pc = 100.0 + 1.5 * gauss(r);
        let energy_mev = 4000.0 + 2.0 * gauss(r);

        let laser_on = m.laser_on(index);
        let i0 = ipm2.sum;
        let pumped = if laser_on { m.amplitude * m.response(delay_ps) } else { 0.0 };
        let diode = i0 * (m.baseline + pumped) + m.noise * gauss(&mut self.diode);
        Shot {
            index,
            pulse_id,
            timestamp,
            delay_ps,
            xray_on,
            laser_on,
            pulse_mj,
            gmd_mj: gmd_mj as f32,
            gmd_rms: gmd_rms as f32,
            x_mm,
            y_mm,
            ipm2,
            diode,
            charge_pc,
            energy_mev,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_matches_known_values() {
        for (x, want) in [(0.0, 0.0), (0.5, 0.520_499_877_8), (1.0, 0.842_700_792_9), (2.0, 0.995_322_265), (-1.0, -0.842_700_792_9)] {
            assert!((erf(x) - want).abs() < 2e-7, "erf({x}) = {}", erf(x));
        }
    }

    #[test]
    fn pumped_signal_rises_through_t0() {
        let m = Model::from_seed(7);
        assert!((-0.5..=1.0).contains(&m.t0_ps) && (0.15..=0.4).contains(&m.sigma_ps));
        assert!((m.response(m.t0_ps) - 0.5).abs() < 1e-6);
        assert!(m.response(m.t0_ps - 5.0 * m.sigma_ps) < 1e-3);
        assert!(m.response(m.t0_ps + 5.0 * m.sigma_ps) > 0.999);
        assert_eq!((m.delay_ps(0, 6), m.delay_ps(5, 6)), (-2.0, 3.0));
        assert_eq!((0..8).filter(|&i| m.laser_on(i)).count(), 6);
    }

    #[test]
    fn shots_are_reproducible_and_plausible() {
        let m = Model::from_seed(3);
        let (mut a, mut b) = (Beamline::new(m.clone(), 3), Beamline::new(m, 3));
        let mut on = 0.0;
        let n = 2000;
        for i in 0..n {
            let (s, t) = (a.shot(i, 10 + i, 0, 3.0), b.shot(i, 10 + i, 0, 3.0));
            assert_eq!(s.diode.to_bits(), t.diode.to_bits());
            let sum = s.ipm2.channels.iter().fold(0.0, |acc, c| acc + c);
            assert_eq!(sum.to_bits(), s.ipm2.sum.to_bits());
            if s.xray_on {
                on += 1.0;
                assert!(s.ipm2.sum > 0.5 && s.ipm2.sum < 5.0, "ipm2 sum {}", s.ipm2.sum);
            }
        }
        let frac = on / n as f64;
        assert!(frac > 0.97 && frac < 1.0, "x-ray fraction {frac}");
    }
}
