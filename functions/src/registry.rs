//! The event functions this process knows, by name (SQL looks them up here): the newest
//! definition of a name wins.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use crate::library::Library;
use crate::signature::Signature;

/// One function of a loaded library.
#[derive(Clone, Debug)]
pub struct Function {
    pub library: Arc<Library>,
    pub index: usize,
    pub signature: Signature,
}

static REGISTRY: RwLock<BTreeMap<String, Function>> = RwLock::new(BTreeMap::new());

fn key(name: &str) -> String {
    name.to_ascii_lowercase()
}

/// Makes a library's functions callable by name; returns their names.
pub fn install(library: Arc<Library>) -> Vec<String> {
    let mut r = REGISTRY.write().unwrap_or_else(|p| p.into_inner());
    let mut names = Vec::new();
    for (index, signature) in library.signatures.iter().enumerate() {
        names.push(signature.name.clone());
        r.insert(key(&signature.name), Function { library: library.clone(), index, signature: signature.clone() });
    }
    names
}

pub fn lookup(name: &str) -> Option<Function> {
    REGISTRY.read().unwrap_or_else(|p| p.into_inner()).get(&key(name)).cloned()
}

/// The libraries installed (by hash), each once.
pub fn libraries() -> Vec<Arc<Library>> {
    let r = REGISTRY.read().unwrap_or_else(|p| p.into_inner());
    let mut out: Vec<Arc<Library>> = Vec::new();
    for f in r.values() {
        if !out.iter().any(|l| l.hash == f.library.hash) {
            out.push(f.library.clone());
        }
    }
    out
}
