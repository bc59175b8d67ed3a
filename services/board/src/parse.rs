//! Prometheus text exposition (format 0.0.4) into plain samples.
//!
//! Only what the board reads is kept: metric name, labels and value. `# HELP` / `# TYPE`
//! comments and timestamps are dropped, and a malformed line is skipped rather than failing
//! the whole scrape, so one odd series never blanks the board.

/// One series of a scrape.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Whether this is series `name` carrying every `(label, value)` pair of `with`; a pair
    /// with an empty value requires the label to be absent, as in PromQL.
    pub fn is(&self, name: &str, with: &[(&str, &str)]) -> bool {
        self.name == name
            && with
                .iter()
                .all(|(k, v)| self.label(k).unwrap_or_default() == *v)
    }
}

/// Every well-formed sample of `text`, in order.
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let mut cur = Cursor { rest: line };
    let mut name = cur.take_while(is_name_char).to_owned();
    cur.skip_ws();
    let mut labels = Vec::new();
    if cur.eat('{') {
        loop {
            cur.skip_ws();
            if cur.eat('}') {
                break;
            }
            let (key, quoted) = if cur.peek() == Some('"') {
                (cur.quoted()?, true)
            } else {
                (cur.take_while(is_name_char).to_owned(), false)
            };
            cur.skip_ws();
            if cur.eat('=') {
                cur.skip_ws();
                let value = cur.quoted()?;
                if key.is_empty() {
                    return None;
                }
                labels.push((key, value));
            } else if quoted && name.is_empty() {
                // UTF-8 names are written as a bare quoted string inside the braces.
                name = key;
            } else {
                return None;
            }
            cur.skip_ws();
            if cur.eat(',') {
                continue;
            }
            if cur.eat('}') {
                break;
            }
            return None;
        }
    }
    if name.is_empty() {
        return None;
    }
    let value = cur.rest.split_whitespace().next()?;
    Some(Sample {
        name,
        labels,
        value: parse_value(value)?,
    })
}

/// Go's `ParseFloat` spellings as written by Prometheus clients: `1.5e+06`, `+Inf`, `NaN`.
fn parse_value(s: &str) -> Option<f64> {
    s.parse::<f64>().ok()
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

struct Cursor<'a> {
    rest: &'a str,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<char> {
        self.rest.chars().next()
    }

    fn eat(&mut self, c: char) -> bool {
        match self.rest.strip_prefix(c) {
            Some(r) => {
                self.rest = r;
                true
            }
            None => false,
        }
    }

    fn skip_ws(&mut self) {
        self.rest = self.rest.trim_start();
    }

    fn take_while(&mut self, f: impl Fn(char) -> bool) -> &'a str {
        let end = self.rest.find(|c| !f(c)).unwrap_or(self.rest.len());
        let (taken, rest) = self.rest.split_at(end);
        self.rest = rest;
        taken
    }

    /// A double-quoted string with the exposition escapes `\\`, `\"` and `\n` undone.
    fn quoted(&mut self) -> Option<String> {
        if !self.eat('"') {
            return None;
        }
        let mut out = String::new();
        let mut chars = self.rest.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    self.rest = &self.rest[i + 1..];
                    return Some(out);
                }
                '\\' => match chars.next() {
                    Some((_, 'n')) => out.push('\n'),
                    Some((_, '\\')) => out.push('\\'),
                    Some((_, '"')) => out.push('"'),
                    // Not an escape the format defines: keep it as written.
                    Some((_, other)) => {
                        out.push('\\');
                        out.push(other);
                    }
                    None => return None,
                },
                c => out.push(c),
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(line: &str) -> Sample {
        let mut all = parse(line);
        assert_eq!(all.len(), 1, "{line:?} -> {all:?}");
        all.remove(0)
    }

    #[test]
    fn plain_and_labelled_samples() {
        let s = one(r#"sales_rep_bookings{rep="rep-001",team="team-emea",window="qtd"} 12345.5"#);
        assert_eq!(s.name, "sales_rep_bookings");
        assert_eq!(s.label("rep"), Some("rep-001"));
        assert_eq!(s.label("team"), Some("team-emea"));
        assert_eq!(s.label("window"), Some("qtd"));
        assert_eq!(s.value, 12345.5);

        let s = one("up 1");
        assert!(s.labels.is_empty());
        assert_eq!(s.value, 1.0);

        let s = one("empty{} 2");
        assert!(s.labels.is_empty());
        assert_eq!(s.value, 2.0);
    }

    #[test]
    fn escaped_label_values() {
        let s = one(r#"m{a="back\\slash",b="say \"hi\"",c="two\nlines",d="}, {=",e="c:\\x"} 1"#);
        assert_eq!(s.label("a"), Some("back\\slash"));
        assert_eq!(s.label("b"), Some("say \"hi\""));
        assert_eq!(s.label("c"), Some("two\nlines"));
        assert_eq!(s.label("d"), Some("}, {="));
        assert_eq!(s.label("e"), Some("c:\\x"));
    }

    #[test]
    fn scientific_notation_and_special_values() {
        assert_eq!(one("m 1.2345e+06").value, 1_234_500.0);
        assert_eq!(one("m 5E-1").value, 0.5);
        assert_eq!(one("m -3.5e2").value, -350.0);
        assert_eq!(one("m +Inf").value, f64::INFINITY);
        assert_eq!(one("m -Inf").value, f64::NEG_INFINITY);
        assert!(one("m NaN").value.is_nan());
    }

    #[test]
    fn label_order_spacing_trailing_comma_and_timestamp() {
        let s = one(r#"m { window = "qtd" , rep="r1", } 7 1700000000000"#);
        assert_eq!(s.labels.len(), 2);
        assert!(s.is("m", &[("rep", "r1"), ("window", "qtd")]));
        assert_eq!(s.value, 7.0);
    }

    #[test]
    fn quoted_utf8_name() {
        let s = one(r#"{"sales.rep.bookings",rep="r1"} 3"#);
        assert_eq!(s.name, "sales.rep.bookings");
        assert_eq!(s.label("rep"), Some("r1"));
    }

    #[test]
    fn skips_comments_blank_and_malformed_lines() {
        let text = "\
# HELP sales_org_bookings Bookings.
# TYPE sales_org_bookings gauge
sales_org_bookings{window=\"today\"} 1e3

   # indented comment
broken{rep=\"r1\" 1
unterminated{rep=\"r1} 1
novalue{rep=\"r1\"}
notanumber 12abc
sales_org_deals_won{window=\"today\"} 4
";
        let all = parse(text);
        assert_eq!(all.len(), 2, "{all:?}");
        assert!(all[0].is("sales_org_bookings", &[("window", "today")]));
        assert_eq!(all[0].value, 1000.0);
        assert!(all[1].is("sales_org_deals_won", &[("window", "today")]));
        assert_eq!(all[1].value, 4.0);
    }

    #[test]
    fn empty_value_in_filter_means_absent() {
        let s = one(r#"sales_rep_rank{rep="r1",metric="bookings"} 1"#);
        assert!(s.is("sales_rep_rank", &[("metric", "bookings"), ("kind", "")]));
        let k = one(r#"sales_rep_rank{rep="r1",metric="activities",kind="call"} 1"#);
        assert!(!k.is("sales_rep_rank", &[("kind", "")]));
    }
}
