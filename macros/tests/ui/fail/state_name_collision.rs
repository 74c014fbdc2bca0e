use idemflow::StateMachine;

#[derive(StateMachine, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[machine(initial = Start)]
#[allow(non_camel_case_types)]
enum Fetch {
    #[on(fail = HttpError, fail_hard = HTTPError, fail_badly = Http_Error)]
    Start,
    #[terminal]
    HttpError,
    #[terminal]
    HTTPError,
    #[terminal]
    Http_Error,
}

fn main() {}
