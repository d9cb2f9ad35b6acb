//! `firebreak disk --mount DIR --durable DIR --name NAME`: a drop-unsynced filesystem
//! (`firebreak_chaos::lazyfs`) at DIR, served by this process, for power-loss drills on a
//! host. The ssh driver starts one per site over ssh, before the site's processes, and
//! reads its stdout: `mounted` once DIR is mounted, then, at every SIGUSR1 (a power loss:
//! the site's processes are dead by then), one JSON line of what was thrown away. SIGTERM
//! unmounts and exits. Root and /dev/fuse.

use std::path::PathBuf;

use anyhow::Result;
use tokio::signal::unix::{signal, SignalKind};

use crate::exit::{self, fail};

#[derive(clap::Args)]
pub struct Args {
    /// Where to mount it: the site's data dir.
    #[arg(long)]
    mount: PathBuf,
    /// Where its synced content lives.
    #[arg(long)]
    durable: PathBuf,
    /// A name for the mount (the site's).
    #[arg(long)]
    name: String,
}

pub async fn run(args: Args) -> Result<()> {
    let not_run = |e: firebreak_chaos::Error| fail(exit::DRILL_NOT_RUN, e.to_string());
    firebreak_chaos::lazyfs::probe().map_err(not_run)?;
    let mut usr1 = signal(SignalKind::user_defined1())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut mount = firebreak_chaos::lazyfs::Mount::new(&args.mount, &args.durable, &args.name)
        .map_err(not_run)?;
    println!("mounted {}", args.mount.display());
    loop {
        tokio::select! {
            _ = usr1.recv() => {
                let lost = mount.power_loss().map_err(not_run)?;
                println!("{}", serde_json::to_string(&lost)?);
            }
            _ = term.recv() => break,
        }
    }
    drop(mount);
    Ok(())
}
