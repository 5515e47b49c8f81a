//! The `.npy` header: a Python dict literal such as
//! `{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }`, parsed
//! from exactly the literals NumPy writes (strings, booleans, integers,
//! tuples and lists of them, `None`).

use crate::descr::Descr;
use crate::Error;

/// Deepest nesting of tuples and lists accepted (a structured dtype's
/// description nests a few levels; anything deeper is hostile).
const MAX_DEPTH: usize = 16;

/// One literal value.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Str(String),
    Bool(bool),
    Int(u64),
    None,
    Tuple(Vec<Value>),
    List(Vec<Value>),
}

impl Value {
    /// What the value is, for messages.
    fn what(&self) -> &'static str {
        match self {
            Value::Str(_) => "a string",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::None => "None",
            Value::Tuple(_) => "a tuple",
            Value::List(_) => "a list",
        }
    }
}

/// The three fields of a header.
#[derive(Debug)]
pub(crate) struct Fields {
    pub descr: Descr,
    pub shape: Vec<u64>,
}

/// Parses the header text (after the length field, before the data).
pub(crate) fn parse(text: &[u8]) -> Result<Fields, Error> {
    let mut p = Parser { s: text, pos: 0 };
    let dict = p.dict()?;
    p.ws();
    if p.pos != p.s.len() {
        return Err(p.bad("text after the closing '}'"));
    }
    let mut descr = None;
    let mut fortran = None;
    let mut shape = None;
    for (key, value) in dict {
        match key.as_str() {
            "descr" => descr = Some(value),
            "fortran_order" => fortran = Some(value),
            "shape" => shape = Some(value),
            _ => {}
        }
    }
    let descr = match descr.ok_or(Error::MissingKey("descr"))? {
        Value::Str(s) => Descr::parse(&s)?,
        Value::List(_) => {
            return Err(Error::UnsupportedDtype {
                descr: "[...]".into(),
                reason: "structured dtypes (records) are not supported",
            })
        }
        other => return Err(bad_field("descr", "a type string", &other)),
    };
    match fortran.ok_or(Error::MissingKey("fortran_order"))? {
        Value::Bool(false) => {}
        Value::Bool(true) => return Err(Error::FortranOrder),
        other => return Err(bad_field("fortran_order", "True or False", &other)),
    }
    let shape = match shape.ok_or(Error::MissingKey("shape"))? {
        Value::Tuple(dims) => dims
            .into_iter()
            .map(|d| match d {
                Value::Int(n) => Ok(n),
                other => Err(bad_field("shape", "a tuple of integers", &other)),
            })
            .collect::<Result<Vec<u64>, Error>>()?,
        other => return Err(bad_field("shape", "a tuple of integers", &other)),
    };
    Ok(Fields { descr, shape })
}

fn bad_field(key: &str, want: &str, got: &Value) -> Error {
    Error::BadHeader { reason: format!("'{key}' is {}, not {want}", got.what()) }
}

struct Parser<'a> {
    s: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn bad(&self, what: &str) -> Error {
        Error::BadHeader { reason: format!("{what} at byte {}", self.pos) }
    }

    fn ws(&mut self) {
        while self.s.get(self.pos).is_some_and(|b| b.is_ascii_whitespace()) {
            self.pos += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.s.get(self.pos).copied()
    }

    fn expect(&mut self, c: u8) -> Result<(), Error> {
        if self.peek() == Some(c) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.bad(&format!("expected '{}'", c as char)))
        }
    }

    fn dict(&mut self) -> Result<Vec<(String, Value)>, Error> {
        self.expect(b'{')?;
        let mut out = Vec::new();
        loop {
            if self.peek() == Some(b'}') {
                self.pos += 1;
                return Ok(out);
            }
            let key = match self.value(0)? {
                Value::Str(k) => k,
                other => return Err(self.bad(&format!("a dict key is {}, not a string", other.what()))),
            };
            self.expect(b':')?;
            let value = self.value(0)?;
            out.push((key, value));
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {}
                _ => return Err(self.bad("expected ',' or '}'")),
            }
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, Error> {
        match self.peek() {
            Some(q @ (b'\'' | b'"')) => {
                self.pos += 1;
                let start = self.pos;
                let len = self.s[start..].iter().position(|&b| b == q || b == b'\\').ok_or_else(|| self.bad("unterminated string"))?;
                if self.s[start + len] == b'\\' {
                    self.pos = start + len;
                    return Err(self.bad("escape in a string"));
                }
                self.pos = start + len + 1;
                Ok(Value::Str(String::from_utf8_lossy(&self.s[start..start + len]).into_owned()))
            }
            Some(open @ (b'(' | b'[')) => {
                if depth >= MAX_DEPTH {
                    return Err(self.bad("nesting too deep"));
                }
                let close = if open == b'(' { b')' } else { b']' };
                self.pos += 1;
                let mut items = Vec::new();
                let mut single_comma = false;
                loop {
                    if self.peek() == Some(close) {
                        self.pos += 1;
                        break;
                    }
                    items.push(self.value(depth + 1)?);
                    match self.peek() {
                        Some(b',') => {
                            self.pos += 1;
                            single_comma = items.len() == 1;
                        }
                        Some(c) if c == close => {}
                        _ => return Err(self.bad(&format!("expected ',' or '{}'", close as char))),
                    }
                }
                // `(3)` is the integer 3 in Python, `(3,)` a tuple.
                if open == b'(' && items.len() == 1 && !single_comma {
                    return items.pop().ok_or_else(|| self.bad("empty parentheses"));
                }
                Ok(if open == b'(' { Value::Tuple(items) } else { Value::List(items) })
            }
            Some(b'0'..=b'9') => {
                let start = self.pos;
                while self.s.get(self.pos).is_some_and(u8::is_ascii_digit) {
                    self.pos += 1;
                }
                let digits = std::str::from_utf8(&self.s[start..self.pos]).map_err(|_| self.bad("bad integer"))?;
                let n = digits.parse::<u64>().map_err(|_| self.bad(&format!("integer {digits} too large")))?;
                // Python 2 wrote long integers as `3L`.
                if self.s.get(self.pos) == Some(&b'L') {
                    self.pos += 1;
                }
                Ok(Value::Int(n))
            }
            Some(b'-') => Err(self.bad("negative integer")),
            Some(_) => {
                for (word, value) in [("True", Value::Bool(true)), ("False", Value::Bool(false)), ("None", Value::None)] {
                    if self.s[self.pos..].starts_with(word.as_bytes()) {
                        self.pos += word.len();
                        return Ok(value);
                    }
                }
                Err(self.bad("unexpected character"))
            }
            None => Err(self.bad("unexpected end of header")),
        }
    }
}

