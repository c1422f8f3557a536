//! Helpers for testing supervision trees: a controllable actor and a journal.
//!
//! [`Probe`] is a ractor actor that writes `start <id>` and `stop <id>` to a
//! shared [`Journal`] and exits on command (normally, with an error, or by
//! panicking); it can be told to fail its next starts. With it a test can
//! check who restarted, in which order, and what the supervisor did,
//! without timing anything.

/// The chaos harness (also at [`crate::chaos`]).
pub use crate::chaos;
/// Actor-level faults (also at [`crate::chaos::faulty_actor`]).
pub use crate::chaos::faulty_actor;

use std::sync::{
    Arc,
    atomic::{AtomicU32, Ordering},
};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use crate::actors::supervisor_actor::ChildSpec;
pub use crate::journal::{Entry, Journal, OverlayOp, RuntimeOp};

/// How a probe ends when told to.
#[derive(Debug, Clone)]
pub enum ProbeExit {
    /// `myself.stop(..)`: a normal exit.
    Normal,
    /// Returns an error from its handler.
    Error(String),
    /// Panics in its handler.
    Panic(String),
}

/// Messages of a [`Probe`].
pub enum ProbeMsg {
    /// Exit as told.
    Exit(ProbeExit),
    /// Replies with the probe's id.
    Ping(RpcReplyPort<String>),
}

// Local only: never sent to another node (the `cluster` feature of
// ractor asks every message type to say so).
impl ractor::Message for ProbeMsg {}

/// Arguments of a [`Probe`].
#[derive(Clone)]
pub struct ProbeArgs {
    /// Written in the journal.
    pub id: String,
    /// Where starts and stops are recorded.
    pub journal: Journal,
    /// While above zero, `pre_start` fails (and decrements it).
    pub fail_starts: Arc<AtomicU32>,
}

/// A controllable actor for supervision tests.
pub struct Probe;

impl Actor for Probe {
    type Msg = ProbeMsg;
    type State = ProbeArgs;
    type Arguments = ProbeArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: ProbeArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let left = args.fail_starts.load(Ordering::Acquire);
        if left > 0 {
            args.fail_starts.store(left - 1, Ordering::Release);
            args.journal.write(Entry::FailedStart(args.id.clone()));
            return Err(format!("{} refused to start", args.id).into());
        }
        args.journal.write(Entry::Started(args.id.clone()));
        Ok(args)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ProbeMsg::Exit(ProbeExit::Normal) => {
                myself.stop(Some("done".into()));
                Ok(())
            }
            ProbeMsg::Exit(ProbeExit::Error(e)) => Err(e.into()),
            ProbeMsg::Exit(ProbeExit::Panic(e)) => panic!("{e}"),
            ProbeMsg::Ping(reply) => {
                let _ = reply.send(state.id.clone());
                Ok(())
            }
        }
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.journal.write(Entry::Stopped(state.id.clone()));
        Ok(())
    }
}

/// A child spec for a probe named `id` writing to `journal`.
pub fn probe(id: &str, journal: &Journal) -> ChildSpec {
    probe_failing(id, journal, Arc::new(AtomicU32::new(0)))
}

/// Like [`probe`], failing its start while `fail_starts` is above zero.
pub fn probe_failing(id: &str, journal: &Journal, fail_starts: Arc<AtomicU32>) -> ChildSpec {
    let args = ProbeArgs {
        id: id.to_owned(),
        journal: journal.clone(),
        fail_starts,
    };
    ChildSpec::actor(id, || Probe, move || args.clone())
}

/// Tells the probe child `id` of `sup` to exit as `how`. Returns false when
/// the child is not running.
pub async fn exit_child(
    sup: &crate::actors::supervisor_actor::SupervisorRef,
    id: &str,
    how: ProbeExit,
) -> bool {
    match sup.child::<ProbeMsg>(id).await {
        Ok(Some(actor)) => actor.cast(ProbeMsg::Exit(how)).is_ok(),
        _ => false,
    }
}

/// An error exit with `reason`.
pub fn crash(reason: &str) -> ProbeExit {
    ProbeExit::Error(reason.to_owned())
}

/// Matches a restart of child `id` (for [`crate::EventStream::wait_for`]).
pub fn restarted(id: &str) -> impl FnMut(&crate::Event) -> bool + '_ {
    move |e| matches!(e, crate::Event::ChildRestarted { child: i, .. } if i == id)
}

