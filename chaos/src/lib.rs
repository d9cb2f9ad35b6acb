//! The drill harness (`firebreak drill PLAYBOOK`): it brings up sites, runs real traffic,
//! breaks sites on a timeline, and proves with checkers that nothing acknowledged was lost.
//!
//! ```text
//!   playbook ─► driver (sites as child processes) ─► topology applied, services serving
//!            ─► workload (open-loop, seeded) ──────► history (invoke / ok / fail / unknown,
//!            ─► timeline (faults on the driver)      deliveries, faults, leaders, routes)
//!            ─► observer (leaders, routing) ───────►    │
//!            ─► read-back (messages, balances,           ▼
//!               transfers, sessions) ─────────────► checkers ─► verdict, report, exit code
//! ```
//!
//! Every checker is a pure function of the history, in its own file under `checkers/`, so
//! it can be proven on hand-made histories. The driver stops whatever it started when the
//! drill ends, fails or is interrupted; children also get SIGKILL from the kernel if the
//! drill itself dies (PR_SET_PDEATHSIG).
//!
//! Caveats: the local driver runs every site on one machine (loopback addresses), so it
//! cannot cut networks (the netns driver can, as root); the workload runs in the drill's process,
//! so on a small machine the client competes with the sites for CPU.

pub mod certs;
pub mod checkers;
pub mod command_driver;
pub mod driver;
pub mod error;
pub mod history;
pub mod host_lag;
pub mod idle;
pub mod inventory;
pub mod kv_client;
pub mod lazyfs;
pub mod membership_timeline;
pub mod nemesis;
pub mod netns;
pub mod observer;
pub mod packet_delay;
pub mod playbook;
pub mod report;
pub mod runner;
pub mod site_driver;
pub mod ssh;
pub mod steady;
pub mod workload;

pub use error::{Error, Result};
pub use playbook::Playbook;
pub use runner::{run, DrillOptions, DrillOutcome};
