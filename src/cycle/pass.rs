//! One pass: every template rendered (off the runtime thread), staged and
//! checked; each reload group installed only if all of it passed; the
//! actions of the installed groups started beside the loop; metrics and
//! readiness derived from the outcomes; failed installs retried with
//! backoff.

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use tokio::time::Instant;

use super::actions::{self, InstalledOutput};
use super::groups::{self, GroupDecision, TemplateDecision, Wait};
use super::{base_dir, CycleError, Installed, Loop, Mode, Outcome};
use crate::config::Config;
use crate::config::Template;
use crate::metrics;
use crate::peers::PeerSet;
use crate::redact::Redactor;
use crate::render::{self, Input, Renderer};
use crate::write::{self, Plan, WriteError};

/// The delays between retries of an install that failed on I/O (`run`):
/// from 1 s, doubling, at most 30 s apart, with jitter, until it succeeds.
pub(super) fn install_retries() -> ExponentialBackoff {
    ExponentialBuilder::new()
        .with_min_delay(Duration::from_secs(1))
        .with_max_delay(Duration::from_secs(30))
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
}

/// The templates as compiled, and the `file()` inputs they read.
pub(super) struct Templates {
    /// Shared with the thread a render runs on.
    pub renderer: Arc<Renderer>,
    /// A template source changed: compiled again at the next pass.
    pub dirty: bool,
    /// The `file()` inputs of the last pass, per template.
    pub inputs: Vec<Vec<Input>>,
}

/// A staged output and its bytes; `None` when nothing new was staged.
type StagedFile = Option<(write::Staged, Vec<u8>)>;

/// What rendering one template came to, before the groups are decided.
pub(super) enum Step {
    /// New bytes, staged (and checked).
    Staged(write::Staged, Vec<u8>),
    Unchanged,
    /// The bytes an app rejected: not installed again.
    Held,
    /// The destination was changed by someone else since peerplate
    /// installed these very bytes: left alone until they change.
    Drifted,
}

/// Whether a destination was changed by someone else since peerplate
/// installed the bytes it would install again (`desired`, the hash of the
/// render, equals `installed`, the hash peerplate installed there, and the
/// file on disk holds other bytes than `rendered`). Such a file (Redis's
/// `CONFIG REWRITE` rewrites `redis.conf`) is reported, not overwritten,
/// until the render changes. A file that is gone is installed again.
pub(super) fn changed_elsewhere(
    desired: Option<&String>,
    installed: Option<&String>,
    on_disk: Option<&[u8]>,
    rendered: &[u8],
) -> bool {
    desired.is_some() && desired == installed && on_disk.is_some_and(|d| d != rendered)
}

/// A check's stderr with the `file()` and `env()` inputs hidden, or only
/// its size (see [`Redactor::shown`]).
pub(super) fn redacted(e: WriteError, redact: &Redactor) -> WriteError {
    match e {
        WriteError::CheckFailed {
            command,
            status,
            stderr,
        } => WriteError::CheckFailed {
            command,
            status,
            stderr: redact.shown(&stderr),
        },
        other => other,
    }
}

impl Loop {
    /// One pass: render, stage and check every template; install each reload
    /// group only if all of it passed (and its action is free); start each
    /// action that had an output installed; publish the outcome.
    pub(super) async fn pass(&mut self) -> Vec<Outcome> {
        self.pending = None;
        if self.templates.dirty {
            self.templates.renderer =
                Arc::new(Renderer::load(&self.config).with_base(&base_dir(&self.config)));
            self.templates.dirty = false;
        }
        let config = Arc::clone(&self.config);
        let peers = self.view.peers.clone().unwrap_or_default();
        let context = render::context(&config, &peers, self.leader.leadership.current());

        // 1. Render, stage and check everything; install nothing yet.
        let (mut outcomes, staged, desired) = self.render_all(&config, &context).await;
        let redact = self.redactor();
        // An action's output is withheld when a template of its group read
        // inputs and does not set log_output.
        let withhold: Vec<bool> = (0..config.actions.len())
            .map(|k| {
                config
                    .templates
                    .iter()
                    .enumerate()
                    .any(|(i, t)| t.reload == Some(k) && !t.log_output && self.read_secrets(i))
            })
            .collect();

        // 2. All or nothing per reload group ([`groups`]).
        let now = Instant::now();
        let groups = self.install_groups(&config, &mut outcomes, staged, now);

        // 3. Each action that had an output installed runs once, started in
        // the order written, beside the loop: its verdict comes back through
        // `verdicts`.
        self.start_actions(&config, groups, now, &redact, &withhold);
        self.view.rendered = true;
        self.observe(&config, &outcomes, desired);
        self.publish(&outcomes);
        self.schedule_retry(&outcomes);

        // 4. Hooks, beside the render path (`run`); `once` runs them itself.
        self.hand_to_hooks(peers);
        outcomes
    }

