//! Core values to Erlang terms.

use bc_gitops_core::term::{Spanned, Term as CoreTerm};
use rustler::types::tuple::make_tuple;
use rustler::{Atom, Encoder, Env, NewBinary, Term};

/// An Erlang term for a core term, exactly as `file:consult/1` builds it.
///
/// Only called for specs that passed validation: atoms in an invalid spec
/// are never created.
pub fn term<'a>(env: Env<'a>, value: &Spanned) -> Term<'a> {
    match term_with(env, value, &|env, name, _line| {
        Ok::<_, std::convert::Infallible>(atom(env, name))
    }) {
        Ok(t) => t,
        Err(never) => match never {},
    }
}

/// The same, making no atom: an atom the VM does not know yet is
/// `Err((line, name))`. For text that comes from elsewhere (a package's
/// metadata), where every atom made would stay for the VM's lifetime.
pub fn term_existing_atoms<'a>(env: Env<'a>, value: &Spanned) -> Result<Term<'a>, (u32, String)> {
    term_with(
        env,
        value,
        &|env, name, line| match Atom::existing_from_utf8_bytes(env, name.as_bytes()) {
            Ok(a) => Ok(a.encode(env)),
            Err(_) => Err((line, name.to_string())),
        },
    )
}

/// The walk shared by [`term`] and [`term_existing_atoms`]; `make_atom`
/// turns an atom's text (and its line) into a term.
fn term_with<'a, E>(
    env: Env<'a>,
    value: &Spanned,
    make_atom: &dyn Fn(Env<'a>, &str, u32) -> Result<Term<'a>, E>,
) -> Result<Term<'a>, E> {
    let term = |item: &Spanned| term_with(env, item, make_atom);
    Ok(match &value.term {
        CoreTerm::Atom(name) => make_atom(env, name, value.line)?,
        CoreTerm::Int(n) => n.encode(env),
        CoreTerm::BigInt(n) => n.encode(env),
        CoreTerm::Float(f) => f.encode(env),
        CoreTerm::Binary(bytes) => binary(env, bytes),
        CoreTerm::List { items, tail } => {
            let mut list = match tail {
                Some(tail) => term(tail)?,
                None => Term::list_new_empty(env),
            };
            for item in items.iter().rev() {
                list = list.list_prepend(term(item)?);
            }
            list
        }
        CoreTerm::Tuple(items) => {
            let items = items
                .iter()
                .map(term)
                .collect::<Result<Vec<Term<'a>>, E>>()?;
            make_tuple(env, &items)
        }
        CoreTerm::Map(entries) => {
            let mut map = Term::map_new(env);
            for (k, v) in entries {
                // map_put overwrites: a later duplicate key wins, as in Erlang.
                if let Ok(next) = map.map_put(term(k)?, term(v)?) {
                    map = next;
                }
            }
            map
        }
    })
}

/// An atom from text that validation has already accepted.
pub fn atom<'a>(env: Env<'a>, name: &str) -> Term<'a> {
    match Atom::from_str(env, name) {
        Ok(a) => a.encode(env),
        // Unreachable for validated specs: validation refuses atoms that
        // are too long or not Latin-1 (all that OTP 25's NIF API can make).
        // A binary rather than a panic, should that ever change.
        Err(_) => binary(env, name.as_bytes()),
    }
}

pub fn binary<'a>(env: Env<'a>, bytes: &[u8]) -> Term<'a> {
    let mut bin = NewBinary::new(env, bytes.len());
    bin.as_mut_slice().copy_from_slice(bytes);
    Term::from(bin)
}

pub fn text<'a>(env: Env<'a>, text: &str) -> Term<'a> {
    binary(env, text.as_bytes())
}

/// A binary for `Some`, the atom `undefined` for `None`.
pub fn opt_text<'a>(env: Env<'a>, value: Option<&str>) -> Term<'a> {
    match value {
        Some(t) => text(env, t),
        None => atoms::undefined().encode(env),
    }
}

pub mod atoms {
    rustler::atoms! {
        ok,
        error,
        undefined,
        app_spec,
        app_state,
        running,
        stopped,
        failed,
        bad_record,
        unknown_atom,
        unsupported,
    }
}
