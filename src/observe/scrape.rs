//! Reads the recorder's Prometheus text back into samples: the status page's
//! numbers come from the same output `/metrics` serves.

/// One sample line: `name{label="value",...} value`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    /// The value of label `key` (empty when absent).
    pub fn label(&self, key: &str) -> &str {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map_or("", |(_, v)| v.as_str())
    }
}

/// Every sample of `text`; comments and lines that do not parse are skipped.
pub(crate) fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(parse_line)
        .collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let name_end = line.find(['{', ' '])?;
    let name = line[..name_end].to_owned();
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(body) = rest.strip_prefix('{') {
        let (parsed, after) = parse_labels(body)?;
        labels = parsed;
        rest = after;
    }
    let value = rest.split_whitespace().next()?;
    Some(Sample {
        name,
        labels,
        value: parse_value(value)?,
    })
}

/// `key="value",...}` and what follows the `}`.
fn parse_labels(mut body: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut labels = Vec::new();
    loop {
        body = body.trim_start_matches([',', ' ']);
        if let Some(after) = body.strip_prefix('}') {
            return Some((labels, after));
        }
        let eq = body.find('=')?;
        let key = body[..eq].trim().to_owned();
        let quoted = body[eq + 1..].strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = quoted.char_indices();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                (_, c) => value.push(c),
            }
        };
        labels.push((key, value));
        body = &quoted[end + 1..];
    }
}

/// A sample value or an `le` bound: a float, `+Inf`, `-Inf` or `NaN`.
pub(crate) fn parse_value(text: &str) -> Option<f64> {
    match text {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        other => other.parse().ok(),
    }
}

/// The `q` quantile (0..1) of a histogram's cumulative buckets `(le, count)`,
/// interpolated inside its bucket as Prometheus' `histogram_quantile` does;
/// `None` without observations. A quantile in the `+Inf` bucket is the
/// highest finite bound.
pub(crate) fn quantile(q: f64, buckets: &mut [(f64, f64)]) -> Option<f64> {
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let (mut lower, mut below) = (0.0, 0.0);
    for &(le, count) in buckets.iter() {
        if count >= rank {
            if le.is_infinite() {
                return Some(lower);
            }
            let inside = count - below;
            let share = if inside > 0.0 {
                (rank - below) / inside
            } else {
                1.0
            };
            return Some(lower + (le - lower) * share);
        }
        (lower, below) = (le, count);
    }
    Some(lower)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_with_labels_escapes_and_bounds() {
        let text = "# HELP x y\n# TYPE modkit_calls_total counter\n\
            modkit_calls_total{service=\"shop.Catalog\",method=\"list\",side=\"server\"} 3\n\
            odd{v=\"a \\\"q\\\", b\\\\\"} 1.5\n\
            bare 7\n\
            modkit_call_seconds_bucket{le=\"+Inf\"} 4\n\
            broken{v=\"unterminated} 1\n";
        let samples = parse(text);
        assert_eq!(samples.len(), 4, "{samples:?}");
        assert_eq!(samples[0].label("service"), "shop.Catalog");
        assert_eq!(samples[0].label("side"), "server");
        assert_eq!(samples[0].value, 3.0);
        assert_eq!(samples[1].label("v"), "a \"q\", b\\");
        assert_eq!((samples[2].name.as_str(), samples[2].value), ("bare", 7.0));
        assert_eq!(parse_value(samples[3].label("le")), Some(f64::INFINITY));
    }

    #[test]
    fn quantiles_interpolate_inside_the_bucket() {
        // 100 observations: 90 under 1 ms, 10 between 1 and 10 ms.
        let mut b = vec![(f64::INFINITY, 100.0), (0.001, 90.0), (0.01, 100.0)];
        let p50 = quantile(0.5, &mut b).unwrap();
        assert!((p50 - 0.001 * 50.0 / 90.0).abs() < 1e-12, "{p50}");
        let p99 = quantile(0.99, &mut b).unwrap();
        assert!((p99 - (0.001 + 0.009 * 0.9)).abs() < 1e-12, "{p99}");
        assert_eq!(quantile(0.99, &mut [(f64::INFINITY, 0.0)]), None);
        // Everything past the last bound: the last finite bound.
        let mut over = vec![(0.01, 0.0), (f64::INFINITY, 5.0)];
        assert_eq!(quantile(0.99, &mut over), Some(0.01));
    }
}
