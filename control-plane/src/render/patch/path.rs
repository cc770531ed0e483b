//! Patch paths: JSON pointers with `[*]` and `[?(@.field=='value')]` array selectors, parsed
//! once into segments (see the parent module for the grammar).

use serde_json::Value;

use super::PatchError;

/// A parsed patch path. Parse once, when the patch is written, so a bad path is reported early.
#[derive(Debug, Clone, PartialEq)]
pub struct Path {
    pub(super) raw: String,
    /// Never empty: a valid path has at least one segment.
    pub(super) segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) struct Segment {
    /// As written, for error messages.
    pub(super) raw: String,
    pub(super) selector: Selector,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Selector {
    /// A map key or an array index (or `-`), unescaped.
    Key(String),
    /// `[*]`.
    All,
    /// `[?(@.field=='value')]`.
    Filter(Filter),
}

#[derive(Debug, Clone, PartialEq)]
pub(super) struct Filter {
    /// Keys from the element to the compared value; empty compares the element itself.
    field: Vec<String>,
    negate: bool,
    literal: Value,
}

impl Selector {
    pub(super) fn selects(&self, element: &Value) -> bool {
        match self {
            Selector::Key(_) => false,
            Selector::All => true,
            Selector::Filter(f) => {
                let found = f.field.iter().try_fold(element, |v, key| v.get(key));
                (found == Some(&f.literal)) != f.negate
            }
        }
    }
}

impl Path {
    /// Parses a path such as `/spec/template/spec/containers/[?(@.name=='main')]/env/-`.
    pub fn parse(path: &str) -> Result<Path, PatchError> {
        let Some(body) = path.strip_prefix('/') else {
            return Err(PatchError::MissingSlash {
                path: path.to_owned(),
            });
        };
        let mut segments = Vec::new();
        for raw in split(path, body)? {
            parse_segment(path, raw, &mut segments)?;
        }
        Ok(Path {
            raw: path.to_owned(),
            segments,
        })
    }

    /// The path as written.
    pub fn as_str(&self) -> &str {
        &self.raw
    }
}

impl std::fmt::Display for Path {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.raw)
    }
}

fn malformed(path: &str, segment: &str, reason: impl Into<String>) -> PatchError {
    PatchError::Malformed {
        path: path.to_owned(),
        segment: segment.to_owned(),
        reason: reason.into(),
    }
}

/// Splits on `/`, except inside a filter, whose literal may contain `/`.
fn split<'p>(path: &str, body: &'p str) -> Result<Vec<&'p str>, PatchError> {
    let mut segments = Vec::new();
    let (mut start, mut in_filter, mut quote) = (0, false, None);
    for (i, c) in body.char_indices() {
        let end = i + c.len_utf8();
        if in_filter {
            match quote {
                Some(q) if c == q => quote = None,
                Some(_) => {}
                None if c == '\'' || c == '"' => quote = Some(c),
                None => in_filter = !body[..end].ends_with(")]"),
            }
        } else if c == '/' {
            segments.push(&body[start..i]);
            start = i + 1;
        } else {
            in_filter = body[start..end].ends_with("[?(");
        }
    }
    if in_filter {
        return Err(malformed(
            path,
            &body[start..],
            "the filter is not closed with )]",
        ));
    }
    segments.push(&body[start..]);
    Ok(segments)
}

fn parse_segment(path: &str, raw: &str, out: &mut Vec<Segment>) -> Result<(), PatchError> {
    let (key, selector) = if let Some(at) = raw.find("[?(") {
        let (key, filter) = raw.split_at(at);
        let Some(body) = filter
            .strip_prefix("[?(")
            .and_then(|f| f.strip_suffix(")]"))
        else {
            return Err(malformed(
                path,
                raw,
                "unexpected text after the filter's closing )]",
            ));
        };
        (
            key,
            Some((filter, Selector::Filter(parse_filter(path, raw, body)?))),
        )
    } else if let Some(key) = raw.strip_suffix("[*]") {
        (key, Some(("[*]", Selector::All)))
    } else {
        (raw, None)
    };
    if selector.is_none() || !key.is_empty() {
        if key.contains(['[', ']']) {
            let reason = "brackets are only for the selectors [*] and [?(@.field=='value')]; \
                          an array index is a segment of its own, e.g. /containers/0";
            return Err(malformed(path, raw, reason));
        }
        let selector = Selector::Key(unescape(path, raw, key)?);
        out.push(Segment {
            raw: key.to_owned(),
            selector,
        });
    }
    if let Some((written, selector)) = selector {
        out.push(Segment {
            raw: written.to_owned(),
            selector,
        });
    }
    Ok(())
}

