//! Input contract v1 of salespulse: turns the bytes of a Kafka record into a validated event,
//! or into a [`DecodeError`] whose [`Reason`] names what broke the contract.
//!
//! Records are JSON unless their `content-type` header is `application/x-protobuf`. Both forms
//! go through the same validation, so a record means the same thing in either encoding.

mod contract;
mod error;
mod event;
mod raw;

pub use contract::{
    Contract, ContractConfig, ContractError, ForecastCategory, Stage, StageKind, MAX_KINDS,
};
pub use error::{DecodeError, Reason};
pub use event::{ActivityEvent, DealEvent, RosterEvent};

/// Protobuf messages generated from `proto/salespulse/v1`.
#[allow(missing_docs, missing_debug_implementations, clippy::all)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/salespulse.v1.rs"));
}

/// Value of the `content-type` header that selects protobuf.
pub const PROTOBUF_CONTENT_TYPE: &str = "application/x-protobuf";

/// Encoding of a record's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Protobuf,
}

impl Format {
    /// Chooses the format from a `content-type` header value (absent means JSON).
    pub fn from_content_type(value: Option<&[u8]>) -> Result<Format, DecodeError> {
        match value {
            None => Ok(Format::Json),
            Some(v) => {
                let v = v.split(|b| *b == b';').next().unwrap_or_default();
                match std::str::from_utf8(v).map(str::trim) {
                    Ok("application/json") | Ok("") => Ok(Format::Json),
                    Ok(PROTOBUF_CONTENT_TYPE) => Ok(Format::Protobuf),
                    _ => Err(DecodeError::new(
                        Reason::UnsupportedContentType,
                        format!("unsupported content-type {:?}", String::from_utf8_lossy(v)),
                    )),
                }
            }
        }
    }
}
