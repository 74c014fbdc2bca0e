use idemflow::StateMachine;

// `after` is a positive whole number directly followed by ms, s, m, h or d.
#[derive(StateMachine, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[machine(initial = A)]
enum Steps {
    #[timeout(after = "30", fire = next)]
    #[on(next = B)]
    A,
    #[timeout(after = "m", fire = next)]
    #[on(next = C)]
    B,
    #[timeout(after = "-5m", fire = next)]
    #[on(next = D)]
    C,
    #[timeout(after = "0s", fire = next)]
    #[on(next = E)]
    D,
    #[timeout(after = "5 weeks", fire = next)]
    #[on(next = F)]
    E,
    #[timeout(after = "1.5h", fire = next)]
    #[on(next = G)]
    F,
    #[timeout(after = "18446744073709551615s", fire = next)]
    #[on(next = H)]
    G,
    #[timeout(after = "99999999999999999999ms", fire = next)]
    #[on(next = I)]
    H,
    #[timeout(after = "", fire = next)]
    #[on(next = J)]
    I,
    #[timeout(after = 30, fire = next)]
    #[on(next = Z)]
    J,
    #[terminal]
    Z,
}

fn main() {}
