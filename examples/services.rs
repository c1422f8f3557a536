//! Run: cargo run --example services
//!
//! Real processes under the process runtime (no root needed):
//! - `web`: two replicas that keep running;
//! - `flaky`: crashes every second with exit code 3; restarted at once
//!   twice, then put in crash-loop back-off (1 s, 2 s, 4 s, ... up to 8 s);
//! - `broken`: fails at once and is isolated: kept for debugging, never
//!   restarted, and the isolate hook is called.
//!
//! Events are printed as they happen, and the tree every 5 seconds. Ctrl-C
//! shuts the tree down in reverse start order (each process gets SIGTERM and
//! 3 s before SIGKILL). `--for 20s` stops by itself after 20 seconds.

use std::{sync::Arc, time::Duration};

use arbor::{
    BackoffPolicy, ContainerSpec, Event, OnLimit, PanicAction, ProcessRuntime, Runtime, Shutdown,
    SupervisorRef, SupervisorSpec,
};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let run_for = parse_for()?;
    let runtime: Arc<dyn Runtime> = Arc::new(ProcessRuntime::builder().echo_output(true).build()?);
    let grace = |c: arbor::ChildSpec| c.shutdown(Shutdown::Timeout(Duration::from_secs(3)));

    let web = SupervisorSpec::service(
        "web",
        runtime.clone(),
        ContainerSpec::shell("web", "echo serving; while :; do sleep 1; done"),
        2,
    )
    .map_children(grace);

    let flaky = SupervisorSpec::service(
        "flaky",
        runtime.clone(),
        ContainerSpec::shell(
            "flaky",
            "echo starting; sleep 1; echo 'lost the database' >&2; exit 3",
        ),
        1,
    )
    .map_children(grace)
    .on_limit(OnLimit::Backoff)
    .intensity(2, Duration::from_secs(60))
    .backoff(BackoffPolicy {
        initial: Duration::from_secs(1),
        max: Duration::from_secs(8),
        ..BackoffPolicy::default()
    });

    let broken = SupervisorSpec::service(
        "broken",
        runtime.clone(),
        ContainerSpec::shell("broken", "exit 1"),
        1,
    )
    .map_children(|c| grace(c).on_panic(PanicAction::Isolate))
    .on_isolate(|i| {
        println!(
            "isolate hook: {} failed ({}); container {} kept for debugging",
            i.child,
            i.exit,
            i.retained.as_deref().unwrap_or("-")
        )
    });

    let tree = SupervisorSpec::new("node")
        .child(arbor::ChildSpec::supervisor("web", web))
        .child(arbor::ChildSpec::supervisor("flaky", flaky))
        .child(arbor::ChildSpec::supervisor("broken", broken));

    let (root, _) = SupervisorRef::start(tree).await?;
    let mut events = root.events();
    println!("{}\n", root.snapshot().await?);
    println!("running; Ctrl-C to stop");

    let stop = async {
        match run_for {
            Some(d) => tokio::time::sleep(d).await,
            None => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    };
    tokio::pin!(stop);
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    tick.tick().await;
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = tick.tick() => println!("\n{}\n", root.snapshot().await?),
            Some(e) = events.recv() => print_event(&e),
        }
    }

    println!("\nshutting down in reverse order:");
    let printer = tokio::spawn(async move {
        while let Some(e) = events.recv().await {
            if let Event::ChildStopped {
                supervisor, child, ..
            } = &e
            {
                println!("  stopped {supervisor}/{child}");
            }
        }
    });
    root.shutdown().await;
    printer.abort();
    println!("all processes stopped");
    Ok(())
}

fn print_event(e: &Event) {
    match e {
        Event::ChildExited { child, exit, .. } => println!("{child} exited: {exit}"),
        Event::ChildRestarted {
            child: id,
            restart_count,
            ..
        } => println!("{id} restarted (#{restart_count})"),
        Event::CrashLoopBackOff {
            child: id, delay, ..
        } => {
            println!(
                "{id} is crash-looping: next start in {}",
                humantime::format_duration(*delay)
            )
        }
        Event::ChildIsolated { child: id, .. } => println!("{id} isolated"),
        _ => {}
    }
}

fn parse_for() -> Result<Option<Duration>, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [] => Ok(None),
        [flag, d] if flag == "--for" => humantime::parse_duration(d)
            .map(Some)
            .map_err(|e| format!("--for: invalid duration {d:?}: {e}")),
        other => Err(format!(
            "unexpected arguments {other:?}; usage: services [--for DURATION]"
        )),
    }
}
