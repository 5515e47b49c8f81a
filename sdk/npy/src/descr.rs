//! Array-protocol type strings (`descr` in a `.npy` header, `typestr` in
//! `__array_interface__`): byte order, kind, element size.

use std::borrow::Cow;
use std::fmt;

use crate::Error;

/// A simple (non-structured) NumPy type string such as `<f4` or `|b1`, with
/// its element size in bytes. Made with [`Descr::parse`] or one of the
/// constants; the text always has the form `[<>|=]?KIND SIZE[unit]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Descr {
    text: Cow<'static, str>,
    itemsize: usize,
}

macro_rules! consts {
    ($($(#[$doc:meta])* $name:ident = $text:literal, $size:literal;)*) => {
        impl Descr {
            $($(#[$doc])* pub const $name: Descr = Descr { text: Cow::Borrowed($text), itemsize: $size };)*
        }
    };
}

consts! {
    /// `<f2`: little-endian IEEE half.
    F16 = "<f2", 2;
    /// `<f4`: little-endian IEEE single.
    F32 = "<f4", 4;
    /// `<f8`: little-endian IEEE double.
    F64 = "<f8", 8;
    /// `|i1`: signed byte.
    I8 = "|i1", 1;
    /// `<i2`: little-endian 16-bit signed.
    I16 = "<i2", 2;
    /// `<i4`: little-endian 32-bit signed.
    I32 = "<i4", 4;
    /// `<i8`: little-endian 64-bit signed.
    I64 = "<i8", 8;
    /// `|u1`: unsigned byte.
    U8 = "|u1", 1;
    /// `<u2`: little-endian 16-bit unsigned.
    U16 = "<u2", 2;
    /// `<u4`: little-endian 32-bit unsigned.
    U32 = "<u4", 4;
    /// `<u8`: little-endian 64-bit unsigned.
    U64 = "<u8", 8;
    /// `|b1`: boolean, one byte (0 or 1).
    BOOL = "|b1", 1;
}

impl Descr {
    /// Parses a type string: an optional byte order (`<`, `>`, `|`, `=`),
    /// a kind (`b i u f c S a V U m M`), the size in bytes (in characters
    /// for `U`, 4 bytes each) and, for datetimes (`m`, `M`), an optional
    /// `[unit]`. Objects (`O`) and structured dtypes are refused.
    pub fn parse(text: &str) -> Result<Descr, Error> {
        let unsupported = |reason| Error::UnsupportedDtype { descr: text.to_string(), reason };
        let rest = text.strip_prefix(['<', '>', '|', '=']).unwrap_or(text);
        let mut chars = rest.chars();
        let kind = chars.next().ok_or_else(|| unsupported("empty type string"))?;
        let rest = chars.as_str();
        match kind {
            'b' | 'i' | 'u' | 'f' | 'c' | 'S' | 'a' | 'V' | 'U' | 'm' | 'M' => {}
            'O' => return Err(unsupported("object arrays hold Python objects (pickles), not data")),
            _ => return Err(unsupported("not a simple array type string")),
        }
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        let (size, suffix) = rest.split_at(digits);
        if size.is_empty() {
            return Err(unsupported("no element size"));
        }
        let unit_ok = matches!(kind, 'm' | 'M')
            && suffix.strip_prefix('[').and_then(|s| s.strip_suffix(']')).is_some_and(|u| !u.is_empty() && u.chars().all(|c| c.is_ascii_alphanumeric()));
        if !suffix.is_empty() && !unit_ok {
            return Err(unsupported("unexpected characters after the element size"));
        }
        let n: usize = size.parse().map_err(|_| unsupported("element size too large"))?;
        let itemsize = if kind == 'U' { n.checked_mul(4).ok_or_else(|| unsupported("element size too large"))? } else { n };
        if itemsize == 0 {
            return Err(unsupported("zero-sized elements"));
        }
        Ok(Descr { text: Cow::Owned(text.to_string()), itemsize })
    }

    /// The type string.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Bytes per element.
    pub fn itemsize(&self) -> usize {
        self.itemsize
    }
}

impl fmt::Display for Descr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_of_the_usual_types() {
        for (text, size) in [("<f4", 4), ("|b1", 1), ("<i8", 8), (">f8", 8), ("=u2", 2), ("<c16", 16), ("|S5", 5), ("<U3", 12), ("<M8[ns]", 8), ("|V12", 12), ("f4", 4)] {
            let d = Descr::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!((d.as_str(), d.itemsize()), (text, size));
        }
        assert_eq!(Descr::parse("<f4").unwrap(), Descr::F32);
        assert_eq!(Descr::BOOL.itemsize(), 1);
    }

    #[test]
    fn unsupported_type_strings_say_why() {
        for (text, why) in [
            ("|O", "object arrays"),
            ("", "empty"),
            ("<", "empty"),
            ("<x4", "not a simple"),
            ("<f", "no element size"),
            ("<f0", "zero-sized"),
            ("<f4'", "unexpected characters"),
            ("<f4[ns]", "unexpected characters"),
            ("<M8[n's]", "unexpected characters"),
            ("<f99999999999999999999999", "too large"),
            ("<U9999999999999999999", "too large"),
        ] {
            let e = Descr::parse(text).expect_err(text).to_string();
            assert!(e.contains(why) && e.contains(&format!("'{text}'")), "{text}: {e}");
        }
    }
}
