//! The spec's expressions: branch names, numbers, `+ - * /`, comparisons
//! (`< <= > >= == !=`, 1 for true and 0 for false), `and`, `or`, `not`,
//! parentheses and the functions of [`FUNCTIONS`]. Values are per event
//! (flat) or per element of a jagged collection; a flat value meets a
//! jagged one element by element of its event (broadcast).

use std::sync::Arc;

use crate::columns::{Column, Columns};

/// The documented functions: name, number of arguments, what it computes.
pub const FUNCTIONS: &[(&str, usize, &str)] = &[
    ("log", 1, "natural logarithm (-inf at 0, NaN below)"),
    ("log1p", 1, "log(1 + x)"),
    ("exp", 1, "e^x"),
    ("sqrt", 1, "square root"),
    ("abs", 1, "absolute value"),
    ("sin", 1, "sine"),
    ("cos", 1, "cosine"),
    ("tanh", 1, "hyperbolic tangent"),
    ("min", 2, "the smaller of two values"),
    ("max", 2, "the larger of two values"),
    ("clip", 3, "x limited to [lo, hi]"),
    ("ratio", 2, "a / b, and 0 where b is 0"),
    ("delta_phi", 2, "phi1 - phi2 wrapped into [-pi, pi)"),
    ("delta_r", 4, "sqrt(deta^2 + dphi^2) of (eta1, phi1, eta2, phi2), dphi wrapped"),
    ("sum", 1, "per event: sum of a jagged value's elements"),
    ("len", 1, "per event: number of a jagged value's elements"),
    ("mean", 1, "per event: mean of a jagged value's elements (0 when none)"),
];

/// A function of [`FUNCTIONS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Func {
    Log,
    Log1p,
    Exp,
    Sqrt,
    Abs,
    Sin,
    Cos,
    Tanh,
    Min,
    Max,
    Clip,
    Ratio,
    DeltaPhi,
    DeltaR,
    Sum,
    Len,
    Mean,
}

impl Func {
    fn from_name(name: &str) -> Option<Func> {
        use Func::*;
        Some(match name {
            "log" => Log,
            "log1p" => Log1p,
            "exp" => Exp,
            "sqrt" => Sqrt,
            "abs" => Abs,
            "sin" => Sin,
            "cos" => Cos,
            "tanh" => Tanh,
            "min" => Min,
            "max" => Max,
            "clip" => Clip,
            "ratio" => Ratio,
            "delta_phi" => DeltaPhi,
            "delta_r" => DeltaR,
            "sum" => Sum,
            "len" => Len,
            "mean" => Mean,
            _ => return None,
        })
    }

    fn arity(self) -> usize {
        use Func::*;
        match self {
            Min | Max | Ratio | DeltaPhi => 2,
            Clip => 3,
            DeltaR => 4,
            _ => 1,
        }
    }

    fn is_reduction(self) -> bool {
        matches!(self, Func::Sum | Func::Len | Func::Mean)
    }

    fn apply(self, a: &[f64]) -> f64 {
        use Func::*;
        match self {
            Log => libm::log(a[0]),
            Log1p => libm::log1p(a[0]),
            Exp => libm::exp(a[0]),
            Sqrt => libm::sqrt(a[0]),
            Abs => libm::fabs(a[0]),
            Sin => libm::sin(a[0]),
            Cos => libm::cos(a[0]),
            Tanh => libm::tanh(a[0]),
            Min => libm::fmin(a[0], a[1]),
            Max => libm::fmax(a[0], a[1]),
            Clip => libm::fmin(libm::fmax(a[0], a[1]), a[2]),
            Ratio => {
                if a[1] == 0.0 {
                    0.0
                } else {
                    a[0] / a[1]
                }
            }
            DeltaPhi => wrap_phi(a[0] - a[1]),
            DeltaR => {
                let (deta, dphi) = (a[0] - a[2], wrap_phi(a[1] - a[3]));
                libm::sqrt(deta * deta + dphi * dphi)
            }
            Sum | Len | Mean => f64::NAN, // reductions are not element-wise
        }
    }
}

/// `d` wrapped into [-pi, pi).
pub fn wrap_phi(d: f64) -> f64 {
    use std::f64::consts::{PI, TAU};
    d - TAU * libm::floor((d + PI) / TAU)
}

/// A binary operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
    And,
    Or,
}

