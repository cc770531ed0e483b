//! Kubernetes-style equality label selectors: `app=api,tier!=db,canary,!legacy`. A selector
//! that does not follow that grammar is refused, never read as one that selects nothing.

use std::collections::HashMap;
use std::fmt;

/// One term of a selector.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Term {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    Absent(String),
}

/// A parsed label selector: every term must hold. The empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    terms: Vec<Term>,
}

/// A selector that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid label selector term {term:?}: {reason}")]
pub struct SelectorError {
    /// The offending term.
    pub term: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl LabelSelector {
    /// Parses a comma-separated selector. The blank selector matches everything; anything
    /// that is not a sequence of `key=value`, `key==value`, `key!=value`, `key` and `!key`
    /// terms is refused, so a typo cannot silently select nothing.
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        if s.trim().is_empty() {
            return Ok(Self::default());
        }
        let terms = s
            .split(',')
            .map(|raw| parse_term(raw.trim()))
            .collect::<Result<_, _>>()?;
        Ok(Self { terms })
    }

    /// True when `labels` satisfy every term.
    pub fn matches(&self, labels: &HashMap<String, String>) -> bool {
        self.terms.iter().all(|t| match t {
            Term::Equals(k, v) => labels.get(k) == Some(v),
            Term::NotEquals(k, v) => labels.get(k) != Some(v),
            Term::Exists(k) => labels.contains_key(k),
            Term::Absent(k) => !labels.contains_key(k),
        })
    }

    /// True for the selector that matches everything.
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }
}

/// Characters that are selector syntax and so never part of a key or a value.
const SYNTAX: [char; 7] = ['=', '!', ',', '(', ')', '<', '>'];

fn parse_term(raw: &str) -> Result<Term, SelectorError> {
    let err = |reason| SelectorError {
        term: raw.to_string(),
        reason,
    };
    if raw.is_empty() {
        return Err(err(
            "the term is empty (a comma at either end, or two in a row)",
        ));
    }
    if raw.contains(['(', ')']) || raw.split_whitespace().any(|w| w == "in" || w == "notin") {
        return Err(err(
            "set-based terms (in, notin) are not supported: use key=value, key!=value, key or !key",
        ));
    }
    let term = if let Some((k, v)) = raw.split_once("!=") {
        Term::NotEquals(k.trim().to_string(), v.trim().to_string())
    } else if let Some((k, v)) = raw.split_once("==").or_else(|| raw.split_once('=')) {
        Term::Equals(k.trim().to_string(), v.trim().to_string())
    } else if let Some(k) = raw.strip_prefix('!') {
        Term::Absent(k.trim().to_string())
    } else {
        Term::Exists(raw.to_string())
    };
    let (key, value) = match &term {
        Term::Equals(k, v) | Term::NotEquals(k, v) => (k, Some(v)),
        Term::Exists(k) | Term::Absent(k) => (k, None),
    };
    if key.is_empty() {
        return Err(err("the label key is empty"));
    }
    if key.contains(char::is_whitespace) {
        return Err(err("the label key contains whitespace"));
    }
    if key.contains(SYNTAX) {
        return Err(err(
            "the label key contains one of = ! , ( ) < > (one operator per term: =, == or !=)",
        ));
    }
    if let Some(value) = value {
        if value.contains(char::is_whitespace) {
            return Err(err("the label value contains whitespace"));
        }
        if value.contains(SYNTAX) {
            return Err(err(
                "the label value contains one of = ! , ( ) < > (one operator per term: =, == or !=)",
            ));
        }
    }
    Ok(term)
}

impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .terms
            .iter()
            .map(|t| match t {
                Term::Equals(k, v) => format!("{k}={v}"),
                Term::NotEquals(k, v) => format!("{k}!={v}"),
                Term::Exists(k) => k.clone(),
                Term::Absent(k) => format!("!{k}"),
            })
            .collect();
        f.write_str(&parts.join(","))
    }
}

#[cfg(test)]
mod props;

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn terms_combine_with_and() {
        let sel = LabelSelector::parse("app=api, tier!=db,canary,!legacy").unwrap();
        assert!(sel.matches(&mk_labels(&[("app", "api"), ("canary", "")])));
        assert!(!sel.matches(&mk_labels(&[("app", "api")])));
        assert!(!sel.matches(&mk_labels(&[
            ("app", "api"),
            ("canary", "1"),
            ("tier", "db")
        ])));
        assert!(!sel.matches(&mk_labels(&[
            ("app", "api"),
            ("canary", "1"),
            ("legacy", "y")
        ])));
        assert!(LabelSelector::parse("").unwrap().matches(&HashMap::new()));
        assert!(LabelSelector::parse("=x").is_err());
    }

    /// Each of these was accepted and then matched nothing (or not what it says); the property
    /// tests in `props` found them.
    #[test]
    fn malformed_selectors_are_refused_naming_the_term() {
        for (selector, term, why) in [
            ("!app=api", "!app=api", "key contains one of"),
            ("app=api=web", "app=api=web", "value contains one of"),
            ("app!=!api", "app!=!api", "value contains one of"),
            ("app=a b", "app=a b", "value contains whitespace"),
            ("tier in (web,db)", "tier in (web", "set-based"),
            ("tier notin (db)", "tier notin (db)", "set-based"),
            ("a!b", "a!b", "key contains one of"),
            ("a<3", "a<3", "key contains one of"),
            ("!!a", "!!a", "key contains one of"),
            ("a=b,", "", "term is empty"),
            ("a,,b", "", "term is empty"),
        ] {
            let err = LabelSelector::parse(selector).unwrap_err();
            assert_eq!(err.term, term, "{selector}: {err}");
            assert!(err.reason.contains(why), "{selector}: {err}");
        }
    }
}
