//! `arbor image import|ls|rm`: the node's local image store, on disk under
//! the state dir (`<state-dir>/images`), shared with `arbor agent` on the
//! same state dir. No agent needed.

use std::{path::PathBuf, process::ExitCode};

use arbor::image::ImageStore;
use clap::{Parser, Subcommand};

use crate::agent::default_state_dir;

#[derive(Parser)]
pub struct Image {
    /// The node's state dir (default: $ARBOR_STATE_DIR, else
    /// $HOME/.local/state/arbor); images live in <state-dir>/images.
    #[arg(long, env = "ARBOR_STATE_DIR", global = true)]
    state_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: ImageCommand,
}

#[derive(Subcommand)]
enum ImageCommand {
    /// Import an image: an OCI image layout directory, or an oci-archive or
    /// docker-archive tarball (plain or gzip). Every blob is checked against
    /// its digest; a failed import leaves nothing behind.
    Import {
        /// The directory or tarball.
        path: PathBuf,
        /// NAME:TAG to store it under (default: the name the input carries);
        /// also picks the image when the input holds several.
        #[arg(long)]
        name: Option<String>,
        /// Print the image record as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the imported images.
    Ls {
        /// Print the records as a JSON array.
        #[arg(long)]
        json: bool,
    },
    /// Remove an image (and its unpacked tree when no other image uses it).
    Rm {
        /// NAME[:TAG] (the tag defaults to latest).
        name: String,
    },
}

/// `arbor image ...`.
pub fn image(args: Image) -> ExitCode {
    let Some(state_dir) = args.state_dir.clone().or_else(default_state_dir) else {
        eprintln!("arbor: no --state-dir given and HOME is not set");
        return ExitCode::from(2);
    };
    let store = match ImageStore::open(state_dir.join("images")) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("arbor: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match args.command {
        ImageCommand::Import { path, name, json } => {
            store.import(&path, name.as_deref()).map(|r| {
                if json {
                    println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
                } else {
                    println!(
                        "imported {} ({}, {} layers)",
                        r.name,
                        r.digest,
                        r.layers.len()
                    );
                }
            })
        }
        ImageCommand::Ls { json } => store.list().map(|records| {
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&records).unwrap_or_default()
                );
                return;
            }
            println!("{:<40} {:<20} {:>10}  COMMAND", "NAME", "DIGEST", "SIZE");
            for r in records {
                let short = r.digest.trim_start_matches("sha256:");
                println!(
                    "{:<40} {:<20} {:>10}  {}",
                    r.name,
                    &short[..short.len().min(12)],
                    bytesize::ByteSize::b(r.size).to_string(),
                    r.config.argv().join(" ")
                );
            }
        }),
        ImageCommand::Rm { name } => store.remove(&name).map(|r| println!("removed {}", r.name)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("arbor: {e}");
            ExitCode::FAILURE
        }
    }
}
