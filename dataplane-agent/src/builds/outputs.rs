//! The outputs file: steps append `NAME=VALUE` lines to the file `$TROUPE_OUTPUTS` names
//! (`echo "image=registry/app:$SHA" >> "$TROUPE_OUTPUTS"`), and the run reports them when it
//! ends. A later line for the same name wins; blank lines are skipped; anything else is a
//! mistake the run fails on, so a typo never passes for a build without its image.

use std::collections::BTreeMap;

/// The largest outputs file read; a bigger one fails the run.
pub(crate) const MAX_BYTES: u64 = 64 * 1024;

/// The outputs a file holds, or why it is wrong.
pub(crate) fn parse(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut outputs = BTreeMap::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() {
            continue;
        }
        match line.split_once('=') {
            Some((name, value)) if is_name(name) => {
                outputs.insert(name.to_string(), value.to_string());
            }
            _ => {
                return Err(format!(
                    "line {} of the outputs file is not NAME=VALUE: {line:?}",
                    number + 1
                ));
            }
        }
    }
    Ok(outputs)
}

/// The required outputs that were not reported, or reported empty.
pub(crate) fn missing<'a>(required: &'a [String], got: &BTreeMap<String, String>) -> Vec<&'a str> {
    required
        .iter()
        .filter(|name| got.get(*name).is_none_or(|value| value.is_empty()))
        .map(String::as_str)
        .collect()
}

/// Fails, naming them, if a required output was not reported; `how` says how to report one.
pub(crate) fn require(
    required: &[String],
    got: &BTreeMap<String, String>,
    how: &str,
) -> Result<(), String> {
    let missing = missing(required, got);
    if missing.is_empty() {
        return Ok(());
    }
    let names = missing.join("`, `");
    let s = if missing.len() == 1 { "" } else { "s" };
    Err(format!(
        "every step succeeded but the run did not report its required output{s} `{names}` ({how})"
    ))
}

/// Names are what a Workflow declares: letters, digits, `_`, `-`, `.`.
fn is_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_lines_win_and_values_keep_their_equals_signs() {
        let outputs = parse("image=a:1\n\ndigest=sha256:x=y\r\nimage=a:2\n").unwrap();
        assert_eq!(outputs["image"], "a:2");
        assert_eq!(outputs["digest"], "sha256:x=y");
        assert_eq!(outputs.len(), 2);
    }

    #[test]
    fn a_line_that_is_not_name_value_is_refused_by_number() {
        let error = parse("image=a\nimage a:2\n").unwrap_err();
        assert_eq!(
            error,
            "line 2 of the outputs file is not NAME=VALUE: \"image a:2\""
        );
        assert!(parse("=x\n").is_err());
        assert!(parse("a b=x\n").is_err());
    }

    #[test]
    fn empty_outputs_count_as_missing() {
        let got = parse("image=\ndigest=d\n").unwrap();
        let required = ["image".to_string(), "digest".into(), "sbom".into()];
        assert_eq!(missing(&required, &got), ["image", "sbom"]);
    }
}
