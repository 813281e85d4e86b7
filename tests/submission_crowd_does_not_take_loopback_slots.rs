//! Submission listeners have connection slots of their own: with every slot
//! of the submission port taken (idle clients, or a crowd waiting out its
//! failed-login delays), the next LAN client is told to come back (421) and
//! a program on this machine still gets its greeting on the loopback port.

#[path = "common/aiosmtpd.rs"]
mod aiosmtpd;
mod common;
#[path = "common/submission.rs"]
mod submission;

use common::Client;

#[test]
fn submission_crowd_does_not_take_loopback_slots() {
    let Some(site) = submission::start("[limits]\nmax_connections = 3") else {
        return;
    };
    let sub = ([127, 0, 0, 1], site.starttls_port).into();
    let crowd: Vec<Client> = (0..3)
        .map(|_| {
            let mut c = Client::connect(sub);
            c.expect(220);
            c
        })
        .collect();
    let mut extra = Client::connect(sub);
    let r = extra.read_reply();
    assert!(r.starts_with("421 4.3.2"), "{r}");
    let mut local = Client::connect(site.relay.addr());
    local.expect(220);
    local.expect_cmd("QUIT", 221);
    drop(crowd);
}