impl BinOp {
    fn apply(self, a: f64, b: f64) -> f64 {
        let t = |c: bool| if c { 1.0 } else { 0.0 };
        match self {
            BinOp::Add => a + b,
            BinOp::Sub => a - b,
            BinOp::Mul => a * b,
            BinOp::Div => a / b,
            BinOp::Lt => t(a < b),
            BinOp::Le => t(a <= b),
            BinOp::Gt => t(a > b),
            BinOp::Ge => t(a >= b),
            BinOp::Eq => t(a == b),
            BinOp::Ne => t(a != b),
            BinOp::And => t(a != 0.0 && b != 0.0),
            BinOp::Or => t(a != 0.0 || b != 0.0),
        }
    }
}

/// A parsed expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// A number.
    Num(f64),
    /// A branch (column) by name.
    Branch(String),
    /// `-x`.
    Neg(Box<Expr>),
    /// `not x`.
    Not(Box<Expr>),
    /// `a OP b`.
    Bin(BinOp, Box<Expr>, Box<Expr>),
    /// `f(args)`.
    Call(Func, Vec<Expr>),
}

/// Why an expression does not parse or evaluate.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ExprError {
    /// The text is not an expression.
    #[error("`{text}`: {message} at column {column}")]
    Syntax { text: String, message: String, column: usize },
    /// An unknown function name.
    #[error("`{text}`: unknown function `{name}` (known: {known})")]
    UnknownFunction { text: String, name: String, known: String },
    /// A function called with the wrong number of arguments.
    #[error("`{text}`: {name}() takes {want} argument(s), got {got}")]
    Arity { text: String, name: String, want: usize, got: usize },
    /// A branch the data does not have.
    #[error("no branch `{0}` in the data")]
    MissingBranch(String),
    /// Two jagged values whose events hold different numbers of elements.
    #[error("jagged values of different lengths in event {event} ({a} and {b} elements)")]
    JaggedMismatch { event: usize, a: usize, b: usize },
    /// A reduction given a per-event value.
    #[error("{0}() takes a jagged value")]
    NotJagged(String),
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Num(f64),
    Ident(String),
    Op(&'static str),
}

fn tokens(text: &str) -> Result<Vec<(Tok, usize)>, ExprError> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let err = |m: &str, at: usize| ExprError::Syntax { text: text.to_string(), message: m.to_string(), column: at + 1 };
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
        } else if c.is_ascii_digit() || (c == b'.' && b.get(i + 1).is_some_and(u8::is_ascii_digit)) {
            let start = i;
            while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.') {
                i += 1;
            }
            if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
                let mut j = i + 1;
                if j < b.len() && (b[j] == b'+' || b[j] == b'-') {
                    j += 1;
                }
                if j < b.len() && b[j].is_ascii_digit() {
                    i = j;
                    while i < b.len() && b[i].is_ascii_digit() {
                        i += 1;
                    }
                }
            }
            let n = text[start..i].parse::<f64>().map_err(|_| err("bad number", start))?;
            out.push((Tok::Num(n), start));
        } else if c.is_ascii_alphabetic() || c == b'_' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            out.push((Tok::Ident(text[start..i].to_string()), start));
        } else {
            let two = text.get(i..i + 2).unwrap_or("");
            let op: &'static str = match two {
                "<=" => "<=",
                ">=" => ">=",
                "==" => "==",
                "!=" => "!=",
                "&&" => "and",
                "||" => "or",
                _ => match c {
                    b'+' => "+",
                    b'-' => "-",
                    b'*' => "*",
                    b'/' => "/",
                    b'(' => "(",
                    b')' => ")",
                    b',' => ",",
                    b'<' => "<",
                    b'>' => ">",
                    b'!' => "not",
                    _ => return Err(err(&format!("unexpected `{}`", text[i..].chars().next().unwrap_or('?')), i)),
                },
            };
            out.push((Tok::Op(op), i));
            i += if matches!(two, "<=" | ">=" | "==" | "!=" | "&&" | "||") { 2 } else { 1 };
        }
    }
    Ok(out)
}

struct Parser<'a> {
    text: &'a str,
    toks: Vec<(Tok, usize)>,
    at: usize,
}