    /// Renders, stages and checks every template, installing nothing: the
    /// outcomes, the staged files (new bytes only) and the hashes of the
    /// renders. Records the `file()` inputs read and the destinations
    /// someone else changed.
    async fn render_all(
        &mut self,
        config: &Config,
        context: &minijinja::Value,
    ) -> (Vec<Outcome>, Vec<StagedFile>, Vec<Option<String>>) {
        let mut staged = Vec::with_capacity(config.templates.len());
        let mut outcomes = Vec::with_capacity(config.templates.len());
        let mut inputs = Vec::with_capacity(config.templates.len());
        let mut desired = Vec::with_capacity(config.templates.len());
        let mut drifted = Vec::new();
        let mut redact = self.redactor();
        for (i, template) in config.templates.iter().enumerate() {
            let started = std::time::Instant::now();
            // Off the runtime thread: the admin listener and SIGTERM go on
            // while it runs; a shutdown abandons it (fuel ends it soon after).
            let (result, read, hash) = self
                .render_and_stage(i, template, context, &mut redact)
                .await;
            desired.push(hash);
            let (result, file) = match result {
                Ok(Step::Staged(file, bytes)) => (Ok(Installed::Changed), Some((file, bytes))),
                Ok(Step::Unchanged) => (Ok(Installed::Unchanged), None),
                Ok(Step::Held) => (Ok(Installed::Held), None),
                Ok(Step::Drifted) => {
                    drifted.push(template.destination.clone());
                    (Ok(Installed::Unchanged), None)
                }
                Err(e) => (Err(e), None),
            };
            staged.push(file);
            inputs.push(read);
            outcomes.push(Outcome {
                template: self.templates.renderer.name(i).to_string(),
                destination: template.destination.display().to_string(),
                result,
                elapsed: started.elapsed(),
            });
        }
        self.templates.inputs = inputs;
        self.update_watched();
        self.note_drifted(config, drifted);
        (outcomes, staged, desired)
    }

