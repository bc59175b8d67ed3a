use std::fmt;

/// Why a record was rejected. The short code goes into the dead-letter header `reason` and
/// into the `reason` label of `salespulse_rejected_total`, so the set is closed and small.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reason {
    PayloadTooLarge,
    EmptyPayload,
    UnsupportedContentType,
    InvalidJson,
    InvalidProtobuf,
    MissingField,
    WrongType,
    EmptyId,
    IdTooLong,
    InvalidAmount,
    NegativeAmount,
    AmountOutOfRange,
    UnknownCurrency,
    UnknownStage,
    UnknownKind,
    UnknownForecastCategory,
    InvalidTimestamp,
    FutureTimestamp,
    ClosedBeforeCreated,
    KeyMismatch,
}

impl Reason {
    pub const ALL: [Reason; 20] = [
        Reason::PayloadTooLarge,
        Reason::EmptyPayload,
        Reason::UnsupportedContentType,
        Reason::InvalidJson,
        Reason::InvalidProtobuf,
        Reason::MissingField,
        Reason::WrongType,
        Reason::EmptyId,
        Reason::IdTooLong,
        Reason::InvalidAmount,
        Reason::NegativeAmount,
        Reason::AmountOutOfRange,
        Reason::UnknownCurrency,
        Reason::UnknownStage,
        Reason::UnknownKind,
        Reason::UnknownForecastCategory,
        Reason::InvalidTimestamp,
        Reason::FutureTimestamp,
        Reason::ClosedBeforeCreated,
        Reason::KeyMismatch,
    ];

    pub fn code(self) -> &'static str {
        match self {
            Reason::PayloadTooLarge => "payload_too_large",
            Reason::EmptyPayload => "empty_payload",
            Reason::UnsupportedContentType => "unsupported_content_type",
            Reason::InvalidJson => "invalid_json",
            Reason::InvalidProtobuf => "invalid_protobuf",
            Reason::MissingField => "missing_field",
            Reason::WrongType => "wrong_type",
            Reason::EmptyId => "empty_id",
            Reason::IdTooLong => "id_too_long",
            Reason::InvalidAmount => "invalid_amount",
            Reason::NegativeAmount => "negative_amount",
            Reason::AmountOutOfRange => "amount_out_of_range",
            Reason::UnknownCurrency => "unknown_currency",
            Reason::UnknownStage => "unknown_stage",
            Reason::UnknownKind => "unknown_kind",
            Reason::UnknownForecastCategory => "unknown_forecast_category",
            Reason::InvalidTimestamp => "invalid_timestamp",
            Reason::FutureTimestamp => "future_timestamp",
            Reason::ClosedBeforeCreated => "closed_before_created",
            Reason::KeyMismatch => "key_mismatch",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// A record that breaks the input contract. Always the producer's fault: never retried.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {detail}")]
pub struct DecodeError {
    pub reason: Reason,
    pub detail: String,
}

impl DecodeError {
    pub fn new(reason: Reason, detail: impl Into<String>) -> Self {
        DecodeError {
            reason,
            detail: detail.into(),
        }
    }

    pub(crate) fn from_json(e: &serde_json::Error) -> Self {
        let msg = e.to_string();
        let reason = match e.classify() {
            serde_json::error::Category::Data if msg.starts_with("missing field") => {
                Reason::MissingField
            }
            serde_json::error::Category::Data => Reason::WrongType,
            _ => Reason::InvalidJson,
        };
        DecodeError::new(reason, msg)
    }
}
