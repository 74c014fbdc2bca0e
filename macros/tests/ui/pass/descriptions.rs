//! Doc comments become descriptions: lines trimmed, joined with '\n', the
//! whole trimmed; no doc comment (or a blank one) gives `None`.
#![deny(warnings)]

use idemflow::StateMachine;

#[derive(StateMachine, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[machine(initial = Draft)]
enum Article {
    /// Being written.
    #[on(publish = Published)]
    Draft,
    /// Visible to readers.
    ///
    ///   Indexed by search engines.
    #[on(archive = Archived)]
    Published,
    #[doc = "  Kept, not shown.  "]
    #[doc = ""]
    #[on(delete = Deleted)]
    Archived,
    ///
    #[terminal]
    Deleted,
}

fn main() {
    assert_eq!(Article::Draft.description(), Some("Being written."));
    assert_eq!(
        Article::Published.description(),
        Some("Visible to readers.\n\nIndexed by search engines.")
    );
    assert_eq!(Article::Archived.description(), Some("Kept, not shown."));
    assert_eq!(Article::Deleted.description(), None);
    let def = Article::definition();
    assert_eq!(
        def.find_state("draft").unwrap().description.as_deref(),
        Some("Being written.")
    );
    assert_eq!(def.find_state("deleted").unwrap().description, None);
}