/// Matches an event of this kind (`"supervisor_escalated"`, ...) about `who`
/// (a child id, or a supervisor or service name).
pub fn event_of<'a>(kind: &'a str, who: &'a str) -> impl FnMut(&crate::Event) -> bool + 'a {
    move |e| {
        e.kind() == kind && {
            let v = serde_json::to_value(e).unwrap_or_default();
            ["id", "child", "supervisor", "service"]
                .iter()
                .any(|k| v.get(k).and_then(|x| x.as_str()) == Some(who))
        }
    }
}

/// How long [`eventually`] and friends wait before failing the test.
pub const EVENTUALLY: std::time::Duration = std::time::Duration::from_secs(10);
const POLL: std::time::Duration = std::time::Duration::from_millis(10);

/// Polls `cond` every 10 ms until it holds; panics (fails the test) naming
/// `what` after [`EVENTUALLY`]. For conditions on the real OS (/proc, files)
/// that no event announces; never a fixed sleep.
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    eventually_some(what, || cond().then_some(())).await
}

/// Like [`eventually`], returning the first `Some`.
pub async fn eventually_some<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    eventually_some_async(what, || std::future::ready(f())).await
}

/// Like [`eventually`] for a condition that must be awaited.
pub async fn eventually_async<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    eventually_some_async(what, || {
        let fut = cond();
        async move { fut.await.then_some(()) }
    })
    .await
}

/// Like [`eventually_some`] for a value that must be awaited.
pub async fn eventually_some_async<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + EVENTUALLY;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {EVENTUALLY:?} waiting until {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// `fut`'s output, or a failed test naming `what` after [`EVENTUALLY`].
pub async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(EVENTUALLY, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out after {EVENTUALLY:?} waiting for {what}"))
}

/// Fails the test unless nothing of a container is left: no process (not
/// even a zombie) in process group `pgid`, and none of `recorded`.
pub fn assert_nothing_left(pgid: i32, recorded: &[crate::runtime::process::procfs::ProcStat]) {
    let left = crate::runtime::process::procfs::leftovers(pgid, recorded);
    assert!(
        left.is_empty(),
        "processes of the container are left: {left:?}"
    );
}

/// An executor on a [`MockRuntime`](crate::MockRuntime) whose runtime
/// calls, overlay calls and token revocations all land in one [`Journal`],
/// in order (`runtime remove ID`, `overlay detach ID SEG`, `overlay
/// teardown SEG`, `token revoke ID`), for job tests.
pub struct JobHarness {
    /// The executor under test.
    pub executor: crate::Executor,
    /// Its runtime.
    pub mock: crate::MockRuntime,
    /// Its overlay actor.
    pub overlay: crate::Overlay,
    /// Every call, in order.
    pub journal: Journal,
    /// The overlay's fake backend (to inject failures).
    pub recording: crate::RecordingOverlay,
    /// The executor's events (overlay warnings among them).
    pub events: crate::EventBus,
}

impl JobHarness {
    /// A harness reading schedules on `clock` (a [`crate::TokioClock`] under
    /// a paused tokio clock).
    pub async fn start(clock: impl crate::Clock) -> Self {
        let journal = Journal::new();
        let mock = crate::MockRuntime::new();
        mock.journal(journal.clone());
        let recording = crate::RecordingOverlay::new(journal.clone());
        let overlay = crate::Overlay::start(recording.clone())
            .await
            .expect("overlay actor starts");
        let events = crate::EventBus::new();
        let executor = crate::Executor::start(
            crate::ExecutorConfig::new(Arc::new(mock.clone()))
                .events(events.clone())
                .overlay(overlay.clone())
                .tokens(crate::RecordingTokens::new(journal.clone()))
                .clock(clock),
        )
        .await
        .expect("executor starts");
        Self {
            executor,
            mock,
            overlay,
            journal,
            recording,
            events,
        }
    }

    /// Registers `spec`, triggers it from the CLI and waits for its end.
    pub async fn run_once(&self, spec: crate::JobSpec) -> crate::ExecutionRecord {
        let name = spec.name.clone();
        self.executor.register(spec).await.expect("valid spec");
        let id = self
            .executor
            .trigger(&name, crate::JobTrigger::Cli)
            .await
            .expect("triggered");
        self.executor.wait(id).await.expect("ends")
    }

    /// Waits until the execution is in a state named `state` (`running`, ...).
    pub async fn wait_state(&self, id: crate::ExecutionId, state: &str) -> crate::ExecutionRecord {
        eventually_some_async(&format!("execution {id} {state}"), || async {
            self.executor
                .get(id)
                .await
                .ok()
                .flatten()
                .filter(|r| r.status.state.name() == state)
        })
        .await
    }
}

/// The skip message of tests that need real containers.
pub const OCI_SKIP: &str =
    "skipped: needs root, runc and /bin/busybox (as root: apt-get install runc busybox-static)";

/// Why real OCI containers cannot run here, or `None` when they can (root,
/// `runc` on PATH, a static `/bin/busybox` to build the test image from).
pub fn oci_unavailable() -> Option<&'static str> {
    let on_path = |name: &str| {
        std::env::var("PATH")
            .unwrap_or_default()
            .split(':')
            .any(|d| std::path::Path::new(d).join(name).is_file())
    };
    if !nix::unistd::geteuid().is_root()
        || !on_path("runc")
        || !std::path::Path::new("/bin/busybox").is_file()
    {
        Some(OCI_SKIP)
    } else {
        None
    }
}

