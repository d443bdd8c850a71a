//! psana-style data source strings (the forms are listed in the project README): one string names what to read.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::file::Follow;

/// When a shared-memory consumer stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopAt {
    EndRun,
    EndStep,
    Unconfigure,
    Never,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Source {
    /// A run's files: `exp=<exp>:run=<n>[:smd][:dir=<xtc dir>][:live]`.
    Run(RunSource),
    /// Explicit files read one after the other, without event building: `files=a,b`.
    Files(Vec<PathBuf>),
    /// The DAQ shared-memory monitor: `shmem=<tag>.<index>[:stop=…]`.
    Shmem { tag: String, index: u32, stop: StopAt },
    /// The built-in simulated DAQ: `sim://[?key=value&…]`.
    Sim(Vec<(String, String)>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct RunSource {
    pub exp: String,
    pub run: u32,
    /// The xtc directory (holding `smalldata/`).
    pub dir: PathBuf,
    /// Follow growing files until EndRun.
    pub live: Option<Follow>,
}

impl RunSource {
    /// psana's default xtc directory of an experiment: `$SIT_PSDM_DATA/<instr>/<exp>/xtc`,
    /// with the S3DF data root when the variable is unset.
    pub fn default_dir(exp: &str) -> PathBuf {
        let root = std::env::var_os("SIT_PSDM_DATA").unwrap_or_else(|| "/sdf/data/lcls/ds".into());
        let instr: String = exp.chars().take(3).collect();
        PathBuf::from(root).join(instr).join(exp).join("xtc")
    }
}

impl Source {
    /// Parses a psana string, a URI form, or a plain file path.
    pub fn parse(s: &str) -> Result<Source> {
        let s = s.trim();
        if let Some(rest) = s.strip_prefix("files=") {
            let files: Vec<PathBuf> = rest.split(',').filter(|f| !f.is_empty()).map(PathBuf::from).collect();
            if files.is_empty() {
                return Err(Error::Usage("files= names no file".into()));
            }
            return Ok(Source::Files(files));
        }
        if let Some(rest) = s.strip_prefix("sim://") {
            return Ok(Source::Sim(query_pairs(rest.trim_start_matches('?'))));
        }
        if s == "sim" {
            return Ok(Source::Sim(Vec::new()));
        }
        if let Some(rest) = s.strip_prefix("shmem://") {
            let (tag, query) = rest.split_once('?').unwrap_or((rest, ""));
            let (tag, index) = split_tag_index(tag)?;
            let mut stop = StopAt::EndRun;
            for (k, v) in query_pairs(query) {
                match k.as_str() {
                    "stop" => stop = parse_stop(&v)?,
                    _ => return Err(Error::Usage(format!("shmem source: unknown option '{k}' (known: stop)"))),
                }
            }
            return Ok(Source::Shmem { tag, index, stop });
        }
        if let Some(rest) = s.strip_prefix("xtc://") {
            let (dir, query) = rest.split_once('?').unwrap_or((rest, ""));
            let mut kv: Vec<(String, String)> = query_pairs(query);
            kv.push(("dir".into(), dir.into()));
            return run_from_pairs(kv, s);
        }
        if s.contains('=') {
            let kv: Vec<(String, String)> = s
                .split(':')
                .fold(Vec::<String>::new(), |mut parts, part| {
                    // `dir=` values and PV-like values may contain ':'; glue pieces without '='.
                    if part.contains('=') || parts.is_empty() || is_flag(part) {
                        parts.push(part.to_string());
                    } else {
                        let last = parts.last_mut().unwrap();
                        last.push(':');
                        last.push_str(part);
                    }
                    parts
                })
                .into_iter()
                .map(|p| match p.split_once('=') {
                    Some((k, v)) => (k.to_string(), v.to_string()),
                    None => (p, String::new()),
                })
                .collect();
            if let Some((_, v)) = kv.iter().find(|(k, _)| k == "shmem") {
                let (tag, index) = split_tag_index(v)?;
                let mut stop = StopAt::EndRun;
                for (k, v) in &kv {
                    match k.as_str() {
                        "shmem" => {}
                        "stop" => stop = parse_stop(v)?,
                        _ => return Err(Error::Usage(format!("shmem source: unknown option '{k}' (known: stop)"))),
                    }
                }
                return Ok(Source::Shmem { tag, index, stop });
            }
            return run_from_pairs(kv, s);
        }
        Ok(Source::Files(vec![PathBuf::from(s)]))
    }
}

fn is_flag(part: &str) -> bool {
    matches!(part, "live" | "smd")
}

fn query_pairs(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (p.to_string(), String::new()),
        })
        .collect()
}

fn split_tag_index(s: &str) -> Result<(String, u32)> {
    match s.rsplit_once('.') {
        Some((tag, idx)) if !tag.is_empty() => idx
            .parse()
            .map(|i| (tag.to_string(), i))
            .map_err(|_| Error::Usage(format!("shmem source '{s}': the client index after '.' must be a number"))),
        _ if !s.is_empty() => Ok((s.to_string(), 0)),
        _ => Err(Error::Usage("shmem source needs a tag, e.g. shmem=psana.0".into())),
    }
}