impl Parser<'_> {
    fn err(&self, message: &str) -> ExprError {
        let column = self.toks.get(self.at).map_or(self.text.len(), |t| t.1) + 1;
        ExprError::Syntax { text: self.text.to_string(), message: message.to_string(), column }
    }

    fn peek_op(&self) -> Option<&'static str> {
        match self.toks.get(self.at) {
            Some((Tok::Op(o), _)) => Some(o),
            Some((Tok::Ident(w), _)) if w == "and" => Some("and"),
            Some((Tok::Ident(w), _)) if w == "or" => Some("or"),
            Some((Tok::Ident(w), _)) if w == "not" => Some("not"),
            _ => None,
        }
    }

    fn eat(&mut self, op: &str) -> bool {
        if self.peek_op() == Some(op) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn binary(&mut self, level: usize) -> Result<Expr, ExprError> {
        const LEVELS: &[&[(&str, BinOp)]] = &[
            &[("or", BinOp::Or)],
            &[("and", BinOp::And)],
            &[("<=", BinOp::Le), (">=", BinOp::Ge), ("<", BinOp::Lt), (">", BinOp::Gt), ("==", BinOp::Eq), ("!=", BinOp::Ne)],
            &[("+", BinOp::Add), ("-", BinOp::Sub)],
            &[("*", BinOp::Mul), ("/", BinOp::Div)],
        ];
        if level == LEVELS.len() {
            return self.unary();
        }
        let mut left = self.binary(level + 1)?;
        'more: loop {
            for (sym, op) in LEVELS[level] {
                if self.eat(sym) {
                    let right = self.binary(level + 1)?;
                    left = Expr::Bin(*op, Box::new(left), Box::new(right));
                    continue 'more;
                }
            }
            return Ok(left);
        }
    }

    fn unary(&mut self) -> Result<Expr, ExprError> {
        if self.eat("-") {
            return Ok(Expr::Neg(Box::new(self.unary()?)));
        }
        if self.eat("not") {
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        self.atom()
    }

    fn atom(&mut self) -> Result<Expr, ExprError> {
        if self.eat("(") {
            let e = self.binary(0)?;
            if !self.eat(")") {
                return Err(self.err("expected `)`"));
            }
            return Ok(e);
        }
        let Some((tok, _)) = self.toks.get(self.at).cloned() else {
            return Err(self.err("unexpected end"));
        };
        match tok {
            Tok::Num(n) => {
                self.at += 1;
                Ok(Expr::Num(n))
            }
            Tok::Ident(name) if !matches!(name.as_str(), "and" | "or" | "not") => {
                self.at += 1;
                if !self.eat("(") {
                    return Ok(Expr::Branch(name));
                }
                let func = Func::from_name(&name).ok_or_else(|| ExprError::UnknownFunction {
                    text: self.text.to_string(),
                    name: name.clone(),
                    known: FUNCTIONS.iter().map(|f| f.0).collect::<Vec<_>>().join(", "),
                })?;
                let mut args = Vec::new();
                if !self.eat(")") {
                    loop {
                        args.push(self.binary(0)?);
                        if self.eat(")") {
                            break;
                        }
                        if !self.eat(",") {
                            return Err(self.err("expected `,` or `)`"));
                        }
                    }
                }
                if args.len() != func.arity() {
                    return Err(ExprError::Arity { text: self.text.to_string(), name, want: func.arity(), got: args.len() });
                }
                Ok(Expr::Call(func, args))
            }
            _ => Err(self.err("expected a number, a branch or a function")),
        }
    }
}

impl Expr {
    /// Parses `text`.
    pub fn parse(text: &str) -> Result<Expr, ExprError> {
        let mut p = Parser { text, toks: tokens(text)?, at: 0 };
        if p.toks.is_empty() {
            return Err(p.err("empty expression"));
        }
        let e = p.binary(0)?;
        if p.at != p.toks.len() {
            return Err(p.err("unexpected text"));
        }
        Ok(e)
    }

    /// The branches the expression reads, in order of appearance, once each.
    pub fn branches(&self, out: &mut Vec<String>) {
        match self {
            Expr::Num(_) => {}
            Expr::Branch(b) => {
                if !out.contains(b) {
                    out.push(b.clone())
                }
            }
            Expr::Neg(e) | Expr::Not(e) => e.branches(out),
            Expr::Bin(_, a, b) => {
                a.branches(out);
                b.branches(out);
            }
            Expr::Call(_, args) => args.iter().for_each(|a| a.branches(out)),
        }
    }

