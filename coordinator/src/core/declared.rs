//! Reading a declarative file (`drover env apply -f`, `drover app apply
//! -f`): a YAML document whose one key holds a list of items, checked by
//! hand with every problem at file:line:column, so one mistake does not
//! hide the next. Only a YAML syntax error stops early. The tree comes
//! from `drover_pipeline::yaml`, the reader pipeline files use; each
//! file's module checks its items' keys.

use std::collections::BTreeMap;

use drover_pipeline::yaml::{Kind, Node, Pos, load};

/// What a node is, in words, for messages.
pub fn describe(node: &Node) -> &'static str {
    match &node.kind {
        Kind::Null => "nothing",
        Kind::Scalar(_) => "a single value",
        Kind::Seq(_) => "a list",
        Kind::Map(_) => "a mapping",
    }
}

/// Text from the file as a message quotes it: control characters escaped
/// (the message reaches a terminal), and cut after 40 characters.
pub fn shown(text: &str) -> String {
    let mut out: String = text.chars().take(40).flat_map(char::escape_debug).collect();
    if text.chars().count() > 40 {
        out.push('…');
    }
    out
}

/// Reads file `name` (its `text`): the items it lists, each made by `each`
/// (which says its problems on the file), or every problem.
pub fn read<T>(
    name: &str,
    text: &str,
    (max_bytes, listing): (usize, &Listing<'_>),
    rewrite: fn(String) -> String,
    each: impl FnOnce(&mut File<'_>, &[Node]) -> Vec<T>,
) -> Result<Vec<T>, Vec<String>> {
    let mut file = File::new(name, rewrite);
    let read = match file.load(text, max_bytes) {
        Some(root) => match file.items(&root, listing) {
            Some(items) => each(&mut file, items),
            None => Vec::new(),
        },
        None => Vec::new(),
    };
    if file.problems.is_empty() { Ok(read) } else { Err(file.problems) }
}

/// The file being read and the problems found in it.
pub struct File<'a> {
    name: &'a str,
    /// Rewrites each message (the shared rules speak of flags; a file of
    /// keys).
    rewrite: fn(String) -> String,
    pub problems: Vec<String>,
}

/// What a file lists, for its messages: `key` (`environments`), one item
/// in words (`environment`), an example, the most one file may hold.
pub struct Listing<'e> {
    pub key: &'e str,
    pub noun: &'e str,
    pub example: &'e str,
    pub max: usize,
}

impl<'a> File<'a> {
    pub fn new(name: &'a str, rewrite: fn(String) -> String) -> File<'a> {
        File { name, rewrite, problems: Vec::new() }
    }

    pub fn problem(&mut self, pos: Pos, message: String) {
        let message = (self.rewrite)(message);
        self.problems.push(format!("{}:{}:{}: {message}", self.name, pos.line, pos.column));
    }

    /// The document of `text`; `None` (with the problem said) when it is
    /// too large or not YAML.
    pub fn load(&mut self, text: &str, max_bytes: usize) -> Option<Node> {
        if text.len() > max_bytes {
            self.problem(Pos::START, format!("the file is {} bytes, over the limit of {max_bytes}", text.len()));
            return None;
        }
        match load(text) {
            Ok(root) => Some(root),
            Err(err) => {
                let hint = err.hint.map(|h| format!("; {h}")).unwrap_or_default();
                self.problem(err.pos, format!("not valid YAML: {}{hint}", err.message));
                None
            }
        }
    }

    /// The items `root` lists under `listing.key`; `None` (with the
    /// problems said) when there are none to read.
    pub fn items<'n>(&mut self, root: &'n Node, listing: &Listing<'_>) -> Option<&'n [Node]> {
        let Listing { key: list_key, noun, example, max } = *listing;
        if matches!(root.kind, Kind::Null) {
            self.problem(root.pos, format!("the file is empty; list the {noun}s like this:\n{example}"));
            return None;
        }
        let entries = self.entries(root, "the file")?;
        let mut list = None;
        for (key, value, pos) in entries {
            if key == list_key {
                list = Some(value);
            } else {
                self.problem(pos, format!("unknown key `{}`; the file has one key, `{list_key}`", shown(key)));
            }
        }
        let Some(list) = list else {
            self.problem(root.pos, format!("the file has no `{list_key}:`; list them like this:\n{example}"));
            return None;
        };
        let Kind::Seq(items) = &list.kind else {
            self.problem(list.pos, format!("`{list_key}` must be a list (`- name: ...`), found {}", describe(list)));
            return None;
        };
        if items.is_empty() {
            self.problem(list.pos, format!("`{list_key}` is empty; list at least one"));
        }
        if items.len() > max {
            let message = format!(
                "{} {noun}s in one file, over the limit of {max} (a file is applied in one store transaction); \
                 split them into several files and apply each",
                items.len()
            );
            self.problem(list.pos, message);
            return None;
        }
        Some(items)
    }

    /// The entries of a mapping, each key a scalar and each once; `None`
    /// (with the problem said) when `node` is not a mapping.
    pub fn entries<'n>(&mut self, node: &'n Node, what: &str) -> Option<Vec<(&'n str, &'n Node, Pos)>> {
        let Kind::Map(pairs) = &node.kind else {
            self.problem(node.pos, format!("{what} must be a mapping (key: value), found {}", describe(node)));
            return None;
        };
        let mut seen: BTreeMap<&str, Pos> = BTreeMap::new();
        let mut out = Vec::new();
        for (key, value) in pairs {
            let Some(name) = key.scalar_text() else {
                self.problem(key.pos, format!("a key of {what} must be a single word, found {}", describe(key)));
                continue;
            };
            if let Some(first) = seen.get(name) {
                let message = format!(
                    "`{}` is given twice in {what}; the first is at {}:{}",
                    shown(name),
                    first.line,
                    first.column
                );
                self.problem(key.pos, message);
                continue;
            }
            seen.insert(name, key.pos);
            out.push((name, value, key.pos));
        }
        Some(out)
    }

    /// Says so when `name` (at `pos`) was defined already in this file,
    /// else remembers it; whether it is new.
    pub fn first_time(&mut self, named: &mut BTreeMap<String, Pos>, noun: &str, name: &str, pos: Pos) -> bool {
        if let Some(first) = named.get(name) {
            let message =
                format!("{noun} `{}` is defined twice; the first is at {}:{}", shown(name), first.line, first.column);
            self.problem(pos, message);
            return false;
        }
        named.insert(name.to_owned(), pos);
        true
    }
}
