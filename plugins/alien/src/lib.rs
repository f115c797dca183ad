//! Test guest: imports `test:alien/thing`, which no host provides. Loading
//! it as an agent must fail with an error naming that import.

wit_bindgen::generate!({ path: "wit", world: "alien" });

struct Alien;

impl Guest for Alien {
    fn run() -> String {
        test::alien::thing::ping()
    }
}

export!(Alien);
