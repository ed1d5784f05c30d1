//! Test-only fault injection. Built only with the `fault-injection` feature
//! (the test command turns it on; shipped builds — setup.sh, the
//! Dockerfile — never have it), it lets the end-to-end tests make one internal step fail in a real server — the
//! failures no client can cause — so each error code has a test that
//! provokes it. `STT_FAULT` names the step, read once at start:
//!
//! - `decode`: every decode fails (ERR2002);
//! - `session_token`: issuing a session token fails (ERR3001);
//! - `vad`: voice activity detection fails (ERR3002);
//! - `slow_model_load`: loading a model takes 5 s more (ERR2003 meanwhile).
//!
//! Without the feature [`armed`] is `false` at compile time and the hooks
//! vanish.

/// A step a test can make fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Decode,
    SessionToken,
    Vad,
    SlowModelLoad,
}

/// The message every injected failure carries, so a test can tell it from
/// a real one.
pub const INJECTED: &str = "injected fault (STT_FAULT)";

/// Whether `STT_FAULT` arms `fault` in this process.
#[cfg(feature = "fault-injection")]
pub fn armed(fault: Fault) -> bool {
    use std::sync::OnceLock;
    static ARMED: OnceLock<Option<Fault>> = OnceLock::new();
    let armed = ARMED.get_or_init(|| match std::env::var("STT_FAULT").ok()?.as_str() {
        "decode" => Some(Fault::Decode),
        "session_token" => Some(Fault::SessionToken),
        "vad" => Some(Fault::Vad),
        "slow_model_load" => Some(Fault::SlowModelLoad),
        other => panic!("STT_FAULT={other}: not a fault this build knows"),
    });
    *armed == Some(fault)
}

/// Whether `STT_FAULT` arms `fault` in this process: never, in this build.
#[cfg(not(feature = "fault-injection"))]
pub const fn armed(_fault: Fault) -> bool {
    false
}
