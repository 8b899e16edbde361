//! A large deck is read record by record: it is generated on the fly by a
//! `Read` impl, so the test would need ~4 MB only if the reader buffered it all.

use std::io::{self, Read};

use billhook_intake::rates;

/// Produces `rows` rate lines after a header, one line at a time.
struct Deck {
    rows: u64,
    next: u64,
    pending: Vec<u8>,
    pos: usize,
}

impl Read for Deck {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.pending.len() {
            self.pending.clear();
            self.pos = 0;
            if self.next == 0 {
                self.pending
                    .extend_from_slice(b"prefix;rate;effective_from\r\n");
            } else if self.next <= self.rows {
                let line = format!(
                    "{};0.{:06};2025-01-01\r\n",
                    1000 + self.next,
                    self.next % 1_000_000
                );
                self.pending.extend_from_slice(line.as_bytes());
            } else {
                return Ok(0);
            }
            self.next += 1;
        }
        let n = buf.len().min(self.pending.len() - self.pos);
        buf[..n].copy_from_slice(&self.pending[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[test]
fn two_hundred_thousand_rows_stream() {
    let deck = Deck {
        rows: 200_000,
        next: 0,
        pending: Vec::new(),
        pos: 0,
    };
    let mut count = 0u64;
    for row in rates(deck).unwrap() {
        count += 1;
        let row = row.unwrap();
        if count.is_multiple_of(10_007) {
            assert_eq!(row.prefix, (1000 + count).to_string());
            assert_eq!(row.rate.micros(), (count % 1_000_000) as i64);
        }
    }
    assert_eq!(count, 200_000);
}