/// The header text `write` puts in a file: the dict, unpadded.
pub(crate) fn render(descr: &Descr, shape: &[u64]) -> String {
    let shape = match shape {
        [d] => format!("({d},)"),
        dims => format!("({})", dims.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")),
    };
    format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(text: &str) -> Result<(String, Vec<u64>), Error> {
        parse(text.as_bytes()).map(|f| (f.descr.as_str().to_string(), f.shape))
    }

    #[test]
    fn numpy_headers_parse_in_any_key_order_and_spacing() {
        assert_eq!(fields("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }   \n").unwrap(), ("<f4".into(), vec![2, 3]));
        assert_eq!(fields("{\"shape\":(7,),\"fortran_order\":False,\"descr\":\"|b1\"}").unwrap(), ("|b1".into(), vec![7]));
        assert_eq!(fields("{'descr': '<i8', 'fortran_order': False, 'shape': (), }").unwrap(), ("<i8".into(), vec![]));
        assert_eq!(fields("{'descr': '<i8', 'fortran_order': False, 'shape': (3L, 4L), }").unwrap(), ("<i8".into(), vec![3, 4]));
        for shape in [vec![], vec![5], vec![2, 3, 4]] {
            assert_eq!(fields(&render(&Descr::F64, &shape)).unwrap(), ("<f8".into(), shape));
        }
    }

    #[test]
    fn malformed_headers_name_what_is_wrong() {
        let cases = [
            ("", "expected '{'"),
            ("{'descr': '<f4', 'fortran_order': False}", "no 'shape'"),
            ("{'shape': (1,), 'fortran_order': False}", "no 'descr'"),
            ("{'descr': '<f4', 'shape': (1,)}", "no 'fortran_order'"),
            ("{'descr': '<f4', 'fortran_order': True, 'shape': (1,)}", "Fortran-order"),
            ("{'descr': '<f4', 'fortran_order': 0, 'shape': (1,)}", "'fortran_order' is an integer"),
            ("{'descr': '<f4', 'fortran_order': False, 'shape': (1, 'a')}", "'shape' is a string"),
            ("{'descr': '<f4', 'fortran_order': False, 'shape': 3}", "'shape' is an integer"),
            ("{'descr': '<f4', 'fortran_order': False, 'shape': (-1,)}", "negative"),
            ("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,)}", "too large"),
            ("{'descr': '<f4, 'fortran_order': False, 'shape': (1,)}", "expected ',' or '}' at byte 17"),
            ("{'descr' '<f4', 'fortran_order': False, 'shape': (1,)}", "expected ':'"),
            ("{'descr': '<f4', 'fortran_order': False, 'shape': (1,)", "expected ',' or '}'"),
            ("{'descr': 'a\\'b', 'fortran_order': False, 'shape': (1,)}", "escape"),
            ("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,)}", "structured"),
            ("{'descr': '|O', 'fortran_order': False, 'shape': (1,)}", "object arrays"),
            ("{'descr': '<f4', 'fortran_order': False, 'shape': (1,)} x", "text after"),
            ("{1: 2}", "dict key is an integer"),
        ];
        for (text, want) in cases {
            let e = fields(text).expect_err(text).to_string();
            assert!(e.contains(want), "{text:?}: {e}");
        }
        let deep = format!("{{'shape': {}1{} }}", "(".repeat(100), ")".repeat(100));
        assert!(fields(&deep).unwrap_err().to_string().contains("nesting too deep"));
    }
}
