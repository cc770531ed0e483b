//! The words status is written in: condition types, condition statuses, reasons, object
//! health, binding states, connection states and run phases.
//!
//! Each is an enum whose [`as_str`](Reason::as_str) is exactly what the API carries (the proto
//! fields are strings, so stored objects, JSON and YAML stay as they are), and whose `FromStr`
//! reads it back. The control plane writes and reasons about status only through these; the
//! agent reports object health with [`Health`].

use std::fmt;
use std::str::FromStr;

/// A word that is not one of the values of the enum it was read as.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{word:?} is not a {what}")]
pub struct UnknownWord {
    /// What was expected (`reason`, `health`, ...).
    pub what: &'static str,
    /// The word read.
    pub word: String,
}

/// Defines a closed set of API words: the enum, `as_str`, `ALL`, `Display`, `FromStr`, and
/// comparison with the strings the proto types hold.
macro_rules! words {
    (
        $(#[$meta:meta])*
        $name:ident ($what:literal) {
            $($(#[$vmeta:meta])* $variant:ident = $text:literal,)*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)*
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)*];

            /// The word as the API spells it.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)*
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownWord;

            fn from_str(word: &str) -> Result<Self, UnknownWord> {
                match word {
                    $($text => Ok($name::$variant),)*
                    _ => Err(UnknownWord { what: $what, word: word.to_string() }),
                }
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                self.as_str()
            }
        }

        impl PartialEq<$name> for str {
            fn eq(&self, other: &$name) -> bool {
                self == other.as_str()
            }
        }

        impl PartialEq<$name> for String {
            fn eq(&self, other: &$name) -> bool {
                self == other.as_str()
            }
        }
    };
}

words! {
    /// The type of a condition on a status.
    ConditionType ("condition type") {
        /// Release and ReleaseBinding: the objects run as asked. DataPlane: its agent is
        /// connected.
        Ready = "Ready",
        /// ReleaseBinding: the rollout is still under way.
        Progressing = "Progressing",
        /// ReleaseBinding: the rollout failed or its objects are unhealthy.
        Degraded = "Degraded",
        /// ReleaseBinding: its release was rendered into a Release.
        Rendered = "Rendered",
        /// ReleaseBinding: every connection of its workload resolved.
        ConnectionsResolved = "ConnectionsResolved",
        /// ReleaseBinding: the data plane can enforce every network rule rendered for it.
        NetworkPoliciesEnforced = "NetworkPoliciesEnforced",
        /// Release: the agent applied its current generation.
        Applied = "Applied",
    }
}

words! {
    /// The status of a condition.
    ConditionStatus ("condition status") {
        /// The condition holds.
        True = "True",
        /// The condition does not hold.
        False = "False",
    }
}

impl From<bool> for ConditionStatus {
    fn from(holds: bool) -> Self {
        if holds {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        }
    }
}

words! {
    /// Why a condition has its status: the machine-readable half of a condition, what
    /// `troupe status` shows and promotion gates quote.
    Reason ("reason") {
        /// Every object of the release is healthy (or suspended).
        ResourcesHealthy = "ResourcesHealthy",
        /// Some object is still on its way, or its health is not reported yet.
        ResourcesProgressing = "ResourcesProgressing",
        /// Some object is degraded.
        ResourcesDegraded = "ResourcesDegraded",
        /// The agent is applying the current generation.
        Applying = "Applying",
        /// The agent applied the current generation.
        Applied = "Applied",
        /// The data plane's agent is not connected.
        AgentDisconnected = "AgentDisconnected",
        /// The data plane's agent is connected.
        AgentConnected = "AgentConnected",
        /// No agent has ever connected for the data plane.
        NoAgent = "NoAgent",
        /// The agent could not apply the current generation.
        ApplyFailed = "ApplyFailed",
        /// The Release waits for its agent to prune its objects.
        Pruning = "Pruning",
        /// The binding's release was rendered.
        Rendered = "Rendered",
        /// The binding's release is being rendered.
        Rendering = "Rendering",
        /// The binding's release could not be rendered.
        RenderFailed = "RenderFailed",
        /// The binding was rendered but its Release or status could not be written; the
        /// controller tries again with backoff.
        ReconcileFailed = "ReconcileFailed",
        /// The binding's state is `Undeploy`.
        Undeployed = "Undeployed",
        /// The binding names no release.
        NoRelease = "NoRelease",
        /// The component has no binding in the environment.
        NotDeployed = "NotDeployed",
        /// Nothing has reported on the binding yet.
        Pending = "Pending",
        /// The binding is ready: nothing is progressing (the `Progressing` reason).
        Synced = "Synced",
        /// The binding is ready: nothing is degraded (the `Degraded` reason).
        Healthy = "Healthy",
        /// The workload has no connections.
        NoConnections = "NoConnections",
        /// Every connection of the workload resolved.
        AllConnectionsResolved = "AllConnectionsResolved",
        /// Some connection of the workload did not resolve yet.
        ConnectionsPending = "ConnectionsPending",
        /// The data plane's provider enforces every network rule of the binding.
        PoliciesEnforced = "PoliciesEnforced",
        /// Some network rule cannot be enforced by the data plane's provider; its traffic
        /// is denied (or, with no provider, not restricted).
        RulesUnenforceable = "RulesUnenforceable",
    }
}

words! {
    /// The health of one object of a release, as its agent reports it.
    Health ("health") {
        /// The object is what it should be and serving.
        Healthy = "Healthy",
        /// The object is on its way (rolling out, pending).
        Progressing = "Progressing",
        /// The object failed or is unhealthy.
        Degraded = "Degraded",
        /// The object is paused (a suspended CronJob).
        Suspended = "Suspended",
    }
}

words! {
    /// What a ReleaseBinding asks for (`spec.state`; empty means `Active`).
    BindingState ("binding state") {
        /// The release runs in the environment.
        Active = "Active",
        /// Nothing runs in the environment; the binding is kept.
        Undeploy = "Undeploy",
    }
}

words! {
    /// How one connection stands in one environment, as the dependency graph says it.
    ConnectionState ("connection state") {
        /// The consumer deployed there gets the target's address.
        Resolved = "Resolved",
        /// It does not; a reason says why.
        Pending = "Pending",
    }
}

words! {
    /// The phase of a WorkflowRun (`status.phase`): exactly one at a time. The last four are
    /// where a run ends.
    RunPhase ("run phase") {
        /// Created, waiting for a build agent (the run's message says why it waits).
        Pending = "Pending",
        /// An agent runs its current attempt.
        Running = "Running",
        /// Every step succeeded and every output was reported.
        Succeeded = "Succeeded",
        /// A step failed, or an output was missing; the message names which.
        Failed = "Failed",
        /// Someone cancelled it.
        Cancelled = "Cancelled",
        /// An attempt took longer than the workflow's or a step's timeout.
        TimedOut = "TimedOut",
    }
}

impl RunPhase {
    /// True for a phase a run ends in (nothing changes it but a retry).
    pub const fn is_finished(self) -> bool {
        matches!(
            self,
            RunPhase::Succeeded | RunPhase::Failed | RunPhase::Cancelled | RunPhase::TimedOut
        )
    }

    /// The phase `status.phase` holds: empty is `Pending` (a run nobody has looked at yet).
    pub fn of_status(phase: &str) -> Result<Self, UnknownWord> {
        if phase.is_empty() {
            Ok(RunPhase::Pending)
        } else {
            phase.parse()
        }
    }
}

impl BindingState {
    /// The state `spec.state` asks for: empty is `Active`.
    pub fn of_spec(state: &str) -> Result<Self, UnknownWord> {
        if state.is_empty() {
            Ok(BindingState::Active)
        } else {
            state.parse()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_word_reads_back_as_itself() {
        fn round_trip<T>(all: &[T])
        where
            T: Copy + PartialEq + fmt::Debug + FromStr<Err = UnknownWord> + AsRef<str>,
        {
            for word in all {
                assert_eq!(word.as_ref().parse::<T>(), Ok(*word));
            }
        }
        round_trip(ConditionType::ALL);
        round_trip(ConditionStatus::ALL);
        round_trip(Reason::ALL);
        round_trip(Health::ALL);
        round_trip(BindingState::ALL);
        round_trip(ConnectionState::ALL);
        round_trip(RunPhase::ALL);
    }

    #[test]
    fn words_are_spelled_as_on_the_wire() {
        assert_eq!(BindingState::Undeploy.as_str(), "Undeploy");
        assert_eq!(Reason::ResourcesHealthy.to_string(), "ResourcesHealthy");
        assert_eq!(Health::Suspended.as_str(), "Suspended");
        assert_eq!(ConditionStatus::from(true).as_str(), "True");
        let stored = String::from("ConnectionsResolved");
        assert!(stored == ConditionType::ConnectionsResolved);
        assert!(*"Applied" == ConditionType::Applied);
    }

    #[test]
    fn an_empty_binding_state_is_active_and_an_unknown_one_is_refused() {
        assert_eq!(BindingState::of_spec(""), Ok(BindingState::Active));
        assert_eq!(
            BindingState::of_spec("Undeploy"),
            Ok(BindingState::Undeploy)
        );
        let err = BindingState::of_spec("Paused").unwrap_err();
        assert_eq!(err.to_string(), "\"Paused\" is not a binding state");
    }

    #[test]
    fn a_run_ends_in_exactly_four_phases_and_starts_pending() {
        let finished: Vec<&str> = RunPhase::ALL
            .iter()
            .filter(|p| p.is_finished())
            .map(|p| p.as_str())
            .collect();
        assert_eq!(finished, ["Succeeded", "Failed", "Cancelled", "TimedOut"]);
        assert_eq!(RunPhase::of_status(""), Ok(RunPhase::Pending));
        assert_eq!(RunPhase::of_status("TimedOut"), Ok(RunPhase::TimedOut));
        assert!(RunPhase::of_status("Error").is_err());
    }
}
