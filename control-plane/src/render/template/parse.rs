//! Splitting a template string into literal text and `${{ … }}` expressions.
//!
//! An expression ends at the first `}}` that is outside a quoted string and outside a `{…}`
//! literal, so map literals (`${{ {'a': {'b': 1}} }}`) and strings holding `}}` work. `$${{`
//! is an escape for a literal `${{`.

/// One piece of a mixed template string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Segment<'a> {
    /// Literal text, escapes resolved.
    Text(String),
    /// An expression's source, trimmed.
    Expr(&'a str),
}

/// What a template string renders as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Parsed<'a> {
    /// No expression and no escape: the string is its own value.
    Literal,
    /// Exactly one expression with at most whitespace around it: renders to its typed value.
    Standalone(&'a str),
    /// Text and expressions (or escapes): renders to a string.
    Mixed(Vec<Segment<'a>>),
}

/// A malformed `${{ … }}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ParseError {
    /// The text after the opening `${{` (the whole rest of the string when unterminated).
    pub expression: String,
    /// What is wrong.
    pub message: String,
}

const OPEN: &str = "${{";

/// Parses one template string.
pub(super) fn parse(s: &str) -> Result<Parsed<'_>, ParseError> {
    if !s.contains(OPEN) {
        return Ok(Parsed::Literal);
    }
    let mut segments = Vec::new();
    let mut text = String::new();
    let mut rest = 0;
    while let Some(offset) = s[rest..].find(OPEN) {
        let at = rest + offset;
        if at > 0 && s.as_bytes()[at - 1] == b'$' {
            text.push_str(&s[rest..at - 1]);
            text.push_str(OPEN);
            rest = at + OPEN.len();
            continue;
        }
        text.push_str(&s[rest..at]);
        let start = at + OPEN.len();
        let Some(end) = expression_end(&s[start..]).map(|len| start + len) else {
            return Err(ParseError {
                expression: s[start..].trim().to_owned(),
                message: "unterminated `${{`: no matching `}}`".into(),
            });
        };
        let expr = s[start..end].trim();
        if expr.is_empty() {
            return Err(ParseError {
                expression: String::new(),
                message: "empty `${{ }}` expression".into(),
            });
        }
        if !text.is_empty() {
            segments.push(Segment::Text(std::mem::take(&mut text)));
        }
        segments.push(Segment::Expr(expr));
        rest = end + 2;
    }
    text.push_str(&s[rest..]);
    if !text.is_empty() {
        segments.push(Segment::Text(text));
    }
    let mut exprs = segments.iter().filter_map(|segment| match segment {
        Segment::Expr(expr) => Some(*expr),
        Segment::Text(_) => None,
    });
    if let (Some(expr), None) = (exprs.next(), exprs.next()) {
        // Escapes leave `${{` in the text, so whitespace-only text means none were used.
        let blank = |segment: &Segment<'_>| match segment {
            Segment::Text(text) => text.trim().is_empty(),
            Segment::Expr(_) => true,
        };
        if segments.iter().all(blank) {
            return Ok(Parsed::Standalone(expr));
        }
    }
    Ok(Parsed::Mixed(segments))
}

/// The byte length of the expression at the start of `s`, up to (not including) its `}}`.
fn expression_end(s: &str) -> Option<usize> {
    let bytes = s.as_bytes();
    let mut depth = 0usize;
    let mut quote = None;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match quote {
            Some(q) => {
                if b == b'\\' {
                    i += 1;
                } else if b == q {
                    quote = None;
                }
            }
            None => match b {
                b'\'' | b'"' => quote = Some(b),
                b'{' => depth += 1,
                b'}' if depth > 0 => depth -= 1,
                b'}' if bytes.get(i + 1) == Some(&b'}') => return Some(i),
                _ => {}
            },
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lone_expression_is_standalone_and_text_makes_it_mixed() {
        assert_eq!(parse("plain").unwrap(), Parsed::Literal);
        assert_eq!(parse("  ${{ a.b }}\n").unwrap(), Parsed::Standalone("a.b"));
        assert_eq!(
            parse("x-${{ a }}").unwrap(),
            Parsed::Mixed(vec![Segment::Text("x-".into()), Segment::Expr("a")])
        );
        assert!(matches!(
            parse("${{ a }}${{ b }}").unwrap(),
            Parsed::Mixed(_)
        ));
    }

    #[test]
    fn expressions_end_outside_quotes_and_map_literals() {
        assert_eq!(
            parse("${{ {'a': {'b': '}}'}} }}").unwrap(),
            Parsed::Standalone("{'a': {'b': '}}'}}")
        );
        assert_eq!(
            parse(r#"${{ "q\"}}" }}"#).unwrap(),
            Parsed::Standalone(r#""q\"}}""#)
        );
    }

    #[test]
    fn double_dollar_escapes_and_malformed_expressions_are_reported() {
        assert_eq!(
            parse("run $${{ x }} ${{ y }}").unwrap(),
            Parsed::Mixed(vec![
                Segment::Text("run ${{ x }} ".into()),
                Segment::Expr("y")
            ])
        );
        assert_eq!(parse("a ${{ b").unwrap_err().expression, "b");
        assert!(parse("${{  }}").unwrap_err().message.contains("empty"));
    }
}
