//! What a gate refused: logged for the operator (at most
//! [`LOG_PER_WINDOW`] lines a minute per gate, then one line saying how
//! many went unlogged), and kept as distinct one-line reasons (at most
//! [`MAX_KEPT`]) for the sandbox's owner to show with the command's result.
//! A reason names only the target's host and port and the grant to add:
//! never a header, a body, a path or a credential.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Refusal lines one gate logs per [`WINDOW`].
pub const LOG_PER_WINDOW: u32 = 10;
const WINDOW: Duration = Duration::from_secs(60);
/// Distinct reasons kept for [`Refusals::take`].
pub const MAX_KEPT: usize = 20;

pub struct Refusals {
    agent: String,
    state: Mutex<State>,
}

struct State {
    window_start: Instant,
    logged_in_window: u32,
    unlogged: u64,
    /// Reasons not yet taken, distinct.
    kept: Vec<String>,
    /// Every distinct reason kept so far is told once.
    told: Vec<String>,
    total: u64,
}

impl Refusals {
    pub fn new(agent: &str) -> Refusals {
        Refusals {
            agent: agent.to_string(),
            state: Mutex::new(State {
                window_start: Instant::now(),
                logged_in_window: 0,
                unlogged: 0,
                kept: Vec::new(),
                told: Vec::new(),
                total: 0,
            }),
        }
    }

    /// Notes one refusal (`403`) of `target` for `reason`.
    pub fn refused(&self, target: &str, reason: &str) {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        state.total += 1;
        if !state.told.iter().any(|told| told == reason) && state.told.len() < MAX_KEPT {
            state.told.push(reason.to_string());
            state.kept.push(reason.to_string());
        }
        let now = Instant::now();
        if now.duration_since(state.window_start) >= WINDOW {
            state.window_start = now;
            state.logged_in_window = 0;
        }
        if state.logged_in_window >= LOG_PER_WINDOW {
            state.unlogged += 1;
            return;
        }
        state.logged_in_window += 1;
        let unlogged = std::mem::take(&mut state.unlogged);
        drop(state);
        tracing::info!(
            agent = %self.agent,
            %target,
            unlogged_before = unlogged,
            "egress: connection refused: {reason}"
        );
    }

    /// The distinct reasons noted since the last call.
    pub fn take(&self) -> Vec<String> {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        std::mem::take(&mut state.kept)
    }

    /// How many requests were refused in all.
    pub fn total(&self) -> u64 {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .total
    }

    /// Refusals not logged because of the rate limit, since the last line.
    #[cfg(test)]
    fn unlogged(&self) -> u64 {
        self.state.lock().unwrap().unlogged
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_kept_once_and_logged_at_a_bounded_rate() {
        let refusals = Refusals::new("worker");
        for round in 0..100 {
            refusals.refused("a.example:443", "reason a");
            if round % 2 == 0 {
                refusals.refused("b.example:443", "reason b");
            }
        }
        assert_eq!(refusals.take(), ["reason a", "reason b"]);
        assert!(refusals.take().is_empty());
        refusals.refused("a.example:443", "reason a");
        assert!(refusals.take().is_empty(), "a reason is told once");
        assert_eq!(refusals.total(), 151);
        assert_eq!(refusals.unlogged(), 151 - u64::from(LOG_PER_WINDOW));
        for index in 0..100 {
            refusals.refused("c.example:443", &format!("reason {index}"));
        }
        assert_eq!(refusals.take().len(), MAX_KEPT - 2);
    }
}
