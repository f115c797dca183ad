//! Test guest: a plain WASI command component. Loading it as an agent must
//! fail with an error naming the missing `agent` export.

fn main() {
    println!("I am a command, not a sub-agent");
}
