//! The drill harness (`firebreak drill PLAYBOOK`): playbook model, site drivers, faults,
//! workload, history, checkers and report.
//!
//! Empty for now: it arrives with the drill issue, which builds on the control plane
//! (`firebreak-node`), the failover engine and the reference services. The crate exists
//! already so that the workspace has the shape DESIGN.md describes and dependencies keep
//! pointing one way (cli → chaos, node, services → store → model).
