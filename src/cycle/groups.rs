//! All or nothing per reload group: the outputs of one action form a
//! group (each output without an action is its own). A group with an output
//! that failed to render or check installs nothing (its other outputs fail
//! with [`CycleError::Group`](super::CycleError::Group)); a group whose
//! action is running (its verdict pending), backing off on a reload owed,
//! or within its `min_interval` waits (nothing of it is installed now; it is
//! rendered again when the action is free). Plain data and a pure
//! function; the pass installs what it returns.

use std::time::Duration;

use tokio::time::Instant;

use super::actions::ActionState;

/// One template of a pass, as the group decision sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Member<'a> {
    /// The index of its reload action, if it has one.
    pub reload: Option<usize>,
    /// New bytes were staged (and checked) for it.
    pub staged: bool,
    /// Its name, when its render, stage or check failed.
    pub failed: Option<&'a str>,
}

/// One action, as the group decision sees it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Gate<'a> {
    /// `min_interval`: the least time between two runs.
    pub min_interval: Duration,
    /// Its state (none before it first ran).
    pub state: Option<&'a ActionState>,
}

/// Why a group waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Wait {
    /// Its action runs, the verdict pending: render again after it.
    Busy,
    /// A reload owed is backing off: the new bytes wait for its next try
    /// (a newer state never shortens a backoff step).
    Owed,
    /// Within `min_interval` of the last run: free at this instant.
    MinInterval(Instant),
}

/// What happens to one reload group in a pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum GroupDecision {
    /// Its staged outputs (if any) are installed and the action runs.
    Install,
    /// This template failed: nothing of the group is installed.
    Fail(String),
    /// Nothing of it is installed now.
    Wait(Wait),
}

/// What happens to one staged output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum TemplateDecision {
    Install,
    /// Not installed: the named template of its group failed.
    Fail(String),
    /// Not installed now: its action is not free.
    Defer,
}

/// Decides each reload group (one per entry of `gates`, in order) from the
/// templates of a pass (`members`) at `now`.
pub(super) fn group_plan(
    members: &[Member<'_>],
    gates: &[Gate<'_>],
    now: Instant,
) -> Vec<GroupDecision> {
    gates
        .iter()
        .enumerate()
        .map(|(k, gate)| {
            let of_group = || members.iter().filter(move |m| m.reload == Some(k));
            if let Some(failed) = of_group().find_map(|m| m.failed) {
                return GroupDecision::Fail(failed.to_string());
            }
            if !of_group().any(|m| m.staged) {
                return GroupDecision::Install;
            }
            let Some(state) = gate.state else {
                return GroupDecision::Install;
            };
            if state.busy {
                return GroupDecision::Wait(Wait::Busy);
            }
            if state.owed.as_ref().is_some_and(|o| !o.is_due(now)) {
                return GroupDecision::Wait(Wait::Owed);
            }
            match state
                .last_run
                .map(|last| crate::limits::later(last, gate.min_interval))
            {
                Some(free_at) if free_at > now => GroupDecision::Wait(Wait::MinInterval(free_at)),
                _ => GroupDecision::Install,
            }
        })
        .collect()
}

/// What happens to a staged output whose reload action is `reload`, under
/// the groups' decisions `plan`. An output without an action is its own
/// group: installed.
pub(super) fn template_decision(reload: Option<usize>, plan: &[GroupDecision]) -> TemplateDecision {
    match reload.and_then(|k| plan.get(k)) {
        Some(GroupDecision::Fail(failed)) => TemplateDecision::Fail(failed.clone()),
        Some(GroupDecision::Wait(_)) => TemplateDecision::Defer,
        Some(GroupDecision::Install) | None => TemplateDecision::Install,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::owed::Owed;

    fn member(reload: Option<usize>, staged: bool, failed: Option<&str>) -> Member<'_> {
        Member {
            reload,
            staged,
            failed,
        }
    }

    fn gate(state: Option<&ActionState>) -> Gate<'_> {
        Gate {
            min_interval: Duration::from_secs(10),
            state,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn one_failed_output_fails_its_group_and_only_its_group() {
        let members = [
            member(Some(0), true, None),
            member(Some(0), false, Some("b.conf")),
            member(Some(1), true, None),
            member(None, true, None),
        ];
        let plan = group_plan(&members, &[gate(None), gate(None)], Instant::now());
        assert_eq!(
            plan,
            [GroupDecision::Fail("b.conf".into()), GroupDecision::Install]
        );
        assert_eq!(
            template_decision(Some(0), &plan),
            TemplateDecision::Fail("b.conf".into())
        );
        assert_eq!(template_decision(Some(1), &plan), TemplateDecision::Install);
        // Its own group.
        assert_eq!(template_decision(None, &plan), TemplateDecision::Install);
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_action_defers_its_changed_outputs() {
        let busy = ActionState {
            busy: true,
            ..ActionState::default()
        };
        let now = Instant::now();
        let plan = group_plan(&[member(Some(0), true, None)], &[gate(Some(&busy))], now);
        assert_eq!(plan, [GroupDecision::Wait(Wait::Busy)]);
        assert_eq!(template_decision(Some(0), &plan), TemplateDecision::Defer);
        // Nothing changed in the group: nothing to wait for.
        let plan = group_plan(&[member(Some(0), false, None)], &[gate(Some(&busy))], now);
        assert_eq!(plan, [GroupDecision::Install]);
    }

    #[tokio::test(start_paused = true)]
    async fn min_interval_defers_until_it_ends() {
        let ran = ActionState {
            last_run: Some(Instant::now()),
            ..ActionState::default()
        };
        let members = [member(Some(0), true, None)];
        tokio::time::advance(Duration::from_secs(4)).await;
        let free_at = ran.last_run.map(|l| l + Duration::from_secs(10));
        assert_eq!(
            group_plan(&members, &[gate(Some(&ran))], Instant::now()),
            [GroupDecision::Wait(Wait::MinInterval(
                free_at.unwrap_or_else(Instant::now)
            ))]
        );
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(
            group_plan(&members, &[gate(Some(&ran))], Instant::now()),
            [GroupDecision::Install]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_reload_owed_and_backing_off_holds_new_bytes_until_its_next_try() {
        let mut owed = Owed::new(Vec::new(), Instant::now());
        let delay = owed.failed(Instant::now(), "HTTP 503".into(), 1.0);
        let state = ActionState {
            owed: Some(owed),
            ..ActionState::default()
        };
        let members = [member(Some(0), true, None)];
        assert_eq!(
            group_plan(&members, &[gate(Some(&state))], Instant::now()),
            [GroupDecision::Wait(Wait::Owed)]
        );
        tokio::time::advance(delay).await;
        assert_eq!(
            group_plan(&members, &[gate(Some(&state))], Instant::now()),
            [GroupDecision::Install]
        );
    }
}
