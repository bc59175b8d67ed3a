//! Any bytes, as JSON and as protobuf: the activity decoder never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use salespulse_decode::{Contract, Format};

const NOW_MS: i64 = 1_795_780_800_000;

fuzz_target!(|data: &[u8]| {
    let c = Contract::default();
    for f in [Format::Json, Format::Protobuf] {
        if let Ok(ev) = c.decode_activity(None, data, f, NOW_MS) {
            assert!(!ev.event_id.is_empty() && !ev.rep_id.is_empty());
            assert!(usize::from(ev.kind) < c.kinds().len());
        }
        let _ = c.with_activity(None, data, f, NOW_MS, |ev| ev.kind);
    }
});
