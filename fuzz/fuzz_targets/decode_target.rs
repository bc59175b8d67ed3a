//! Any bytes: the target record parser never panics, and accepted targets are non-negative.
#![no_main]

use libfuzzer_sys::fuzz_target;
use salespulse_targets::TargetRules;

fuzz_target!(|data: &[u8]| {
    let rules = TargetRules {
        kinds: ["call".to_owned()].into_iter().collect(),
        reporting_currency: "USD".into(),
        rates: [
            ("USD".to_owned(), 1.into()),
            ("EUR".to_owned(), "1.08".parse().unwrap_or_default()),
        ]
        .into_iter()
        .collect(),
    };
    if let Ok(t) = rules.parse(data) {
        assert!(!t.value.is_sign_negative() || t.value.is_zero());
        let _ = t.key();
    }
});
