//! Any bytes, as JSON and as protobuf: the deal decoder never panics, and what it accepts
//! keeps the contract's invariants.
#![no_main]

use libfuzzer_sys::fuzz_target;
use salespulse_decode::{Contract, Format};

const NOW_MS: i64 = 1_795_780_800_000;

fuzz_target!(|data: &[u8]| {
    let c = Contract::default();
    for f in [Format::Json, Format::Protobuf] {
        if let Ok(ev) = c.decode_deal(None, data, f, NOW_MS) {
            assert!(!ev.event_id.is_empty() && !ev.deal_id.is_empty() && !ev.rep_id.is_empty());
            assert!(ev.amount >= rust_decimal::Decimal::ZERO);
            assert!(ev.occurred_at <= NOW_MS + c.max_future_skew_ms);
            assert!(ev.closed_at.is_none_or(|closed| closed >= ev.created_at));
        }
        let _ = c.with_deal(None, data, f, NOW_MS, |ev| ev.amount);
    }
});
