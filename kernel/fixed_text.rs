//! Text formatted into a fixed buffer: for messages made where the heap
//! may not be used (a panic being recovered, the page-table rules checker
//! with its lock held and interrupts masked). Longer text is cut on a
//! character boundary.

use core::fmt;

/// Up to 240 bytes of formatted text.
#[derive(Clone, Copy)]
pub struct FixedText {
    buf: [u8; 240],
    len: usize,
}

impl FixedText {
    pub fn new(args: fmt::Arguments) -> FixedText {
        let mut text = FixedText { buf: [0; 240], len: 0 };
        let _ = fmt::write(&mut text, args);
        text
    }

    pub fn as_str(&self) -> &str {
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("(text is not UTF-8)")
    }
}

impl fmt::Write for FixedText {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for c in s.chars() {
            let mut tmp = [0; 4];
            let bytes = c.encode_utf8(&mut tmp).as_bytes();
            if self.len + bytes.len() > self.buf.len() {
                break;
            }
            self.buf[self.len..self.len + bytes.len()].copy_from_slice(bytes);
            self.len += bytes.len();
        }
        Ok(())
    }
}

impl fmt::Debug for FixedText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}
