//! The configuration loader (`config::Config`), on any file text: TOML syntax,
//! `deny_unknown_fields`, and the validation of every setting (addresses,
//! networks, durations, the retry schedule, routes, token sources, `[local]`,
//! the route table with its IDNA patterns).
//!
//! Secret files are not read (as for client commands), so the target never
//! depends on what the machine holds.
//!
//! Properties: never panics; every error names the file, and every problem
//! with a place names a line that exists; a valid configuration can be shown
//! (`check`) and routes any sender.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use smarthost::config::{describe, Config, ConfigError};

const FILE: &str = "fuzz.toml";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let base = Path::new("/nonexistent/smarthost-fuzz");
    match Config::parse_for_client(text, FILE, base) {
        Ok(config) => {
            let _ = describe(&config);
            for sender in ["", "a@example.org", "x@sub.example.org", "bücher@bücher.de"] {
                let route = config.routing.lookup(sender).route;
                assert!(config.routes.contains_key(route), "{route:?}");
            }
        }
        Err(ConfigError::Parse { file, message }) => {
            assert_eq!(file, FILE);
            assert!(message.contains("line "), "no line in {message:?}");
        }
        Err(ConfigError::Invalid(problems)) => {
            assert!(!problems.is_empty());
            let lines = text.split('\n').count();
            for p in &problems {
                assert_eq!(p.file, FILE);
                if let Some(line) = p.line {
                    assert!((1..=lines).contains(&line), "{p} of {lines} lines");
                }
                let shown = p.to_string();
                assert!(shown.starts_with(FILE), "{shown}");
            }
        }
        Err(e @ ConfigError::Read { .. }) => panic!("parse read a file: {e}"),
        // /etc/aliases and /etc/mailname are read only by Config::load.
        Err(e @ ConfigError::Names(_)) => panic!("parse read the system's names: {e}"),
    }
});
