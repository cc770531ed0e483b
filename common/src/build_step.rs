//! What a build step may be given, checked the same way where a Workflow is written, where its
//! steps are resolved for a run (after `${{ }}` expansion, which can change a path), and by an
//! agent about to run them: environment variable names, output names and working directories.

/// Prefix of the environment variables the agent sets itself (`TROUPE_OUTPUTS`, ...); a step
/// may not set or override them.
pub const RESERVED_ENV_PREFIX: &str = "TROUPE_";

/// Checks an environment variable name a step sets: a shell identifier
/// (`[A-Za-z_][A-Za-z0-9_]*`, so every shell can read it) outside [`RESERVED_ENV_PREFIX`].
pub fn check_env_name(name: &str) -> Result<(), String> {
    check_identifier(name)?;
    if name.starts_with(RESERVED_ENV_PREFIX) {
        return Err(format!(
            "starts with {RESERVED_ENV_PREFIX}, which is reserved for what the agent sets \
             (TROUPE_OUTPUTS, TROUPE_WORKSPACE, TROUPE_RUN, TROUPE_ATTEMPT, TROUPE_STEP)"
        ));
    }
    Ok(())
}

/// Checks an output name (steps report outputs as `NAME=VALUE` lines): an identifier,
/// `[A-Za-z_][A-Za-z0-9_]*`.
pub fn check_output_name(name: &str) -> Result<(), String> {
    check_identifier(name)
}

/// Checks a step's working directory: relative to the run's work directory and never above
/// it (no `..`). Empty is the work directory itself.
pub fn check_working_dir(path: &str) -> Result<(), String> {
    if path.starts_with('/') {
        return Err("is an absolute path; it must be relative to the run's work directory".into());
    }
    if path.split('/').any(|part| part == "..") {
        return Err("leaves the run's work directory (`..`)".into());
    }
    if path.contains('\0') {
        return Err("contains a NUL character".into());
    }
    Ok(())
}

fn check_identifier(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let Some(first) = chars.next() else {
        return Err("must not be empty".into());
    };
    if !(first.is_ascii_alphabetic() || first == '_') {
        return Err(format!(
            "starts with {first:?}; it must start with a letter or '_'"
        ));
    }
    if let Some(c) = chars.find(|c| !(c.is_ascii_alphanumeric() || *c == '_')) {
        return Err(format!(
            "contains {c:?}; only letters, digits and '_' are allowed"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_names_are_shell_identifiers_outside_the_agents_own() {
        for ok in ["FOO", "_x", "GOFLAGS", "a1_B2", "TROUPE", "troupe_outputs"] {
            assert_eq!(check_env_name(ok), Ok(()), "{ok}");
        }
        let why = |name: &str| check_env_name(name).unwrap_err();
        assert!(why("").contains("empty"));
        assert!(why("1A").contains("starts with '1'"), "{}", why("1A"));
        assert!(why("A-B").contains("contains '-'"), "{}", why("A-B"));
        assert!(why("A B").contains("contains ' '"));
        assert!(why("A=B").contains("contains '='"));
        assert!(why("TROUPE_OUTPUTS").contains("reserved"));
        assert!(why("TROUPE_X").contains("reserved"));
    }

    #[test]
    fn output_names_are_identifiers() {
        assert_eq!(check_output_name("image"), Ok(()));
        assert_eq!(check_output_name("TROUPE_OK"), Ok(()));
        assert!(check_output_name("image-ref").is_err());
        assert!(check_output_name("").is_err());
    }

    #[test]
    fn working_dirs_stay_inside_the_work_directory() {
        for ok in ["", "src", "src/app", "./app", "a..b", "..a/b"] {
            assert_eq!(check_working_dir(ok), Ok(()), "{ok}");
        }
        assert!(check_working_dir("/etc").unwrap_err().contains("absolute"));
        for escape in ["..", "../x", "a/../../b", "a/.."] {
            assert!(
                check_working_dir(escape).unwrap_err().contains("leaves"),
                "{escape}"
            );
        }
        assert!(check_working_dir("a\0b").is_err());
    }
}