/// The name of the image [`oci_runtime`] imports.
pub const BUSYBOX_IMAGE: &str = "busybox:test";

/// An OCI runtime on `state_dir` whose store holds [`BUSYBOX_IMAGE`] (built
/// from the host's static busybox by the project's own image code, no
/// download; its command is `sh`); `None` after printing [`OCI_SKIP`] when
/// containers cannot run here.
pub async fn oci_runtime(state_dir: &std::path::Path) -> Option<crate::runtime::OciRuntime> {
    if let Some(why) = oci_unavailable() {
        eprintln!("{why}");
        return None;
    }
    import_busybox(state_dir, BUSYBOX_IMAGE, &["sh"]);
    Some(
        crate::runtime::OciRuntime::builder()
            .state_dir(state_dir)
            .build()
            .await
            .expect("the OCI runtime starts"),
    )
}

/// Builds a busybox image named `name` with command `cmd` and imports it
/// into the store of `state_dir`.
pub fn import_busybox(state_dir: &std::path::Path, name: &str, cmd: &[&str]) {
    use crate::image::{ImageConfig, ImageStore, build};
    let work = state_dir.join(format!("busybox-build-{}", uuid::Uuid::new_v4().simple()));
    build::busybox_rootfs(std::path::Path::new("/bin/busybox"), &work.join("rootfs"))
        .expect("busybox rootfs");
    let config = ImageConfig {
        cmd: cmd.iter().map(|s| (*s).to_owned()).collect(),
        env: vec!["PATH=/bin".into()],
        ..ImageConfig::default()
    };
    let layout = build::pack_layout(&work.join("rootfs"), name, &config, &work.join("layout"))
        .expect("image layout");
    ImageStore::open(state_dir.join("images"))
        .expect("image store")
        .import(&layout, None)
        .expect("image import");
    let _ = std::fs::remove_dir_all(&work);
}

/// Nothing of `rt`'s containers is left: runc lists none, no bundle, no
/// mount below the bundles, no lasting zombie.
pub async fn assert_no_oci_leftovers(rt: &crate::runtime::OciRuntime) {
    let listed = rt.runc_list().await.expect("runc list");
    assert!(listed.is_empty(), "runc still lists containers: {listed:?}");
    let bundles: Vec<_> = std::fs::read_dir(rt.bundles_dir())
        .expect("the bundles dir")
        .collect();
    assert!(bundles.is_empty(), "bundles left: {bundles:?}");
    assert!(mounts_below(rt.bundles_dir()).is_empty(), "mounts left");
    let zombies = lasting_zombies().await;
    assert!(zombies.is_empty(), "zombies left: {zombies:?}");
}

/// Mount points below `dir` (from `/proc/self/mountinfo`).
pub fn mounts_below(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(std::path::PathBuf::from)
        .filter(|p| p.starts_with(dir))
        .collect()
}

/// The zombie children that stay: those seen now and still there after up
/// to 5 s. A zombie some other test's waiter is about to reap (tests in
/// one binary share the process) is transient; a leaked one never goes.
pub async fn lasting_zombies() -> Vec<i32> {
    let first = zombie_children();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let now = zombie_children();
        let stayed: Vec<i32> = first.iter().copied().filter(|p| now.contains(p)).collect();
        if stayed.is_empty() || tokio::time::Instant::now() >= deadline {
            return stayed;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The node's children that are zombies right now.
pub fn zombie_children() -> Vec<i32> {
    crate::runtime::process::procfs::own_children()
        .into_iter()
        .filter(|&pid| crate::runtime::process::procfs::stat(pid).is_some_and(|p| p.is_zombie()))
        .collect()
}
