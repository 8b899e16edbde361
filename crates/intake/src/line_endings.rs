//! Line-ending normalisation, so that record line numbers can be trusted.
//!
//! The `csv` crate's record positions lag behind with CRLF endings and point
//! at the first skipped blank line rather than at the record. Its *end*
//! position is exact when every record ends with `\n`, though: so the input is
//! rewritten to `\n` endings (CRLF and lone CR alike, as old Mac exports use)
//! with a final `\n` added if missing, and a record's first line is computed
//! from where it ends minus the newlines inside its fields.

use std::io::{self, Read};

/// A reader that turns `\r\n` and lone `\r` into `\n` and ends with `\n`.
pub(crate) struct LfLines<R> {
    inner: R,
    /// The previous byte was `\r`: a following `\n` belongs to it.
    after_cr: bool,
    /// The last byte handed out, to know whether a final `\n` is due.
    last: Option<u8>,
    done: bool,
}

impl<R: Read> LfLines<R> {
    pub(crate) fn new(inner: R) -> LfLines<R> {
        LfLines {
            inner,
            after_cr: false,
            last: None,
            done: false,
        }
    }
}

impl<R: Read> Read for LfLines<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() || self.done {
            return Ok(0);
        }
        loop {
            let n = self.inner.read(out)?;
            if n == 0 {
                self.done = true;
                return Ok(match self.last {
                    Some(b) if b != b'\n' => {
                        out[0] = b'\n';
                        1
                    }
                    _ => 0,
                });
            }
            // In place: the output is never longer than the input here.
            let mut written = 0;
            for i in 0..n {
                let b = out[i];
                if self.after_cr && b == b'\n' {
                    self.after_cr = false;
                    continue;
                }
                self.after_cr = b == b'\r';
                out[written] = if b == b'\r' { b'\n' } else { b };
                written += 1;
            }
            if written > 0 {
                self.last = Some(out[written - 1]);
                return Ok(written);
            }
            // Only the `\n` of a `\r\n` split across reads: read on.
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normalise(input: &[u8], chunk: usize) -> Vec<u8> {
        struct Chunks<'a>(&'a [u8], usize);
        impl Read for Chunks<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let n = self.0.len().min(buf.len()).min(self.1);
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let mut out = Vec::new();
        LfLines::new(Chunks(input, chunk))
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn endings_become_lf() {
        for chunk in [1, 2, 3, 1024] {
            assert_eq!(normalise(b"a\r\nb\rc\n\r\n", chunk), b"a\nb\nc\n\n");
            assert_eq!(normalise(b"a\r\nb", chunk), b"a\nb\n");
            assert_eq!(normalise(b"a\r", chunk), b"a\n");
            assert_eq!(normalise(b"", chunk), b"");
        }
    }
}