    /// Installs each reload group whose decision ([`groups::group_plan`])
    /// is to install; the others' staged files are dropped (deleted) and
    /// their outcomes say why. The installed outputs, per action.
    fn install_groups(
        &mut self,
        config: &Config,
        outcomes: &mut [Outcome],
        staged: Vec<StagedFile>,
        now: Instant,
    ) -> Vec<Vec<InstalledOutput>> {
        // 2. All or nothing per reload group: the outputs of one action
        // form a group; each output without an action is its own. A group
        // whose action is running (its verdict pending) or within its
        // min_interval waits: nothing of it is installed now, and it is
        // rendered again when the action is free.
        let actions = &config.actions;
        let members: Vec<groups::Member<'_>> = config
            .templates
            .iter()
            .zip(outcomes.iter())
            .zip(&staged)
            .map(|((t, o), f)| groups::Member {
                reload: t.reload,
                staged: f.is_some(),
                failed: o.result.is_err().then_some(o.template.as_str()),
            })
            .collect();
        let gates: Vec<groups::Gate<'_>> = actions
            .iter()
            .map(|a| groups::Gate {
                min_interval: a.min_interval,
                state: self.actions.states.get(&a.name),
            })
            .collect();
        let plan = groups::group_plan(&members, &gates, now);
        for (action, decision) in actions.iter().zip(&plan) {
            let GroupDecision::Wait(wait) = decision else {
                continue;
            };
            let state = self.actions.states.entry(action.name.clone()).or_default();
            match wait {
                Wait::Busy => state.wanted = true,
                Wait::MinInterval(free_at) => state.retry_at = Some(*free_at),
                Wait::Owed => {}
            }
        }
        let mut groups: Vec<Vec<InstalledOutput>> = actions.iter().map(|_| Vec::new()).collect();
        // What was installed, for the state file's records (`prune: true`).
        let mut installed: Vec<(PathBuf, Vec<u8>)> = Vec::new();
        for ((template, outcome), file) in
            config.templates.iter().zip(outcomes.iter_mut()).zip(staged)
        {
            let Some((file, bytes)) = file else { continue };
            match groups::template_decision(template.reload, &plan) {
                TemplateDecision::Fail(failed) => {
                    // Dropping the staged file deletes it; the old output stays.
                    outcome.result = Err(CycleError::Group(failed));
                    continue;
                }
                TemplateDecision::Defer => {
                    outcome.result = Ok(Installed::Deferred);
                    continue;
                }
                TemplateDecision::Install => {}
            }
            let previous = write::previous(&template.destination);
            match file.commit() {
                Ok(()) => {
                    if config.prune {
                        installed.push((template.destination.clone(), bytes.clone()));
                    }
                    if let Some(k) = template.reload {
                        groups[k].push(InstalledOutput {
                            template: outcome.template.clone(),
                            destination: template.destination.clone(),
                            previous,
                            bytes,
                            installed: Instant::now(),
                        });
                    }
                }
                Err(e) => outcome.result = Err(e.into()),
            }
        }

        let records: Vec<(PathBuf, &[u8])> = installed
            .iter()
            .map(|(d, b)| (d.clone(), b.as_slice()))
            .collect();
        crate::prune::record(config, &records);

        groups
    }

    /// Starts each action that had an output installed, in the order
    /// written; a reload still owed for bytes installed earlier is tried
    /// again when due, with whatever this pass installed for it.
    fn start_actions(
        &mut self,
        config: &Config,
        groups: Vec<Vec<InstalledOutput>>,
        now: Instant,
        redact: &Redactor,
        withhold: &[bool],
    ) {
        for (k, (action, outputs)) in config.actions.iter().zip(groups).enumerate() {
            let state = self.actions.states.entry(action.name.clone()).or_default();
            let outputs = match &mut state.owed {
                Some(owed) if !state.busy && owed.is_due(now) => {
                    actions::merge(std::mem::take(&mut owed.want), outputs)
                }
                _ => outputs,
            };
            if outputs.is_empty() {
                continue;
            }
            state.busy = true;
            state.last_run = Some(now);
            state.retry_at = None;
            self.actions.verdicts.spawn(actions::run_group(
                action.clone(),
                outputs,
                redact.withholding(withhold.get(k).copied().unwrap_or(true)),
                self.mode == Mode::Run,
            ));
        }
    }

    /// Logs each destination changed by someone else once (until peerplate
    /// installs there again), and forgets the others.
    fn note_drifted(&mut self, config: &Config, drifted: Vec<PathBuf>) {
        self.observed.drifted.retain(|d| drifted.contains(d));
        for dest in drifted {
            let template = config.templates.iter().position(|t| t.destination == dest);
            if self.observed.drifted.insert(dest.clone()) {
                tracing::warn!(
                    template = %template.map(|i| self.templates.renderer.name(i)).unwrap_or_default(),
                    destination = %dest.display(),
                    "changed on disk by someone else since peerplate installed it; left alone until its render changes (a template, file() input, config or peer change)"
                );
            }
        }
    }

