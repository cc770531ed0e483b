//! API tokens on disk and in memory: what a holder proves, what a listing shows, and the
//! bootstrap admin token's file.

use super::*;

#[test]
fn a_token_proves_its_name_and_groups_until_revoked_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("auth/tokens.jsonl");
    let tokens = ApiTokens::load(Some(path.clone())).unwrap();
    let groups = vec!["shop-team".to_string()];
    let (token, info) = tokens
        .create("ci-orders", &groups, DEFAULT_TTL, "admin")
        .unwrap();
    assert_eq!(info.created_by, "admin");
    assert!(token.starts_with(PREFIX));

    let tokens = ApiTokens::load(Some(path.clone())).unwrap();
    assert!(!std::fs::read_to_string(&path).unwrap().contains(&token));
    let who = tokens.verify(&token).unwrap();
    assert_eq!(
        (who.name.as_str(), who.groups.clone()),
        ("ci-orders", groups.clone())
    );
    assert_eq!(who.via, Via::Token("ci-orders".into()));
    assert!(tokens.list()[0].last_used_unix.is_some());
    let duplicate = tokens.create("ci-orders", &[], DEFAULT_TTL, "admin");
    assert!(matches!(duplicate, Err(TokenError::Invalid(m)) if m.contains("exists")));

    tokens.revoke("ci-orders").unwrap();
    let tokens = ApiTokens::load(Some(path)).unwrap();
    let err = tokens.verify(&token).unwrap_err().to_string();
    assert!(err.contains("ci-orders was revoked"), "{err}");
    assert!(tokens.list().is_empty());
    // The name is free again.
    tokens
        .create("ci-orders", &[], DEFAULT_TTL, "admin")
        .unwrap();
}

#[test]
fn expired_unknown_and_malformed_tokens_say_what_is_wrong() {
    let tokens = ApiTokens::load(None).unwrap();
    let (expired, _) = tokens.create("old", &[], Duration::ZERO, "admin").unwrap();
    let err = tokens.verify(&expired).unwrap_err().to_string();
    assert!(err.contains("API token old expired at"), "{err}");
    let forged = format!("{PREFIX}{}", "0".repeat(64));
    assert_eq!(
        tokens.verify(&forged).unwrap_err().to_string(),
        "unknown API token"
    );
    let err = tokens.verify("hunter2").unwrap_err().to_string();
    assert!(err.starts_with("malformed token"), "{err}");
    let err = tokens.create("Bad Name", &[], DEFAULT_TTL, "admin");
    assert!(matches!(err, Err(TokenError::Invalid(m)) if m.starts_with("name:")));
}

#[test]
fn the_admin_token_is_written_once_and_renewed_when_its_file_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("auth/tokens.jsonl");
    let file = dir.path().join("admin.token");
    let tokens = ApiTokens::load(Some(path.clone())).unwrap();
    let first = tokens.admin_token(Some(&file)).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let tokens = ApiTokens::load(Some(path.clone())).unwrap();
    assert_eq!(tokens.admin_token(Some(&file)).unwrap(), first);
    assert_eq!(tokens.verify(&first).unwrap().groups, vec![ADMINS_GROUP]);

    std::fs::remove_file(&file).unwrap();
    let second = tokens.admin_token(Some(&file)).unwrap();
    assert_ne!(first, second);
    assert!(tokens.verify(&first).is_err());
    assert!(tokens.verify(&second).is_ok());
}
