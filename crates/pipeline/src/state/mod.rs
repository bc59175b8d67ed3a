//! The state an instance keeps: the aggregation core behind [`processor::Processor`], and its
//! snapshots on the snapshots topic.

pub(crate) mod processor;
pub(crate) mod snapshot;
