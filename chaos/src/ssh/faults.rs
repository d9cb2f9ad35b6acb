//! Network faults on hosts: each an nftables table `fb_<run>_<fault>` in the host's own
//! ruleset, installed together with a detached `firebreak fault-guard` that deletes it at
//! its expiry, so a host cut off from the drill (or a drill killed mid-fault) still heals.
//!
//! | fault | table | rules |
//! |---|---|---|
//! | partition | `fb_<run>_part` | output to the other side's addresses dropped (on both sides unless one-way) |
//! | loss | `fb_<run>_loss` | output to the peers dropped at random, `percent` of it |
//! | link-flap (down) | `fb_<run>_link` | everything in and out dropped but loopback and ssh |

use std::time::Duration;

use super::SshHosts;
use crate::error::{Error, Result};
use crate::netns::Shaping;
use crate::site_driver::NetworkFaults;

/// The longest expiry a guard accepts (the guard refuses more).
const MAX_EXPIRY: Duration = Duration::from_secs(24 * 3600);

impl SshHosts {
    fn table(&self, fault: &str) -> String {
        format!("fb_{}_{fault}", self.run_id)
    }

    /// Installs `rules` (nft commands after the table's `add table`) as table `fault` on
    /// site `index`'s host, with a guard that deletes it after `expiry`.
    fn install_table(
        &self,
        index: usize,
        fault: &str,
        rules: &[String],
        expiry: Duration,
    ) -> Result<()> {
        let table = self.table(fault);
        let run_dir = self.run_dir(index);
        let binary = self.binary_path(index)?;
        let expiry = expiry.min(MAX_EXPIRY).as_secs().max(1);
        let mut script = format!("nft -f - <<'EOF'\nadd table inet {table}\n");
        for rule in rules {
            script.push_str(&rule.replace("TABLE", &table));
            script.push('\n');
        }
        script.push_str("EOF\n");
        script.push_str(&format!(
            "g={run_dir}/guard-{table}.pid; {} \
             setsid {binary} fault-guard --table {table} --after-secs {expiry} \
             </dev/null >>{run_dir}/fault-guard.log 2>&1 & echo $! > $g\n",
            stop_guard(&table)
        ));
        self.run_ok(index, &script).map(|_| ())
    }

    /// Deletes table `fault` on site `index`'s host (if there) and stops its guard.
    fn remove_table(&self, index: usize, fault: &str) -> Result<()> {
        let table = self.table(fault);
        let run_dir = self.run_dir(index);
        let script = format!(
            "nft list table inet {table} >/dev/null 2>&1 && nft delete table inet {table}; \
             g={run_dir}/guard-{table}.pid; {} rm -f $g; true",
            stop_guard(&table)
        );
        self.run_ok(index, &script).map(|_| ())
    }

    /// The output chain, and rules that apply `verdict` to what goes to `sites` (but
    /// `except`): one rule per address family present.
    fn output_rules(&self, sites: &[usize], except: usize, verdict: &str) -> Vec<String> {
        let addresses: Vec<std::net::IpAddr> = sites
            .iter()
            .filter(|s| **s != except)
            .map(|s| self.hosts[*s].1.address)
            .collect();
        let mut rules = vec![output_chain()];
        for (family, v6) in [("ip", false), ("ip6", true)] {
            let set: Vec<String> = addresses
                .iter()
                .filter(|a| a.is_ipv6() == v6)
                .map(|a| a.to_string())
                .collect();
            if !set.is_empty() {
                let set = set.join(", ");
                rules.push(format!(
                    "add rule inet TABLE out {family} daddr {{ {set} }} {verdict}"
                ));
            }
        }
        rules
    }

    fn drop_output_to(&self, from: &[usize], to: &[usize], expiry: Duration) -> Result<()> {
        for a in from {
            let rules = self.output_rules(to, *a, "drop");
            self.install_table(*a, "part", &rules, expiry)?;
        }
        Ok(())
    }
}

/// Shell that stops the guard whose pid is in `$g`, if that process is still the guard of
/// `table` (a reused pid is left alone).
fn stop_guard(table: &str) -> String {
    format!(
        "[ -f $g ] && p=$(cat $g) && tr '\\0' ' ' </proc/$p/cmdline 2>/dev/null | grep -q -- '--table {table} ' && kill $p;"
    )
}

fn output_chain() -> String {
    "add chain inet TABLE out { type filter hook output priority 0 ; policy accept ; }".into()
}

impl NetworkFaults for SshHosts {
    fn partition(
        &self,
        from: &[usize],
        to: &[usize],
        one_way: bool,
        expiry: Duration,
    ) -> Result<()> {
        self.drop_output_to(from, to, expiry)?;
        if !one_way {
            self.drop_output_to(to, from, expiry)?;
        }
        Ok(())
    }

    fn heal_partition(&self, from: &[usize], to: &[usize], one_way: bool) -> Result<()> {
        let mut sites: Vec<usize> = from.to_vec();
        if !one_way {
            sites.extend(to);
        }
        for site in sites {
            self.remove_table(site, "part")?;
        }
        Ok(())
    }

    fn loss(&self, site: usize, peers: &[usize], percent: u32, expiry: Duration) -> Result<()> {
        // numgen gives 0..=99; dropping when it is at most percent - 1 drops percent of them.
        let below = percent.clamp(1, 100) - 1;
        let verdict = format!("numgen random mod 100 <= {below} drop");
        let rules = self.output_rules(peers, site, &verdict);
        self.install_table(site, "loss", &rules, expiry)
    }

    fn clear_loss(&self, site: usize) -> Result<()> {
        self.remove_table(site, "loss")
    }

    fn shape(&self, _: usize, _: &[usize], _: &Shaping, _: Duration) -> Result<()> {
        Err(Error::CouldNotRun(
            "latency and bandwidth are not built for the ssh driver (playbook validation refuses them)".into(),
        ))
    }

    fn clear_shape(&self, _: usize) -> Result<()> {
        Ok(())
    }

    fn link(&self, site: usize, up: bool, expiry: Duration) -> Result<()> {
        if up {
            return self.remove_table(site, "link");
        }
        let port = self.hosts[site].1.port;
        let rules = [
            "add chain inet TABLE in { type filter hook input priority 0 ; policy accept ; }"
                .into(),
            "add rule inet TABLE in iif lo accept".into(),
            format!("add rule inet TABLE in tcp dport {port} accept"),
            "add rule inet TABLE in drop".into(),
            output_chain(),
            "add rule inet TABLE out oif lo accept".into(),
            format!("add rule inet TABLE out tcp sport {port} accept"),
            "add rule inet TABLE out drop".into(),
        ];
        self.install_table(site, "link", &rules, expiry)
    }
}
