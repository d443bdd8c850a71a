//! What a magic is — its entry in the table: names, options and handler — and a magic line
//! parsed against its entry (so that only the options the table lists are accepted).

use crate::cell::{Bundle, CellContext, CellError};
use crate::live::options::{ViewOptions, VIEW_KINDS};
use crate::live::LiveQueries;
use crate::widgets::Widgets;

/// One option of a magic: `--name VALUE`.
pub struct Opt {
    pub name: &'static str,
    /// What the value is called in help (None: a flag without a value).
    pub value: Option<&'static str>,
    pub help: &'static str,
}

/// One magic, as `%name` (a line) or `%%name` (a cell with a body below the line).
pub struct Magic {
    /// Without `%`.
    pub name: &'static str,
    pub cell: bool,
    pub usage: &'static str,
    pub summary: &'static str,
    pub options: &'static [Opt],
    /// Words completion offers as the first argument (e.g. `%live`'s subcommands).
    pub words: &'static [&'static str],
    pub example: &'static str,
    pub run: Handler,
}

impl Magic {
    pub fn spelled(&self) -> String {
        format!("{}{}", if self.cell { "%%" } else { "%" }, self.name)
    }

    pub fn option(&self, name: &str) -> Option<&'static Opt> {
        self.options.iter().find(|o| o.name == name)
    }
}

/// Runs a magic: its parsed line, its body (cell magics) and the cell.
pub type Handler = fn(&Call, &mut Session) -> Result<Option<Bundle>, CellError>;

/// What magics act on: the kernel's tables, its live queries and its widgets.
pub struct Session<'a> {
    pub catalog: &'a mut query::Catalog,
    pub live: &'a mut LiveQueries,
    pub widgets: &'a Widgets,
}

/// One magic being run.
pub struct Call<'a> {
    pub magic: &'static Magic,
    pub args: Args,
    /// The lines below a cell magic's line (empty for line magics).
    pub body: &'a str,
    pub ctx: &'a CellContext<'a>,
}

impl Call<'_> {
    /// A usage error: `msg` and the magic's usage.
    pub fn usage_error(&self, msg: impl Into<String>) -> CellError {
        CellError::new("UsageError", format!("{}\nusage: {}", msg.into(), self.magic.usage))
    }

    /// `--view KIND`, `x=COL` and `y=COL[,COL]` (how a result is shown); returns them and the
    /// other positional words.
    pub fn view_options(&self) -> Result<(ViewOptions, Vec<String>), CellError> {
        let mut view = ViewOptions { kind: self.args.opt("--view").map(str::to_string), ..Default::default() };
        if let Some(k) = &view.kind {
            if !VIEW_KINDS.contains(&k.as_str()) {
                return Err(self.usage_error(format!("--view {k}: one of {}", VIEW_KINDS.join(", "))));
            }
        }
        let mut rest = Vec::new();
        for a in &self.args.positional {
            match a.split_once('=') {
                Some(("x", v)) if !v.is_empty() => view.x = Some(v.to_string()),
                Some(("y", v)) if !v.is_empty() => view.y = Some(v.split(',').map(str::to_string).collect()),
                Some(_) => return Err(self.usage_error(format!("{a}: expected x=COLUMN or y=COLUMN[,COLUMN]"))),
                None => rest.push(a.clone()),
            }
        }
        Ok((view, rest))
    }
}

/// A magic line's positional words and options (values may be quoted).
pub struct Args {
    magic: &'static Magic,
    pub positional: Vec<String>,
    options: Vec<(&'static str, Option<String>)>,
}

impl Args {
    /// Parses `line` (what follows the magic's name) against the options of `magic`'s entry.
    pub fn parse(magic: &'static Magic, line: &str) -> Result<Args, CellError> {
        let name = magic.name;
        let words = split_words(line).map_err(|e| CellError::new("UsageError", format!("%{name}: {e}")))?;
        let mut args = Args { magic, positional: Vec::new(), options: Vec::new() };
        let mut it = words.into_iter();
        while let Some(w) = it.next() {
            if !w.starts_with("--") {
                args.positional.push(w);
                continue;
            }
            let Some(opt) = magic.option(&w) else {
                let known: Vec<&str> = magic.options.iter().map(|o| o.name).collect();
                let known = if known.is_empty() { "none".to_string() } else { known.join(", ") };
                return Err(CellError::new("UsageError", format!("%{name}: unknown option {w} (options: {known})")));
            };
            let value = match opt.value {
                Some(_) => Some(it.next().ok_or_else(|| CellError::new("UsageError", format!("%{name}: {w} needs a value")))?),
                None => None,
            };
            args.options.push((opt.name, value));
        }
        Ok(args)
    }

    /// The value of option `name` (the last one given). `name` must be in the magic's table
    /// entry: an option read here is always one the parser accepts and completion offers.
    pub fn opt(&self, name: &str) -> Option<&str> {
        debug_assert!(self.magic.option(name).is_some(), "{name} is not an option of %{} in the magics table", self.magic.name);
        self.options.iter().rev().find(|(k, _)| *k == name).and_then(|(_, v)| v.as_deref())
    }

    /// Every value of a repeatable option, in order.
    pub fn opt_all(&self, name: &str) -> Vec<&str> {
        debug_assert!(self.magic.option(name).is_some(), "{name} is not an option of %{} in the magics table", self.magic.name);
        self.options.iter().filter(|(k, _)| *k == name).filter_map(|(_, v)| v.as_deref()).collect()
    }
}

fn split_words(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut has = false;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                has = true;
            }
            (None, c) if c.is_whitespace() => {
                if has || !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                    has = false;
                }
            }
            (None, c) => cur.push(c),
        }
    }
    if quote.is_some() {
        return Err("unterminated quote".into());
    }
    if has || !cur.is_empty() {
        words.push(cur);
    }
    Ok(words)
}