fn parse_stop(v: &str) -> Result<StopAt> {
    Ok(match v {
        "endrun" | "" => StopAt::EndRun,
        // LCLS-I psana's names too (shmem spec §9).
        "endstep" | "endcalibcycle" => StopAt::EndStep,
        "unconfigure" | "unmap" => StopAt::Unconfigure,
        "no" | "none" => StopAt::Never,
        _ => return Err(Error::Usage(format!("stop={v}: expected endrun, endstep (endcalibcycle), unconfigure (unmap) or no (none)"))),
    })
}

fn run_from_pairs(kv: Vec<(String, String)>, original: &str) -> Result<Source> {
    let mut exp = None;
    let mut run = None;
    let mut dir = None;
    let mut live = false;
    let mut follow = Follow::default();
    for (k, v) in kv {
        match k.as_str() {
            "exp" => exp = Some(v),
            "run" => {
                run = Some(v.parse::<u32>().map_err(|_| {
                    Error::Usage(format!("run={v}: a run number is expected (in '{original}')"))
                })?)
            }
            "dir" => dir = Some(PathBuf::from(v)),
            "live" => live = v.is_empty() || v == "1" || v == "true",
            "smd" => {}
            "poll_ms" => {
                follow.poll = Duration::from_millis(v.parse().map_err(|_| Error::Usage(format!("poll_ms={v}: milliseconds expected")))?)
            }
            "max_retries" => {
                follow.max_retries = v.parse().map_err(|_| Error::Usage(format!("max_retries={v}: a count expected")))?
            }
            _ => {
                return Err(Error::Usage(format!(
                    "unknown option '{k}' in '{original}' (known: exp, run, dir, smd, live, poll_ms, max_retries)"
                )))
            }
        }
    }
    let exp = exp.ok_or_else(|| Error::Usage(format!("'{original}' names no experiment (exp=…)")))?;
    let run = run.ok_or_else(|| Error::Usage(format!("'{original}' names no run (run=…)")))?;
    if let Ok(r) = std::env::var("PS_R_MAX_RETRIES") {
        if let Ok(n) = r.parse() {
            follow.max_retries = n;
        }
    }
    let dir = dir.unwrap_or_else(|| RunSource::default_dir(&exp));
    Ok(Source::Run(RunSource { exp, run, dir, live: live.then_some(follow) }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psana_run_string() {
        let s = Source::parse("exp=xpptut15:run=54:smd:dir=/data/ffb/xpp/xpptut15/xtc:live").unwrap();
        let Source::Run(r) = s else { panic!("{s:?}") };
        assert_eq!(r.exp, "xpptut15");
        assert_eq!(r.run, 54);
        assert_eq!(r.dir, PathBuf::from("/data/ffb/xpp/xpptut15/xtc"));
        assert_eq!(r.live, Some(Follow::default()));
    }

    #[test]
    fn uri_forms() {
        let Source::Run(r) = Source::parse("xtc:///d/xtc?exp=a&run=3&live&poll_ms=10").unwrap() else { panic!() };
        assert_eq!((r.exp.as_str(), r.run, r.dir.to_str().unwrap()), ("a", 3, "/d/xtc"));
        assert_eq!(r.live.unwrap().poll, Duration::from_millis(10));
        assert_eq!(
            Source::parse("shmem://psana.2?stop=no").unwrap(),
            Source::Shmem { tag: "psana".into(), index: 2, stop: StopAt::Never }
        );
        assert_eq!(
            Source::parse("shmem=tmo.0:stop=endstep").unwrap(),
            Source::Shmem { tag: "tmo".into(), index: 0, stop: StopAt::EndStep }
        );
        for (v, stop) in [("endcalibcycle", StopAt::EndStep), ("unmap", StopAt::Unconfigure), ("none", StopAt::Never)] {
            assert_eq!(Source::parse(&format!("shmem=psana.0:stop={v}")).unwrap(), Source::Shmem { tag: "psana".into(), index: 0, stop });
        }
        assert_eq!(Source::parse("files=a.xtc2,b.xtc2").unwrap(), Source::Files(vec!["a.xtc2".into(), "b.xtc2".into()]));
        assert_eq!(Source::parse("x/y.xtc2").unwrap(), Source::Files(vec!["x/y.xtc2".into()]));
    }

    #[test]
    fn bad_strings_say_why() {
        let e = Source::parse("exp=xpptut15:run=abc").unwrap_err().to_string();
        assert!(e.contains("run=abc"), "{e}");
        let e = Source::parse("run=3").unwrap_err().to_string();
        assert!(e.contains("no experiment"), "{e}");
        let e = Source::parse("exp=a:run=1:bogus=2").unwrap_err().to_string();
        assert!(e.contains("unknown option 'bogus'"), "{e}");
    }
}
