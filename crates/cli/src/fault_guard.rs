//! `firebreak fault-guard --table NAME --after-secs N`: the dead-man's switch of a network
//! fault on a drill host. The ssh driver starts one, detached, with every nftables table
//! it installs; after N seconds it deletes the table if it is still there. So a fault heals
//! on time even when the drill was killed or cut off from the host. The drill stops the
//! guard when it heals the fault itself; `drill cleanup` stops any that are left.

use anyhow::Result;

use crate::exit::{self, fail};

/// The longest a guard waits: a day.
const MAX_AFTER_SECS: u64 = 24 * 3600;

#[derive(clap::Args)]
pub struct Args {
    /// The nftables table (family inet) to delete: a drill's, `fb_<run>_<fault>`.
    #[arg(long)]
    table: String,
    /// Seconds to wait before deleting it (at most a day).
    #[arg(long)]
    after_secs: u64,
}

pub async fn run(args: Args) -> Result<()> {
    if !is_drill_table(&args.table) {
        return Err(fail(
            exit::USAGE,
            format!(
                "--table {:?} is not a drill's table (fb_<run>_<fault>, run six hex digits): a guard deletes nothing else",
                args.table
            ),
        ));
    }
    if args.after_secs == 0 || args.after_secs > MAX_AFTER_SECS {
        return Err(fail(
            exit::USAGE,
            format!(
                "--after-secs {}: 1 to {MAX_AFTER_SECS} allowed",
                args.after_secs
            ),
        ));
    }
    tokio::time::sleep(std::time::Duration::from_secs(args.after_secs)).await;
    let nft = |verb: &str| {
        std::process::Command::new("nft")
            .args([verb, "table", "inet", &args.table])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !nft("list") {
        eprintln!(
            "fault-guard: table {} already gone; nothing to do",
            args.table
        );
        return Ok(());
    }
    if !nft("delete") {
        return Err(fail(
            1,
            format!("fault-guard: failed to delete nft table {}", args.table),
        ));
    }
    eprintln!(
        "fault-guard: the fault expired after {} s: deleted nft table {}",
        args.after_secs, args.table
    );
    Ok(())
}

/// `fb_` + six lowercase hex digits + `_` + a lowercase fault name.
fn is_drill_table(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("fb_") else {
        return false;
    };
    let Some((run, fault)) = rest.split_once('_') else {
        return false;
    };
    firebreak_chaos::ssh::check_run_id(run).is_ok()
        && !fault.is_empty()
        && fault.len() <= 16
        && fault.chars().all(|c| c.is_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::is_drill_table;

    #[test]
    fn a_guard_touches_only_a_drills_tables() {
        assert!(is_drill_table("fb_ab12cd_part"));
        for other in [
            "filter",
            "fb_ab12cd",
            "fb_AB12CD_part",
            "fb_ab12c_part",
            "fb_ab12cd_x y",
            "nat",
        ] {
            assert!(!is_drill_table(other), "{other}");
        }
    }
}
