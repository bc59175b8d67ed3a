//! The quarterly report of a sales org from what salespulse publishes: the latest value of
//! every series on `sales.metrics` and the targets on `sales.targets`.
//!
//! [`model`] turns the records into tables and chart data (pure, tested against independent
//! computations), [`charts`] draws the charts as SVG and [`render`] writes HTML, CSV or
//! Markdown.

pub mod charts;
pub mod model;
pub mod render;

pub use model::{build, Report, ReportError, Row, Settings};
pub use render::Format;
