//! The LCLS-II timing system as the simulator sees it: pulses at the 929 kHz base rate
//! (1 MHz × 13/14), pulse ids counted from the EPICS epoch, and psana timestamps
//! (`sec << 32 | nsec`, spec §2.1) derived from them.

use serde::{Deserialize, Serialize};

/// LCLS-II beam rate: 1 MHz × 13/14 ≈ 928.571 kHz (spec §15).
pub const BASE_RATE_HZ: f64 = 1e6 * 13.0 / 14.0;
/// Seconds from the Unix epoch to the EPICS epoch.
pub const EPICS_EPOCH_UNIX: u64 = 631_152_000;
/// 2025-01-01 00:00:00 UTC in EPICS seconds: the earliest seed-derived run start.
const EPICS_2025: u32 = 1_104_537_600;

/// The nanoseconds since the EPICS epoch of pulse `pulse_id` (one pulse every 14/13 µs).
pub fn pulse_ns(pulse_id: u64) -> u128 {
    pulse_id as u128 * 14_000 / 13
}

/// The psana timestamp of a pulse.
pub fn pulse_timestamp(pulse_id: u64) -> u64 {
    let ns = pulse_ns(pulse_id);
    let (sec, nsec) = ((ns / 1_000_000_000) as u64, (ns % 1_000_000_000) as u64);
    (sec << 32) | nsec
}

/// The run start for a seed: some second of 2025, so runs look recent yet are reproducible.
pub fn start_from_seed(seed: u64) -> u32 {
    // SplitMix64 finaliser: nearby seeds give unrelated start times.
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    EPICS_2025 + (z % (365 * 86_400)) as u32
}

/// How the run's time is laid out; stored in the truth file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClockInfo {
    pub base_rate_hz: f64,
    /// Pulses between consecutive L1Accepts.
    pub pulse_stride: u64,
    /// The event rate the timestamps show: `base_rate_hz / pulse_stride`.
    pub event_rate_hz: f64,
    pub start_epics_sec: u32,
    /// The pulse id of the Configure.
    pub start_pulse_id: u64,
}

/// Hands out strictly increasing pulse ids: transitions take the next pulse, L1Accepts the
/// next one on the event grid, so no two datagrams of a run share a timestamp.
#[derive(Debug)]
pub struct Clock {
    info: ClockInfo,
    last: u64,
}

impl Clock {
    pub fn new(start_epics_sec: u32, event_rate_hz: f64) -> Self {
        let pulse_stride = ((BASE_RATE_HZ / event_rate_hz).round() as u64).max(1);
        // The first pulse at or after the start second.
        let start_pulse_id = (start_epics_sec as u128 * 1_000_000_000 * 13).div_ceil(14_000) as u64;
        let info = ClockInfo {
            base_rate_hz: BASE_RATE_HZ,
            pulse_stride,
            event_rate_hz: BASE_RATE_HZ / pulse_stride as f64,
            start_epics_sec,
            start_pulse_id,
        };
        Clock { info, last: start_pulse_id - 1 }
    }

    pub fn info(&self) -> &ClockInfo {
        &self.info
    }

    /// The pulse of the next transition.
    pub fn transition(&mut self) -> u64 {
        self.last += 1;
        self.last
    }

    /// The pulse the next L1Accept will get (without taking it).
    pub fn peek_event(&self) -> u64 {
        self.last + self.info.pulse_stride
    }

    /// The pulse of the next L1Accept.
    pub fn event(&mut self) -> u64 {
        self.last += self.info.pulse_stride;
        self.last
    }
}

/// `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ` for a psana timestamp.
pub fn utc_string(timestamp: u64) -> String {
    let unix = (timestamp >> 32) + EPICS_EPOCH_UNIX;
    let nsec = timestamp & 0xffff_ffff;
    let (days, secs) = (unix / 86_400, unix % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{nsec:09}Z", secs / 3600, secs / 60 % 60, secs % 60)
}

/// Gregorian date of a day count since 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epics_epoch_dates() {
        assert_eq!(utc_string(0), "1990-01-01T00:00:00.000000000Z");
        assert_eq!(utc_string(((EPICS_2025 as u64) << 32) | 5), "2025-01-01T00:00:00.000000005Z");
        // 2024-02-29 12:34:56 UTC = Unix 1709210096.
        let t = (1_709_210_096 - EPICS_EPOCH_UNIX) << 32;
        assert_eq!(utc_string(t), "2024-02-29T12:34:56.000000000Z");
    }

    #[test]
    fn pulses_map_to_increasing_times_in_the_start_second() {
        let mut c = Clock::new(EPICS_2025, 1000.0);
        assert_eq!(c.info().pulse_stride, 929);
        let first = c.transition();
        assert_eq!(pulse_timestamp(first) >> 32, EPICS_2025 as u64);
        assert!(pulse_timestamp(first) & 0xffff_ffff < 1077, "first pulse within 14/13 µs of the second");
        let e = c.event();
        assert_eq!(e, first + 929);
        assert!(pulse_timestamp(e) > pulse_timestamp(first));
        assert!(start_from_seed(1) >= EPICS_2025 && start_from_seed(1) < EPICS_2025 + 365 * 86_400);
        assert_ne!(start_from_seed(1), start_from_seed(2));
    }
}
