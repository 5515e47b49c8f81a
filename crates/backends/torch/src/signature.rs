//! The TorchScript module's `forward` signature, read from the model file
//! itself before libtorch loads anything (the repository checks it against
//! the manifest's `[[inputs]]` and `[[outputs]]`).
//!
//! A TorchScript archive (`torch.jit.save`) is a zip holding `data.pkl`,
//! whose first pickle opcode names the root module's class (e.g.
//! `__torch__` `Net`), and the module's code as TorchScript source under
//! `code/` (`code/__torch__.py` holds `class Net(Module): ... def
//! forward(self: __torch__.Net, x: Tensor, y: Tensor) -> Tuple[Tensor,
//! Tensor]:`). libtorch keeps that same text as the method's schema. When
//! the archive is not laid out this way the check is skipped (logged at
//! debug) and the dynamic checks still run.

use std::io::Read;
use std::path::Path;


/// One argument of `forward` (after `self`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Argument {
    /// Its name in the model's source.
    pub name: String,
    /// Its TorchScript type, e.g. `Tensor`, `Optional[Tensor]`, `List[Tensor]`.
    pub ty: String,
    /// Whether it has a default value (and may be left out).
    pub has_default: bool,
}

/// `forward`'s arguments and return type as the archive declares them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// The root module's class, e.g. `__torch__.Net`.
    pub class: String,
    /// The arguments after `self`.
    pub arguments: Vec<Argument>,
    /// The return type, e.g. `Tensor` or `Tuple[Tensor, Tensor]`.
    pub returns: String,
}

impl Signature {
    /// How many tensors `forward` returns, when its type says so exactly
    /// (`Tensor`, tuples of those); `None` for lists, dicts and others.
    pub fn output_count(&self) -> Option<usize> {
        tensor_count(&self.returns)
    }

    /// `forward(x: Tensor, y: Tensor) -> Tensor`, as an author reads it.
    pub fn display(&self) -> String {
        let args: Vec<String> = self.arguments.iter().map(|a| format!("{}: {}", a.name, a.ty)).collect();
        format!("forward({}) -> {}", args.join(", "), self.returns)
    }
}

/// Reads `forward`'s signature from the TorchScript archive at `path`;
/// `None` when the file is not an archive laid out as described above.
pub fn read(path: &Path) -> Option<Signature> {
    let file = std::fs::File::open(path).ok()?;
    let mut archive = zip::ZipArchive::new(std::io::BufReader::new(file)).ok()?;
    // Every entry sits under one top folder (named after the file when saved).
    let pickle = archive.file_names().find(|n| n.ends_with("/data.pkl") && n.matches('/').count() == 1)?.to_string();
    let root = pickle.trim_end_matches("data.pkl").to_string();
    let mut head = [0u8; 512];
    let n = read_up_to(archive.by_name(&pickle).ok()?, &mut head);
    let (module, class) = root_class(&head[..n])?;
    let code = format!("{root}code/{}.py", module.replace('.', "/"));
    let mut source = String::new();
    archive.by_name(&code).ok()?.take(16 << 20).read_to_string(&mut source).ok()?;
    let (arguments, returns) = forward_of(&source, class)?;
    Some(Signature { class: format!("{module}.{class}"), arguments, returns })
}

fn read_up_to(mut r: impl Read, buf: &mut [u8]) -> usize {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    n
}

/// The class of the pickled root object: protocol 2 (`\x80\x02`), then
/// `c MODULE \n CLASS \n` (the GLOBAL opcode).
fn root_class(pickle: &[u8]) -> Option<(&str, &str)> {
    let rest = pickle.strip_prefix(b"\x80\x02c")?;
    let mut lines = rest.splitn(3, |&b| b == b'\n');
    let module = std::str::from_utf8(lines.next()?).ok()?;
    let class = std::str::from_utf8(lines.next()?).ok()?;
    lines.next()?;
    module.starts_with("__torch__").then_some((module, class))
}

/// `forward`'s arguments (after `self`) and return type in `class`'s source.
fn forward_of(source: &str, class: &str) -> Option<(Vec<Argument>, String)> {
    let start = source.find(&format!("class {class}("))?;
    let body = &source[start..];
    // The class ends where the next top-level `class` starts.
    let body = &body[..body[1..].find("\nclass ").map(|i| i + 1).unwrap_or(body.len())];
    let def = body.find("  def forward(self")? + "  def forward(".len();
    let text = &body[def..];
    let close = matching_paren(text)?;
    let after = text[close + 1..].trim_start();
    let returns = after.strip_prefix("->")?.split(":\n").next()?.trim().to_string();
    let mut params = split_top_level(&text[..close]).into_iter();
    params.next()?; // self
    let arguments = params
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            let (decl, default) = match split_default(p) {
                Some((d, _)) => (d, true),
                None => (p, false),
            };
            let (name, ty) = decl.split_once(':').unwrap_or((decl, "Tensor"));
            Argument { name: name.trim().to_string(), ty: ty.trim().to_string(), has_default: default }
        })
        .collect();
    Some((arguments, returns))
}

