use proc_macro::TokenStream;
#[proc_macro_derive(StateMachine, attributes(machine, on, terminal))]
pub fn derive_state_machine(input: TokenStream) -> TokenStream { let _ = input; TokenStream::new() }
