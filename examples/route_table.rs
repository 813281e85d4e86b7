//! Asks a configuration which route each sender takes, the way `smarthost route`
//! does, from library code:
//!
//!     cargo run --example route_table -- conf/office365.toml app@contoso.com x@shop.contoso.com

use std::path::Path;

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(config) = args.next() else {
        eprintln!("usage: route_table CONFIG SENDER...");
        std::process::exit(64);
    };
    // Sample configs name secret files that may not exist here: report, don't panic.
    let config = match smarthost::config::Config::load(Path::new(&config)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(78);
        }
    };
    for sender in args {
        let m = config.routing.lookup(&sender);
        println!("{sender}: {} ({})", m.route, m.decided_by);
    }
}
