//! Application specs: the typed model, where spec files are found, how they
//! are read (Erlang terms or JSON) and validated.
//!
//! One broken spec is that app's problem only: [`parse_dir`] returns every
//! valid spec together with every error and warning, each naming the file,
//! the line (for term files) and the field.

mod discover;
mod json;
mod model;
mod sealed;
mod validate;

pub use discover::{parse_dir, parse_file, DirError, FileResult, SPEC_FILE_MAX_BYTES};
pub use model::*;
pub(crate) use validate::wide_atom;
pub use validate::{is_app_name, is_atom_text, APP_NAME_MAX_BYTES};
