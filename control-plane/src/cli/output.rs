//! Printing objects: a table for people, YAML and JSON that can be applied back unchanged.

use std::time::{SystemTime, UNIX_EPOCH};

use troupe_common::document::{json_to_yaml, to_json, to_yaml};
use troupe_common::{API_VERSION, Object};

/// Prints one object.
pub(super) fn print_one(object: &Object, output: &str) -> anyhow::Result<()> {
    match output {
        "yaml" => out!("{}", to_yaml(object)),
        "json" => outln!("{}", serde_json::to_string_pretty(&to_json(object))?),
        _ => print_list(std::slice::from_ref(object), "table", false)?,
    }
    Ok(())
}

/// Prints a listing: a table, a `---`-separated YAML stream, or a JSON `List`.
pub(super) fn print_list(
    items: &[Object],
    output: &str,
    show_namespace: bool,
) -> anyhow::Result<()> {
    match output {
        "yaml" => {
            let docs: Vec<String> = items.iter().map(to_yaml).collect();
            out!("{}", docs.join("---\n"));
        }
        "json" => {
            let list = serde_json::json!({
                "apiVersion": API_VERSION,
                "kind": "List",
                "items": items.iter().map(to_json).collect::<Vec<_>>(),
            });
            outln!("{}", serde_json::to_string_pretty(&list)?);
        }
        _ => out!("{}", table(items, show_namespace)),
    }
    Ok(())
}

/// One line for a watch event in table mode.
pub(super) fn event_line(event: &str, revision: u64, object: Option<&Object>) -> String {
    match object {
        Some(o) => format!("{event:<9} {revision:<9} {}", o.key()),
        None => format!("{event:<9} {revision:<9}"),
    }
}

/// The object as one JSON line.
pub(super) fn json_line(object: &Object) -> String {
    to_json(object).to_string()
}

/// The object as a YAML document with a leading separator.
pub(super) fn yaml_doc(object: &Object) -> String {
    format!("---\n{}", json_to_yaml(&to_json(object)))
}

fn table(items: &[Object], show_namespace: bool) -> String {
    let mut rows: Vec<Vec<String>> = vec![];
    let mut header = vec![];
    if show_namespace {
        header.push("NAMESPACE".to_string());
    }
    header.extend(["NAME", "GENERATION", "VERSION", "AGE"].map(String::from));
    // Runs also say how they stand.
    let runs = !items.is_empty() && items.iter().all(|o| matches!(o, Object::WorkflowRun(_)));
    if runs {
        header.extend(["PHASE", "ATTEMPT", "COMMIT"].map(String::from));
    }
    rows.push(header);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs() as i64;
    for o in items {
        let m = o.meta();
        let mut row = vec![];
        if show_namespace {
            row.push(m.namespace.clone());
        }
        let age = m
            .create_time
            .map_or("-".to_string(), |t| human_age(now - t.seconds));
        row.extend([
            m.name.clone(),
            m.generation.to_string(),
            m.resource_version.to_string(),
            age,
        ]);
        if let Object::WorkflowRun(run) = o {
            let status = run.status.clone().unwrap_or_default();
            let phase = if status.phase.is_empty() {
                "Pending".to_string()
            } else {
                status.phase
            };
            let commit: String = run
                .spec
                .as_ref()
                .map(|s| s.commit.chars().take(12).collect())
                .unwrap_or_default();
            row.extend([phase, status.attempt.to_string(), commit]);
        }
        rows.push(row);
    }
    columns(&rows)
}

/// Rows as aligned columns (three spaces apart), one line each, the first row the header.
pub(super) fn columns(rows: &[Vec<String>]) -> String {
    let count = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..count)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(cells.join("   ").trim_end());
        out.push('\n');
    }
    out
}

fn human_age(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}
