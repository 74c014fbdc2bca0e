//! The field encodings every key and value is made of: [`Writer`] appends
//! them, [`Reader`] reads them back and names what it expected when the
//! bytes are malformed.

use super::FORMAT_VERSION;

/// Appends encoded fields to a byte buffer.
#[derive(Default)]
pub(crate) struct Writer {
    /// The bytes written so far.
    bytes: Vec<u8>,
}

impl Writer {
    /// A value buffer, starting with [`FORMAT_VERSION`].
    pub(crate) fn value() -> Self {
        let mut bytes = Vec::with_capacity(64);
        bytes.push(FORMAT_VERSION);
        Writer { bytes }
    }

    /// A key buffer (keys carry no version byte).
    pub(crate) fn key() -> Self {
        Writer {
            bytes: Vec::with_capacity(48),
        }
    }

    /// Appends a u64, big-endian.
    pub(crate) fn u64(&mut self, value: u64) -> &mut Self {
        self.bytes.extend_from_slice(&value.to_be_bytes());
        self
    }

    /// Appends a 0/1 flag.
    pub(crate) fn bool(&mut self, value: bool) -> &mut Self {
        self.bytes.push(u8::from(value));
        self
    }

    /// Appends bytes with a u32 big-endian length before them.
    pub(crate) fn bytes(&mut self, value: &[u8]) -> &mut Self {
        // Stored strings are bounded far below 4 GiB by the input limits.
        self.bytes
            .extend_from_slice(&(value.len() as u32).to_be_bytes());
        self.bytes.extend_from_slice(value);
        self
    }

    /// Appends a string: its length, then its UTF-8 bytes.
    pub(crate) fn str(&mut self, value: &str) -> &mut Self {
        self.bytes(value.as_bytes())
    }

    /// Appends bytes as they are, without a length.
    pub(crate) fn raw(&mut self, value: &[u8]) -> &mut Self {
        self.bytes.extend_from_slice(value);
        self
    }

    /// Appends an optional string: a 0/1 tag, then the string when present.
    pub(crate) fn opt_str(&mut self, value: Option<&str>) -> &mut Self {
        match value {
            None => self.bool(false),
            Some(text) => self.bool(true).str(text),
        }
    }

    /// The bytes written so far (the writer is left empty).
    pub(crate) fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.bytes)
    }
}

/// Reads encoded fields; every failure names what it expected.
pub(crate) struct Reader<'a> {
    /// The whole key or value.
    bytes: &'a [u8],
    /// The next byte to read.
    at: usize,
}

/// A decoded item, or why the bytes are malformed.
pub(crate) type Decoded<T> = std::result::Result<T, String>;

impl<'a> Reader<'a> {
    /// Reads a key from its first byte.
    pub(crate) fn key(bytes: &'a [u8]) -> Self {
        Reader { bytes, at: 0 }
    }

    /// Reads a value after its version byte; an empty value or another
    /// version is an error.
    pub(crate) fn value(bytes: &'a [u8]) -> Decoded<Self> {
        match bytes.first() {
            None => Err("empty value".to_owned()),
            Some(&FORMAT_VERSION) => Ok(Reader { bytes, at: 1 }),
            Some(other) => Err(format!(
                "unknown format version {other} (this build reads {FORMAT_VERSION})"
            )),
        }
    }

    /// The next `length` bytes, or an error naming `what` was truncated.
    fn take(&mut self, length: usize, what: &str) -> Decoded<&'a [u8]> {
        let end = self
            .at
            .checked_add(length)
            .filter(|end| *end <= self.bytes.len())
            .ok_or_else(|| format!("truncated {what} at byte {}", self.at))?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    /// Reads a u64, big-endian.
    pub(crate) fn u64(&mut self, what: &str) -> Decoded<u64> {
        let slice = self.take(8, what)?;
        let mut array = [0u8; 8];
        array.copy_from_slice(slice);
        Ok(u64::from_be_bytes(array))
    }

    /// Reads a 0/1 flag.
    pub(crate) fn bool(&mut self, what: &str) -> Decoded<bool> {
        match self.take(1, what)? {
            [0] => Ok(false),
            [1] => Ok(true),
            other => Err(format!("bad flag {other:?} for {what}")),
        }
    }

    /// Reads length-prefixed bytes.
    pub(crate) fn bytes(&mut self, what: &str) -> Decoded<&'a [u8]> {
        let slice = self.take(4, what)?;
        let mut array = [0u8; 4];
        array.copy_from_slice(slice);
        self.take(u32::from_be_bytes(array) as usize, what)
    }

    /// Reads a length-prefixed UTF-8 string, borrowed.
    pub(crate) fn str(&mut self, what: &str) -> Decoded<&'a str> {
        let slice = self.bytes(what)?;
        std::str::from_utf8(slice).map_err(|_| format!("{what} is not UTF-8"))
    }

    /// Reads a length-prefixed UTF-8 string, owned.
    pub(crate) fn string(&mut self, what: &str) -> Decoded<String> {
        self.str(what).map(str::to_owned)
    }

    /// Reads an optional string (a 0/1 tag, then the string when present).
    pub(crate) fn opt_string(&mut self, what: &str) -> Decoded<Option<String>> {
        if self.bool(what)? {
            self.string(what).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Reads exactly `N` bytes.
    pub(crate) fn fixed<const N: usize>(&mut self, what: &str) -> Decoded<[u8; N]> {
        let slice = self.take(N, what)?;
        let mut array = [0u8; N];
        array.copy_from_slice(slice);
        Ok(array)
    }

    /// Everything not read yet (the reader is then at the end).
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        let slice = &self.bytes[self.at..];
        self.at = self.bytes.len();
        slice
    }

    /// An error unless every byte has been read.
    pub(crate) fn end(&self) -> Decoded<()> {
        if self.at == self.bytes.len() {
            Ok(())
        } else {
            Err(format!(
                "{} unexpected bytes after the last field",
                self.bytes.len() - self.at
            ))
        }
    }
}
