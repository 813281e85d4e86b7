//! Checks shared by the fuzz targets.

/// Every CR in `m` is followed by an LF and every LF preceded by a CR.
pub fn assert_crlf_only(m: &[u8]) {
    for (i, &b) in m.iter().enumerate() {
        match b {
            b'\r' => assert_eq!(m.get(i + 1), Some(&b'\n'), "bare CR at {i} in {m:?}"),
            b'\n' => assert!(i > 0 && m[i - 1] == b'\r', "bare LF at {i} in {m:?}"),
            _ => {}
        }
    }
}

/// Where `needle` first occurs in `hay`.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
