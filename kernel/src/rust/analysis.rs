//! Positions for completion and inspection of Rust code: code points (Jupyter) ⇄ bytes (evcxr),
//! and the Rust part of a cell with its magic lines blanked out.

/// Code point offset → byte offset (clamped to the end).
pub fn byte_offset(code: &str, cp: usize) -> usize {
    code.char_indices().nth(cp).map_or(code.len(), |(b, _)| b)
}

/// Byte offset → code point offset (a position inside a character counts as its start).
pub fn cp_offset(code: &str, byte: usize) -> usize {
    let mut b = byte.min(code.len());
    while !code.is_char_boundary(b) {
        b -= 1;
    }
    code[..b].chars().count()
}

/// The Rust part of a cell for analysis: leading magic lines become spaces, so that byte
/// offsets are unchanged. `None` for a cell magic (`%%…`) or when the cursor is on a magic line.
pub fn rust_source_for_analysis(code: &str, cursor_byte: usize) -> Option<String> {
    if code.trim_start().starts_with("%%") {
        return None;
    }
    let mut out = String::with_capacity(code.len());
    let mut in_magics = true;
    let mut pos = 0;
    for line in code.split_inclusive('\n') {
        let t = line.trim();
        if in_magics && t.starts_with('%') {
            if cursor_byte >= pos && cursor_byte <= pos + line.trim_end_matches('\n').len() {
                return None;
            }
            // Keep byte lengths: a multi-byte character becomes as many spaces as it has bytes.
            for c in line.chars() {
                if c == '\n' {
                    out.push('\n');
                } else {
                    out.extend(std::iter::repeat_n(' ', c.len_utf8()));
                }
            }
        } else {
            if !t.is_empty() {
                in_magics = false;
            }
            out.push_str(line);
        }
        pos += line.len();
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_convert_between_code_points_and_bytes() {
        let s = "é = 1; x";
        assert_eq!(byte_offset(s, 1), 2);
        assert_eq!(cp_offset(s, 2), 1);
        assert_eq!(byte_offset(s, 100), s.len());
        assert_eq!(cp_offset(s, 1), 0);
    }

    #[test]
    fn magic_lines_become_spaces_of_the_same_length() {
        let code = "%load t f.é\nlet x = 1;\nx.";
        let src = rust_source_for_analysis(code, code.len()).unwrap();
        assert_eq!(src.len(), code.len());
        assert!(src.starts_with("            \nlet x"));
        assert_eq!(rust_source_for_analysis(code, 3), None);
        assert_eq!(rust_source_for_analysis("%%sql\nSELECT", 8), None);
    }
}
