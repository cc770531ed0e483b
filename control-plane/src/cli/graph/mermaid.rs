//! The graph as a Mermaid `flowchart LR`, for Markdown that renders it (GitHub, GitLab): a
//! subgraph per project, a node per component labelled with its type and endpoints, an edge
//! per connection labelled with the endpoint. As in DOT, an edge pending in every environment
//! shown is dotted and red, one resolved in some only is orange.
//!
//! Ids are generated (`p0`, `c0`, …) so no name has to be one; labels are quoted strings in
//! which Mermaid's entity codes stand for the characters its syntax would read.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use troupe_common::pb::v1alpha1 as pb;

use super::{Standing, component_key, endpoint_line, key};

/// The graph as a Mermaid flowchart.
pub(super) fn render(graph: &pb::GraphResponse) -> String {
    let mut out = String::from("flowchart LR\n");
    let mut ids: BTreeMap<String, String> = BTreeMap::new();
    let mut projects: BTreeMap<&str, Vec<&pb::GraphComponent>> = BTreeMap::new();
    for component in &graph.components {
        projects
            .entry(&component.project)
            .or_default()
            .push(component);
    }
    for (i, (project, components)) in projects.iter().enumerate() {
        let _ = writeln!(
            out,
            "  subgraph p{i}[{}]",
            label(&[format!("project {project}")])
        );
        for component in components {
            let id = format!("c{}", ids.len());
            let mut lines = vec![component.name.clone(), component.component_type.clone()];
            lines.extend(component.endpoints.iter().map(endpoint_line));
            let _ = writeln!(out, "    {id}[{}]", label(&lines));
            ids.insert(component_key(component), id);
        }
        out.push_str("  end\n");
    }
    let undrawn: BTreeSet<String> = graph
        .connections
        .iter()
        .map(|c| key(c.target.as_ref()))
        .filter(|k| !ids.contains_key(k))
        .collect();
    for target in undrawn {
        let id = format!("c{}", ids.len());
        let lines = [target.clone(), "(not in the graph)".to_string()];
        let _ = writeln!(out, "  {id}[{}]", label(&lines));
        let _ = writeln!(out, "  style {id} stroke-dasharray: 5 5");
        ids.insert(target, id);
    }
    let id = |k: String| ids.get(&k).cloned().unwrap_or_default();
    let mut styles = Vec::new();
    for (n, connection) in graph.connections.iter().enumerate() {
        let standing = Standing::of(connection);
        let arrow = if standing == Standing::Pending {
            "-.->"
        } else {
            "-->"
        };
        let _ = writeln!(
            out,
            "  {} {arrow}|{}| {}",
            id(key(connection.consumer.as_ref())),
            label(std::slice::from_ref(&connection.endpoint)),
            id(key(connection.target.as_ref()))
        );
        match standing {
            Standing::Resolved => {}
            Standing::Partly => styles.push(format!("  linkStyle {n} stroke:darkorange")),
            Standing::Pending => styles.push(format!("  linkStyle {n} stroke:red")),
        }
    }
    for style in styles {
        out.push_str(&style);
        out.push('\n');
    }
    out
}

/// `lines` as a quoted Mermaid label, lines joined by `<br/>`, every character Mermaid's
/// syntax reads written as its entity code.
fn label(lines: &[String]) -> String {
    let escaped: Vec<String> = lines.iter().map(|l| escape(l)).collect();
    format!("\"{}\"", escaped.join("<br/>"))
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '"' => out.push_str("#quot;"),
            '#' => out.push_str("#35;"),
            '<' => out.push_str("#lt;"),
            '>' => out.push_str("#gt;"),
            '&' => out.push_str("#amp;"),
            '`' => out.push_str("#96;"),
            '|' => out.push_str("#124;"),
            '\n' => out.push_str("<br/>"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::fixture::mk_graph;
    use super::*;

    #[test]
    fn a_flowchart_with_a_subgraph_per_project() {
        let text = render(&mk_graph());
        let expected = r##"flowchart LR
  subgraph p0["project billing"]
    c0["ledger<br/>deployment/service"]
  end
  subgraph p1["project shop"]
    c1["api<br/>deployment/service<br/>http :8080 HTTP (namespace, external)"]
    c2["batch<br/>cronjob/job"]
    c3["web<br/>deployment/web-app"]
  end
  c4["shop/we#quot;ird<br/>(not in the graph)"]
  style c4 stroke-dasharray: 5 5
  c0 -->|"http"| c1
  c3 -.->|"#lt;http#gt;"| c4
  linkStyle 0 stroke:darkorange
  linkStyle 1 stroke:red
"##;
        assert_eq!(text, expected, "\n{text}");
    }

    #[test]
    fn names_cannot_break_out_of_their_label() {
        assert_eq!(
            label(&["a\"b|c<d>#e&f`g".to_string(), "h".to_string()]),
            "\"a#quot;b#124;c#lt;d#gt;#35;e#amp;f#96;g<br/>h\""
        );
    }
}
