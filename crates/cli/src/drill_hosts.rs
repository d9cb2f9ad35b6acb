//! `firebreak drill cleanup --run ID --inventory FILE`: removes what an ssh drill's run
//! left on its hosts (processes, nftables tables, fault guards, files), printing each thing
//! removed. Idempotent: a second run prints that nothing was left.

use anyhow::Result;
use firebreak_chaos::inventory::Inventory;

use crate::drill::{to_exit, Args};
use crate::exit::{self, fail};

pub(crate) fn cleanup(args: &Args) -> Result<()> {
    let (Some(run), Some(file)) = (&args.run, &args.inventory) else {
        return Err(fail(
            exit::USAGE,
            "drill cleanup needs --run ID (the run the drill printed) and --inventory FILE",
        ));
    };
    let inventory = Inventory::load(file).map_err(to_exit)?;
    let results = firebreak_chaos::ssh::clean_up(run, &inventory).map_err(to_exit)?;
    let mut failed = Vec::new();
    let mut removed = 0;
    for host in &results {
        for thing in &host.removed {
            println!("{}: removed {thing}", host.host);
            removed += 1;
        }
        if let Some(why) = &host.failed {
            failed.push(format!("{}: {why}", host.host));
        }
    }
    if removed == 0 && failed.is_empty() {
        println!("nothing left of run {run} on the {} hosts", results.len());
    }
    if !failed.is_empty() {
        return Err(fail(
            exit::UNAVAILABLE,
            format!(
                "could not clean up run {run} on {}: run this again once they are reachable",
                failed.join("; ")
            ),
        ));
    }
    Ok(())
}
