//! A reader for protobuf text format (what Triton's `config.pbtxt` is
//! written in) into an untyped tree: no schema, so that the importer can
//! name every field it does not understand instead of silently dropping it.
//!
//! Grammar: `field: value`, `field { ... }` or `field: { ... }` (also
//! `< ... >`), lists `[a, b]` of scalars or messages (`field [ {..} ]`
//! too, as Triton's configs write them), a field repeated
//! to add list entries; scalars are numbers, quoted strings (single or
//! double quotes, C escapes) and identifiers (enums, `true`); `#`
//! comments; `,` or `;` after a field are allowed.

use std::fmt;

/// A parsed value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A number or an identifier, as written (e.g. `-1`, `TYPE_FP32`, `true`).
    Word(String),
    /// A quoted string, unescaped.
    Text(String),
    /// A nested message.
    Message(Message),
    /// `[a, b, ...]`.
    List(Vec<Value>),
}

/// A message: its fields in file order, with the line each starts on.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Message {
    /// `(name, value, line)` in the order written.
    pub fields: Vec<(String, Value, usize)>,
}

impl Message {
    /// Every value given for `name`, lists flattened (a repeated field may
    /// be written as repeated keys, as a list, or both).
    pub fn all(&self, name: &str) -> Vec<&Value> {
        let mut out = Vec::new();
        for (_, v, _) in self.fields.iter().filter(|(n, _, _)| n == name) {
            match v {
                Value::List(items) => out.extend(items.iter()),
                other => out.push(other),
            }
        }
        out
    }

    /// The last value given for the singular field `name`.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.fields.iter().rev().find(|(n, _, _)| n == name).map(|(_, v, _)| v)
    }

    /// The line field `name` was (last) written on.
    pub fn line(&self, name: &str) -> Option<usize> {
        self.fields.iter().rev().find(|(n, _, _)| n == name).map(|(_, _, l)| *l)
    }
}

impl Value {
    /// The text of a word or a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Word(w) | Value::Text(w) => Some(w),
            _ => None,
        }
    }

    /// An integer (a word that parses as one).
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Word(w) => w.parse().ok(),
            _ => None,
        }
    }

    /// A message.
    pub fn as_message(&self) -> Option<&Message> {
        match self {
            Value::Message(m) => Some(m),
            _ => None,
        }
    }
}

/// Where and why the text could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based line.
    pub line: usize,
    /// What was wrong.
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for ParseError {}

/// Parses a whole text-format document.
pub fn parse(text: &str) -> Result<Message, ParseError> {
    let mut p = Parser { chars: text.chars().collect(), at: 0, line: 1 };
    let m = p.fields(None)?;
    Ok(m)
}

struct Parser {
    chars: Vec<char>,
    at: usize,
    line: usize,
}

impl Parser {
    fn error<T>(&self, message: impl Into<String>) -> Result<T, ParseError> {
        Err(ParseError { line: self.line, message: message.into() })
    }

    fn peek(&mut self) -> Option<char> {
        self.skip_space();
        self.chars.get(self.at).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.chars.get(self.at).copied();
        if c == Some('\n') {
            self.line += 1;
        }
        self.at += 1;
        c
    }

    fn skip_space(&mut self) {
        while let Some(&c) = self.chars.get(self.at) {
            if c == '#' {
                while self.chars.get(self.at).is_some_and(|&c| c != '\n') {
                    self.at += 1;
                }
            } else if c.is_whitespace() {
                self.bump();
            } else {
                break;
            }
        }
    }

