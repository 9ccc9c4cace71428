//! The agent's state file loader (`lanlink_agent::state::decode`, what
//! `Store::load` runs on the bytes of `endpoints.json`).
//!
//! Checks: nothing panics; a loaded state written back in the file's form
//! loads again to the same state (a restart after a restart adopts the same
//! attachments); every loaded lease goes through the lease machine
//! (`lanlink_fuzz::drive_lease`) without breaking its invariants, whatever
//! its timers say.
#![no_main]

use std::path::Path;

use lanlink_agent::state::{decode, v1};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("/var/lib/lanlink/endpoints.json");
    let Ok(state) = decode(path, data) else {
        return;
    };
    let written = serde_json::to_vec(&v1::File::from(&state)).expect("a state serializes");
    let again = decode(path, &written).unwrap_or_else(|e| {
        panic!(
            "a written state does not load: {e:#}\n{}",
            String::from_utf8_lossy(&written)
        )
    });
    assert_eq!(again, state, "the state changed through the file");
    for endpoint in state.endpoints.values() {
        let _ = endpoint.info();
        if let Some(lease) = &endpoint.lease {
            lanlink_fuzz::drive_lease(lease, data.get(..16).unwrap_or(data));
        }
    }
});