fn unescape(path: &str, raw: &str, key: &str) -> Result<String, PatchError> {
    let mut out = String::with_capacity(key.len());
    let mut chars = key.chars();
    while let Some(c) = chars.next() {
        if c != '~' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('0') => out.push('~'),
            Some('1') => out.push('/'),
            _ => {
                return Err(malformed(
                    path,
                    raw,
                    "'~' must be followed by 0 (for ~) or 1 (for /)",
                ));
            }
        }
    }
    Ok(out)
}

fn parse_filter(path: &str, raw: &str, body: &str) -> Result<Filter, PatchError> {
    let bad = |reason: String| malformed(path, raw, reason);
    let Some(at) = body.find(['=', '!']) else {
        return Err(bad(
            "the filter needs a comparison, e.g. [?(@.name=='main')]".into(),
        ));
    };
    let negate = match &body[at..] {
        op if op.starts_with("==") => false,
        op if op.starts_with("!=") => true,
        _ => return Err(bad("the filter's comparison must be == or !=".into())),
    };
    let (lhs, rhs) = (body[..at].trim(), body[at + 2..].trim());
    let field = match lhs.strip_prefix('@') {
        Some("") => Vec::new(),
        Some(rest) => match rest.strip_prefix('.') {
            Some(dotted) => dotted.split('.').map(str::to_owned).collect(),
            None => return Err(bad(format!("expected '.' after '@' in {lhs:?}"))),
        },
        None => {
            return Err(bad(format!(
                "the filter must compare a field of the element, like @.name, not {lhs:?}"
            )));
        }
    };
    let is_name = |k: &String| {
        !k.is_empty()
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    };
    if !field.iter().all(is_name) {
        return Err(bad(format!(
            "{lhs:?} is not a dotted field path like @.metadata.name"
        )));
    }
    let literal = match rhs {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        _ if rhs.starts_with(['\'', '"']) => {
            let quote = &rhs[..1];
            match rhs[1..].strip_suffix(quote) {
                Some(text) if !text.contains(quote) => Value::String(text.to_owned()),
                _ => {
                    return Err(bad(format!(
                        "{rhs} must be one quoted string with nothing after it (one comparison per filter)"
                    )));
                }
            }
        }
        _ => match rhs.parse::<i64>() {
            Ok(n) => Value::from(n),
            Err(_) => {
                return Err(bad(format!(
                    "{rhs:?} is not a quoted string, an integer, true or false"
                )));
            }
        },
    };
    Ok(Filter {
        field,
        negate,
        literal,
    })
}

/// An array index as RFC 6901 writes it: `0` or digits without a leading zero.
pub(super) fn index(key: &str) -> Option<usize> {
    let canonical = key == "0"
        || (!key.starts_with('0') && !key.is_empty() && key.bytes().all(|b| b.is_ascii_digit()));
    canonical.then(|| key.parse().ok()).flatten()
}

/// A map key as a JSON pointer token, the inverse of [`unescape`].
pub(super) fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_filters_are_rejected_naming_the_segment() {
        for (path, why) in [
            ("/c/[?(@.name='main')]", "== or !="),
            ("/c/[?(@.name)]", "needs a comparison"),
            ("/c/[?(name=='main')]", "a field of the element"),
            ("/c/[?(@.name=='main' && @.image=='x')]", "one comparison"),
            ("/c/[?(@.name==main)]", "not a quoted string"),
            ("/c/[?(@..name=='main')]", "dotted field path"),
            ("/c/[?(@.name=='main')", "not closed"),
            ("/c/[?(@.name=='main')]x", "after the filter"),
            ("/c/[0]/name", "brackets are only for the selectors"),
            ("/c/a~2b", "'~' must be followed"),
        ] {
            let err = Path::parse(path).unwrap_err();
            let PatchError::Malformed {
                segment, reason, ..
            } = &err
            else {
                panic!("{path}: {err}")
            };
            assert!(reason.contains(why), "{path}: {err}");
            assert!(
                path.contains(segment.as_str()) && segment.starts_with(['[', 'a']),
                "{path}: {err}"
            );
        }
    }

    #[test]
    fn path_must_start_with_a_slash() {
        let err = Path::parse("spec/replicas").unwrap_err();
        assert_eq!(
            err,
            PatchError::MissingSlash {
                path: "spec/replicas".into()
            }
        );
        assert!(err.to_string().contains("must start with '/'"));
        assert!(Path::parse("").is_err());
    }
}