    /// Fields up to `close` (or the end of the text when `None`).
    fn fields(&mut self, close: Option<char>) -> Result<Message, ParseError> {
        let mut m = Message::default();
        loop {
            match (self.peek(), close) {
                (None, None) => return Ok(m),
                (None, Some(c)) => return self.error(format!("missing `{c}` at the end of the text")),
                (Some(c), Some(want)) if c == want => {
                    self.bump();
                    return Ok(m);
                }
                _ => {}
            }
            let line = self.line;
            let name = self.word()?;
            if !name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_') {
                return self.error(format!("expected a field name, found `{name}`"));
            }
            let colon = self.peek() == Some(':');
            if colon {
                self.bump();
            }
            // A list of messages may be written without the colon (`input [ {..} ]`).
            let value = match self.peek() {
                Some('{') | Some('<') => self.message()?,
                Some('[') => self.value()?,
                _ if !colon => return self.error(format!("expected `:` or `{{` after field `{name}`")),
                _ => self.value()?,
            };
            m.fields.push((name, value, line));
            if matches!(self.peek(), Some(',') | Some(';')) {
                self.bump();
            }
        }
    }

    fn message(&mut self) -> Result<Value, ParseError> {
        let close = match self.bump() {
            Some('{') => '}',
            _ => '>',
        };
        Ok(Value::Message(self.fields(Some(close))?))
    }

    fn value(&mut self) -> Result<Value, ParseError> {
        match self.peek() {
            Some('[') => {
                self.bump();
                let mut items = Vec::new();
                loop {
                    match self.peek() {
                        Some(']') => {
                            self.bump();
                            return Ok(Value::List(items));
                        }
                        None => return self.error("missing `]`"),
                        _ => {}
                    }
                    items.push(match self.peek() {
                        Some('{') | Some('<') => self.message()?,
                        _ => self.scalar()?,
                    });
                    match self.peek() {
                        Some(',') => {
                            self.bump();
                        }
                        Some(']') => {}
                        _ => return self.error("expected `,` or `]` in a list"),
                    }
                }
            }
            Some('{') | Some('<') => self.message(),
            _ => self.scalar(),
        }
    }

    fn scalar(&mut self) -> Result<Value, ParseError> {
        match self.peek() {
            Some(q @ ('"' | '\'')) => {
                // Adjacent strings concatenate, as in C.
                let mut s = String::new();
                while self.peek() == Some(q) {
                    s.push_str(&self.string(q)?);
                }
                Ok(Value::Text(s))
            }
            Some(_) => Ok(Value::Word(self.word()?)),
            None => self.error("expected a value at the end of the text"),
        }
    }

    fn word(&mut self) -> Result<String, ParseError> {
        self.skip_space();
        let start = self.at;
        while self.chars.get(self.at).is_some_and(|&c| c.is_ascii_alphanumeric() || "_.-+".contains(c)) {
            self.at += 1;
        }
        if self.at == start {
            let found = self.chars.get(self.at).map(|c| c.to_string()).unwrap_or_else(|| "the end".into());
            return self.error(format!("unexpected `{found}`"));
        }
        Ok(self.chars[start..self.at].iter().collect())
    }

    fn string(&mut self, quote: char) -> Result<String, ParseError> {
        self.bump();
        let mut s = String::new();
        loop {
            match self.bump() {
                None | Some('\n') => return self.error("unterminated string"),
                Some(c) if c == quote => return Ok(s),
                Some('\\') => match self.bump() {
                    Some('n') => s.push('\n'),
                    Some('t') => s.push('\t'),
                    Some('r') => s.push('\r'),
                    Some(c @ ('\\' | '"' | '\'')) => s.push(c),
                    Some(c) => return self.error(format!("unsupported escape `\\{c}` in a string")),
                    None => return self.error("unterminated string"),
                },
                Some(c) => s.push(c),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_triton_config_parses_with_every_form() {
        let text = r#"
name: "particlenet"   # a comment
platform: 'pytorch_libtorch'
max_batch_size: 64
input [
  { name: "points" data_type: TYPE_FP32 dims: [ 2, -1 ] },
  { name: "mask", data_type: TYPE_FP32, dims: [1, -1] }
]
input { name: "features" data_type: TYPE_FP32 dims: [ 4, -1 ] }
output [{ name: "scores"; data_type: TYPE_FP32; dims: [3]; label_filename: "labels.txt" }]
dynamic_batching < max_queue_delay_microseconds: 100 >
instance_group [ { count: 2 kind: KIND_CPU } ]
"#;
        let m = parse(text).unwrap();
        assert_eq!(m.get("name").and_then(Value::as_str), Some("particlenet"));
        assert_eq!(m.get("platform").and_then(Value::as_str), Some("pytorch_libtorch"));
        assert_eq!(m.get("max_batch_size").and_then(Value::as_i64), Some(64));
        let inputs = m.all("input");
        assert_eq!(inputs.len(), 3);
        let names: Vec<&str> = inputs.iter().filter_map(|v| v.as_message()?.get("name")?.as_str()).collect();
        assert_eq!(names, ["points", "mask", "features"]);
        let dims: Vec<i64> = inputs[0].as_message().unwrap().all("dims").iter().filter_map(|v| v.as_i64()).collect();
        assert_eq!(dims, [2, -1]);
        let batching = m.get("dynamic_batching").and_then(Value::as_message).unwrap();
        assert_eq!(batching.get("max_queue_delay_microseconds").and_then(Value::as_i64), Some(100));
        assert_eq!(m.line("output"), Some(10));
    }

    #[test]
    fn errors_name_the_line() {
        assert_eq!(parse("name: \"x\"\ninput {\n").unwrap_err().to_string(), "line 3: missing `}` at the end of the text");
        assert_eq!(parse("name \"x\"").unwrap_err().to_string(), "line 1: expected `:` or `{` after field `name`");
        assert_eq!(parse("a: [1, 2\nb: 3").unwrap_err().to_string(), "line 2: expected `,` or `]` in a list");
        assert_eq!(parse("a: \"open\nb: 1").unwrap_err().to_string(), "line 2: unterminated string");
        assert_eq!(parse("a: 'x' 'y'").unwrap().get("a"), Some(&Value::Text("xy".into())));
    }
}
