//! The graph for people: the components with their endpoints, then one line per connection
//! (consumer → target:endpoint, the endpoint's visibility, its state in each environment),
//! then the reasons of the pending states, numbered, each reason once.

use troupe_common::pb::v1alpha1 as pb;
use troupe_common::status::ConnectionState;

use super::{component_key, endpoint_line, key, target_endpoint, visibility};
use crate::cli::output::columns;

/// The graph as aligned text.
pub(super) fn render(graph: &pb::GraphResponse) -> String {
    let mut out = components(graph);
    out.push('\n');
    if graph.connections.is_empty() {
        out.push_str("no connections\n");
        return out;
    }
    let mut reasons: Vec<&str> = Vec::new();
    let mut header = vec!["CONNECTION".to_string(), "VISIBILITY".to_string()];
    header.extend(graph.environments.iter().map(|e| e.to_uppercase()));
    let mut rows = vec![header];
    for connection in &graph.connections {
        let mut row = vec![
            format!(
                "{} → {}:{}",
                key(connection.consumer.as_ref()),
                key(connection.target.as_ref()),
                connection.endpoint
            ),
            target_endpoint(graph, connection).map_or_else(|| "-".to_string(), visibility),
        ];
        for state in &connection.states {
            row.push(cell(state, &mut reasons));
        }
        rows.push(row);
    }
    out.push_str(&columns(&rows));
    if !reasons.is_empty() {
        out.push('\n');
        for (i, reason) in reasons.iter().enumerate() {
            out.push_str(&format!("[{}] {reason}\n", i + 1));
        }
    }
    out
}

/// One row per component and endpoint.
fn components(graph: &pb::GraphResponse) -> String {
    let mut rows = vec![
        ["COMPONENT", "TYPE", "ENDPOINTS"]
            .map(String::from)
            .to_vec(),
    ];
    for component in &graph.components {
        let mut lines = component.endpoints.iter().map(endpoint_line);
        rows.push(vec![
            component_key(component),
            component.component_type.clone(),
            lines.next().unwrap_or_else(|| "-".to_string()),
        ]);
        rows.extend(lines.map(|line| vec![String::new(), String::new(), line]));
    }
    columns(&rows)
}

/// `Resolved`, or `Pending [n]` with `n` the number of its reason in `reasons`.
fn cell<'g>(state: &'g pb::GraphConnectionState, reasons: &mut Vec<&'g str>) -> String {
    if state.state == ConnectionState::Resolved {
        return state.state.clone();
    }
    let n = match reasons.iter().position(|r| *r == state.reason) {
        Some(i) => i + 1,
        None => {
            reasons.push(&state.reason);
            reasons.len()
        }
    };
    format!("{} [{n}]", state.state)
}

#[cfg(test)]
mod tests {
    use super::super::fixture::mk_graph;
    use super::*;

    #[test]
    fn every_component_and_one_line_per_connection_with_numbered_reasons() {
        let text = render(&mk_graph());
        let expected = "\
COMPONENT        TYPE                 ENDPOINTS
billing/ledger   deployment/service   -
shop/api         deployment/service   http :8080 HTTP (namespace, external)
shop/batch       cronjob/job          -
shop/web         deployment/web-app   -

CONNECTION                       VISIBILITY            DEVELOPMENT   STAGING
billing/ledger → shop/api:http   namespace, external   Resolved      Pending [1]
shop/web → shop/we\"ird:<http>    -                     Pending [2]   Pending [2]

[1] component shop/api has no ReleaseBinding in environment staging
[2] component shop/we\"ird does not exist
";
        assert_eq!(text, expected, "\n{text}");
    }

    #[test]
    fn a_graph_without_connections_says_so() {
        let mut graph = mk_graph();
        graph.connections.clear();
        assert!(render(&graph).ends_with("\n\nno connections\n"));
    }
}
