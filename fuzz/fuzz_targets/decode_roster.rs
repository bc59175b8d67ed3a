//! Any bytes and keys: the roster decoder never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use salespulse_decode::{Contract, Format};

fuzz_target!(|data: &[u8]| {
    let c = Contract::default();
    let (key, value) = data.split_at(data.len().min(8));
    for f in [Format::Json, Format::Protobuf] {
        let _ = c.decode_roster(Some(key), Some(value), f);
        let _ = c.decode_roster(Some(key), None, f);
    }
});
