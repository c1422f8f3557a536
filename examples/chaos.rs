//! Run: cargo run --example chaos
//!
//! Testing your own code with arbor's fault injection, in two parts:
//!
//! 1. Your own actor under an arbor supervisor, wrapped in `Faulty`: it
//!    panics on its 3rd message and returns an error on its 5th; the
//!    supervisor restarts it each time, and the counter it keeps starts over.
//! 2. A whole deployment (services, an on-demand job, a cron job) under a
//!    seeded fault plan on the paused clock: ten virtual minutes in about a
//!    second, then every invariant is checked and the report printed.

use std::time::Duration;

use arbor::{
    ChildSpec, Deployment, Event, SupervisorRef, SupervisorSpec,
    testing::{
        chaos::Chaos,
        faulty_actor::{ActorFaultKind, ActorFaults},
    },
};
use ractor::{Actor, ActorProcessingErr, ActorRef};

/// Your actor: counts the messages it handled.
struct Counter;

impl Actor for Counter {
    type Msg = ();
    type State = u64;
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<()>, _: ()) -> Result<u64, ActorProcessingErr> {
        Ok(0)
    }

    async fn handle(
        &self,
        _: ActorRef<()>,
        _: (),
        count: &mut u64,
    ) -> Result<(), ActorProcessingErr> {
        *count += 1;
        Ok(())
    }
}

const SPEC: &str = r#"
name: shop
services:
  web:
    command: ["serve"]
    replicas: 3
    max_restarts: 3
    restart_window: 30s
    on_limit: backoff
    backoff: {initial: 1s, max: 8s, multiplier: 2, jitter: 0.1, reset_after: 1m}
jobs:
  report:
    init:
      - command: ["prepare"]
    command: ["report"]
    deadline: 30s
  tick:
    command: ["tick"]
    schedule: "*/10 * * * * *"
"#;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Part 1: your actor, failing on cue under a supervisor.
    let faults = ActorFaults::new("counter").panic_at(3).error_at(5).build();
    let wrap = faults.clone();
    let spec = SupervisorSpec::new("app").child(ChildSpec::actor(
        "counter",
        move || wrap.wrap(Counter),
        || (),
    ));
    let (sup, _) = SupervisorRef::start(spec).await?;
    let mut events = sup.events();
    for _ in 0..6 {
        if let Some(actor) = sup.child::<()>("counter").await? {
            let _ = actor.cast(());
        }
        // Let the message (and any restart) play out before the next one.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut restarts = 0;
    while let Some(e) = events.try_recv() {
        if let Event::ChildRestarted { child: id, .. } = e {
            restarts += 1;
            println!("supervisor restarted {id}");
        }
    }
    let injected = faults.injected().await;
    for f in &injected {
        let what = match f.kind {
            ActorFaultKind::Panic => "panicked",
            ActorFaultKind::Error => "returned an error",
            ActorFaultKind::StartFailure => "failed to start",
        };
        println!("{} {what} at message {}", f.actor, f.at);
    }
    println!(
        "{} messages, {} faults, {restarts} restarts",
        faults.messages(),
        injected.len()
    );
    sup.shutdown().await;

    // Part 2: a deployment under seeded faults, on the paused clock.
    tokio::time::pause();
    let report = Chaos::new(Deployment::from_yaml(SPEC)?)
        .seed(7)
        .rate(0.1)
        .duration(Duration::from_secs(600))
        .run()
        .await?;
    println!("\n{report}");
    if !report.passed() {
        return Err("an invariant was broken".into());
    }
    Ok(())
}
