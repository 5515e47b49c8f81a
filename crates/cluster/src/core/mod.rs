//! The cluster's decisions as plain state with the time passed in, in the
//! spirit of the request machine (`tensorgate_server::request`): no NATS,
//! no tasks, no clock. The gateway and the worker are thin pumps around
//! these; every rule here is unit-tested in memory.
//!
//! - [`fleet`]: the gateway's view of workers and gateways: liveness,
//!   holdings, routing, fleet totals for `status` and `models`;
//! - [`rollouts`]: default-version policies and canary trials;
//! - [`pending`]: items waiting for replies (the first reply wins);
//! - [`groups`]: the one group planner (items out, results back);
//! - [`gateways`]: a worker's view of the gateways (which are gone);
//! - [`intake`]: which pulled items a worker runs, and how much it pulls;
//! - [`retry`]: publishing with retries, handing replies back.

pub mod fleet;
pub mod gateways;
pub mod groups;
pub mod intake;
pub mod pending;
pub mod retry;
pub mod rollouts;

#[cfg(test)]
mod tests;
