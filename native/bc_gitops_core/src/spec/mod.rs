//! Application specs: the typed model, where spec files are found, how they
//! are read (Erlang terms, JSON or YAML) and validated.
//!
//! One broken spec is that app's problem only: [`parse_dir`] returns every
//! valid spec together with every error and warning, each naming the file,
//! the line (term and YAML files) and the field.

mod discover;
mod json;
mod model;
mod tree;
mod validate;
mod yaml;

pub use discover::{parse_dir, parse_file, DirError, FileResult, SPEC_FILES, SPEC_FILE_MAX_BYTES};
pub use json::parse_json;
pub use model::*;
pub use tree::ReadError;
pub use validate::{is_app_name, is_atom_text, APP_NAME_MAX_BYTES};
pub use yaml::parse_yaml;