    /// Hands the hook queues what they are owed: the leader to
    /// `on_leader_change` (after the installs and reloads that name it), the
    /// peer set (one that holds this pod) to `on_start`/`on_change`.
    fn hand_to_hooks(&mut self, peers: PeerSet) {
        if let (Some(queue), Some(leader)) = (&self.leader.hook, &self.leader.hook_due) {
            queue.send_replace(Some(leader.clone().unwrap_or_default()));
            self.leader.hook_due = None;
        }
        if let Some(queue) = &self.supervisor.hook_sets {
            if self.me.is_in(&peers) {
                queue.send_replace(Some(peers));
            }
        }
    }

    /// Renders template `i` (off the runtime thread: the admin listener and
    /// SIGTERM go on while it runs; a shutdown abandons it), then stages and
    /// checks the output, unless the bytes equal what is installed or what
    /// an app rejected. Also the `file()` inputs the render read; `redact`
    /// learns them, so a check quoting them is redacted too.
    async fn render_and_stage(
        &self,
        i: usize,
        template: &Template,
        context: &minijinja::Value,
        redact: &mut Redactor,
    ) -> (Result<Step, CycleError>, Vec<Input>, Option<String>) {
        let (rendered, read) =
            render::render_detached(Arc::clone(&self.templates.renderer), i, context.clone()).await;
        let desired = rendered
            .as_ref()
            .ok()
            .map(|o| crate::status::sha256(o.as_bytes()));
        let env = self.templates.renderer.env_read(i);
        if !read.is_empty() || !env.is_empty() {
            // A check quoting this output's inputs is redacted too, or (the
            // default) not logged at all.
            let mut all: Vec<&Input> = self.templates.inputs.iter().flatten().collect();
            all.extend(read.iter());
            let vars = self.env_read_all();
            *redact = Redactor::with_env(
                all.into_iter()
                    .filter_map(|i| Some((i.path.as_path(), i.text.as_deref()?))),
                vars.iter()
                    .chain(&env)
                    .map(|(n, v)| (n.as_str(), v.as_str())),
            )
            .withholding(!template.log_output);
        } else {
            *redact = redact.withholding(false);
        }
        let result = match rendered {
            Err(e) => Err(CycleError::Render(e)),
            Ok(output)
                if self
                    .actions
                    .rejected
                    .get(&template.destination)
                    .is_some_and(|bytes| *bytes == output.as_bytes()) =>
            {
                Ok(Step::Held)
            }
            Ok(output)
                if !template.create_only
                    && changed_elsewhere(
                        desired.as_ref(),
                        self.observed.installed.get(&template.destination),
                        std::fs::read(&template.destination).ok().as_deref(),
                        output.as_bytes(),
                    ) =>
            {
                Ok(Step::Drifted)
            }
            Ok(output) => {
                tracing::debug!(template = %self.templates.renderer.name(i), bytes = output.len(), inputs = %crate::log::list(read.iter().map(|i| i.path.to_string_lossy())), "rendered");
                // An output that read file() is a secret: 0600 unless
                // the config says otherwise.
                let template: Cow<'_, _> = if !read.is_empty() && template.mode.is_none() {
                    let mut private = template.clone();
                    private.mode = Some(0o600);
                    Cow::Owned(private)
                } else {
                    Cow::Borrowed(template)
                };
                match write::stage(&template, output.as_bytes()) {
                    Err(e) => Err(e.into()),
                    Ok(Plan::Unchanged | Plan::Kept) => Ok(Step::Unchanged),
                    Ok(Plan::Staged(file)) => match &template.check {
                        Some(command) => match file.check(command).await {
                            Ok(()) => Ok(Step::Staged(file, output.into_bytes())),
                            Err(e) => Err(redacted(e, redact).into()),
                        },
                        None => Ok(Step::Staged(file, output.into_bytes())),
                    },
                }
            }
        };
        (result, read, desired)
    }

    /// `run`: an install that failed on I/O (a full disk, a folder that
    /// cannot be made) is tried again with backoff until it goes through;
    /// nothing else is retried here.
    pub(super) fn schedule_retry(&mut self, outcomes: &[Outcome]) {
        let failed = outcomes
            .iter()
            .any(|o| matches!(o.result, Err(CycleError::Write(_))));
        if self.mode != Mode::Run || !failed {
            self.retry = None;
            return;
        }
        let (at, delays) = self
            .retry
            .get_or_insert_with(|| (Instant::now(), install_retries()));
        let delay = delays.next().unwrap_or(Duration::from_secs(30));
        *at = crate::limits::later(Instant::now(), delay);
        tracing::info!(
            retry_in_ms = crate::log::ms(delay),
            "an install failed; trying again"
        );
    }

    /// Logs, metrics and readiness of a pass: the one place they are derived.
    pub(super) fn publish(&mut self, outcomes: &[Outcome]) {
        for (i, o) in outcomes.iter().enumerate() {
            match &o.result {
                Ok(Installed::Deferred) => {
                    tracing::info!(template = %o.template, destination = %o.destination, "waiting: its reload action is busy, within min_interval or waiting to try again; installed when it is free");
                }
                Ok(Installed::Held) => {
                    tracing::info!(template = %o.template, destination = %o.destination, "not installed: the app rejected these same bytes; waiting for a template, file() input or config change");
                }
                Ok(installed) => {
                    self.succeeded[i] = true;
                    let changed = *installed == Installed::Changed;
                    self.metrics.render(
                        &o.template,
                        if changed {
                            metrics::Render::Changed
                        } else {
                            metrics::Render::Unchanged
                        },
                    );
                    tracing::info!(template = %o.template, destination = %o.destination, changed, elapsed_ms = crate::log::ms(o.elapsed), "rendered");
                }
                Err(e) => {
                    self.metrics.render(&o.template, metrics::Render::Failed);
                    if matches!(e, CycleError::Check(_)) {
                        self.metrics.check_failed(&o.template);
                    }
                    // Say what is true: at start there may be no output yet.
                    let kept = std::path::Path::new(&o.destination).exists();
                    let render = matches!(e, CycleError::Render(_));
                    match (render, kept) {
                        (true, true) => {
                            tracing::warn!(template = %o.template, error = %e, "render failed, keeping the last good output")
                        }
                        (true, false) => {
                            tracing::warn!(template = %o.template, error = %e, "render failed, no output yet")
                        }
                        (false, true) => {
                            tracing::warn!(template = %o.template, destination = %o.destination, error = %e, "not installed, keeping the last good output")
                        }
                        (false, false) => {
                            tracing::warn!(template = %o.template, destination = %o.destination, error = %e, "not installed, no output yet")
                        }
                    }
                }
            }
        }
        if self.succeeded.iter().all(|ok| *ok) {
            self.state.set_ready();
        }
        if outcomes
            .iter()
            .all(|o| matches!(o.result, Ok(Installed::Changed | Installed::Unchanged)))
        {
            self.metrics.cycle_succeeded();
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::cycle::pass::changed_elsewhere;

    #[test]
    fn a_file_someone_else_changed_is_left_alone_until_the_render_changes() {
        let (a, b) = ("a".to_string(), "b".to_string());
        // peerplate installed "a"'s bytes, the render is the same, the disk differs.
        assert!(changed_elsewhere(
            Some(&a),
            Some(&a),
            Some(b"edited"),
            b"rendered"
        ));
        // The render changed: installed.
        assert!(!changed_elsewhere(
            Some(&b),
            Some(&a),
            Some(b"edited"),
            b"rendered"
        ));
        // The disk holds the render: nothing to say.
        assert!(!changed_elsewhere(
            Some(&a),
            Some(&a),
            Some(b"rendered"),
            b"rendered"
        ));
        // Gone: installed again.
        assert!(!changed_elsewhere(Some(&a), Some(&a), None, b"rendered"));
        // Nothing installed by peerplate yet (the start): the disk is what is.
        assert!(!changed_elsewhere(
            Some(&a),
            None,
            Some(b"edited"),
            b"rendered"
        ));
    }
}
