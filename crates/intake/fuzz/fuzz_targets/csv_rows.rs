//! Any bytes as a rate deck, a client list and a DID list: never a panic, and
//! the iterators always end.
#![no_main]

use billhook_intake::{rates, rows, CLIENT_COLUMNS, DID_COLUMNS};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(deck) = rates(data) {
        for row in deck {
            let _ = row;
        }
    }
    for columns in [&CLIENT_COLUMNS, &DID_COLUMNS] {
        if let Ok(list) = rows(data, columns) {
            for row in list {
                let _ = row;
            }
        }
    }
});
