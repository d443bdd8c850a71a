//! `$VAR`, `${VAR}` and `${VAR:-default}` in magic arguments, expanded as a shell would.

use crate::cell::CellError;

/// Expands `$VAR`, `${VAR}` and `${VAR:-default}` (as a shell would), so that a notebook can
/// name where its data is without naming a machine's paths (the demo sets BEAMTIME_DEMO_DIR).
pub fn expand_env(text: &str) -> Result<String, CellError> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, default, used) = if let Some(inner) = after.strip_prefix('{') {
            let end = inner.find('}').ok_or_else(|| CellError::new("UsageError", format!("unclosed ${{ in {text}")))?;
            let body = &inner[..end];
            match body.split_once(":-") {
                Some((n, d)) => (n, Some(d), end + 2),
                None => (body, None, end + 2),
            }
        } else {
            let end = after.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(after.len());
            (&after[..end], None, end)
        };
        if name.is_empty() {
            out.push('$');
            rest = after;
            continue;
        }
        match (std::env::var(name).ok().filter(|v| !v.is_empty()), default) {
            (Some(v), _) => out.push_str(&v),
            (None, Some(d)) => out.push_str(d),
            (None, None) => {
                return Err(CellError::new(
                    "UsageError",
                    format!("${name} is not set in the kernel's environment (`make demo` sets the demo's variables; or write the value itself)"),
                ))
            }
        }
        rest = &after[used..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::expand_env;

    #[test]
    fn environment_variables_expand_like_a_shell() {
        // SAFETY: this test's own variable names; no other thread reads them.
        unsafe { std::env::set_var("BT_TEST_DIR", "/data/run") };
        assert_eq!(expand_env("exp=x:run=1:dir=${BT_TEST_DIR}/ffb:live").unwrap(), "exp=x:run=1:dir=/data/run/ffb:live");
        assert_eq!(expand_env("dir=$BT_TEST_DIR:live").unwrap(), "dir=/data/run:live");
        assert_eq!(expand_env("shmem=${BT_TEST_UNSET:-demo}.0").unwrap(), "shmem=demo.0");
        assert_eq!(expand_env("cost $ 5").unwrap(), "cost $ 5");
        let e = expand_env("dir=$BT_TEST_UNSET/x").unwrap_err();
        assert!(e.evalue.contains("$BT_TEST_UNSET is not set"), "{}", e.evalue);
        assert!(expand_env("${BT_TEST_DIR").is_err());
    }
}