    /// Evaluates the expression over `cols`.
    pub fn eval(&self, cols: &Columns) -> Result<Value, ExprError> {
        match self {
            Expr::Num(n) => Ok(Value::Scalar(*n)),
            Expr::Branch(b) => match cols.get(b) {
                Some(Column::Flat(v)) => Ok(Value::Flat(v.clone())),
                Some(Column::Jagged { offsets, content }) => {
                    Ok(Value::Jagged { offsets: offsets.clone(), content: content.clone() })
                }
                None => Err(ExprError::MissingBranch(b.clone())),
            },
            Expr::Neg(e) => map_n(&[e.eval(cols)?], |a| -a[0]),
            Expr::Not(e) => map_n(&[e.eval(cols)?], |a| if a[0] == 0.0 { 1.0 } else { 0.0 }),
            Expr::Bin(op, a, b) => map_n(&[a.eval(cols)?, b.eval(cols)?], |x| op.apply(x[0], x[1])),
            Expr::Call(f, args) if f.is_reduction() => {
                let v = args[0].eval(cols)?;
                let Value::Jagged { offsets, content } = v else {
                    return Err(ExprError::NotJagged(format!("{f:?}").to_lowercase()));
                };
                let out = offsets
                    .windows(2)
                    .map(|w| {
                        let xs = &content[w[0]..w[1]];
                        let sum = || xs.iter().fold(0.0, |s, x| s + x);
                        match f {
                            Func::Len => xs.len() as f64,
                            Func::Sum => sum(),
                            _ if xs.is_empty() => 0.0,
                            _ => sum() / xs.len() as f64,
                        }
                    })
                    .collect();
                Ok(Value::Flat(Arc::new(out)))
            }
            Expr::Call(f, args) => {
                let vals = args.iter().map(|a| a.eval(cols)).collect::<Result<Vec<_>, _>>()?;
                map_n(&vals, |a| f.apply(a))
            }
        }
    }
}

/// A value: one number, one per event, or one per element of a jagged collection.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// The same for every event.
    Scalar(f64),
    /// One per event.
    Flat(Arc<Vec<f64>>),
    /// Event `i`'s elements are `content[offsets[i]..offsets[i + 1]]`.
    Jagged { offsets: Arc<Vec<usize>>, content: Arc<Vec<f64>> },
}

