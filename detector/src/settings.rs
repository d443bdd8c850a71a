//! Calibration settings (`--calib [DET:]KEY=VALUE`, repeatable), parsed the same way wherever
//! they are given: `beamtime run`/`dump` and `%source` check them before starting anything, every
//! rank of the job reads them back from the job description.
//!
//! | KEY | VALUE | meaning |
//! |---|---|---|
//! | a constant type (`pedestals`, `pixel_gain`, `pixel_offset`, `pixel_rms`, `pixel_status`, `status_extra`, `pixel_mask`, `common_mode`, `geometry`) | FILE (`.npy` or NDArrIO text) | that constant, over what a calib dir or cache gives |
//! | `mask` | FILE | a user mask ANDed with psana's default mask (1 = good) |
//! | `cmpars` | `alg,mode,cormax[,npix_min]` | psana's common-mode correction, e.g. `7,1,100`; `0` turns it off |
//! | `cache` | FILE | psana2's calibration cache pickle (`calibconst.pkl` of `calib_prefetch`) |
//! | `exports` | DIR | constants as `cdb get` exports them (`clb-<exp>-<det>-r<run>-<ctype>.npy`) |
//!
//! `DET:` limits a setting to one detector; without it the setting applies to every detector a
//! query calibrates.

use std::path::{Path, PathBuf};

use crate::constants::CalibType;

/// What one setting gives.
#[derive(Clone, Debug, PartialEq)]
pub enum CalibValue {
    Constant(CalibType, PathBuf),
    Mask(PathBuf),
    /// psana's `cmpars`; empty or a leading 0 turns common mode off.
    CommonMode(Vec<f64>),
    Cache(PathBuf),
    Exports(PathBuf),
}

/// One `--calib` setting.
#[derive(Clone, Debug, PartialEq)]
pub struct CalibSetting {
    /// `None`: every detector.
    pub detector: Option<String>,
    pub value: CalibValue,
}

impl CalibSetting {
    /// Parses `[DET:]KEY=VALUE`; relative paths are taken from `base` (the driver's directory),
    /// so that every rank finds the same file.
    pub fn parse(text: &str, base: &Path) -> Result<CalibSetting, String> {
        let usage = || {
            format!(
                "--calib {text}: expected [DET:]KEY=VALUE with KEY a constant type ({}), mask, cmpars, cache or exports",
                CalibType::ALL.iter().map(|c| c.name()).collect::<Vec<_>>().join(", ")
            )
        };
        let (lhs, value) = text.split_once('=').ok_or_else(usage)?;
        let (detector, key) = match lhs.split_once(':') {
            Some((d, k)) if !d.is_empty() => (Some(d.to_string()), k),
            Some(_) => return Err(usage()),
            None => (None, lhs),
        };
        if value.is_empty() {
            return Err(usage());
        }
        let path = || base.join(value);
        let value = match key {
            "mask" => CalibValue::Mask(path()),
            "cache" => CalibValue::Cache(path()),
            "exports" => CalibValue::Exports(path()),
            "cmpars" => {
                let params: Result<Vec<f64>, _> = value.split(',').map(|p| p.trim().parse::<f64>()).collect();
                let params = params.map_err(|_| format!("--calib {text}: cmpars are numbers, e.g. cmpars=7,1,100"))?;
                if params.first().is_some_and(|&a| a != 0.0) && params.len() < 3 {
                    return Err(format!("--calib {text}: cmpars are alg,mode,cormax[,npix_min] (psana's), e.g. 7,1,100"));
                }
                CalibValue::CommonMode(params)
            }
            other => CalibValue::Constant(CalibType::from_name(other).ok_or_else(usage)?, path()),
        };
        Ok(CalibSetting { detector, value })
    }

    /// Whether the setting applies to detector `det`.
    pub fn applies_to(&self, det: &str) -> bool {
        self.detector.as_deref().is_none_or(|d| d == det)
    }

    /// The file or directory the setting names, if any.
    pub fn path(&self) -> Option<&Path> {
        match &self.value {
            CalibValue::Constant(_, p) | CalibValue::Mask(p) | CalibValue::Cache(p) | CalibValue::Exports(p) => Some(p),
            CalibValue::CommonMode(_) => None,
        }
    }

    /// The setting as the job reads it back (`[DET:]KEY=VALUE`, paths absolute).
    pub fn to_arg(&self) -> String {
        let det = self.detector.as_ref().map(|d| format!("{d}:")).unwrap_or_default();
        let show = |p: &Path| p.display().to_string();
        match &self.value {
            CalibValue::Constant(c, p) => format!("{det}{}={}", c.name(), show(p)),
            CalibValue::Mask(p) => format!("{det}mask={}", show(p)),
            CalibValue::Cache(p) => format!("{det}cache={}", show(p)),
            CalibValue::Exports(p) => format!("{det}exports={}", show(p)),
            CalibValue::CommonMode(v) => {
                format!("{det}cmpars={}", v.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(","))
            }
        }
    }

    /// Parses the driver's settings and checks that the files they name exist (a typo is found
    /// before the job starts).
    pub fn parse_all(args: &[String], base: &Path) -> Result<Vec<CalibSetting>, String> {
        let mut out = Vec::with_capacity(args.len());
        for arg in args {
            let s = CalibSetting::parse(arg, base)?;
            if let Some(p) = s.path()
                && !p.exists()
            {
                return Err(format!("--calib {arg}: {} does not exist", p.display()));
            }
            out.push(s);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse_with_detector_paths_and_parameters() {
        let base = Path::new("/data/exp");
        let s = CalibSetting::parse("jungfrau:pedestals=peds.npy", base).unwrap();
        assert_eq!(s.detector.as_deref(), Some("jungfrau"));
        assert_eq!(s.value, CalibValue::Constant(CalibType::Pedestals, PathBuf::from("/data/exp/peds.npy")));
        assert!(s.applies_to("jungfrau") && !s.applies_to("epixquad"));
        assert_eq!(CalibSetting::parse(&s.to_arg(), Path::new("/elsewhere")).unwrap(), s);
        let cm = CalibSetting::parse("cmpars=7,1,100", base).unwrap();
        assert_eq!(cm.value, CalibValue::CommonMode(vec![7.0, 1.0, 100.0]));
        assert!(cm.applies_to("anything"));
        assert_eq!(CalibSetting::parse("cmpars=0", base).unwrap().value, CalibValue::CommonMode(vec![0.0]));
        assert_eq!(CalibSetting::parse("mask=/abs/m.npy", base).unwrap().value, CalibValue::Mask("/abs/m.npy".into()));
        assert_eq!(CalibSetting::parse("cache=c.pkl", base).unwrap().value, CalibValue::Cache("/data/exp/c.pkl".into()));
    }

    #[test]
    fn bad_settings_say_what_is_expected() {
        let base = Path::new("/");
        for bad in ["pedestals", "pedestal=x", ":pedestals=x", "cmpars=7,1", "cmpars=a,b,c", "mask="] {
            let e = CalibSetting::parse(bad, base).unwrap_err();
            assert!(e.contains(bad), "{bad}: {e}");
        }
        let e = CalibSetting::parse_all(&["pedestals=/no/such/file.npy".into()], base).unwrap_err();
        assert!(e.contains("/no/such/file.npy does not exist"), "{e}");
    }
}
