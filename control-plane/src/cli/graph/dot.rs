//! The graph as Graphviz DOT, for `troupe graph -o dot | dot -Tsvg > graph.svg`: one cluster
//! per project, a box per component labelled with its type and endpoints, an edge per
//! connection labelled with the endpoint. An edge resolved in every environment shown is
//! solid, one resolved in some only is orange, one pending everywhere is dashed red; each
//! edge's tooltip gives its state in every environment, with the reasons. A target the graph
//! does not draw (it does not exist, or the caller may not see it) is a dashed box.
//!
//! Every id and label is a quoted string, escaped, so any name makes valid DOT.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use troupe_common::pb::v1alpha1 as pb;

use super::{Standing, component_key, endpoint_line, key, state_lines};

/// The graph as a DOT `digraph`.
pub(super) fn render(graph: &pb::GraphResponse) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "digraph {} {{", quote(&graph.namespace));
    out.push_str("  rankdir=LR;\n");
    out.push_str("  node [shape=box, style=rounded, fontname=\"Helvetica\"];\n");
    out.push_str("  edge [fontname=\"Helvetica\", fontsize=10];\n");
    let mut projects: BTreeMap<&str, Vec<&pb::GraphComponent>> = BTreeMap::new();
    for component in &graph.components {
        projects
            .entry(&component.project)
            .or_default()
            .push(component);
    }
    for (project, components) in &projects {
        let _ = writeln!(
            out,
            "  subgraph {} {{",
            quote(&format!("cluster_{project}"))
        );
        let _ = writeln!(out, "    label={};", quote(&format!("project {project}")));
        for component in components {
            let mut label = vec![component.name.clone(), component.component_type.clone()];
            label.extend(component.endpoints.iter().map(endpoint_line));
            let _ = writeln!(
                out,
                "    {} [label={}];",
                quote(&component_key(component)),
                quote_lines(&label)
            );
        }
        out.push_str("  }\n");
    }
    let drawn: BTreeSet<String> = graph.components.iter().map(component_key).collect();
    let undrawn: BTreeSet<String> = graph
        .connections
        .iter()
        .map(|c| key(c.target.as_ref()))
        .filter(|k| !drawn.contains(k))
        .collect();
    for target in undrawn {
        let _ = writeln!(
            out,
            "  {} [label={}, style=dashed];",
            quote(&target),
            quote_lines(&[target.clone(), "(not in the graph)".to_string()])
        );
    }
    for connection in &graph.connections {
        let style = match Standing::of(connection) {
            Standing::Resolved => "",
            Standing::Partly => ", color=darkorange, fontcolor=darkorange",
            Standing::Pending => ", style=dashed, color=red, fontcolor=red",
        };
        let _ = writeln!(
            out,
            "  {} -> {} [label={}, tooltip={}{style}];",
            quote(&key(connection.consumer.as_ref())),
            quote(&key(connection.target.as_ref())),
            quote(&connection.endpoint),
            quote_lines(&state_lines(connection))
        );
    }
    out.push_str("}\n");
    out
}

/// `text` as a DOT quoted string that Graphviz shows as written: quotes and backslashes
/// escaped, a line break as `\n`.
fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => {}
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `lines` as one quoted label, a line each.
fn quote_lines(lines: &[String]) -> String {
    quote(&lines.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::super::fixture::mk_graph;
    use super::*;

    #[test]
    fn one_cluster_per_project_and_an_edge_per_connection() {
        let text = render(&mk_graph());
        assert!(text.starts_with("digraph \"acme\" {\n"), "{text}");
        assert!(text.ends_with("}\n"), "{text}");
        for cluster in [
            "subgraph \"cluster_billing\" {",
            "subgraph \"cluster_shop\" {",
        ] {
            assert_eq!(text.matches(cluster).count(), 1, "{cluster} in\n{text}");
        }
        assert!(
            text.contains(
                "    \"shop/api\" [label=\"api\\ndeployment/service\\nhttp :8080 HTTP (namespace, external)\"];"
            ),
            "{text}"
        );
        // Resolved in development, pending in staging: drawn, orange, both states on hover.
        assert!(
            text.contains(
                "  \"billing/ledger\" -> \"shop/api\" [label=\"http\", tooltip=\"development: Resolved http://api.acme-shop-development.svc.cluster.local:8080\\nstaging: Pending: component shop/api has no ReleaseBinding in environment staging\", color=darkorange, fontcolor=darkorange];"
            ),
            "{text}"
        );
    }

    #[test]
    fn pending_edges_are_dashed_red_and_names_are_escaped() {
        let text = render(&mk_graph());
        let edge = text
            .lines()
            .find(|l| l.contains("\"shop/web\" ->"))
            .expect("the edge from shop/web");
        assert_eq!(
            edge,
            "  \"shop/web\" -> \"shop/we\\\"ird\" [label=\"<http>\", tooltip=\"development: Pending: component shop/we\\\"ird does not exist\\nstaging: Pending: component shop/we\\\"ird does not exist\", style=dashed, color=red, fontcolor=red];"
        );
        assert!(
            text.contains(
                "  \"shop/we\\\"ird\" [label=\"shop/we\\\"ird\\n(not in the graph)\", style=dashed];"
            ),
            "a target that is not drawn still has a node: {text}"
        );
        assert_eq!(quote("a\\b\"c\nd"), "\"a\\\\b\\\"c\\nd\"");
    }

    #[test]
    fn every_quoted_string_is_closed() {
        // Outside quotes DOT has only ids, `=`, `;`, `,`, `->`, braces and brackets: unescaped
        // quotes balance on every line, and nothing unquoted carries a name.
        for line in render(&mk_graph()).lines() {
            let mut quoted = false;
            let mut escaped = false;
            let mut outside = String::new();
            for c in line.chars() {
                match (quoted, escaped, c) {
                    (true, false, '\\') => escaped = true,
                    (true, true, _) => escaped = false,
                    (_, false, '"') => quoted = !quoted,
                    (false, _, c) => outside.push(c),
                    _ => {}
                }
            }
            assert!(!quoted, "an unclosed string: {line}");
            assert!(
                !["ledger", "shop", "ird", "http"]
                    .iter()
                    .any(|w| outside.contains(w)),
                "a name outside quotes: {line}"
            );
        }
    }
}
