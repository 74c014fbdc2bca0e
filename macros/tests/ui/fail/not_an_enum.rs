use idemflow::StateMachine;

#[derive(StateMachine)]
#[machine(initial = Draft)]
struct Order {
    state: u8,
}

#[derive(StateMachine)]
#[machine(initial = Draft)]
union Raw {
    state: u8,
}

fn main() {}