/// Applies `f` element-wise, broadcasting scalars and flat values.
fn map_n(args: &[Value], f: impl Fn(&[f64]) -> f64) -> Result<Value, ExprError> {
    // One argument (the common case: log(x), -x, abs(x)): a plain map.
    match args {
        [Value::Flat(v)] => return Ok(Value::Flat(Arc::new(v.iter().map(|&x| f(&[x])).collect()))),
        [Value::Jagged { offsets, content }] => {
            let content = Arc::new(content.iter().map(|&x| f(&[x])).collect());
            return Ok(Value::Jagged { offsets: offsets.clone(), content });
        }
        _ => {}
    }
    let mut offsets: Option<&Arc<Vec<usize>>> = None;
    let mut flat_len = None;
    for a in args {
        match a {
            Value::Jagged { offsets: o, .. } => match offsets {
                None => offsets = Some(o),
                Some(prev) if Arc::ptr_eq(prev, o) || prev == o => {}
                Some(prev) => {
                    let event = prev.windows(2).zip(o.windows(2)).position(|(p, q)| p[1] - p[0] != q[1] - q[0]);
                    let event = event.unwrap_or(0);
                    let len = |x: &Vec<usize>| x.get(event + 1).copied().unwrap_or(0) - x.get(event).copied().unwrap_or(0);
                    return Err(ExprError::JaggedMismatch { event, a: len(prev), b: len(o) });
                }
            },
            Value::Flat(v) => flat_len = Some(v.len()),
            Value::Scalar(_) => {}
        }
    }
    let mut buf = [0.0f64; 4];
    let n = args.len();
    let pick = |a: &Value, event: usize, k: usize| match a {
        Value::Scalar(x) => *x,
        Value::Flat(v) => v[event],
        Value::Jagged { content, .. } => content[k],
    };
    if let Some(offsets) = offsets {
        let total = offsets.last().copied().unwrap_or(0);
        let mut content = Vec::with_capacity(total);
        for (event, w) in offsets.windows(2).enumerate() {
            for k in w[0]..w[1] {
                for (slot, a) in buf.iter_mut().zip(args) {
                    *slot = pick(a, event, k);
                }
                content.push(f(&buf[..n]));
            }
        }
        return Ok(Value::Jagged { offsets: offsets.clone(), content: Arc::new(content) });
    }
    if let Some(len) = flat_len {
        let out = (0..len)
            .map(|event| {
                for (slot, a) in buf.iter_mut().zip(args) {
                    *slot = pick(a, event, 0);
                }
                f(&buf[..n])
            })
            .collect();
        return Ok(Value::Flat(Arc::new(out)));
    }
    for (slot, a) in buf.iter_mut().zip(args) {
        *slot = pick(a, 0, 0);
    }
    Ok(Value::Scalar(f(&buf[..n])))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cols() -> Columns {
        let mut c = Columns::new(3);
        c.insert_flat("MET_phi", vec![0.0, 3.0, -3.0]).unwrap();
        c.insert_flat("nJet", vec![2.0, 0.0, 1.0]).unwrap();
        c.insert_jagged("Jet_phi", &[2, 0, 1], vec![3.0, -1.0, 0.5]).unwrap();
        c.insert_jagged("Jet_pt", &[2, 0, 1], vec![40.0, 20.0, 10.0]).unwrap();
        c
    }

    #[test]
    fn parses_precedence_and_functions() {
        let e = Expr::parse("1 + 2 * 3 >= 7 and not 0").unwrap();
        assert_eq!(e.eval(&cols()).unwrap(), Value::Scalar(1.0));
        assert_eq!(Expr::parse("-(2 - 5) / 3").unwrap().eval(&cols()).unwrap(), Value::Scalar(1.0));
        let mut b = Vec::new();
        Expr::parse("delta_r(Jet_eta, Jet_phi, 0, MET_phi)").unwrap().branches(&mut b);
        assert_eq!(b, ["Jet_eta", "Jet_phi", "MET_phi"]);
    }

    #[test]
    fn broadcasts_flat_against_jagged_and_wraps_phi() {
        let v = Expr::parse("delta_phi(Jet_phi, MET_phi)").unwrap().eval(&cols()).unwrap();
        let Value::Jagged { content, .. } = v else { panic!("{v:?}") };
        assert_eq!(content[0], 3.0);
        assert!((content[1] - (-1.0)).abs() < 1e-15);
        // 0.5 - (-3.0) = 3.5 wraps to 3.5 - 2 pi.
        assert!((content[2] - (3.5 - std::f64::consts::TAU)).abs() < 1e-12);
        for d in [-10.0, -std::f64::consts::PI, 0.0, 3.2, 7.0] {
            let w = wrap_phi(d);
            assert!((-std::f64::consts::PI..std::f64::consts::PI).contains(&w), "{d} -> {w}");
        }
        let s = Expr::parse("sum(Jet_pt) + len(Jet_pt)").unwrap().eval(&cols()).unwrap();
        assert_eq!(s, Value::Flat(Arc::new(vec![62.0, 0.0, 11.0])));
        assert_eq!(Expr::parse("ratio(nJet, nJet - 2)").unwrap().eval(&cols()).unwrap(), Value::Flat(Arc::new(vec![0.0, -0.0, -1.0])));
    }

    #[test]
    fn errors_name_the_problem() {
        let e = Expr::parse("lg(Jet_pt)").unwrap_err();
        assert!(e.to_string().contains("unknown function `lg`"), "{e}");
        assert!(Expr::parse("min(Jet_pt)").unwrap_err().to_string().contains("takes 2 argument(s), got 1"));
        assert!(Expr::parse("Jet_pt +").unwrap_err().to_string().contains("unexpected end"));
        assert!(Expr::parse("Jet_pt $ 2").unwrap_err().to_string().contains("unexpected `$` at column 8"));
        assert_eq!(Expr::parse("Jet_nope * 2").unwrap().eval(&cols()).unwrap_err(), ExprError::MissingBranch("Jet_nope".into()));
        assert!(Expr::parse("sum(nJet)").unwrap().eval(&cols()).is_err());
        let mut c = cols();
        c.insert_jagged("Muon_pt", &[1, 1, 1], vec![1.0, 2.0, 3.0]).unwrap();
        let e = Expr::parse("Jet_pt + Muon_pt").unwrap().eval(&c).unwrap_err();
        assert_eq!(e, ExprError::JaggedMismatch { event: 0, a: 2, b: 1 });
    }
}
