//! Run: cargo run --example supervision_tree
//!
//! Your own ractor actors in a nested arbor tree. A parser receives bad
//! input and fails; its `rest_for_one` supervisor restarts it and the writer
//! that depends on it, and leaves the others alone. The tree is printed
//! before and after, then shut down in reverse start order.

use std::time::Duration;

use arbor::{ChildSpec, Event, Strategy, SupervisorRef, SupervisorSpec};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

/// Parses numbers; anything else is an error that fails the actor.
struct Parser;

enum ParserMsg {
    Line(String),
    Parsed(RpcReplyPort<u64>),
}

// Local only: never sent to another node (the `cluster` feature of
// ractor asks every message type to say so).
impl ractor::Message for ParserMsg {}

impl Actor for Parser {
    type Msg = ParserMsg;
    type State = u64;
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<ParserMsg>, _: ()) -> Result<u64, ActorProcessingErr> {
        Ok(0)
    }

    async fn handle(
        &self,
        _: ActorRef<ParserMsg>,
        msg: ParserMsg,
        parsed: &mut u64,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ParserMsg::Line(line) => {
                let n: u64 = line
                    .trim()
                    .parse()
                    .map_err(|e| format!("cannot parse {line:?}: {e}"))?;
                *parsed += n;
            }
            ParserMsg::Parsed(reply) => {
                let _ = reply.send(*parsed);
            }
        }
        Ok(())
    }
}

/// Stands for anything with state: here it only says when it starts and stops.
struct Writer;

impl Actor for Writer {
    type Msg = ();
    type State = &'static str;
    type Arguments = &'static str;

    async fn pre_start(
        &self,
        _: ActorRef<()>,
        name: &'static str,
    ) -> Result<&'static str, ActorProcessingErr> {
        println!("  {name}: started");
        Ok(name)
    }

    async fn post_stop(
        &self,
        _: ActorRef<()>,
        name: &mut &'static str,
    ) -> Result<(), ActorProcessingErr> {
        println!("  {name}: stopped");
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let tree = SupervisorSpec::new("app")
        .child(ChildSpec::actor("metrics", || Writer, || "metrics"))
        .child(ChildSpec::supervisor(
            "ingest",
            SupervisorSpec::new("ingest")
                .strategy(Strategy::RestForOne)
                .intensity(3, Duration::from_secs(10))
                .child(ChildSpec::actor("parser", || Parser, || ()))
                .child(ChildSpec::actor("writer", || Writer, || "writer")),
        ))
        .child(ChildSpec::supervisor(
            "workers",
            SupervisorSpec::dynamic("workers"),
        ));

    println!("starting the tree:");
    let (root, _) = SupervisorRef::start(tree).await?;
    let mut events = root.events();

    let workers = root
        .child_supervisor("workers")
        .await?
        .expect("workers run");
    for i in 0..3 {
        workers
            .start_child(ChildSpec::actor(format!("job-{i}"), || Parser, || ()))
            .await?;
    }
    println!("\n{}\n", root.snapshot().await?);

    let ingest = root.child_supervisor("ingest").await?.expect("ingest runs");
    let parser = ingest
        .child::<ParserMsg>("parser")
        .await?
        .expect("parser runs");
    parser.cast(ParserMsg::Line("40".into()))?;
    println!(
        "parsed so far: {}",
        ractor::call!(parser, ParserMsg::Parsed)?
    );
    println!("sending the parser bad input:");
    parser.cast(ParserMsg::Line("forty-two".into()))?;

    while let Some(event) = events.recv().await {
        match &event {
            Event::ChildExited { child, exit, .. } => println!("  {child} exited: {exit}"),
            Event::ChildRestarted {
                child: id,
                restart_count,
                ..
            } => {
                println!("  {id} restarted (restart #{restart_count})");
                if id == "writer" {
                    break;
                }
            }
            _ => {}
        }
    }
    let parser = ingest
        .child::<ParserMsg>("parser")
        .await?
        .expect("parser runs again");
    println!(
        "a fresh parser starts from zero: {}",
        ractor::call!(parser, ParserMsg::Parsed)?
    );

    println!("\n{}\n", root.snapshot().await?);
    println!("shutting down (reverse start order):");
    root.shutdown().await;
    Ok(())
}
