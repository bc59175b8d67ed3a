//! Prometheus' text format for gauge families, written straight from the caller's own series.
//!
//! The `prometheus` crate's encoder takes its protobuf structures, two owned strings a label:
//! copying millions of series into them cost more than writing the text (docs/benchmarks.md,
//! "/metrics with 10,000 reps"). What is written here is byte for byte what that encoder
//! writes for the same families (tests in `lib.rs` and in the targets service hold it so).

use std::io::Write;

/// `# HELP` and `# TYPE` of a gauge family.
pub fn gauge_header(out: &mut Vec<u8>, name: &str, help: &str) {
    let _ = write!(out, "# HELP {name} ");
    escape_into(out, help, false);
    let _ = writeln!(out, "\n# TYPE {name} gauge");
}

/// One sample of family `name`.
pub fn sample<S: AsRef<str>>(out: &mut Vec<u8>, name: &str, labels: &[(&str, S)], value: f64) {
    out.extend_from_slice(name.as_bytes());
    write_labels(out, labels);
    write_value(out, value);
}

/// One sample of family `name` whose labels were written by [`labels`] before.
pub fn sample_labelled(out: &mut Vec<u8>, name: &str, labels: &str, value: f64) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(labels.as_bytes());
    write_value(out, value);
}

/// Labels as a sample writes them, `{name="value",...}` (empty for none), to be written
/// with [`sample_labelled`] as often as the series' value changes.
pub fn labels<S: AsRef<str>>(labels: &[(&str, S)]) -> String {
    let mut out = Vec::with_capacity(16 * labels.len());
    write_labels(&mut out, labels);
    // Only whole strings and ASCII were written.
    String::from_utf8(out).unwrap_or_default()
}

fn write_labels<S: AsRef<str>>(out: &mut Vec<u8>, labels: &[(&str, S)]) {
    let mut separator = b'{';
    for (n, v) in labels {
        out.push(separator);
        out.extend_from_slice(n.as_bytes());
        out.extend_from_slice(b"=\"");
        escape_into(out, v.as_ref(), true);
        out.push(b'"');
        separator = b',';
    }
    if !labels.is_empty() {
        out.push(b'}');
    }
}

/// ` value` and the line's end. `Display`, as the encoder writes a value; a whole number
/// (counts, ranks) by way of an integer, which writes the same digits without the float's
/// shortest-digits search.
fn write_value(out: &mut Vec<u8>, value: f64) {
    if value.fract() == 0.0 && value.abs() < 1e15 && !(value == 0.0 && value.is_sign_negative()) {
        let _ = writeln!(out, " {}", value as i64);
    } else {
        let _ = writeln!(out, " {value}");
    }
}

/// The text format's escapes: backslash and newline, and in label values the double quote.
fn escape_into(out: &mut Vec<u8>, v: &str, quote: bool) {
    let needs = |b: &u8| *b == b'\\' || *b == b'\n' || (quote && *b == b'"');
    if !v.as_bytes().iter().any(needs) {
        out.extend_from_slice(v.as_bytes());
        return;
    }
    for b in v.bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'"' if quote => out.extend_from_slice(b"\\\""),
            _ => out.push(b),
        }
    }
}
