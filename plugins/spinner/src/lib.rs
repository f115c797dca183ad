//! Example CPU-bound worker that never calls the host while it works: it
//! runs a hash chain for the number of rounds in its task, or forever when
//! the task holds no number. It shows preemptive stop and fuel budgets.

use bgagents_guest::{Agent, Request};

struct Spinner;

impl Agent for Spinner {
    fn run(request: Request) -> Result<String, String> {
        let rounds: Option<u64> = request
            .task
            .split(|c: char| !c.is_ascii_digit())
            .find_map(|word| word.parse().ok());
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut done: u64 = 0;
        // `black_box` keeps the loop from being folded away at compile time.
        while rounds.is_none_or(|rounds| done < rounds) {
            state = std::hint::black_box(mix(state));
            done += 1;
        }
        Ok(format!("{done} rounds, final state {state:016x}"))
    }
}

fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

bgagents_guest::export_agent!(Spinner);