/// Index of the `)` closing the parameter list `text` starts inside of.
fn matching_paren(text: &str) -> Option<usize> {
    let mut depth = 0usize;
    for (i, c) in text.char_indices() {
        match c {
            '(' | '[' => depth += 1,
            ']' => depth = depth.checked_sub(1)?,
            ')' if depth == 0 => return Some(i),
            ')' => depth -= 1,
            _ => {}
        }
    }
    None
}

/// `text` split at commas outside brackets.
fn split_top_level(text: &str) -> Vec<&str> {
    let (mut parts, mut depth, mut from) = (Vec::new(), 0usize, 0);
    for (i, c) in text.char_indices() {
        match c {
            '(' | '[' => depth += 1,
            ')' | ']' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&text[from..i]);
                from = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[from..]);
    parts
}

/// `name: Type=default` split at the `=` outside brackets.
fn split_default(param: &str) -> Option<(&str, &str)> {
    let mut depth = 0usize;
    for (i, c) in param.char_indices() {
        match c {
            '(' | '[' => depth += 1,
            ')' | ']' => depth = depth.saturating_sub(1),
            '=' if depth == 0 => return Some((&param[..i], &param[i + 1..])),
            _ => {}
        }
    }
    None
}

/// Tensors in a TorchScript type: `Tensor` 1, `Tuple[A, B]` the sum.
fn tensor_count(ty: &str) -> Option<usize> {
    let ty = ty.trim();
    if ty == "Tensor" {
        return Some(1);
    }
    let inner = ty.strip_prefix("Tuple[")?.strip_suffix(']')?;
    split_top_level(inner).into_iter().map(tensor_count).sum()
}

/// Whether the host can pass one tensor as an argument of type `ty`.
fn takes_a_tensor(ty: &str) -> bool {
    matches!(ty, "Tensor" | "Optional[Tensor]")
}

impl From<Signature> for tensorgate_backend::Signature {
    fn from(sig: Signature) -> Self {
        tensorgate_backend::Signature {
            display: sig.display(),
            outputs: sig.output_count(),
            inputs: sig
                .arguments
                .into_iter()
                .map(|a| tensorgate_backend::Argument {
                    tensor: takes_a_tensor(&a.ty),
                    name: a.name,
                    ty: a.ty,
                    optional: a.has_default,
                    dtype: None,
                    rank: None,
                })
                .collect(),
            returns: Vec::new(),
            by_name: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../..")
    }

    #[test]
    fn the_signature_is_read_from_real_archives() {
        let multi = read(&root().join("plugins/tensors/bundles/multi-io/model.pt")).expect("multi-io signature");
        assert_eq!(multi.class, "__torch__.MultiIO");
        assert_eq!(multi.display(), "forward(x: Tensor, y: Tensor) -> Tuple[Tensor, Tensor]");
        assert_eq!(multi.output_count(), Some(2));
        let mlp = read(&root().join("plugins/tabular/model.pt")).expect("tabular signature");
        assert_eq!(mlp.display(), "forward(x: Tensor) -> Tensor");
        assert_eq!(mlp.output_count(), Some(1));
        let unet = read(&root().join("plugins/lartpc-dense/model.pt")).expect("unet signature");
        assert_eq!(unet.arguments.len(), 1);
        assert!(read(&root().join("plugins/tabular/manifest.toml")).is_none(), "not an archive");
        let generic = tensorgate_backend::Signature::from(multi);
        assert_eq!((generic.inputs.len(), generic.outputs), (2, Some(2)));
        assert!(generic.inputs.iter().all(|a| a.tensor && !a.optional));
    }

    #[test]
    fn source_parsing_handles_defaults_nesting_and_other_classes() {
        let source = "class Other(Module):\n  def forward(self: __torch__.Other,\n    z: Tensor) -> Tensor:\n    return z\n\
            class Net(Module):\n  training : bool\n  def forward(self: __torch__.Net,\n    a: Tensor,\n    b: Dict[str, Tuple[Tensor, int]],\n    c: Optional[Tensor]=None) -> Tuple[Tensor, Tuple[Tensor, Tensor]]:\n    return a\n";
        let (args, returns) = forward_of(source, "Net").expect("parsed");
        let names: Vec<(&str, &str, bool)> = args.iter().map(|a| (a.name.as_str(), a.ty.as_str(), a.has_default)).collect();
        assert_eq!(names, [("a", "Tensor", false), ("b", "Dict[str, Tuple[Tensor, int]]", false), ("c", "Optional[Tensor]", true)]);
        assert_eq!(returns, "Tuple[Tensor, Tuple[Tensor, Tensor]]");
        assert_eq!(tensor_count(&returns), Some(3));
        assert_eq!(tensor_count("List[Tensor]"), None);
        assert_eq!(tensor_count("Dict[str, Tensor]"), None);
        assert_eq!(root_class(b"\x80\x02c__torch__.foo\nNet\nq\x00"), Some(("__torch__.foo", "Net")));
        assert_eq!(root_class(b"\x80\x02cbuiltins\nlist\nq"), None);
    }
}
