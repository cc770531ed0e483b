//! Property tests of the selector parser: valid selectors (generated term by term) parse,
//! print back to themselves and match as their terms say; any single mutation that breaks the
//! grammar is refused with an error, never accepted as a selector that selects nothing.
//! Replay: see `crate::props`.

use std::collections::HashMap;

use proptest::prelude::*;

use super::LabelSelector;

/// One generated term, with the meaning it must have.
#[derive(Debug, Clone)]
enum Model {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    Absent(String),
}

impl Model {
    fn key(&self) -> &str {
        match self {
            Model::Equals(k, _) | Model::NotEquals(k, _) | Model::Exists(k) | Model::Absent(k) => k,
        }
    }

    fn holds(&self, labels: &HashMap<String, String>) -> bool {
        match self {
            Model::Equals(k, v) => labels.get(k) == Some(v),
            Model::NotEquals(k, v) => labels.get(k) != Some(v),
            Model::Exists(k) => labels.contains_key(k),
            Model::Absent(k) => !labels.contains_key(k),
        }
    }

    /// The term as a user writes it, with the spacing and operator spelling `style` picks.
    fn written(&self, style: u8) -> String {
        let (l, r) = if style & 1 == 1 { (" ", " ") } else { ("", "") };
        match self {
            Model::Equals(k, v) if style & 2 == 2 => format!("{l}{k}{l}=={r}{v}{r}"),
            Model::Equals(k, v) => format!("{l}{k}{l}={r}{v}{r}"),
            Model::NotEquals(k, v) => format!("{l}{k}{l}!={r}{v}{r}"),
            Model::Exists(k) => format!("{l}{k}{r}"),
            Model::Absent(k) => format!("{l}!{k}{r}"),
        }
    }
}

/// Keys and values from a small alphabet, so generated labels often meet generated terms.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("app".to_string()),
        Just("tier".to_string()),
        Just("troupe.dev/component".to_string()),
        "[a-z0-9]([a-z0-9._/-]{0,6}[a-z0-9])?",
    ]
}

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("api".to_string()),
        Just("db".to_string()),
        "[A-Za-z0-9._-]{1,8}",
    ]
}

fn term() -> impl Strategy<Value = Model> {
    prop_oneof![
        (key(), value()).prop_map(|(k, v)| Model::Equals(k, v)),
        (key(), value()).prop_map(|(k, v)| Model::NotEquals(k, v)),
        key().prop_map(Model::Exists),
        key().prop_map(Model::Absent),
    ]
}

fn terms() -> impl Strategy<Value = Vec<(Model, u8)>> {
    prop::collection::vec((term(), 0u8..4), 1..5)
}

fn labels() -> impl Strategy<Value = HashMap<String, String>> {
    prop::collection::hash_map(key(), value(), 0..5)
}

fn join(terms: &[(Model, u8)]) -> String {
    terms
        .iter()
        .map(|(t, style)| t.written(*style))
        .collect::<Vec<_>>()
        .join(",")
}

/// A mutation that takes a valid term out of the grammar, applied to the term at `at`.
fn mutate(terms: &[(Model, u8)], at: usize, how: u8) -> String {
    let at = at % terms.len();
    let (model, _) = &terms[at];
    let key = model.key();
    let broken = match how % 12 {
        0 => format!("!{key}=x"),
        1 => format!("{key}=x=y"),
        2 => format!("{key} in (x,y)"),
        3 => format!("{key} notin (x)"),
        4 => format!("{key}!=!x"),
        5 => format!("{key}=a b"),
        6 => "=x".to_string(),
        7 => "!".to_string(),
        8 => format!("{key}<3"),
        9 => format!("!!{key}"),
        10 => format!("{key}!"),
        _ => String::new(),
    };
    let mut parts: Vec<String> = terms.iter().map(|(t, s)| t.written(*s)).collect();
    if broken.is_empty() {
        // An extra empty term: `a,,b` or a comma at either end.
        parts.insert(at + usize::from(how & 16 == 16), broken);
    } else {
        parts[at] = broken;
    }
    parts.join(",")
}

proptest! {
    #![proptest_config(crate::props::config())]

    #[test]
    fn any_text_parses_or_is_refused_without_panicking(text in "\\PC{0,40}") {
        if let Ok(selector) = LabelSelector::parse(&text) {
            let printed = selector.to_string();
            prop_assert_eq!(LabelSelector::parse(&printed), Ok(selector), "printed {:?}", printed);
        }
    }

    #[test]
    fn valid_selectors_round_trip_and_match_as_written(terms in terms(), labels in labels()) {
        let text = join(&terms);
        let selector = LabelSelector::parse(&text)
            .map_err(|e| TestCaseError::fail(format!("{text:?} refused: {e}")))?;
        let printed = selector.to_string();
        prop_assert_eq!(LabelSelector::parse(&printed), Ok(selector.clone()));
        let expected = terms.iter().all(|(t, _)| t.holds(&labels));
        prop_assert_eq!(selector.matches(&labels), expected, "{:?} on {:?}", text, labels);
    }

    #[test]
    fn a_broken_term_is_refused(terms in terms(), at in any::<usize>(), how in any::<u8>()) {
        let text = mutate(&terms, at, how);
        let parsed = LabelSelector::parse(&text);
        prop_assert!(parsed.is_err(), "{:?} was accepted as {:?}", text, parsed);
    }
}
