//! Resource names: every Troupe name is a DNS label, so it can become a Kubernetes object name,
//! a label value and part of a hostname without escaping.

/// Maximum length of a DNS label.
pub const MAX_NAME_LEN: usize = 63;

/// Checks that `name` is a DNS label (RFC 1123): 1–63 lowercase letters, digits and '-',
/// starting and ending with a letter or digit. Returns what is wrong, for an error message.
pub fn check_dns_label(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!(
            "is {} characters long; at most {MAX_NAME_LEN} are allowed",
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(format!(
            "contains {c:?}; only lowercase letters, digits and '-' are allowed"
        ));
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err("must start and end with a lowercase letter or digit".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_dns_labels_and_explains_the_rest() {
        for ok in ["a", "api", "api-v2", "0abc", &"a".repeat(63)] {
            assert_eq!(check_dns_label(ok), Ok(()), "{ok}");
        }
        assert!(check_dns_label("").unwrap_err().contains("empty"));
        assert!(check_dns_label("Api").unwrap_err().contains("'A'"));
        assert!(check_dns_label("api_v2").unwrap_err().contains("'_'"));
        assert!(
            check_dns_label("-api")
                .unwrap_err()
                .contains("start and end")
        );
        assert!(check_dns_label(&"a".repeat(64)).unwrap_err().contains("64"));
    }
}
