//! Kubernetes-style equality label selectors: `app=api,tier!=db,canary,!legacy`.

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
    /// Parses a comma-separated selector.
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        let mut terms = Vec::new();
        for raw in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let err = |reason| SelectorError {
                term: raw.to_string(),
                reason,
            };
            let term = if let Some((k, v)) = raw.split_once("!=") {
                Term::NotEquals(k.trim().to_string(), v.trim().to_string())
            } else if let Some((k, v)) = raw.split_once("==").or_else(|| raw.split_once('=')) {
                Term::Equals(k.trim().to_string(), v.trim().to_string())
            } else if let Some(k) = raw.strip_prefix('!') {
                Term::Absent(k.trim().to_string())
            } else {
                Term::Exists(raw.to_string())
            };
            let key = match &term {
                Term::Equals(k, _) | Term::NotEquals(k, _) | Term::Exists(k) | Term::Absent(k) => k,
            };
            if key.is_empty() {
                return Err(err("the label key is empty"));
            }
            if key.contains(char::is_whitespace) {
                return Err(err("the label key contains whitespace"));
            }
            terms.push(term);
        }
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
}
