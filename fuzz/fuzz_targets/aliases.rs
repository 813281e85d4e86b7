//! The aliases(5) parser and its expansion (`local::aliases`), on any text.
//!
//! Properties: parsing never panics; every alias of a parsed file expands or
//! fails with a typed error (a loop, a pipe or file, too big) in bounded
//! work; an expansion never holds a name twice, and an error's text never
//! spans lines.

#![no_main]

use libfuzzer_sys::fuzz_target;
use smarthost::local::{Aliases, Target};
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let aliases = match Aliases::parse(text, Path::new("/nonexistent/aliases")) {
        Ok(a) => a,
        Err(e) => {
            assert!(!e.to_string().contains('\n'), "{e}");
            return;
        }
    };
    let names: Vec<String> = aliases.names().map(str::to_string).collect();
    for name in names.iter().take(64) {
        match aliases.expand(name) {
            Ok(targets) => {
                let mut seen = std::collections::HashSet::new();
                for t in &targets {
                    let key = match t {
                        Target::Name(n) | Target::Address(n) => n.to_ascii_lowercase(),
                        Target::Unsupported(_) => panic!("unsupported target returned"),
                    };
                    assert!(seen.insert(key), "{name}: {targets:?}");
                }
            }
            Err(e) => assert!(!e.to_string().contains('\n'), "{e}"),
        }
    }
});
