//! The salespulse service runtime: configuration, the Kafka source, and the loop that feeds
//! an aggregation core and exposes and publishes its numbers.

// By job, in the order a record meets them: `source` (reading Kafka, committed offsets),
// `state` (the aggregation core's interface and its snapshots), `coordination` (which instance
// exports what, and what it may write), `sink` (producing, in transactions); `run` and
// `targets` are the service loops that wire them.
pub mod allocator;
pub mod config;
mod coordination;
mod divided;
mod events;
pub mod kafka;
mod pacer;
mod run;
mod sink;
mod source;
mod state;
mod targets;

pub use config::{ServiceArgs, Settings};
pub use run::run;
pub use source::read_to_end;
pub use state::processor::{Celebration, Processor};
pub use targets::{exposition as targets_exposition, run_targets};

/// Why a service could not start or had to stop.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The operator's configuration is invalid: fix it and restart.
    #[error("configuration: {0}")]
    Config(String),
    /// Kafka refused or failed an operation after librdkafka's own retries.
    #[error("kafka: {context}: {source}")]
    Kafka {
        context: String,
        #[source]
        source: rdkafka::error::KafkaError,
    },
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
    /// The instance's transactional producer cannot go on: a newer epoch fenced it (it was
    /// paused past its transaction timeout) or it failed fatally. The instance starts over.
    #[error("kafka: the transactional producer was fenced: {0}")]
    Fenced(String),
    /// The group's consumer stood still behind the end of some input partitions (librdkafka
    /// can leave a partition without fetches after a broker restart). The instance starts
    /// over with a new member of the group.
    #[error("kafka: the input consumer stood still behind the end of {0}")]
    Stalled(String),
    /// A call of the transactional producer did not return long after its timeout; the
    /// producer is left to it and the instance starts over with a new one.
    #[error("kafka: the transactional producer is wedged: {0}")]
    Wedged(String),
}

impl Error {
    pub(crate) fn kafka(context: &str, source: rdkafka::error::KafkaError) -> Error {
        Error::Kafka {
            context: context.to_owned(),
            source,
        }
    }
}

/// Initialises logging: JSON lines (default) or human-readable text, filtered by `RUST_LOG`.
pub fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rdkafka=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "text" {
        builder.init();
    } else {
        builder.json().flatten_event(true).init();
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
